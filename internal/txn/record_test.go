package txn

import (
	"reflect"
	"testing"
)

func decided(d Decision) DecisionRecord {
	return DecisionRecord{Txn: 7, Attempt: 1, Anchor: 1, Decision: d, Participants: []RangeID{1, 2}}
}

func inquiry() Message {
	return Message{Type: MsgInquire, Txn: 7, Attempt: 1, From: rg(2), To: rg(1), Participants: parts3,
		Coordinator: gw}
}

// TestRecordTableOneCASWins: the coordinator's CAS to COMMITTED and an
// inquirer's CAS to ABORTED race on the anchor; whichever applies first
// wins and the other sees its decision.
//
// Ref: DESIGN.md rules 4 and 2.
func TestRecordTableOneCASWins(t *testing.T) {
	for _, first := range []Decision{DecisionCommitted, DecisionAborted} {
		var rt RecordTable
		second := DecisionCommitted + DecisionAborted - first
		if got := rt.CAS(decided(first)); got != first {
			t.Fatalf("first CAS %v: got %v", first, got)
		}
		if got := rt.CAS(decided(second)); got != first {
			t.Fatalf("second CAS %v after %v: got %v", second, first, got)
		}
	}
}

// TestRecordTableInquire: a decided record answers; an undecided one stays
// PENDING while the coordinator may be alive, and is aborted by CAS once it
// is proven gone (presumed abort), listing every participant so that
// recovery can tell them. The coordinator's later CAS then loses.
//
// Ref: DESIGN.md rules 4 and 5.
func TestRecordTableInquire(t *testing.T) {
	var rt RecordTable
	if got := rt.Inquire(inquiry(), false); got.Decision != DecisionPending || got.To != rg(2) {
		t.Fatalf("undecided, coordinator alive: %v", got)
	}
	if rt.Get(7, 1) != DecisionPending {
		t.Fatal("an answer to an inquiry wrote a decision")
	}
	if got := rt.Inquire(inquiry(), true); got.Decision != DecisionAborted {
		t.Fatalf("undecided, coordinator gone: %v", got)
	}
	want := []DecisionRecord{{Txn: 7, Attempt: 1, Anchor: 1, Decision: DecisionAborted,
		Participants: []RangeID{1, 2, 3}, Coordinator: gw}}
	if got := rt.Decided(); !reflect.DeepEqual(got, want) {
		t.Fatalf("recorded %+v, want %+v", got, want)
	}
	if got := rt.CAS(decided(DecisionCommitted)); got != DecisionAborted {
		t.Fatalf("coordinator's CAS after presumed abort: %v", got)
	}
}

// TestLateInquireAfterEnd: an Inquire sent while T was prepared can arrive
// after T's record was ended. The ended record stays as a tombstone, so the
// answer is still COMMITTED and presumed abort cannot flip the decision.
// Tombstones leave recovery's work at once and are bounded by MaxEnded.
//
// Ref: DESIGN.md rules 2 and 7.
func TestLateInquireAfterEnd(t *testing.T) {
	rt := RecordTable{MaxEnded: 1}
	rt.CAS(decided(DecisionCommitted))
	rt.End(EndRecord{Txn: 7, Attempt: 1, Anchor: 1})
	if got := rt.Decided(); len(got) != 0 {
		t.Fatalf("ended record still in recovery's work: %v", got)
	}
	if got := rt.Inquire(inquiry(), true); got.Decision != DecisionCommitted {
		t.Fatalf("late inquiry after End: %v, want COMMITTED", got.Decision)
	}
	rt.CAS(DecisionRecord{Txn: 8, Attempt: 1, Decision: DecisionAborted})
	rt.End(EndRecord{Txn: 8, Attempt: 1})
	if got := rt.Get(7, 1); got != DecisionPending {
		t.Fatalf("tombstone beyond MaxEnded kept: %v", got)
	}
}
