package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// The transaction side of each node is the server's own code (package
// txnhost): a Tenure per led range and a Gateway. This file is the
// simulated node as their host: proposals and ReadIndex rounds report from
// a later poll, messages go through the simulated network, and the clock is
// the tick.

// tickDuration maps the simulated tick onto the drivers' clock.
const tickDuration = 10 * time.Millisecond

// simTime is tick as a time for the drivers.
func simTime(tick int64) time.Time { return time.Unix(0, 0).Add(time.Duration(tick) * tickDuration) }

// nodeHost is a simulated node as txnhost.Host and txnhost.GatewayHost. Its
// callbacks belong to one incarnation: a crash drops them with the node's
// pending proposals and reads.
type nodeHost struct{ n *node }

var (
	_ txnhost.Host        = nodeHost{}
	_ txnhost.GatewayHost = nodeHost{}
	_ txnhost.AnchorHost  = nodeHost{}
	_ txnhost.RouteHost   = nodeHost{}
)

func (h nodeHost) Gateway() *txnhost.Gateway { return h.n.gw }

func (h nodeHost) RangeForKey(key []byte) (uint64, bool) {
	if r := h.n.sched.ReplicaForKey(key); r != nil {
		return r.RangeID, true
	}
	return 0, false
}

// LeaderHint is this node's replica's idea of the leader, as the server's
// first guess.
func (h nodeHost) LeaderHint(rangeID uint64) uint64 {
	if st := h.n.status(rangeID); st != nil {
		return st.LeaderID
	}
	return 0
}

// AnyReplicaFor stands in for the server's descriptor cache with the
// simulator's global view of the ranges.
func (h nodeHost) AnyReplicaFor(key []byte) uint64 {
	for _, id := range h.n.w.rangeFor(key).replicas {
		if id != h.n.id {
			return id
		}
	}
	return 0
}

func (h nodeHost) Forward(node uint64, m txn.Message, hops int) {
	w := h.n.w
	w.send(h.n.id, node, 0, m.Type.String(), func() { w.nodes[node-1].dispatch(m, hops) })
}

// WithTenure runs fn with the live tenure of rangeID; without one it starts
// building it and drops the message (the sender resends).
func (h nodeHost) WithTenure(rangeID uint64, fn func(*txnhost.Tenure)) {
	if tr := h.n.current(rangeID); tr != nil {
		fn(tr)
		return
	}
	h.n.build(rangeID)
}

func (h nodeHost) NodeID() uint64 { return h.n.id }

func (h nodeHost) Now() time.Time { return simTime(h.n.w.now) }

func (h nodeHost) Status(rangeID uint64) *replica.Status { return h.n.status(rangeID) }

func (h nodeHost) Propose(rangeID uint64, cmd *vowdbpb.Command, done func(replica.Result)) {
	if cmd.GetOnePhaseTxn().GetDecide() != nil {
		inner, w := done, h.n.w
		done = func(res replica.Result) {
			if res.Err == nil && res.TxnState == vowdbpb.TxnState_TXN_ABORTED {
				w.saw("anchor commit lost to an ABORTED record")
			}
			inner(res)
		}
	}
	h.n.propose(rangeID, cmd, done)
}

func (h nodeHost) ConfirmLeadership(rangeID uint64, done func(error)) { h.n.readIndex(rangeID, done) }

func (h nodeHost) Send(msgs []txn.Message) {
	for _, m := range msgs {
		h.n.sendTxn(m)
	}
}

func (h nodeHost) TenureEnded(t *txnhost.Tenure, why string) {
	n := h.n
	if n.tenures[t.Range()] == t {
		delete(n.tenures, t.Range())
	}
	n.w.event("node %d range %d tenure %x ended: %s", n.id, t.Range(), t.Number(), why)
}

func (h nodeHost) Aborted(t *txnhost.Tenure, id lock.TxnID, ab *vowdbpb.TxnAbort) {
	why := abortWhy(ab)
	h.n.w.saw("range abort: " + why)
	h.n.w.event("range %d aborts t%d: %s", t.Range(), id, txnhost.DescribeAbort(ab))
}

