package txnhost

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// PlainTxnBit marks the lock-table ids of non-transactional operations,
// which hold one lock for one Raft round. User txn ids are below it.
const PlainTxnBit = lock.TxnID(1) << 63

// maxAbortMemory bounds how many aborted or rolled-back ids a tenure
// remembers to explain a later operation's refusal.
const maxAbortMemory = 10000

// Host is what a Tenure needs from its node. See the package doc for the
// rule its methods follow (no call back before returning).
type Host interface {
	// NodeID is this node's id.
	NodeID() uint64
	// Now is the current time, for the events that arrive without one (a
	// lock granted because another txn released it).
	Now() time.Time
	// Status is the status of this node's replica of rangeID, nil if none.
	Status(rangeID uint64) *replica.Status
	// Propose proposes cmd on rangeID's Raft log; done gets the result of
	// applying it, or an error if it was not (or not known to be) applied.
	Propose(rangeID uint64, cmd *vowdbpb.Command, done func(replica.Result))
	// ConfirmLeadership runs a ReadIndex round on rangeID; done gets nil
	// once this node's leadership in its current term is confirmed.
	ConfirmLeadership(rangeID uint64, done func(error))
	// Send delivers protocol messages, best effort.
	Send(msgs []txn.Message)
	// TenureEnded is told once when a tenure dies.
	TenureEnded(t *Tenure, why string)
	// Aborted is told when a tenure aborts an ACTIVE txn on its own
	// initiative (deadlock victim, lock-wait timeout, deadline, rollback).
	Aborted(t *Tenure, id lock.TxnID, ab *vowdbpb.TxnAbort)
	// LocalDeadlock is told of each cycle a tenure broke in its own table.
	LocalDeadlock(v deadlock.Victim)
	// Invariant is told when the tenure meets a state the protocol rules
	// out: a record applied in an unexpected state (the tenure ends), the
	// detector naming a prepared txn as a victim (refused). Either is a bug.
	Invariant(t *Tenure, msg string)
}

// Config is what a new tenure is built from.
type Config struct {
	Range    uint64
	RaftTerm uint64 // the raft term the barrier applied in
	Tenure   uint64 // the tenure number clients and PREPAREs carry (rule 8)
	Start    []byte // the range's span when the tenure was built
	End      []byte
	// Prepared are the range's durable prepare records, read after the
	// barrier applied (rule 6).
	Prepared     []txn.PrepareRecord
	InquireTicks int
	MaxFinished  int
	// MaxTxnBytes limits the bytes of keys and values one txn writes on
	// the range; 0 means no limit.
	MaxTxnBytes int
	// IdleTimeout aborts an ACTIVE txn that heard neither an operation nor
	// a KeepAlive for that long and waits for no lock here: its client
	// vanished, or its rollback was lost on the way. 0 means never (the
	// txn's deadline still ends it).
	IdleTimeout time.Duration
	// PipelineRecords is how many records may be in the range's Raft log
	// at once before the participant's next records wait for them (0 or
	// 1: one batch at a time). Below it, each batch is proposed as soon as
	// the participant emits it: lower latency at low load, but a busy
	// range's records spread over more Raft rounds, each with its fsyncs.
	PipelineRecords int
	// BugNoLocks grants every lock at once, breaking strict two-phase
	// locking (rule 9). Only the simulator's self-test sets it, to prove
	// its checkers catch the anomalies that follow.
	BugNoLocks bool
}

// Tenure is the transaction side of one range on its leader for one leader
// tenure (package doc).
type Tenure struct {
	host     Host
	id       uint64
	raftTerm uint64
	num      uint64
	start    []byte
	end      []byte
	maxBytes int
	idle     time.Duration
	pipeline int
	noLocks  bool

	mu      sync.Mutex
	dead    bool
	locks   lock.Table
	part    *txn.Participant
	meta    map[lock.TxnID]*meta
	waiters map[lock.TxnID]*waiter
	aborted map[lock.TxnID]*vowdbpb.TxnAbort // why ACTIVE txns were aborted here (bounded)
	abOrder []lock.TxnID
	// rolledBack: the highest attempt of each id its client rolled back
	// before any operation of it arrived here (bounded); later operations
	// of those attempts are refused.
	rolledBack map[lock.TxnID]uint64
	rbOrder    []lock.TxnID
	// inflight are the taken Readys whose records are being made durable,
	// in the order taken (and proposed, so applied).
	inflight []*inflight
	// fired are callbacks to run once mu is released.
	fired deferred
}

