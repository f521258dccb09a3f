#!/usr/bin/env bash
# The test suite: exactly what CI runs (.ci/run calls this script).
#   gofmt, go vet (with and without failpoints), generated code up to date,
#   go test -race on every package, the deterministic simulation's seed
#   budget, and the failpoint crash tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...
go vet -tags failpoints ./internal/...

if command -v protoc >/dev/null; then
  echo "== generated code is up to date"
  ./scripts/genproto.sh
  git diff --exit-code -- api/ || { echo "api/: generated code differs from the .proto; run scripts/genproto.sh"; exit 1; }
else
  echo "== skipping generated-code check: protoc not installed (apt-get install protobuf-compiler)"
fi

echo "== go test -race"
go test -race -count=1 ./...

echo "== deterministic simulation (internal/sim: 1,000 seeds without -race, and the regression seeds)"
go test -count=1 -v -run 'TestSimulationSeeds|TestRegressionSeeds' ./internal/sim | grep -v '^=== '

echo "== failpoint crash tests"
go test -race -count=1 -tags failpoints ./internal/failpoint/ ./internal/multiraft/
go test -race -count=1 -tags failpoints -run 'TestTxnCrash|TestTxnCoordinatorSilent|TestTxnOpAbandoned' ./internal/testcluster/
