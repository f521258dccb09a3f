package server

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// plainTxnBit marks the lock-table ids of non-transactional operations,
// which hold one lock for one Raft round. User txn ids are below it.
const plainTxnBit = lock.TxnID(1) << 63

// txnRange is the transaction side of one range on its leader, for one
// leader tenure: the lock table, the 2PC participant (package txn) and the
// requests waiting for locks. It is the driver of the pure participant: it
// feeds it operations and messages and carries out its Ready in the order
// package txn documents (records through the range's Raft log, then the
// messages that depended on them).
//
// A tenure ends when the replica loses leadership, its raft term changes,
// its span changes (split) or a record could not be made durable; the next
// request builds a new tenure from the durable prepare records (rule 6).
// The tenure number, not the raft term, is what clients and PREPAREs carry
// as "term" (rule 8): it changes whenever in-memory locks were lost.
type txnRange struct {
	l        *txnLayer
	id       uint64
	raftTerm uint64
	tenure   uint64
	start    []byte
	end      []byte
	sched    *multiraft.Scheduler
	r        *replica.Replica

	mu      sync.Mutex
	dead    bool
	locks   lock.Table
	part    *txn.Participant
	meta    map[lock.TxnID]*txnMeta
	waiters map[lock.TxnID]*waiter
	aborted map[lock.TxnID]*vowdbpb.TxnAbort // why ACTIVE txns were aborted here (bounded)
	abOrder []lock.TxnID
	// rolledBack: the highest attempt of each id its client rolled back
	// before any operation of it arrived here (bounded); later operations
	// of those attempts are refused.
	rolledBack map[lock.TxnID]uint64
	rbOrder    []lock.TxnID
	pumping    bool
}

// txnMeta is what the leader knows of a txn from its operations.
type txnMeta struct {
	bytes    int // bytes of keys and values written here
	attempt  uint64
	age      uint64
	gateway  uint64
	deadline time.Time
}

type waiter struct {
	span     lock.Span
	mode     lock.Mode
	since    time.Time
	blockers []lock.TxnID
	done     chan *vowdbpb.TxnAbort // nil: granted
}

const maxAbortMemory = 10000

func (tr *txnRange) isDead() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.dead
}

// kill ends the tenure: waiters fail, locks are dropped with the table.
func (tr *txnRange) killLocked(why string) {
	if tr.dead {
		return
	}
	tr.dead = true
	for id, w := range tr.waiters {
		delete(tr.waiters, id)
		w.done <- &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: tr.id}
	}
	tr.l.n.log.Debug("txn tenure ended", "range", tr.id, "tenure", tr.tenure, "why", why)
	tr.l.dropRange(tr)
}

// acquire takes a lock for id, waiting up to timeout. It returns how long
// it waited and, if the lock was not granted, why.
func (tr *txnRange) acquire(ctx context.Context, id lock.TxnID, span lock.Span, mode lock.Mode, timeout time.Duration) (time.Duration, *vowdbpb.TxnAbort) {
	w, ab := tr.request(id, span, mode)
	if w == nil {
		return 0, ab
	}
	return tr.wait(ctx, id, w, timeout)
}

// request asks for a lock without waiting: a nil waiter means granted (or
// refused, with ab set); otherwise wait for the returned waiter.
func (tr *txnRange) request(id lock.TxnID, span lock.Span, mode lock.Mode) (*waiter, *vowdbpb.TxnAbort) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.dead {
		return nil, &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: tr.id}
	}
	granted, blockers := tr.locks.Acquire(id, span, mode)
	if granted {
		return nil, nil
	}
	w := &waiter{span: span, mode: mode, since: time.Now(), blockers: blockers, done: make(chan *vowdbpb.TxnAbort, 1)}
	tr.waiters[id] = w
	if id&plainTxnBit == 0 {
		tr.breakLocalDeadlocksLocked()
	}
	return w, nil
}

func (tr *txnRange) wait(ctx context.Context, id lock.TxnID, w *waiter, timeout time.Duration) (time.Duration, *vowdbpb.TxnAbort) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ab := <-w.done:
		return time.Since(w.since), ab
	case <-t.C:
	case <-ctx.Done():
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.waiters[id] != w {
		return time.Since(w.since), <-w.done // granted or aborted meanwhile
	}
	ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_LOCK_TIMEOUT, Key: w.span.Start, LockMode: w.mode.String(),
		WaitMicros: time.Since(w.since).Microseconds(), RangeId: tr.id}
	if len(w.blockers) > 0 {
		ab.ConflictingTxnId = uint64(w.blockers[0])
	}
	tr.abortLocked(id, ab)
	<-w.done
	return time.Since(w.since), ab
}

// grantLocked wakes the waiters whose requests the lock table granted.
func (tr *txnRange) grantLocked(granted []lock.Lock) {
	for _, g := range granted {
		if w := tr.waiters[g.Txn]; w != nil {
			delete(tr.waiters, g.Txn)
			w.done <- nil
		}
	}
}