// meta is what the leader knows of a txn from its operations.
type meta struct {
	bytes    int
	attempt  uint64
	age      uint64
	gateway  uint64
	deadline time.Time
	heard    time.Time // the last operation, grant or keep-alive of the attempt
}

type waiter struct {
	span     lock.Span
	mode     lock.Mode
	since    time.Time
	timeout  time.Time
	blockers []lock.TxnID
	done     func(waited time.Duration, ab *vowdbpb.TxnAbort)
}

// NewTenure builds a live tenure: the participant from the prepare records,
// their X locks taken again.
func NewTenure(h Host, cfg Config) (*Tenure, error) {
	part, relock, err := txn.NewParticipant(txn.ParticipantConfig{Range: txn.RangeID(cfg.Range), Term: cfg.Tenure,
		InquireTicks: cfg.InquireTicks, MaxFinished: cfg.MaxFinished}, cfg.Prepared)
	if err != nil {
		return nil, err
	}
	t := &Tenure{host: h, id: cfg.Range, raftTerm: cfg.RaftTerm, num: cfg.Tenure, start: cfg.Start, end: cfg.End,
		maxBytes: cfg.MaxTxnBytes, idle: cfg.IdleTimeout, pipeline: max(cfg.PipelineRecords, 1), noLocks: cfg.BugNoLocks, part: part, meta: map[lock.TxnID]*meta{},
		waiters: map[lock.TxnID]*waiter{}, aborted: map[lock.TxnID]*vowdbpb.TxnAbort{}, rolledBack: map[lock.TxnID]uint64{}}
	for _, lk := range relock {
		t.locks.Acquire(lk.Txn, lk.Span, lk.Mode)
	}
	t.lock()
	t.pumpLocked()
	t.unlock()
	return t, nil
}

// PreparedFromRecords converts a range's durable prepare records (as
// replica.PrepareRecords returns them) for Config.Prepared, in key order.
func PreparedFromRecords(rangeID uint64, recs map[string]*vowdbpb.PrepareTxnOp) []txn.PrepareRecord {
	var out []txn.PrepareRecord
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		if rec, ok := txnwire.PrepareFromPB(rangeID, []byte(id), recs[id]); ok {
			out = append(out, rec)
		}
	}
	return out
}

func (t *Tenure) lock() { t.mu.Lock() }

// unlock releases mu, then runs the callbacks produced meanwhile.
func (t *Tenure) unlock() { t.fired.unlock(&t.mu) }

// Range is the range id.
func (t *Tenure) Range() uint64 { return t.id }

// Number is the tenure number (rule 8).
func (t *Tenure) Number() uint64 { return t.num }

// RaftTerm is the raft term the tenure was built in.
func (t *Tenure) RaftTerm() uint64 { return t.raftTerm }

// Span is the range's span when the tenure was built.
func (t *Tenure) Span() (start, end []byte) { return t.start, t.end }

// Dead reports whether the tenure ended.
func (t *Tenure) Dead() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dead
}

// Current reports whether t is the live tenure for the replica status st:
// same raft term and span, this node the leader, not dead.
func (t *Tenure) Current(st *replica.Status) bool {
	return st != nil && st.Term == t.raftTerm && st.LeaderID == t.host.NodeID() &&
		bytes.Equal(st.Desc.GetStartKey(), t.start) && bytes.Equal(st.Desc.GetEndKey(), t.end) && !t.Dead()
}

// Kill ends the tenure.
func (t *Tenure) Kill(why string) {
	t.lock()
	t.killLocked(why)
	t.unlock()
}

func (t *Tenure) killLocked(why string) {
	if t.dead {
		return
	}
	t.dead = true
	for _, id := range sortedIDs(t.waiters) {
		w := t.waiters[id]
		delete(t.waiters, id)
		t.fire(w, &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: t.id}, time.Time{})
	}
	h := t.host
	t.fired.add(func() { h.TenureEnded(t, why) })
}

