package txnhost

import (
	"fmt"
	"slices"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
)

// What operators and the deadlock detector see of a tenure. Each view is a
// copy taken under the tenure's mutex.

// TxnView is a txn live (ACTIVE or PREPARED) in a tenure.
type TxnView struct {
	Txn     lock.TxnID
	Attempt uint64
	State   txn.State
	Age     uint64 // begin time, unix nanoseconds (0 if unknown)
	Gateway uint64
	Heard   time.Time // ACTIVE: when its client was last heard here
}

// Txns lists the live txns, by id.
func (t *Tenure) Txns() []TxnView {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return nil
	}
	var out []TxnView
	for _, id := range sortedIDs(t.meta) {
		m := t.meta[id]
		st := t.part.State(id)
		if st != txn.StateActive && st != txn.StatePrepared {
			continue
		}
		v := TxnView{Txn: id, Attempt: m.attempt, State: st, Age: m.age, Gateway: m.gateway}
		if st == txn.StateActive {
			v.Heard = m.heard
		}
		out = append(out, v)
	}
	return out
}

// WaitView is a lock request waiting in a tenure.
type WaitView struct {
	Waiter lock.TxnID // PlainTxnBit set: a single-key operation
	Key    []byte
	Mode   lock.Mode
	Since  time.Time
	Holder lock.TxnID // the first blocker, 0 if none known
}

// Waits lists the waiting lock requests, by waiter.
func (t *Tenure) Waits() []WaitView {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []WaitView
	for _, id := range sortedIDs(t.waiters) {
		w := t.waiters[id]
		v := WaitView{Waiter: id, Key: w.span.Start, Mode: w.mode, Since: w.since}
		if len(w.blockers) > 0 {
			v.Holder = w.blockers[0]
		}
		out = append(out, v)
	}
	return out
}

// Held lists the granted locks (none once the tenure is dead).
func (t *Tenure) Held() []lock.Lock {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return nil
	}
	return t.locks.AllHeld()
}

// Edges lists the waits-for edges between transactions (single-key
// operations left out), with what the detector needs to pick a victim.
func (t *Tenure) Edges() []*vowdbpb.WaitsEdge {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return nil
	}
	var out []*vowdbpb.WaitsEdge
	for _, e := range t.locks.WaitsFor() {
		if e.Waiter&PlainTxnBit != 0 || e.Holder&PlainTxnBit != 0 {
			continue
		}
		wi, hi := t.infoLocked(e.Waiter), t.infoLocked(e.Holder)
		out = append(out, &vowdbpb.WaitsEdge{Waiter: uint64(e.Waiter), Holder: uint64(e.Holder),
			WaiterAge: wi.Age, HolderAge: hi.Age, WaiterPrepared: wi.Prepared, HolderPrepared: hi.Prepared})
	}
	return out
}

// DescribeAbort is a one-line explanation of an abort for error messages.
func DescribeAbort(ab *vowdbpb.TxnAbort) string {
	s := "transaction aborted: " + ab.Reason.String()
	if ab.Key != nil {
		s += fmt.Sprintf(" on key %q", ab.Key)
	}
	if ab.ConflictingTxnId != 0 {
		s += fmt.Sprintf(" (conflicting txn %d)", ab.ConflictingTxnId)
	}
	if len(ab.Cycle) > 0 {
		s += fmt.Sprintf(" cycle %v", ab.Cycle)
	}
	return s
}

func sortedIDs[V any](m map[lock.TxnID]V) []lock.TxnID {
	out := make([]lock.TxnID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