func (tr *txnRange) releaseLocked(id lock.TxnID) {
	tr.grantLocked(tr.locks.ReleaseAll(id))
}

// abortLocked aborts an ACTIVE txn here on the leader's own initiative
// (deadlock victim, lock-wait timeout, deadline). A prepared txn is never
// aborted this way (rule 2); false is returned for it.
func (tr *txnRange) abortLocked(id lock.TxnID, ab *vowdbpb.TxnAbort) bool {
	if id&plainTxnBit != 0 {
		if w := tr.waiters[id]; w != nil {
			delete(tr.waiters, id)
			w.done <- ab
		}
		tr.releaseLocked(id)
		return true
	}
	if err := tr.part.Abort(id); err != nil {
		return false
	}
	if w := tr.waiters[id]; w != nil {
		delete(tr.waiters, id)
		w.done <- ab
	}
	tr.rememberAbort(id, ab)
	tr.releaseLocked(id)
	tr.pumpLocked()
	return true
}

func (tr *txnRange) rememberAbort(id lock.TxnID, ab *vowdbpb.TxnAbort) {
	if _, ok := tr.aborted[id]; !ok {
		tr.abOrder = append(tr.abOrder, id)
	}
	tr.aborted[id] = ab
	for len(tr.abOrder) > maxAbortMemory {
		delete(tr.aborted, tr.abOrder[0])
		tr.abOrder = tr.abOrder[1:]
	}
}

// info is the detector's view of a txn.
func (tr *txnRange) infoLocked(id lock.TxnID) deadlock.TxnInfo {
	inf := deadlock.TxnInfo{Prepared: tr.part.State(id) == txn.StatePrepared}
	if m := tr.meta[id]; m != nil {
		inf.Age = m.age
	}
	return inf
}

// breakLocalDeadlocksLocked breaks the cycles of this lock table at once;
// cycles through several ranges are the global detector's (txn_layer.go).
func (tr *txnRange) breakLocalDeadlocksLocked() {
	var edges []lock.Edge
	for _, e := range tr.locks.WaitsFor() {
		if e.Waiter&plainTxnBit == 0 && e.Holder&plainTxnBit == 0 {
			edges = append(edges, e)
		}
	}
	if len(edges) < 2 {
		return
	}
	var d deadlock.Detector
	d.Report(tr.l.n.nodeID(), edges)
	for _, v := range d.Detect(tr.infoLocked) {
		tr.l.recordDeadlock(v)
		tr.abortVictimLocked(v)
	}
}

func (tr *txnRange) abortVictimLocked(v deadlock.Victim) bool {
	w := tr.waiters[v.Txn]
	ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_DEADLOCK, RangeId: tr.id}
	for _, t := range v.Cycle {
		ab.Cycle = append(ab.Cycle, uint64(t))
	}
	if w != nil {
		ab.Key, ab.LockMode, ab.WaitMicros = w.span.Start, w.mode.String(), time.Since(w.since).Microseconds()
		if len(w.blockers) > 0 {
			ab.ConflictingTxnId = uint64(w.blockers[0])
		}
	} else if tr.part.State(v.Txn) != txn.StateActive {
		return false
	}
	return tr.abortLocked(v.Txn, ab)
}

// pumpLocked carries out the participant's Ready: lock releases and
// messages at once, records through Raft (one Ready in flight at a time).
// Messages in a Ready never depend on that Ready's records, so sending them
// before the records are durable is the documented order's equivalent.
func (tr *txnRange) pumpLocked() {
	for !tr.pumping && !tr.dead && tr.part.HasReady() {
		rd := tr.part.Ready()
		for _, id := range rd.Release {
			// A live state means a newer attempt of the same id holds the
			// locks now; the older attempt's were released when it started.
			if st := tr.part.State(id); st != txn.StateActive && st != txn.StatePrepared {
				tr.releaseLocked(id)
				delete(tr.meta, id)
			}
		}
		if len(rd.Messages) > 0 {
			var msgs, readOnly []txn.Message
			for _, m := range rd.Messages {
				if m.Type == txn.MsgVote && m.Vote == txn.VoteReadOnly {
					readOnly = append(readOnly, m)
				} else {
					msgs = append(msgs, m)
				}
			}
			if len(msgs) > 0 {
				go tr.l.send(msgs)
			}
			if len(readOnly) > 0 {
				go tr.confirmReadOnly(readOnly)
			}
		}
		if len(rd.Records) == 0 {
			tr.part.Advance(rd)
			continue
		}
		tr.pumping = true
		go tr.persist(rd)
		return
	}
}