// fire schedules w's callback (nil ab: granted).
func (t *Tenure) fire(w *waiter, ab *vowdbpb.TxnAbort, now time.Time) {
	waited := time.Duration(0)
	if !now.IsZero() && now.After(w.since) {
		waited = now.Sub(w.since)
	}
	if ab != nil && ab.WaitMicros == 0 && waited > 0 {
		ab.WaitMicros = waited.Microseconds()
	}
	done := w.done
	t.fired.add(func() { done(waited, ab) })
}

// Op is one transactional operation on the range.
type Op struct {
	Txn     lock.TxnID
	Attempt uint64
	Span    lock.Span
	Mode    lock.Mode
	Write   *txn.Write // nil for a read
	Age     uint64     // the txn's begin time, for the detector's choice
	Gateway uint64
	// Deadline: an ACTIVE txn still holding locks here after it is
	// aborted (its locks would otherwise outlive a vanished client).
	Deadline time.Time
	// LockTimeout bounds the wait for the lock.
	LockTimeout time.Duration
}

// Refusal is why an operation was refused before it took a lock.
type Refusal struct {
	Abort *vowdbpb.TxnAbort // the txn is (now) aborted here; nil when Vowed
	Limit bool              // the txn wrote more than MaxTxnBytes here (and was aborted)
	Vowed bool              // the txn already voted: no more operations
	Msg   string
}

func (r *Refusal) Error() string { return r.Msg }

// Do admits op (rule 9: the lock is taken when the op is issued) and
// requests its lock. done is called exactly once, after the lock was
// granted (ab nil) or the wait failed; a non-nil error means op was refused
// and done is not called.
func (t *Tenure) Do(now time.Time, op Op, done func(waited time.Duration, ab *vowdbpb.TxnAbort)) error {
	t.lock()
	defer t.unlock()
	id := op.Txn
	if t.dead {
		return &Refusal{Abort: &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: t.id},
			Msg: fmt.Sprintf("range %d lost its transaction state (leader change)", t.id)}
	}
	if a, ok := t.rolledBack[id]; ok && op.Attempt <= a {
		return &Refusal{Abort: &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_ROLLBACK, RangeId: t.id},
			Msg: fmt.Sprintf("transaction %d attempt %d was rolled back", id, op.Attempt)}
	}
	if m := t.meta[id]; m != nil && m.attempt < op.Attempt && t.part.State(id) == txn.StateActive {
		t.releaseLocked(id) // the older attempt aborted: its locks go before the new attempt takes any
	}
	size := 0
	if op.Write != nil {
		size = len(op.Write.Key) + len(op.Write.Value)
	}
	if m := t.meta[id]; t.maxBytes > 0 && size > 0 && m != nil && m.attempt == op.Attempt && m.bytes+size > t.maxBytes {
		ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_CONFLICT, Key: op.Span.Start, RangeId: t.id}
		t.abortLocked(id, ab)
		return &Refusal{Abort: ab, Limit: true,
			Msg: fmt.Sprintf("transaction %d writes more than %d bytes on range %d; it was aborted", id, t.maxBytes, t.id)}
	}
	if err := t.part.Admit(txn.Op{Txn: id, Attempt: op.Attempt, Span: op.Span, Mode: op.Mode, Write: op.Write}); err != nil {
		if errors.Is(err, txn.ErrVowed) {
			return &Refusal{Vowed: true, Msg: fmt.Sprintf("transaction %d is already committing on range %d: no more operations", id, t.id)}
		}
		if ab := t.aborted[id]; ab != nil {
			return &Refusal{Abort: ab, Msg: DescribeAbort(ab)}
		}
		return &Refusal{Abort: &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: t.id},
			Msg: fmt.Sprintf("transaction %d attempt %d is already finished on range %d", id, op.Attempt, t.id)}
	}
	m := t.meta[id]
	if m == nil || m.attempt != op.Attempt {
		m = &meta{attempt: op.Attempt, age: op.Age, gateway: op.Gateway, deadline: op.Deadline}
		t.meta[id] = m
	}
	m.bytes += size
	m.heard = now
	t.pumpLocked()
	t.requestLocked(now, id, op.Span, op.Mode, op.LockTimeout, done)
	return nil
}

