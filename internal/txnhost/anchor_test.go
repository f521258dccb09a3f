package txnhost

import (
	"testing"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// fakeAnchor is a scripted AnchorHost over fakeHost.
type fakeAnchor struct {
	*fakeHost
	record   *vowdbpb.TxnRecord
	gone     bool
	presumed int
}

func (h *fakeAnchor) TxnRecord(uint64, lock.TxnID, uint64) (*vowdbpb.TxnRecord, error) {
	return h.record, nil
}
func (h *fakeAnchor) CoordinatorGone(_ uint64, _ lock.TxnID, _ uint64, done func(bool)) { done(h.gone) }
func (h *fakeAnchor) PresumedAbort(txn.Message)                                         { h.presumed++ }

func inquiry() txn.Message {
	return txn.Message{Type: txn.MsgInquire, Txn: 4, Attempt: 1, From: txn.Addr{Range: 8}, To: txn.Addr{Range: 7},
		Participants: []txn.Participation{{Range: 7, Writes: true}, {Range: 8, Writes: true}}, Anchor: 7,
		AnchorKey: []byte("b"), Coordinator: 2}
}

func answers(h *fakeAnchor) []txn.Decision {
	var out []txn.Decision
	for _, m := range h.sentOf(txn.MsgInquireResp) {
		out = append(out, m.Decision)
	}
	return out
}

// Rules 4 and 5 at the anchor: a decided record answers as it is; an
// undecided one is aborted by compare-and-set only if the coordinator is
// proven gone, and the answer is what the record holds afterwards.
func TestAnswerInquiry(t *testing.T) {
	t.Run("decided record", func(t *testing.T) {
		h := &fakeAnchor{fakeHost: newFakeHost(t), record: &vowdbpb.TxnRecord{State: vowdbpb.TxnState_TXN_COMMITTED}, gone: true}
		AnswerInquiry(h, 7, inquiry())
		h.confirms[0](nil)
		if a := answers(h); len(a) != 1 || a[0] != txn.DecisionCommitted || len(h.proposals) != 0 {
			t.Fatalf("answers %v, %d proposals: want COMMITTED and no CAS", a, len(h.proposals))
		}
	})
	t.Run("coordinator alive", func(t *testing.T) {
		h := &fakeAnchor{fakeHost: newFakeHost(t)}
		AnswerInquiry(h, 7, inquiry())
		h.confirms[0](nil)
		if a := answers(h); len(a) != 1 || a[0] != txn.DecisionPending || len(h.proposals) != 0 {
			t.Fatalf("answers %v, %d proposals: want PENDING and no CAS", a, len(h.proposals))
		}
	})
	t.Run("coordinator gone", func(t *testing.T) {
		h := &fakeAnchor{fakeHost: newFakeHost(t), gone: true}
		AnswerInquiry(h, 7, inquiry())
		h.confirms[0](nil)
		if len(answers(h)) != 0 || len(h.proposals) != 1 {
			t.Fatalf("answered %v before the CAS applied (%d proposals)", answers(h), len(h.proposals))
		}
		cas := h.proposals[0].cmd.GetTxnRecordCas()
		if cas == nil || cas.NewState != vowdbpb.TxnState_TXN_ABORTED {
			t.Fatalf("proposed %v, want a CAS to ABORTED", h.proposals[0].cmd)
		}
		h.proposals[0].done(replica.Result{TxnState: vowdbpb.TxnState_TXN_ABORTED, Swapped: true})
		if a := answers(h); len(a) != 1 || a[0] != txn.DecisionAborted || h.presumed != 1 {
			t.Fatalf("answers %v presumed %d: want ABORTED, one presumed abort", a, h.presumed)
		}
	})
	t.Run("CAS lost to the coordinator's COMMITTED", func(t *testing.T) {
		h := &fakeAnchor{fakeHost: newFakeHost(t), gone: true}
		AnswerInquiry(h, 7, inquiry())
		h.confirms[0](nil)
		h.proposals[0].done(replica.Result{TxnState: vowdbpb.TxnState_TXN_COMMITTED})
		if a := answers(h); len(a) != 1 || a[0] != txn.DecisionCommitted || h.presumed != 0 {
			t.Fatalf("answers %v presumed %d: want COMMITTED (the record's), no presumed abort", a, h.presumed)
		}
	})
	t.Run("leadership not confirmed", func(t *testing.T) {
		h := &fakeAnchor{fakeHost: newFakeHost(t), record: &vowdbpb.TxnRecord{State: vowdbpb.TxnState_TXN_ABORTED}}
		AnswerInquiry(h, 7, inquiry())
		h.confirms[0](errNotLeader)
		if a := answers(h); len(a) != 0 {
			t.Fatalf("answered %v without a confirmed ReadIndex round", a)
		}
	})
}

var errNotLeader = errorString("not leader")

type errorString string

func (e errorString) Error() string { return string(e) }

// Rule 6: a decided, un-ended record is restored once two scans in a row
// saw it; ended or undecided records never are.
func TestRestorerNeedsTwoSightings(t *testing.T) {
	recs := map[uint64][]*vowdbpb.TxnRecord{
		7: {
			{TxnId: txnwire.KeyID(1, 1), State: vowdbpb.TxnState_TXN_COMMITTED, AnchorKey: []byte("b"), ParticipantRangeIds: []uint64{7, 8}},
			{TxnId: txnwire.KeyID(2, 1), State: vowdbpb.TxnState_TXN_ABORTED, Ended: true},
			{TxnId: txnwire.KeyID(3, 1), State: vowdbpb.TxnState_TXN_PENDING},
		},
	}
	read := func(r uint64) ([]*vowdbpb.TxnRecord, error) { return recs[r], nil }
	var r Restorer
	if got := r.Scan([]uint64{7}, read); len(got) != 0 {
		t.Fatalf("first scan restored %v", got)
	}
	got := r.Scan([]uint64{7}, read)
	if len(got) != 1 || got[0].Txn != 1 || got[0].Decision != txn.DecisionCommitted || got[0].Anchor != 7 || len(got[0].Participants) != 2 {
		t.Fatalf("second scan restored %+v, want t1 COMMITTED anchored at r7", got)
	}
	recs[7] = recs[7][1:] // t1 ended meanwhile
	if got := r.Scan([]uint64{7}, read); len(got) != 0 {
		t.Fatalf("restored %v after the record ended", got)
	}
}

// An inquiry that reaches a range no longer holding the anchor key (a
// split moved the record) is not answered from it: no answer, no CAS.
func TestAnswerInquiryAfterSplitAway(t *testing.T) {
	h := &fakeAnchor{fakeHost: newFakeHost(t), gone: true}
	h.status = &replica.Status{Term: 5, LeaderID: 1, Desc: &vowdbpb.RangeDescriptor{RangeId: 7, StartKey: []byte("a"), EndKey: []byte("b")}}
	AnswerInquiry(h, 7, inquiry())
	h.confirms[0](nil)
	if a := answers(h); len(a) != 0 || len(h.proposals) != 0 {
		t.Fatalf("answers %v, %d proposals: the range no longer holds the anchor key", a, len(h.proposals))
	}
}
