package check

import (
	"strings"
	"testing"
)

// okTxn is an ok transaction concurrent with every other one made by okTxn
// or infoTxn: only timed transactions get realtime edges.
func okTxn(mops ...Mop) Op { return Op{Type: OK, Invoke: 0, Complete: 1000, Txn: mops} }

func infoTxn(mops ...Mop) Op { return Op{Type: Info, Invoke: 0, Txn: mops} }

func failTxn(mops ...Mop) Op { return Op{Type: Fail, Invoke: 0, Complete: 1000, Txn: mops} }

func timed(op Op, invoke, complete int64) Op {
	op.Invoke, op.Complete = invoke, complete
	return op
}

func TestListAppend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		history  []Op
		realtime bool
		want     []string
	}{
		{"valid", []Op{
			okTxn(Append("x", 1), Append("y", 1)),
			okTxn(Read("x", 1), Append("x", 2)),
			okTxn(Read("x", 1, 2), Read("y", 1)),
			okTxn(Read("x"), Read("y")),
		}, true, nil},
		{"own appends read back", []Op{
			okTxn(Append("x", 1)),
			okTxn(Read("x", 1), Append("x", 2), Read("x", 1, 2), Append("x", 3), Append("x", 4), Read("x", 1, 2, 3, 4)),
			okTxn(Append("y", 1), Read("y", 1)),
			okTxn(Read("x", 1, 2, 3, 4)),
		}, true, nil},
		{"info append seen", []Op{infoTxn(Append("x", 1)), okTxn(Read("x", 1))}, true, nil},
		{"info append not seen", []Op{infoTxn(Append("x", 1)), okTxn(Read("x"))}, true, nil},
		{"info transaction's reads are ignored", []Op{infoTxn(Read("x", 5, 6))}, true, nil},
		{"fail transaction's reads are ignored", []Op{failTxn(Read("x", 5, 6))}, true, nil},

		// G0: the two transactions' appends interleave on x and y.
		{"G0", []Op{
			okTxn(Append("x", 1), Append("y", 1)),
			okTxn(Append("x", 2), Append("y", 2)),
			okTxn(Read("x", 1, 2), Read("y", 2, 1)),
		}, false, []string{AnomalyG0}},
		// G1a: a read sees an append of a failed transaction.
		{"G1a", []Op{failTxn(Append("x", 1)), okTxn(Read("x", 1))}, false, []string{AnomalyG1a}},
		// G1b: a read sees a transaction's first append to x, not its last.
		{"G1b", []Op{okTxn(Append("x", 1), Append("x", 2)), okTxn(Read("x", 1))}, false, []string{AnomalyG1b}},
		// G1c: each transaction reads the other's append.
		{"G1c", []Op{
			okTxn(Append("x", 1), Read("y", 1)),
			okTxn(Append("y", 1), Read("x", 1)),
		}, false, []string{AnomalyG1c}},
		// G-single (read skew): T1 sees T2's append to y but not to x.
		{"G-single", []Op{
			okTxn(Read("x"), Read("y", 1)),
			okTxn(Append("x", 1), Append("y", 1)),
			okTxn(Read("x", 1)),
		}, false, []string{AnomalyGSingle}},
		// G-single (lost update): both read x empty and append to it.
		{"lost update", []Op{
			okTxn(Read("x"), Append("x", 1)),
			okTxn(Read("x"), Append("x", 2)),
			okTxn(Read("x", 1, 2)),
		}, false, []string{AnomalyGSingle}},
		// G2 (write skew): each reads the key the other appends to.
		{"G2", []Op{
			okTxn(Read("x"), Append("y", 1)),
			okTxn(Read("y"), Append("x", 1)),
			okTxn(Read("x", 1), Read("y", 1)),
		}, false, []string{AnomalyG2}},
		// Realtime only: T2 began after T1 completed, yet missed its
		// append; serializable (T2 before T1), not strictly.
		{"stale read, serializable", []Op{
			timed(okTxn(Append("x", 1)), 0, 10),
			timed(okTxn(Read("x")), 20, 30),
			timed(okTxn(Read("x", 1)), 40, 50),
		}, false, nil},
		{"stale read, strict serializable", []Op{
			timed(okTxn(Append("x", 1)), 0, 10),
			timed(okTxn(Read("x")), 20, 30),
			timed(okTxn(Read("x", 1)), 40, 50),
		}, true, []string{AnomalyGSingle + RealtimeSuffix}},
		{"realtime through a chain", []Op{
			timed(okTxn(Append("x", 1)), 0, 10),
			timed(okTxn(Append("y", 1)), 20, 30),
			timed(okTxn(Read("y", 1), Read("x")), 40, 50),
			timed(okTxn(Read("x", 1)), 60, 70),
		}, true, []string{AnomalyGSingle + RealtimeSuffix}},
		{"future read", []Op{
			timed(okTxn(Read("x", 1)), 0, 10),
			timed(okTxn(Append("x", 1)), 20, 30),
		}, true, []string{AnomalyG1c + RealtimeSuffix}},
		{"reordered appends", []Op{
			timed(okTxn(Append("x", 1)), 0, 10),
			timed(okTxn(Append("x", 2)), 20, 30),
			timed(okTxn(Read("x", 2, 1)), 40, 50),
		}, true, []string{AnomalyG0 + RealtimeSuffix}},
		{"concurrent transactions have no realtime order", []Op{
			timed(okTxn(Append("x", 1)), 0, 20),
			timed(okTxn(Read("x")), 20, 30), // touches: concurrent
			timed(okTxn(Read("x", 1)), 40, 50),
		}, true, nil},
		{"info transactions have no end", []Op{
			timed(infoTxn(Append("x", 1)), 0, 5),
			timed(okTxn(Read("x")), 20, 30),
			timed(okTxn(Read("x", 1)), 40, 50),
		}, true, nil},

		{"garbage", []Op{okTxn(Append("x", 1)), okTxn(Read("x", 1, 9))}, false, []string{AnomalyGarbage}},
		{"duplicate elements", []Op{okTxn(Append("x", 1)), okTxn(Read("x", 1, 1))}, false, []string{AnomalyDuplicateElements}},
		{"incompatible order", []Op{
			okTxn(Append("x", 1)), okTxn(Append("x", 2)),
			okTxn(Read("x", 1, 2)), okTxn(Read("x", 2)),
		}, false, []string{AnomalyIncompatibleOrder}},
		{"internal: own append missing", []Op{okTxn(Append("x", 1), Read("x"))}, false, []string{AnomalyInternal}},
		// A read that changes within a transaction is also read skew.
		{"internal: read changed", []Op{
			okTxn(Append("x", 1)),
			okTxn(Read("x"), Read("x", 1)),
		}, false, []string{AnomalyInternal, AnomalyGSingle}},
		{"internal: own later append read", []Op{okTxn(Read("x", 1), Append("x", 1))}, false, []string{AnomalyInternal}},
		{"malformed: element appended twice", []Op{okTxn(Append("x", 1)), okTxn(Append("x", 1))}, false, []string{AnomalyMalformed}},
		{"malformed: unknown micro-op", []Op{okTxn(Mop{F: "incr", Key: "x"})}, false, []string{AnomalyMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkTypes(t, ListAppend(tc.history, ListAppendOptions{Realtime: tc.realtime}), tc.want...)
		})
	}
}