// Lock takes a lock outside any transaction (id has PlainTxnBit), so a
// single-key operation never reads or overwrites around a transaction's
// locks. done is called exactly once; on success the caller releases the
// lock with Release once its operation applied.
func (t *Tenure) Lock(now time.Time, id lock.TxnID, span lock.Span, mode lock.Mode, timeout time.Duration,
	done func(waited time.Duration, ab *vowdbpb.TxnAbort)) {
	t.lock()
	defer t.unlock()
	if t.dead {
		ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: t.id}
		t.fired.add(func() { done(0, ab) })
		return
	}
	t.requestLocked(now, id, span, mode, timeout, done)
}

// Release drops every lock id holds (a plain operation's, once applied).
func (t *Tenure) Release(id lock.TxnID) {
	t.lock()
	t.releaseLocked(id)
	t.unlock()
}

func (t *Tenure) requestLocked(now time.Time, id lock.TxnID, span lock.Span, mode lock.Mode, timeout time.Duration,
	done func(time.Duration, *vowdbpb.TxnAbort)) {
	w := &waiter{span: span, mode: mode, since: now, timeout: now.Add(timeout), done: done}
	if t.noLocks && id&PlainTxnBit == 0 {
		t.fire(w, nil, now)
		return
	}
	granted, blockers := t.locks.Acquire(id, span, mode)
	if granted {
		t.fire(w, nil, now)
		return
	}
	w.blockers = blockers
	t.waiters[id] = w
	if id&PlainTxnBit == 0 {
		t.breakLocalDeadlocksLocked(now)
	}
}

// GiveUp ends id's lock wait, if it still waits, as a lock-wait timeout:
// the txn is aborted here (a plain operation just fails).
func (t *Tenure) GiveUp(now time.Time, id lock.TxnID) {
	t.lock()
	defer t.unlock()
	if w := t.waiters[id]; w != nil {
		t.timeoutLocked(now, id, w)
	}
}

func (t *Tenure) timeoutLocked(now time.Time, id lock.TxnID, w *waiter) {
	ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_LOCK_TIMEOUT, Key: w.span.Start, LockMode: w.mode.String(),
		WaitMicros: now.Sub(w.since).Microseconds(), RangeId: t.id}
	if len(w.blockers) > 0 {
		ab.ConflictingTxnId = uint64(w.blockers[0])
	}
	t.abortLocked(id, ab)
}

// grantLocked wakes the waiters whose requests the lock table granted. A
// grant counts as hearing from the txn: its client was waiting.
func (t *Tenure) grantLocked(granted []lock.Lock) {
	var now time.Time
	for _, g := range granted {
		if w := t.waiters[g.Txn]; w != nil {
			if now.IsZero() {
				now = t.host.Now()
			}
			delete(t.waiters, g.Txn)
			t.fire(w, nil, now)
			if m := t.meta[g.Txn]; m != nil {
				m.heard = now
			}
		}
	}
}

// KeepAlive tells the range that attempt of id is still run by its client
// (Config.IdleTimeout). It does nothing for an attempt with no ACTIVE state
// here (not yet, or any more).
func (t *Tenure) KeepAlive(now time.Time, id lock.TxnID, attempt uint64) {
	t.lock()
	defer t.unlock()
	if m := t.meta[id]; !t.dead && m != nil && m.attempt == attempt && t.part.State(id) == txn.StateActive {
		m.heard = now
	}
}

func (t *Tenure) releaseLocked(id lock.TxnID) {
	t.grantLocked(t.locks.ReleaseAll(id))
}

// abortLocked aborts an ACTIVE txn here on the leader's own initiative
// (deadlock victim, lock-wait timeout, deadline, rollback). A prepared txn
// is never aborted this way (rule 2); false is returned for it.
func (t *Tenure) abortLocked(id lock.TxnID, ab *vowdbpb.TxnAbort) bool {
	if id&PlainTxnBit != 0 {
		if w := t.waiters[id]; w != nil {
			delete(t.waiters, id)
			t.fire(w, ab, time.Time{})
		}
		t.releaseLocked(id)
		return true
	}
	if err := t.part.Abort(id); err != nil {
		return false
	}
	if w := t.waiters[id]; w != nil {
		delete(t.waiters, id)
		t.fire(w, ab, time.Time{})
	}
	t.rememberAbort(id, ab)
	t.releaseLocked(id)
	h := t.host
	t.fired.add(func() { h.Aborted(t, id, ab) })
	t.pumpLocked()
	return true
}

