package txnhost

import (
	"github.com/vowdb/vowdb/internal/txn"
)

// MsgRollback is a protocol message outside package txn's: a client's
// rollback of an ACTIVE attempt, sent to each range it touched.
const MsgRollback txn.MsgType = 100

// MaxForwardHops bounds how often a message is forwarded toward a leader.
const MaxForwardHops = 2

// RouteHost is what Dispatch needs from the node a message arrived at.
// Moving messages between nodes (Forward) is the host's transport; which
// message goes where is decided here, the same in the server and the
// simulator.
type RouteHost interface {
	AnchorHost
	NodeID() uint64
	// Gateway is the node's coordinator driver.
	Gateway() *Gateway
	// RangeForKey names this node's replica holding key, if any.
	RangeForKey(key []byte) (rangeID uint64, ok bool)
	// LeaderHint names the node most likely to lead rangeID (0: unknown).
	LeaderHint(rangeID uint64) uint64
	// AnyReplicaFor names another node holding a replica of key's range
	// (0: unknown), for when this node has none.
	AnyReplicaFor(key []byte) uint64
	// Forward sends m, forwarded hops times so far, to node, best effort.
	Forward(node uint64, m txn.Message, hops int)
	// WithTenure runs fn with this node's live tenure of rangeID, building
	// one first if there is none (fn may then run later, or never if the
	// build fails: the sender resends).
	WithTenure(rangeID uint64, fn func(*Tenure))
}

// Dispatch handles protocol message m that arrived at h after hops
// forwards: a coordinator's message to the node's gateway; an inquiry at
// the leader of the range holding the txn's anchor key (by key: a split
// may have moved the record out of the anchor range the sender knows); any
// other message at the live tenure of its range if this node leads it,
// else forwarded toward the leader at most MaxForwardHops times.
func Dispatch(h RouteHost, m txn.Message, hops int) {
	self := h.NodeID()
	if m.To.Node != 0 {
		if uint64(m.To.Node) == self {
			_ = h.Gateway().Step(m)
		}
		return
	}
	if m.Type == txn.MsgInquire {
		rangeID, ok := h.RangeForKey(m.AnchorKey)
		var target uint64
		if ok {
			if st := h.Status(rangeID); st != nil && st.LeaderID == self {
				AnswerInquiry(h, rangeID, m)
				return
			}
			target = h.LeaderHint(rangeID)
		}
		if target == 0 || target == self {
			target = h.AnyReplicaFor(m.AnchorKey)
		}
		if hops < MaxForwardHops && target != 0 && target != self {
			h.Forward(target, m, hops+1)
		}
		return
	}
	rangeID := uint64(m.To.Range)
	if st := h.Status(rangeID); st == nil || st.LeaderID != self {
		if target := h.LeaderHint(rangeID); hops < MaxForwardHops && target != 0 && target != self {
			h.Forward(target, m, hops+1)
		}
		return
	}
	h.WithTenure(rangeID, func(t *Tenure) {
		if m.Type == MsgRollback {
			t.Rollback(m.Txn, m.Attempt)
			return
		}
		_ = t.Step(m)
	})
}
