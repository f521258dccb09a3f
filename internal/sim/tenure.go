package sim

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// tenure is the transaction side of one range on its leader for one leader
// tenure, as the server's txnRange: lock table, participant, waiters.
type tenure struct {
	n          *node
	rangeID    uint64
	raftTerm   uint64
	term       uint64 // the tenure number clients and PREPAREs carry (rule 8)
	start, end []byte
	dead       bool
	locks      lock.Table
	part       *txn.Participant
	meta       map[lock.TxnID]*tmeta
	waiters    map[lock.TxnID]*waiter
	rolledBack map[lock.TxnID]uint64 // attempts rolled back before their first operation
	pumping    bool
}

type tmeta struct {
	attempt  uint64
	age      uint64
	deadline int64
}

type waiter struct {
	span     lock.Span
	mode     lock.Mode
	timeout  int64
	blockers []lock.TxnID
	done     func(abort string) // "" granted
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

// build starts building a tenure for rangeID once a barrier entry proposed
// in this term applied: every entry before it has applied then, so the
// prepare records read afterwards are complete (rule 6), including those of
// an earlier tenure of the same raft term that gave up waiting for them.
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
		var prepared []txn.PrepareRecord
		for _, id := range sortedKeys(recs) {
			if rec, ok := txnwire.PrepareFromPB(rangeID, []byte(id), recs[id]); ok {
				prepared = append(prepared, rec)
			}
		}
		n.w.tenureGen++
		term := st.Term<<16 | (n.w.tenureGen & 0xffff)
		part, relock, err := txn.NewParticipant(txn.ParticipantConfig{Range: txn.RangeID(rangeID), Term: term,
			InquireTicks: inquireTicks, MaxFinished: maxFinishedTxns}, prepared)
		if err != nil {
			n.w.fail("node %d range %d: new participant: %v", n.id, rangeID, err)
			return
		}
		tr := &tenure{n: n, rangeID: rangeID, raftTerm: st.Term, term: term, start: st2.Desc.StartKey,
			end: st2.Desc.EndKey, part: part, meta: map[lock.TxnID]*tmeta{}, waiters: map[lock.TxnID]*waiter{},
			rolledBack: map[lock.TxnID]uint64{}}
		for _, lk := range relock {
			tr.locks.Acquire(lk.Txn, lk.Span, lk.Mode)
		}
		if old := n.tenures[rangeID]; old != nil {
			old.kill("replaced")
		}
		n.tenures[rangeID] = tr
		if len(prepared) > 0 {
			n.w.saw("tenure rebuilt with prepared txns")
		}
		n.w.event("node %d range %d tenure %x built, %d prepared", n.id, rangeID, term, len(prepared))
		tr.pump()
	})
}

// current returns the live tenure of rangeID if this node still leads it
// in the tenure's term.
func (n *node) current(rangeID uint64) *tenure {
	tr := n.tenures[rangeID]
	if tr == nil || tr.dead {
		return nil
	}
	st := n.status(rangeID)
	if st == nil || st.Term != tr.raftTerm || st.LeaderID != n.id {
		tr.kill("leadership lost")
		return nil
	}
	return tr
}

func (tr *tenure) kill(why string) {
	if tr.dead {
		return
	}
	tr.dead = true
	for _, id := range sortedKeys(tr.waiters) {
		w := tr.waiters[id]
		delete(tr.waiters, id)
		w.done("participant lost state")
	}
	if tr.n.tenures[tr.rangeID] == tr {
		delete(tr.n.tenures, tr.rangeID)
	}
	tr.n.w.event("node %d range %d tenure %x ended: %s", tr.n.id, tr.rangeID, tr.term, why)
}