func (t *Tenure) rememberAbort(id lock.TxnID, ab *vowdbpb.TxnAbort) {
	if _, ok := t.aborted[id]; !ok {
		t.abOrder = append(t.abOrder, id)
	}
	t.aborted[id] = ab
	for len(t.abOrder) > maxAbortMemory {
		delete(t.aborted, t.abOrder[0])
		t.abOrder = t.abOrder[1:]
	}
}

func (t *Tenure) rememberRollback(id lock.TxnID, attempt uint64) {
	if _, ok := t.rolledBack[id]; !ok {
		t.rbOrder = append(t.rbOrder, id)
	}
	if attempt > t.rolledBack[id] {
		t.rolledBack[id] = attempt
	}
	for len(t.rbOrder) > maxAbortMemory {
		delete(t.rolledBack, t.rbOrder[0])
		t.rbOrder = t.rbOrder[1:]
	}
}

// Rollback aborts an ACTIVE attempt at its client's request. A rollback
// that arrives before the attempt's first operation here is remembered, and
// that operation is refused when it comes.
func (t *Tenure) Rollback(id lock.TxnID, attempt uint64) {
	t.lock()
	defer t.unlock()
	if t.dead {
		return
	}
	ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_ROLLBACK, RangeId: t.id}
	m := t.meta[id]
	if m == nil || m.attempt < attempt {
		if t.part.State(id) != txn.StatePrepared {
			t.rememberRollback(id, attempt)
			t.rememberAbort(id, ab)
		}
		if m == nil {
			return
		}
	}
	if m.attempt == attempt {
		t.abortLocked(id, ab)
	}
}

// info is the detector's view of a txn.
func (t *Tenure) infoLocked(id lock.TxnID) deadlock.TxnInfo {
	inf := deadlock.TxnInfo{Prepared: t.part.State(id) == txn.StatePrepared}
	if m := t.meta[id]; m != nil {
		inf.Age = m.age
	}
	return inf
}

// breakLocalDeadlocksLocked breaks the cycles of this lock table at once;
// cycles through several ranges are the global detector's.
func (t *Tenure) breakLocalDeadlocksLocked(now time.Time) {
	var edges []lock.Edge
	for _, e := range t.locks.WaitsFor() {
		if e.Waiter&PlainTxnBit == 0 && e.Holder&PlainTxnBit == 0 {
			edges = append(edges, e)
		}
	}
	if len(edges) < 2 {
		return
	}
	var d deadlock.Detector
	d.Report(t.host.NodeID(), edges)
	h := t.host
	for _, v := range d.Detect(t.infoLocked) {
		t.fired.add(func() { h.LocalDeadlock(v) })
		t.abortVictimLocked(now, v)
	}
}

// AbortVictim aborts the detector's victim v if it waits for a lock here.
// It reports false if v is prepared here (never a victim: rule 2), or does
// not wait here.
func (t *Tenure) AbortVictim(now time.Time, v deadlock.Victim) bool {
	t.lock()
	defer t.unlock()
	if t.dead || t.waiters[v.Txn] == nil {
		return false
	}
	return t.abortVictimLocked(now, v)
}

func (t *Tenure) abortVictimLocked(now time.Time, v deadlock.Victim) bool {
	if t.part.State(v.Txn) == txn.StatePrepared {
		h, msg := t.host, fmt.Sprintf("deadlock victim t%d (cycle %v) is prepared here", v.Txn, v.Cycle)
		t.fired.add(func() { h.Invariant(t, msg) })
		return false
	}
	w := t.waiters[v.Txn]
	ab := &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_DEADLOCK, RangeId: t.id}
	for _, x := range v.Cycle {
		ab.Cycle = append(ab.Cycle, uint64(x))
	}
	if w != nil {
		ab.Key, ab.LockMode = w.span.Start, w.mode.String()
		if !now.IsZero() {
			ab.WaitMicros = now.Sub(w.since).Microseconds()
		}
		if len(w.blockers) > 0 {
			ab.ConflictingTxnId = uint64(w.blockers[0])
		}
	} else if t.part.State(v.Txn) != txn.StateActive {
		return false
	}
	return t.abortLocked(v.Txn, ab)
}

