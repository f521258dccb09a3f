package txnhost

import (
	"testing"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
)

// fakeRoute is a scripted RouteHost: this node (1) has a replica of range
// 7 ([a, m)) whose leader the test sets, and knows range 9 ([m, max)) only
// through hints.
type fakeRoute struct {
	*fakeAnchor
	gw        *Gateway
	tenure    *Tenure
	forwarded []string
}

func (h *fakeRoute) Gateway() *Gateway { return h.gw }
func (h *fakeRoute) RangeForKey(key []byte) (uint64, bool) {
	if string(key) < "m" {
		return 7, true
	}
	return 0, false
}
func (h *fakeRoute) LeaderHint(rangeID uint64) uint64 {
	if rangeID == 7 {
		return h.status.LeaderID
	}
	return 3
}
func (h *fakeRoute) AnyReplicaFor([]byte) uint64 { return 2 }
func (h *fakeRoute) Forward(node uint64, m txn.Message, hops int) {
	h.forwarded = append(h.forwarded, m.Type.String()+"→n"+string(rune('0'+node))+" hops "+string(rune('0'+hops)))
}
func (h *fakeRoute) WithTenure(rangeID uint64, fn func(*Tenure)) {
	if rangeID == 7 && h.tenure != nil {
		fn(h.tenure)
	}
}

func newFakeRoute(t *testing.T) *fakeRoute {
	h := &fakeRoute{fakeAnchor: &fakeAnchor{fakeHost: newFakeHost(t)}}
	gw, err := NewGateway(h.fakeHost, 1, GatewayConfig{ResendTicks: 4, VoteTimeoutTicks: 100, DecideTimeoutTicks: 100})
	if err != nil {
		t.Fatal(err)
	}
	h.gw = gw
	h.tenure = newTenure(t, h.fakeHost)
	return h
}

func TestDispatch(t *testing.T) {
	t.Run("to a range led here: its tenure", func(t *testing.T) {
		h := newFakeRoute(t)
		var g grant
		_ = h.tenure.Do(t0, put(1, "b"), g.done)
		Dispatch(h, prepare(1, h.tenure.Number()), 0)
		if len(h.proposals) != 1 || len(h.forwarded) != 0 {
			t.Fatalf("proposals %d forwarded %v: want the prepare record proposed here", len(h.proposals), h.forwarded)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		h := newFakeRoute(t)
		var g grant
		_ = h.tenure.Do(t0, put(1, "b"), g.done)
		Dispatch(h, txn.Message{Type: MsgRollback, Txn: 1, Attempt: 1, To: txn.Addr{Range: 7}}, 0)
		if len(h.tenure.Held()) != 0 {
			t.Fatalf("locks after a dispatched rollback: %v", h.tenure.Held())
		}
	})
	t.Run("to a range led elsewhere: forwarded, at most twice", func(t *testing.T) {
		h := newFakeRoute(t)
		h.status = &replica.Status{Term: 6, LeaderID: 2, Desc: h.status.Desc}
		Dispatch(h, prepare(1, 1), 0)
		Dispatch(h, prepare(1, 1), MaxForwardHops)
		if len(h.forwarded) != 1 || h.forwarded[0] != "Prepare→n2 hops 1" {
			t.Fatalf("forwarded %v, want one Prepare to n2 (the second had used its hops)", h.forwarded)
		}
	})
	t.Run("to the gateway", func(t *testing.T) {
		h := newFakeRoute(t)
		Dispatch(h, txn.Message{Type: txn.MsgVote, Txn: 1, Attempt: 1, From: txn.Addr{Range: 7}, To: txn.Addr{Node: 1}, Vote: txn.VoteYes}, 0)
		if len(h.forwarded) != 0 || len(h.proposals) != 0 {
			t.Fatalf("a vote for an unknown txn went somewhere: %v", h.forwarded)
		}
	})
	t.Run("inquiry by anchor key, led here", func(t *testing.T) {
		h := newFakeRoute(t)
		h.record = &vowdbpb.TxnRecord{State: vowdbpb.TxnState_TXN_ABORTED}
		m := inquiry()
		m.To.Range = 99 // an anchor range id that split away: the key decides
		Dispatch(h, m, 0)
		h.confirms[0](nil)
		if a := answers(h.fakeAnchor); len(a) != 1 || a[0] != txn.DecisionAborted {
			t.Fatalf("answers %v, want ABORTED from the range holding the anchor key", a)
		}
	})
	t.Run("inquiry by anchor key, led elsewhere or unknown here", func(t *testing.T) {
		h := newFakeRoute(t)
		h.status = &replica.Status{Term: 6, LeaderID: 3, Desc: h.status.Desc}
		Dispatch(h, inquiry(), 0)
		m := inquiry()
		m.AnchorKey = []byte("x") // no replica here: a node from the descriptors
		Dispatch(h, m, 1)
		if len(h.forwarded) != 2 || h.forwarded[0] != "Inquire→n3 hops 1" || h.forwarded[1] != "Inquire→n2 hops 2" {
			t.Fatalf("forwarded %v", h.forwarded)
		}
	})
}