func (h nodeHost) LocalDeadlock(v deadlock.Victim) {
	h.n.w.event("node %d: local deadlock, victim t%d of cycle %v", h.n.id, v.Txn, v.Cycle)
}

func (h nodeHost) Invariant(t *txnhost.Tenure, msg string) {
	h.n.w.fail("node %d range %d: %s", h.n.id, t.Range(), msg)
}

func (h nodeHost) ProposeAt(_ txn.RangeID, anchorKey []byte, cmd *vowdbpb.Command, done func(vowdbpb.TxnState, error)) {
	// By key, as the server: a split may have moved the record.
	rangeID := h.n.w.rangeFor(anchorKey).id
	h.n.proposeAt(rangeID, cmd, func(res replica.Result, err error) {
		if err == nil && len(cmd.GetEndTxns().GetEnds()) > 1 {
			h.n.w.saw("ENDs batched in one entry")
		}
		done(res.TxnState, err)
	})
}

func (h nodeHost) Background(fn func()) { fn() }

func (h nodeHost) DecisionUnknown(r txn.DecisionRecord, err error) {
	h.n.w.event("node %d: decision t%d.%d %v outcome unknown: %v", h.n.id, r.Txn, r.Attempt, r.Decision, err)
}

func (h nodeHost) TxnRecord(rangeID uint64, id lock.TxnID, attempt uint64) (*vowdbpb.TxnRecord, error) {
	rec, err := replica.TxnRecord(h.n.eng, rangeID, txnwire.KeyID(id, attempt))
	if err != nil {
		h.n.w.fail("node %d: txn record: %v", h.n.id, err)
	}
	return rec, err
}

func (h nodeHost) CoordinatorGone(node uint64, id lock.TxnID, attempt uint64, done func(bool)) {
	done(h.n.coordinatorGone(node, id, attempt))
}

func (h nodeHost) PresumedAbort(m txn.Message) {
	h.n.w.saw("presumed abort")
	h.n.w.event("node %d: t%d.%d presumed aborted, coordinator %d gone", h.n.id, m.Txn, m.Attempt, m.Coordinator)
}

// abortWhy names an abort reason the way the coverage counts it.
// idleTimeout is the tenures' txnhost.Config.IdleTimeout.
func idleTimeout(cfg Config) time.Duration {
	if !cfg.KeepAlive {
		return 0
	}
	return idleTicks * tickDuration
}

func abortWhy(ab *vowdbpb.TxnAbort) string {
	switch ab.Reason {
	case vowdbpb.TxnAbort_LOCK_TIMEOUT:
		return "lock wait timeout"
	case vowdbpb.TxnAbort_DEADLINE:
		return "deadline"
	case vowdbpb.TxnAbort_ROLLBACK:
		return "rollback"
	case vowdbpb.TxnAbort_DEADLOCK:
		return "deadlock victim"
	case vowdbpb.TxnAbort_IDLE:
		return "idle"
	}
	return ab.Reason.String()
}

// opReply is a range's answer to a client operation.
type opReply struct {
	term    uint64 // the tenure, for the client's Participation
	found   bool
	value   []byte
	abort   string // non-empty: the txn was aborted here (or the op refused)
	retry   bool   // not the leader or no tenure yet: nothing happened
	rangeID uint64
}