// Step hands a protocol message to the participant.
func (t *Tenure) Step(m txn.Message) error {
	t.lock()
	defer t.unlock()
	if t.dead {
		return fmt.Errorf("tenure of range %d ended", t.id)
	}
	if err := t.part.Step(m); err != nil {
		return err
	}
	t.pumpLocked()
	return nil
}

// Unreachable tells the participant that rangeID (an inquiry's anchor)
// could not be reached: it turns to cooperative termination (rule 5).
func (t *Tenure) Unreachable(rangeID txn.RangeID) {
	t.lock()
	defer t.unlock()
	if !t.dead {
		t.part.Unreachable(rangeID)
		t.pumpLocked()
	}
}

// Tick advances the participant's clock, fails lock waits past their
// timeout and aborts ACTIVE txns past their deadline or idle timeout. The
// tenure ends if this node no longer leads the range in the tenure's term
// and span.
func (t *Tenure) Tick(now time.Time) {
	t.lock()
	defer t.unlock()
	if t.dead {
		return
	}
	if st := t.host.Status(t.id); st == nil || st.Term != t.raftTerm || st.LeaderID != t.host.NodeID() ||
		!bytes.Equal(st.Desc.GetStartKey(), t.start) || !bytes.Equal(st.Desc.GetEndKey(), t.end) {
		t.killLocked("leadership or span changed")
		return
	}
	t.part.Tick()
	for _, id := range sortedIDs(t.waiters) {
		if w := t.waiters[id]; w != nil && !now.Before(w.timeout) {
			t.timeoutLocked(now, id, w)
		}
	}
	for _, id := range sortedIDs(t.meta) {
		m := t.meta[id]
		if m == nil || t.part.State(id) != txn.StateActive {
			continue
		}
		switch {
		case !m.deadline.IsZero() && now.After(m.deadline):
			t.abortLocked(id, &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_DEADLINE, RangeId: t.id})
		case t.idle > 0 && t.waiters[id] == nil && now.Sub(m.heard) > t.idle:
			t.abortLocked(id, &vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_IDLE, RangeId: t.id})
		}
	}
	t.pumpLocked()
}

// inflightRecords counts the records in the Raft log's pipeline; when it
// reaches Config.PipelineRecords the next records wait, and gather into
// one larger batch meanwhile.
func (t *Tenure) inflightRecords() int {
	n := 0
	for _, e := range t.inflight {
		n += len(e.rd.Records)
	}
	return n
}

// inflight is a taken Ready whose records are in the Raft log's pipeline.
type inflight struct {
	rd        txn.Ready
	left      int    // records not yet reported
	failure   string // the first record that failed, if any
	invariant string // set when a record applied in a state the protocol rules out
}

// pumpLocked carries out the participant's outputs as they come: lock
// releases and messages at once, READ-ONLY votes after a ReadIndex round,
// records proposed to the range's Raft log at once, several Readys in
// flight (pipelined). A Ready's records are confirmed to the participant
// (Persisted) only once all of them applied and every earlier Ready was
// confirmed, so confirmations follow the log's order. Messages in a Ready
// never depend on that Ready's records, so sending them before the records
// are durable is the documented order's equivalent.
func (t *Tenure) pumpLocked() {
	for !t.dead && t.part.HasReady() {
		if t.inflightRecords() >= t.pipeline && len(t.part.Ready().Records) > 0 {
			return // the next confirmation pumps again
		}
		rd := t.part.Take()
		for _, id := range rd.Release {
			// A live state means a newer attempt of the same id holds the
			// locks now; the older attempt's were released when it started.
			if st := t.part.State(id); st != txn.StateActive && st != txn.StatePrepared {
				t.releaseLocked(id)
				delete(t.meta, id)
			}
		}
		var msgs, readOnly []txn.Message
		for _, m := range rd.Messages {
			if m.Type == txn.MsgVote && m.Vote == txn.VoteReadOnly {
				readOnly = append(readOnly, m)
			} else {
				msgs = append(msgs, m)
			}
		}
		if len(msgs) > 0 {
			t.host.Send(msgs)
		}
		if len(readOnly) > 0 {
			t.confirmReadOnlyLocked(readOnly)
		}
		if len(rd.Records) > 0 {
			t.persistLocked(rd)
		}
	}
}

