#!/usr/bin/env bash
# Regenerates api/vowdbpb from its .proto with Debian's protoc and the Go
# plugins pinned as tools in go.mod. CI runs it and checks nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "genproto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
mkdir -p .bin
GOBIN="$PWD/.bin" go install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
protoc --plugin=protoc-gen-go=.bin/protoc-gen-go --plugin=protoc-gen-go-grpc=.bin/protoc-gen-go-grpc \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  api/vowdbpb/vowdb.proto
