# Shortcuts; README.md gives the plain commands.
.PHONY: test demo simulate

# The whole suite, exactly what CI runs.
test:
	bash scripts/test.sh

# A local cluster with the bank demo.
demo:
	go run ./cmd/vowdb demo

# Deterministic simulation for as long as asked: make simulate DURATION=1h
# (FIRST=N starts at seed N; otherwise the first seed comes from the clock
# and is printed). A failure prints its seed and how to replay it.
DURATION ?= 10m
simulate:
	VOWDB_SIM_DURATION=$(DURATION) $(if $(FIRST),VOWDB_SIM_FIRST=$(FIRST)) \
		go test -count=1 -timeout 0 -run TestSimulationSoak -v ./internal/sim