// op serves one client operation (rule 9: locks are taken when the op is
// issued). reply is called exactly once.
func (n *node) op(id lock.TxnID, attempt, age uint64, key, value []byte, write bool, reply func(opReply)) {
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
	if attempt <= tr.rolledBack[id] {
		reply(opReply{abort: "rolled back"})
		return
	}
	if m := tr.meta[id]; m != nil && m.attempt < attempt && tr.part.State(id) == txn.StateActive {
		tr.release(id)
	}
	if err := tr.part.Admit(txn.Op{Txn: id, Attempt: attempt, Span: lock.Point(key), Mode: mode, Write: wr}); err != nil {
		reply(opReply{abort: "refused: " + err.Error()})
		return
	}
	if m := tr.meta[id]; m == nil || m.attempt != attempt {
		tr.meta[id] = &tmeta{attempt: attempt, age: age, deadline: n.w.now + maxTxnTicks}
	}
	tr.pump()
	done := func(abort string) {
		if abort != "" {
			reply(opReply{abort: abort})
			return
		}
		resp := opReply{term: tr.term, rangeID: tr.rangeID}
		if write {
			reply(resp)
			return
		}
		// As the server: no ReadIndex per read; the vote confirms the term.
		if tr.dead || n.current(tr.rangeID) != tr {
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
	}
	if n.w.cfg.Bug == "no-locks" {
		done("")
		return
	}
	granted, blockers := tr.locks.Acquire(id, lock.Point(key), mode)
	if granted {
		done("")
		return
	}
	tr.waiters[id] = &waiter{span: lock.Point(key), mode: mode, timeout: n.w.now + lockTimeout, blockers: blockers, done: done}
	tr.breakLocalDeadlocks()
}

func (tr *tenure) release(id lock.TxnID) {
	for _, g := range tr.locks.ReleaseAll(id) {
		if w := tr.waiters[g.Txn]; w != nil {
			delete(tr.waiters, g.Txn)
			w.done("")
		}
	}
}

// abort aborts an ACTIVE txn on the leader's own initiative; a prepared
// txn is never aborted this way (rule 2).
func (tr *tenure) abort(id lock.TxnID, why string) bool {
	if tr.part.Abort(id) != nil {
		return false
	}
	if w := tr.waiters[id]; w != nil {
		delete(tr.waiters, id)
		w.done(why)
	}
	tr.n.w.saw("range abort: " + strings.SplitN(why, " (", 2)[0])
	tr.n.w.event("range %d aborts t%d: %s", tr.rangeID, id, why)
	tr.release(id)
	tr.pump()
	return true
}

func (tr *tenure) info(id lock.TxnID) deadlock.TxnInfo {
	inf := deadlock.TxnInfo{Prepared: tr.part.State(id) == txn.StatePrepared}
	if m := tr.meta[id]; m != nil {
		inf.Age = m.age
	}
	return inf
}

func (tr *tenure) breakLocalDeadlocks() {
	edges := tr.locks.WaitsFor()
	if len(edges) < 2 {
		return
	}
	var d deadlock.Detector
	d.Report(tr.n.id, edges)
	for _, v := range d.Detect(tr.info) {
		tr.abortVictim(v)
	}
}

func (tr *tenure) abortVictim(v deadlock.Victim) {
	if tr.info(v.Txn).Prepared {
		tr.n.w.fail("deadlock detector chose prepared txn %d as victim (cycle %v)", v.Txn, v.Cycle)
		return
	}
	if tr.waiters[v.Txn] != nil || tr.part.State(v.Txn) == txn.StateActive {
		tr.abort(v.Txn, fmt.Sprintf("deadlock victim (cycle %v)", v.Cycle))
	}
}

// pump carries out the participant's Ready in the documented order: lock
// releases and messages at once, READ-ONLY votes after a ReadIndex round,
// records through the Raft log with one Ready in flight.
func (tr *tenure) pump() {
	n := tr.n
	for !tr.pumping && !tr.dead && tr.part.HasReady() {
		rd := tr.part.Ready()
		for _, id := range rd.Release {
			if st := tr.part.State(id); st != txn.StateActive && st != txn.StatePrepared {
				tr.release(id)
				delete(tr.meta, id)
			}
		}
		var readOnly []txn.Message
		for _, m := range rd.Messages {
			if m.Type == txn.MsgVote && m.Vote == txn.VoteReadOnly {
				readOnly = append(readOnly, m)
			} else {
				n.sendTxn(m)
			}
		}
		if len(readOnly) > 0 {
			n.readIndex(tr.rangeID, func(err error) {
				if err == nil && n.current(tr.rangeID) == tr {
					for _, m := range readOnly {
						n.sendTxn(m)
					}
					return
				}
				tr.kill("read-only vote not confirmed")
			})
		}
		if len(rd.Records) == 0 {
			tr.part.Advance(rd)
			continue
		}
		tr.pumping = true
		left, failure := len(rd.Records), ""
		for i, rec := range rd.Records {
			n.propose(tr.rangeID, txnwire.RecordCommand(rec), func(res replica.Result) {
				if res.Err != nil {
					failure = fmt.Sprintf("%v: %v", rec, res.Err)
				} else if want := txnwire.ExpectedState(rec); res.TxnState != want {
					n.w.fail("range %d: record %v applied as %v, want %v", tr.rangeID, rd.Records[i], res.TxnState, want)
				}
				if left--; left > 0 {
					return
				}
				tr.pumping = false
				if failure == "" && n.current(tr.rangeID) != tr {
					failure = "leader term changed"
				}
				if failure != "" {
					tr.kill(failure)
					return
				}
				tr.part.Advance(rd)
				tr.pump()
			})
		}
		return
	}
}

// tickTenure advances the participant's clock, times out lock waits and
// aborts ACTIVE txns past their deadline.
func (tr *tenure) tick() {
	n := tr.n
	st := n.status(tr.rangeID)
	if st == nil || st.Term != tr.raftTerm || st.LeaderID != n.id ||
		!bytes.Equal(st.Desc.GetStartKey(), tr.start) || !bytes.Equal(st.Desc.GetEndKey(), tr.end) {
		tr.kill("leadership or span changed")
		return
	}
	tr.part.Tick()
	for _, id := range sortedKeys(tr.waiters) {
		if w := tr.waiters[id]; w != nil && n.w.now >= w.timeout {
			tr.abort(id, "lock wait timeout")
		}
	}
	for _, id := range sortedKeys(tr.meta) {
		if m := tr.meta[id]; m != nil && n.w.now >= m.deadline && tr.part.State(id) == txn.StateActive {
			tr.abort(id, "deadline")
		}
	}
	tr.pump()
}
