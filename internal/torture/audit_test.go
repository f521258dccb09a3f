package torture

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCLI answers the audit's commands from scripted outputs: each command
// (its first two words) gets the next result of its list, the last one
// repeating.
type fakeCLI struct {
	mu    sync.Mutex
	calls map[string]int
	out   map[string][]CLIResult
}

func (f *fakeCLI) run(_ context.Context, args ...string) CLIResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := args[0]
	if args[0] != "locks" {
		cmd += " " + args[1]
	}
	rs := f.out[cmd]
	i := min(f.calls[cmd], len(rs)-1)
	f.calls[cmd]++
	r := rs[i]
	r.Args = args
	return r
}

func ok(stdout string) CLIResult { return CLIResult{Stdout: stdout} }

const (
	noLocks   = `{"waits": [], "deadlocks": [], "held": []}`
	someLocks = `{"waits": [{"waiter": "11", "holder": "22", "key": "k", "mode": "X", "waited_seconds": 1.5, "range": 3, "node": 2}],
	  "deadlocks": [], "held": [{"holder": "22", "key": "k", "mode": "X", "range": 3, "node": 2},
	  {"holder": null, "key_base64": "AAE=", "end_key": "", "mode": "S", "range": 4, "node": 1}]}`
	noTxns   = `[]`
	someTxns = `[{"id": "22", "coordinator": 2, "state": "PREPARED", "ranges": [3, 4], "age_seconds": 80.5}]`
	agreeing = `[{"range": 1, "index": 40, "consistent": true, "replicas": [
	  {"node": 1, "applied_index": 40, "checksum": "aaaa"}, {"node": 2, "applied_index": 41, "checksum": "aaaa"}]},
	  {"range": 2, "index": 9, "consistent": true, "replicas": [{"node": 1, "applied_index": 9, "checksum": "bbbb"},
	  {"node": 2, "applied_index": 9, "checksum": "bbbb"}]}]`
	lagging = `[{"range": 1, "index": 40, "consistent": false, "replicas": [
	  {"node": 1, "applied_index": 40, "checksum": "aaaa"}, {"node": 2, "applied_index": 12, "checksum": null, "error": "replica lags"}]}]`
	disagreeing = `[{"range": 1, "index": 40, "consistent": true, "replicas": [{"node": 1, "applied_index": 40, "checksum": "aaaa"}]},
	  {"range": 7, "index": 57, "consistent": false, "replicas": [
	  {"node": 1, "applied_index": 57, "checksum": "cccc"}, {"node": 2, "applied_index": 57, "checksum": "dddd"},
	  {"node": 3, "applied_index": 58, "checksum": "cccc"}]}]`
)

func testAuditor(f *fakeCLI) *auditor {
	f.calls = map[string]int{}
	return &auditor{cli: f.run, endpoints: "e1,e2", settle: 300 * time.Millisecond, checkFor: 300 * time.Millisecond, poll: 10 * time.Millisecond}
}

// TestAuditSettles: locks and a prepared transaction that go away within
// the settle time pass; the audit asks again until they did.
func TestAuditSettles(t *testing.T) {
	f := &fakeCLI{out: map[string][]CLIResult{
		"locks":  {ok(someLocks), ok(someLocks), ok(noLocks)},
		"txn ls": {ok(someTxns), ok(noTxns)},
	}}
	a := testAuditor(f)
	desc, err := a.settled(context.Background())
	if err != nil || !strings.Contains(desc, "no lock held or awaited and no transaction in flight") ||
		!strings.Contains(desc, "first seen and waited for:\ntxn 22 holds a X lock") {
		t.Fatalf("settled: %q, %v", desc, err)
	}
	if f.calls["locks"] < 3 {
		t.Fatalf("locks asked %d times, want until clean (3)", f.calls["locks"])
	}
}

// TestAuditNamesLeftovers: what is still there after the settle time fails
// the audit, named: holders, waiters, keys, ranges, nodes, txn states.
func TestAuditNamesLeftovers(t *testing.T) {
	f := &fakeCLI{out: map[string][]CLIResult{"locks": {ok(someLocks)}, "txn ls": {ok(someTxns)}}}
	_, err := testAuditor(f).settled(context.Background())
	if err == nil {
		t.Fatal("locks and a prepared txn left, yet the audit passed")
	}
	for _, want := range []string{
		"3 locks still held or awaited",
		`txn 22 holds a X lock on "k" (range 3, node 2)`,
		`a single-key operation holds a S lock on ["\x00\x01", +inf) (range 4, node 1)`,
		`txn 11 waits 1.5s for txn 22's X lock on "k" (range 3, node 2)`,
		"1 transactions still in flight",
		"txn 22 PREPARED (coordinator node 2, ranges 3,4, age 80.5s)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	// Only transactions left, or the commands failing throughout.
	f = &fakeCLI{out: map[string][]CLIResult{"locks": {ok(noLocks)}, "txn ls": {ok(someTxns)}}}
	if _, err := testAuditor(f).settled(context.Background()); err == nil || strings.Contains(err.Error(), "locks still") ||
		!strings.Contains(err.Error(), "txn 22 PREPARED") {
		t.Fatalf("a prepared txn left: %v", err)
	}
	f = &fakeCLI{out: map[string][]CLIResult{"locks": {{Code: 4, Stderr: "Error: unavailable"}}, "txn ls": {ok(noTxns)}}}
	if _, err := testAuditor(f).settled(context.Background()); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("vowdb locks failing: %v", err)
	}
	// A binary whose locks output lacks held locks cannot prove anything.
	f = &fakeCLI{out: map[string][]CLIResult{"locks": {ok(`{"waits": [], "deadlocks": []}`)}, "txn ls": {ok(noTxns)}}}
	if _, err := testAuditor(f).settled(context.Background()); err == nil || !strings.Contains(err.Error(), "no held locks") {
		t.Fatalf("locks without held: %v", err)
	}
}

// TestAuditConsistency: agreement passes; a lagging replica is checked
// again; a disagreement fails at once naming the range and each replica's
// checksum; a replica that never answers fails after checkFor.
func TestAuditConsistency(t *testing.T) {
	f := &fakeCLI{out: map[string][]CLIResult{"range check": {{Code: 4, Stdout: lagging}, ok(agreeing)}}}
	desc, err := testAuditor(f).consistent(context.Background())
	if err != nil || desc != "the replicas of each of 2 ranges agree (vowdb range check)" || f.calls["range check"] != 2 {
		t.Fatalf("lagging then agreeing: %q, %v, %d checks", desc, err, f.calls["range check"])
	}

	f = &fakeCLI{out: map[string][]CLIResult{"range check": {{Code: 1, Stdout: disagreeing, Stderr: "Error: range 7: replicas disagree"}}}}
	_, err = testAuditor(f).consistent(context.Background())
	if err == nil || f.calls["range check"] != 1 ||
		!strings.Contains(err.Error(), "range 7 at index 57: replicas disagree: node 1 cccc, node 2 dddd, node 3 cccc") {
		t.Fatalf("disagreeing: %v (%d checks)", err, f.calls["range check"])
	}

	f = &fakeCLI{out: map[string][]CLIResult{"range check": {{Code: 4, Stdout: lagging, Stderr: "Error: could not check"}}}}
	_, err = testAuditor(f).consistent(context.Background())
	if err == nil || !strings.Contains(err.Error(), "range 1: node 2 gave no checksum: replica lags") || f.calls["range check"] < 2 {
		t.Fatalf("always lagging: %v (%d checks)", err, f.calls["range check"])
	}
}
