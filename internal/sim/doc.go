// Package sim is vowdb's deterministic simulator: one goroutine runs several
// nodes of the real protocol code over a simulated network, simulated disks
// and a simulated clock, drives bank or list-append clients against them,
// injects faults from a seeded random source, then heals everything and
// checks the history with package check. The same seed gives the same run,
// event for event; a failure prints its seed and replays from it.
//
// # What runs for real
//
//	per node   storage.Engine (Pebble on a crashable in-memory vfs.MemFS)
//	           multiraft.Scheduler, driven by Round instead of its goroutine
//	           replica.Replica per range: etcd raft RawNode + range state machine
//	           txnhost.Gateway: txn.Coordinator and its driver (the node as gateway)
//	           per range it leads a txnhost.Tenure: lock.Table, txn.Participant
//	           and its driver
//	cluster    deadlock.Detector on the lowest-numbered live node
//	checkers   check.Bank, check.LedgerCheck, check.ListAppend (strict
//	           serializability) and an audit of every replica's final state
//
// The tenures, the gateway, the inquiry answer, the restore scan and the
// dispatch of arriving messages are the server's own code (package
// txnhost); this package is their host (tenure.go): proposals and ReadIndex
// rounds report from a later poll, messages cross the simulated network, the
// clock is the tick. The transport is this package's own, modelled on the
// server's: a sender's first guess at a range's leader, an unreachable
// anchor noticed as a cut link, the coordinator-status check (a down node is
// gone), and the detector collecting every reachable node's waits-for
// edges.
//
// # Determinism
//
// Every random choice comes from one math/rand/v2 PCG seeded by Config.Seed.
// etcd raft draws its randomized election timeouts from crypto/rand, so the
// replicas run with replica.Config.ExternalElections and the simulator keeps
// the election timers (a replica that has not heard its leader for a seeded
// timeout campaigns). The scheduler visits replicas in range order and sends
// in node order. Pebble runs its own goroutines, but the simulator only
// observes synced state after a crash (CrashClone keeps no unsynced byte) and
// its memtables never fill in a run, so its timing does not leak into the
// trace. TestSameSeedSameTrace checks all of this: two runs of a seed must
// produce the same event trace hash.
//
// # Time and faults
//
// A tick is one Raft tick and one transaction-layer tick. Each tick the
// simulator delivers the messages due, runs every live node's scheduler
// round, polls finished proposals and reads, ticks the transaction roles,
// runs the deadlock detector every few ticks and moves the clients. Faults
// (Config.Faults): message drop, duplication and long delays (reordering);
// partitions of one node or of a minority; crashes of a minority of nodes
// that lose every unsynced byte, and their restarts. After Config.Ticks the
// simulator heals everything, lets the clients finish, waits until nothing
// is prepared, pending or locked, and audits.
//
// # Failures
//
// Report.Failure says what went wrong: a checker anomaly, a lost or
// duplicated acknowledged commit, replicas that disagree, something left
// prepared or locked, or a cluster that did not settle. TestSimulationSeeds
// runs a budget of seeds in CI and every seed listed in
// testdata/regressions.txt; `make simulate` runs seeds for as long as asked.
package sim