// confirmReadOnly sends READ-ONLY votes only after a ReadIndex round
// proves this node still leads the range in the tenure's term. A READ-ONLY
// vote writes nothing to the Raft log, so without this a deposed leader
// that has not noticed yet could vouch for S locks a new leader no longer
// holds (rules 8, 9).
func (tr *txnRange) confirmReadOnly(votes []txn.Message) {
	rd := replica.NewRead()
	tr.sched.Read(tr.id, rd)
	t := time.NewTimer(tr.l.n.cfg.RequestTimeout)
	defer t.Stop()
	var err error
	select {
	case err = <-rd.Done:
	case <-t.C:
		err = fmt.Errorf("leadership not confirmed in time")
	}
	st := tr.r.Status()
	if err == nil && (st.Term != tr.raftTerm || st.LeaderID != tr.l.n.nodeID()) {
		err = fmt.Errorf("leadership lost")
	}
	if err != nil {
		tr.mu.Lock()
		tr.killLocked("read-only vote not confirmed: " + err.Error())
		tr.mu.Unlock()
		return // no vote: the coordinator times out and aborts
	}
	tr.l.send(votes)
}

// persist makes rd's records durable through the range's Raft log, then
// confirms them to the participant. If any fails the tenure ends without
// Advance, as package txn requires.
func (tr *txnRange) persist(rd txn.Ready) {
	ps := make([]*replica.Proposal, len(rd.Records))
	for i, rec := range rd.Records {
		ps[i] = replica.NewProposal(txnwire.RecordCommand(rec))
		tr.sched.Propose(tr.id, ps[i])
	}
	var failure string
	timeout := time.NewTimer(tr.l.n.cfg.RequestTimeout)
	defer timeout.Stop()
	for i, p := range ps {
		select {
		case res := <-p.Done:
			if res.Err != nil {
				failure = fmt.Sprintf("%v: %v", rd.Records[i], res.Err)
			} else if want := txnwire.ExpectedState(rd.Records[i]); res.TxnState != want {
				failure = fmt.Sprintf("%v applied as %v, want %v", rd.Records[i], res.TxnState, want)
				tr.l.n.log.Error("txn record applied unexpectedly", "range", tr.id, "record", rd.Records[i].String(),
					"state", res.TxnState.String())
			}
		case <-timeout.C:
			failure = fmt.Sprintf("%v: not applied in time", rd.Records[i])
		}
		if failure != "" {
			break
		}
	}
	if failure == "" {
		for _, rec := range rd.Records {
			switch r := rec.(type) {
			case txn.PrepareRecord:
				failpoint.Hit(failpoint.TxnAfterPrepareDurable)
			case txn.CommitRecord:
				if !r.OnePhase {
					failpoint.Hit(failpoint.TxnAfterCommitApplied)
				}
			}
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.pumping = false
	if failure == "" && tr.r.Status().Term != tr.raftTerm {
		failure = "leader term changed"
	}
	if failure != "" {
		tr.killLocked(failure)
		return
	}
	tr.part.Advance(rd)
	tr.pumpLocked()
}

// step hands a protocol message to the participant.
func (tr *txnRange) step(m txn.Message) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.dead {
		return
	}
	if err := tr.part.Step(m); err != nil {
		tr.l.n.log.Warn("txn message refused", "range", tr.id, "msg", m.String(), "err", err)
		return
	}
	tr.pumpLocked()
}

// tick advances the participant's clock and aborts ACTIVE txns that ran
// past their deadline (their locks would otherwise outlive a vanished
// client).
func (tr *txnRange) tick(now time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.dead {
		return
	}
	if st := tr.r.Status(); st.Term != tr.raftTerm || st.LeaderID != tr.l.n.nodeID() ||
		!bytes.Equal(st.Desc.GetStartKey(), tr.start) || !bytes.Equal(st.Desc.GetEndKey(), tr.end) {
		tr.killLocked("leadership or span changed")
		return
	}
	tr.part.Tick()
	for id, m := range tr.meta {
		if !m.deadline.IsZero() && now.After(m.deadline) && tr.part.State(id) == txn.StateActive {
			tr.abortLocked(id, &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_DEADLINE, RangeId: tr.id})
		}
	}
	tr.pumpLocked()
}

// edges returns this range's waits-for edges between transactions.
func (tr *txnRange) edges() []*vowdbpb.WaitsEdge {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []*vowdbpb.WaitsEdge
	for _, e := range tr.locks.WaitsFor() {
		if e.Waiter&plainTxnBit != 0 || e.Holder&plainTxnBit != 0 {
			continue
		}
		wi, hi := tr.infoLocked(e.Waiter), tr.infoLocked(e.Holder)
		out = append(out, &vowdbpb.WaitsEdge{Waiter: uint64(e.Waiter), Holder: uint64(e.Holder),
			WaiterAge: wi.Age, HolderAge: hi.Age, WaiterPrepared: wi.Prepared, HolderPrepared: hi.Prepared})
	}
	return out
}