// build starts building a tenure for rangeID as the server does: once a
// barrier entry proposed in this term applied, every entry before it has
// applied, so the prepare records read afterwards are complete (rule 6).
func (n *node) build(rangeID uint64) {
	if n.building[rangeID] {
		return
	}
	st := n.status(rangeID)
	if st == nil || st.LeaderID != n.id || st.Desc == nil {
		return
	}
	n.building[rangeID] = true
	epoch := n.epoch
	n.propose(rangeID, &vowdbpb.Command{}, func(res replica.Result) {
		if n.epoch != epoch || !n.up {
			return
		}
		delete(n.building, rangeID)
		st2 := n.status(rangeID)
		if res.Err != nil || st2 == nil || st2.Term != st.Term || st2.LeaderID != n.id {
			return
		}
		recs, err := replica.PrepareRecords(n.eng, rangeID)
		if err != nil {
			n.w.fail("node %d range %d: prepare records: %v", n.id, rangeID, err)
			return
		}
		prepared := txnhost.PreparedFromRecords(rangeID, recs)
		n.w.tenureGen++
		term := st.Term<<16 | (n.w.tenureGen & 0xffff)
		tr, err := txnhost.NewTenure(nodeHost{n}, txnhost.Config{Range: rangeID, RaftTerm: st.Term, Tenure: term,
			Start: st2.Desc.StartKey, End: st2.Desc.EndKey, Prepared: prepared, InquireTicks: inquireTicks,
			MaxFinished: maxFinishedTxns, PipelineRecords: n.w.cfg.PipelineRecords, BugNoLocks: n.w.cfg.Bug == "no-locks",
			IdleTimeout: idleTimeout(n.w.cfg)})
		if err != nil {
			n.w.fail("node %d range %d: new tenure: %v", n.id, rangeID, err)
			return
		}
		if old := n.tenures[rangeID]; old != nil {
			old.Kill("replaced")
		}
		n.tenures[rangeID] = tr
		if len(prepared) > 0 {
			n.w.saw("tenure rebuilt with prepared txns")
		}
		n.w.event("node %d range %d tenure %x built, %d prepared", n.id, rangeID, term, len(prepared))
	})
}

// current returns the live tenure of rangeID if this node still leads it
// in the tenure's term.
func (n *node) current(rangeID uint64) *txnhost.Tenure {
	tr := n.tenures[rangeID]
	if tr == nil || tr.Dead() {
		return nil
	}
	if !tr.Current(n.status(rangeID)) {
		tr.Kill("leadership lost")
		return nil
	}
	return tr
}

// op serves one client operation (rule 9: locks are taken when the op is
// issued). reply is called exactly once.
func (n *node) op(id lock.TxnID, attempt, age uint64, key, value []byte, write bool, reply func(opReply)) {
	if int64(attempt) < n.w.now-retentionTicks/2 {
		// As the server: its state could be collected while it runs.
		reply(opReply{abort: "began more than half the txn retention ago"})
		return
	}
	ri := n.w.rangeFor(key)
	tr := n.current(ri.id)
	if tr == nil {
		n.build(ri.id)
		reply(opReply{retry: true})
		return
	}
	mode := lock.S
	var wr *txn.Write
	if write {
		mode, wr = lock.X, &txn.Write{Key: key, Value: value}
	}
	// The ACTIVE deadline also ends early enough that a PREPARE or a
	// one-phase commit applies above the txn horizon, as the server's
	// rule (retention over twice the transaction limit) ensures there;
	// the simulator's retention is shorter, to collect under faults.
	deadline := min(n.w.now+maxTxnTicks, int64(attempt)+retentionTicks-proposalTicks-10)
	op := txnhost.Op{Txn: id, Attempt: attempt, Span: lock.Point(key), Mode: mode, Write: wr, Age: age,
		Deadline: simTime(deadline), LockTimeout: lockTimeout * tickDuration}
	err := tr.Do(simTime(n.w.now), op, func(_ time.Duration, ab *vowdbpb.TxnAbort) {
		if ab != nil {
			reply(opReply{abort: txnhost.DescribeAbort(ab)})
			return
		}
		resp := opReply{term: tr.Number(), rangeID: tr.Range()}
		if write {
			reply(resp)
			return
		}
		// As the server: no ReadIndex per read; the vote confirms the term.
		if n.current(tr.Range()) != tr {
			reply(opReply{abort: "tenure ended before the read"})
			return
		}
		v, err := n.eng.Get(keys.UserKey(key))
		switch {
		case err == nil:
			resp.found, resp.value = true, v
		case !errors.Is(err, storage.ErrNotFound):
			n.w.fail("node %d: read %q: %v", n.id, key, err)
		}
		reply(resp)
	})
	if err != nil {
		reply(opReply{abort: fmt.Sprintf("refused: %v", err)})
	}
}