// confirmReadOnlyLocked sends READ-ONLY votes only after a ReadIndex round
// proves this node still leads the range in the tenure's term. A READ-ONLY
// vote writes nothing to the Raft log, so without this a deposed leader
// that has not noticed yet could vouch for S locks a new leader no longer
// holds (rules 8, 9). Without a vote the coordinator times out and aborts.
func (t *Tenure) confirmReadOnlyLocked(votes []txn.Message) {
	t.host.ConfirmLeadership(t.id, func(err error) {
		st := t.host.Status(t.id)
		if err == nil && (st == nil || st.Term != t.raftTerm || st.LeaderID != t.host.NodeID()) {
			err = errors.New("leadership lost")
		}
		if err != nil {
			t.Kill("read-only vote not confirmed: " + err.Error())
			return
		}
		t.host.Send(votes)
	})
}

// persistLocked proposes rd's records to the range's Raft log. If any
// fails the tenure ends without confirming it, as package txn requires.
func (t *Tenure) persistLocked(rd txn.Ready) {
	e := &inflight{rd: rd, left: len(rd.Records)}
	t.inflight = append(t.inflight, e)
	for i, rec := range rd.Records {
		t.host.Propose(t.id, txnwire.RecordCommand(rec), func(res replica.Result) {
			if res.Err == nil {
				// Failpoints run outside the mutex (a test may hold a
				// goroutine there): the record is durable, nothing that
				// depends on it has left yet.
				persistedFailpoint(rec, res.TxnState)
			}
			t.lock()
			defer t.unlock()
			c, decides := rec.(txn.CommitRecord)
			decides = decides && c.Decide != nil
			if e.failure == "" {
				if res.Err != nil {
					e.failure = fmt.Sprintf("%v: %v", rec, res.Err)
				} else if decides && res.TxnState == vowdbpb.TxnState_TXN_ABORTED {
					// The commit with the decision lost its CAS to an
					// ABORTED record: it applied as an abort.
					e.rd.Records[i] = txn.AbortRecord{Txn: c.Txn, Attempt: c.Attempt, Range: c.Range}
				} else if want := txnwire.ExpectedState(rec); res.TxnState != want {
					e.failure = fmt.Sprintf("%v applied as %v, want %v", rec, res.TxnState, want)
					e.invariant = "record " + e.failure
				}
			}
			if e.left--; e.left == 0 {
				t.drainLocked()
			}
		})
	}
}

func persistedFailpoint(rec txn.Record, st vowdbpb.TxnState) {
	switch r := rec.(type) {
	case txn.PrepareRecord:
		failpoint.Hit(failpoint.TxnAfterPrepareDurable)
	case txn.CommitRecord:
		switch {
		case r.Decide != nil && st == vowdbpb.TxnState_TXN_COMMITTED:
			// The anchor's commit with the decision applied: the decision
			// is durable, and nobody has been told.
			failpoint.Hit(failpoint.TxnAfterDecision)
		case !r.OnePhase:
			failpoint.Hit(failpoint.TxnAfterCommitApplied)
		}
	}
}

// drainLocked confirms the completed Readys at the head of the pipeline,
// in order; the first failure ends the tenure.
func (t *Tenure) drainLocked() {
	for len(t.inflight) > 0 && t.inflight[0].left == 0 {
		e := t.inflight[0]
		t.inflight = t.inflight[1:]
		if t.dead {
			continue
		}
		if e.failure == "" {
			if st := t.host.Status(t.id); st == nil || st.Term != t.raftTerm {
				e.failure = "leader term changed"
			}
		}
		if e.failure != "" {
			if e.invariant != "" {
				h, msg := t.host, e.invariant
				t.fired.add(func() { h.Invariant(t, msg) })
			}
			t.killLocked(e.failure)
			continue
		}
		t.part.Persisted(e.rd)
	}
	t.pumpLocked()
}