func TestListAppendExplainsCycle(t *testing.T) {
	res := ListAppend([]Op{
		okTxn(Read("x"), Append("y", 1)),
		okTxn(Read("y"), Append("x", 1)),
		okTxn(Read("x", 1), Read("y", 1)),
	}, ListAppendOptions{})
	checkTypes(t, res, AnomalyG2)
	a := res.Anomalies[0]
	want := []string{
		"T1 -rw(x)-> T2 -rw(y)-> T1",
		"T1 = op 0: p0 ok [r(x)=[] append(y, 1)]",
		"T2 = op 1: p0 ok [r(y)=[] append(x, 1)]",
		"T1 -rw(x)-> T2: T1 read x empty, and T2 appended its first element 1",
		"T2 -rw(y)-> T1: T2 read y empty, and T1 appended its first element 1",
	}
	if got := strings.Split(a.Explanation, "\n"); len(got) != len(want) {
		t.Fatalf("explanation:\n%s\nwant:\n%s", a.Explanation, strings.Join(want, "\n"))
	}
	for i, line := range strings.Split(a.Explanation, "\n") {
		if strings.TrimSpace(line) != want[i] {
			t.Errorf("line %d: %q, want %q", i, strings.TrimSpace(line), want[i])
		}
	}
	if len(a.Ops) != 2 || a.Ops[0] != 0 || a.Ops[1] != 1 {
		t.Errorf("ops %v, want [0 1]", a.Ops)
	}
}

// A G1c cycle is also G2 material once rw edges join: each component is
// reported once per kind of cycle it holds, never as a milder kind than its
// edges allow.
func TestListAppendReportsEachKind(t *testing.T) {
	res := ListAppend([]Op{
		okTxn(Append("x", 1), Append("y", 1)),
		okTxn(Append("x", 2), Append("y", 2)),
		okTxn(Read("x", 1, 2), Read("y", 2, 1)),
	}, ListAppendOptions{Realtime: true})
	checkTypes(t, res, AnomalyG0)
	if res.Stats[AnomalyG0] != 1 || res.Stats["edges-ww"] != 2 {
		t.Fatalf("stats %v", res.Stats)
	}
}
