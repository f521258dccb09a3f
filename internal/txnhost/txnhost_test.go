package txnhost

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
)

// fakeHost is a scripted host: proposals and ReadIndex rounds wait until
// the test finishes them, sends are recorded, status is whatever the test
// sets. It also checks the host contract from the other side: a driver must
// not hold its mutex when it calls back its caller.
type fakeHost struct {
	t         *testing.T
	node      uint64
	now       time.Time // what Now answers
	status    *replica.Status
	proposals []*fakeProposal
	confirms  []func(error)
	sent      []txn.Message
	log       []string
	ended     []string
	invariant []string
}

type fakeProposal struct {
	cmd  *vowdbpb.Command
	done func(replica.Result)
}

func newFakeHost(t *testing.T) *fakeHost {
	return &fakeHost{t: t, node: 1, status: &replica.Status{Term: 5, LeaderID: 1,
		Desc: &vowdbpb.RangeDescriptor{RangeId: 7, StartKey: []byte("a"), EndKey: []byte("m")}}}
}

func (h *fakeHost) NodeID() uint64                            { return h.node }
func (h *fakeHost) Now() time.Time                            { return h.now }
func (h *fakeHost) Status(uint64) *replica.Status             { return h.status }
func (h *fakeHost) Send(msgs []txn.Message)                   { h.sent = append(h.sent, msgs...); h.note("send", msgs) }
func (h *fakeHost) LocalDeadlock(v deadlock.Victim)           { h.note("deadlock", v.Txn) }
func (h *fakeHost) Invariant(_ *Tenure, msg string)           { h.invariant = append(h.invariant, msg) }
func (h *fakeHost) TenureEnded(_ *Tenure, w string)           { h.ended = append(h.ended, w) }
func (h *fakeHost) DecisionUnknown(txn.DecisionRecord, error) {}
func (h *fakeHost) Background(fn func())                      { fn() }
func (h *fakeHost) ConfirmLeadership(_ uint64, done func(error)) {
	h.confirms = append(h.confirms, done)
	h.note("confirm")
}
func (h *fakeHost) Aborted(_ *Tenure, id lock.TxnID, ab *vowdbpb.TxnAbort) {
	h.note("aborted", id, ab.Reason)
}
func (h *fakeHost) Propose(_ uint64, cmd *vowdbpb.Command, done func(replica.Result)) {
	h.proposals = append(h.proposals, &fakeProposal{cmd: cmd, done: done})
	h.note("propose", cmd.String())
}
func (h *fakeHost) ProposeAt(_ txn.RangeID, _ []byte, cmd *vowdbpb.Command, done func(vowdbpb.TxnState, error)) {
	h.proposals = append(h.proposals, &fakeProposal{cmd: cmd, done: func(r replica.Result) { done(r.TxnState, r.Err) }})
	h.note("propose-at", cmd.String())
}

func (h *fakeHost) note(what string, args ...any) {
	h.log = append(h.log, strings.TrimSpace(what+" "+fmt.Sprint(args...)))
}

// apply finishes the oldest pending proposal with the state its record
// command expects (or st if given).
func (h *fakeHost) apply(st ...vowdbpb.TxnState) {
	h.t.Helper()
	if len(h.proposals) == 0 {
		h.t.Fatal("no proposal pending")
	}
	p := h.proposals[0]
	h.proposals = h.proposals[1:]
	res := replica.Result{TxnState: expectedOf(p.cmd)}
	if len(st) > 0 {
		res.TxnState = st[0]
	}
	p.done(res)
}

func expectedOf(cmd *vowdbpb.Command) vowdbpb.TxnState {
	switch op := cmd.Op.(type) {
	case *vowdbpb.Command_PrepareTxn:
		return vowdbpb.TxnState_TXN_PENDING
	case *vowdbpb.Command_ResolveTxn:
		if op.ResolveTxn.Commit {
			return vowdbpb.TxnState_TXN_COMMITTED
		}
		return vowdbpb.TxnState_TXN_ABORTED
	case *vowdbpb.Command_OnePhaseTxn:
		return vowdbpb.TxnState_TXN_COMMITTED
	case *vowdbpb.Command_TxnRecordCas:
		return op.TxnRecordCas.NewState
	}
	return 0
}

func (h *fakeHost) sentOf(typ txn.MsgType) []txn.Message {
	var out []txn.Message
	for _, m := range h.sent {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

var t0 = time.Unix(1000, 0)

func newTenure(t *testing.T, h *fakeHost, prepared ...txn.PrepareRecord) *Tenure {
	return newTenurePipelined(t, h, 1, prepared...)
}

func newTenurePipelined(t *testing.T, h *fakeHost, pipeline int, prepared ...txn.PrepareRecord) *Tenure {
	t.Helper()
	return newTenureConfig(t, h, Config{Prepared: prepared, PipelineRecords: pipeline})
}

// newTenureConfig builds the test range's tenure with cfg's knobs.
func newTenureConfig(t *testing.T, h *fakeHost, cfg Config) *Tenure {
	t.Helper()
	cfg.Range, cfg.RaftTerm, cfg.Tenure, cfg.Start, cfg.End = 7, 5, 5<<16, []byte("a"), []byte("m")
	cfg.InquireTicks, cfg.MaxFinished, cfg.MaxTxnBytes = 10, 100, 64
	tr, err := NewTenure(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

type grant struct {
	called bool
	waited time.Duration
	ab     *vowdbpb.TxnAbort
}

func (g *grant) done(waited time.Duration, ab *vowdbpb.TxnAbort) {
	g.called, g.waited, g.ab = true, waited, ab
}

func put(id lock.TxnID, key string) Op {
	return Op{Txn: id, Attempt: 1, Span: lock.Point([]byte(key)), Mode: lock.X, Write: &txn.Write{Key: []byte(key), Value: []byte("v")},
		LockTimeout: time.Second, Deadline: t0.Add(time.Minute)}
}

func get(id lock.TxnID, key string) Op {
	return Op{Txn: id, Attempt: 1, Span: lock.Point([]byte(key)), Mode: lock.S, LockTimeout: time.Second, Deadline: t0.Add(time.Minute)}
}

func prepare(id lock.TxnID, term uint64) txn.Message {
	return txn.Message{Type: txn.MsgPrepare, Txn: id, Attempt: 1, From: txn.Addr{Node: 2}, To: txn.Addr{Range: 7}, Term: term,
		Participants: []txn.Participation{{Range: 7, Term: term, Writes: true}, {Range: 8, Term: 1, Writes: true}},
		Anchor:       7, AnchorKey: []byte("b"), Coordinator: 2}
}

// A callback that re-enters the tenure (as a plain operation's release
// does) must not deadlock: callbacks run after the mutex is released.
func TestTenureCallbacksRunOutsideTheMutex(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	released := false
	tr.Lock(t0, PlainTxnBit|1, lock.Point([]byte("b")), lock.X, time.Second, func(_ time.Duration, ab *vowdbpb.TxnAbort) {
		if ab != nil {
			t.Fatalf("plain lock refused: %v", ab)
		}
		tr.Release(PlainTxnBit | 1) // re-enters: would deadlock under the mutex
		released = true
	})
	if !released {
		t.Fatal("a free lock was not granted at once")
	}
	if held := tr.Held(); len(held) != 0 {
		t.Fatalf("locks still held: %v", held)
	}
}

// Rule 9 and FIFO waiting through the driver: a conflicting op waits, and
// is granted when the holder aborts (its locks released), with the time it
// waited.
func TestTenureWaitThenGrantOnAbort(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	var g1, g2 grant
	if err := tr.Do(t0, put(1, "b"), g1.done); err != nil || !g1.called || g1.ab != nil {
		t.Fatalf("first put: err %v, %+v", err, g1)
	}
	if err := tr.Do(t0, put(2, "b"), g2.done); err != nil || g2.called {
		t.Fatalf("second put on a locked key: err %v, %+v (want waiting)", err, g2)
	}
	if w := tr.Waits(); len(w) != 1 || w[0].Waiter != 2 || w[0].Holder != 1 {
		t.Fatalf("waits = %+v, want t2 waiting for t1", w)
	}
	h.now = t0.Add(2 * time.Second)
	tr.Rollback(1, 1)
	if !g2.called || g2.ab != nil {
		t.Fatalf("waiter not granted after the holder rolled back: %+v", g2)
	}
	if g2.waited != 2*time.Second {
		t.Fatalf("waiter granted on release reports waiting %v, want 2s (its receipt's lock-wait time)", g2.waited)
	}
}

// A wait past its timeout aborts the waiter (lock-wait timeout with key,
// holder and mode), via Tick or GiveUp, and releases what it held.
func TestTenureLockWaitTimeout(t *testing.T) {
	for _, how := range []string{"tick", "give-up"} {
		t.Run(how, func(t *testing.T) {
			h := newFakeHost(t)
			tr := newTenure(t, h)
			var g1, g2, g3 grant
			_ = tr.Do(t0, put(1, "b"), g1.done)
			_ = tr.Do(t0, put(2, "c"), g2.done)
			_ = tr.Do(t0, put(2, "b"), g3.done)
			if g3.called {
				t.Fatal("t2 should wait for t1")
			}
			if how == "tick" {
				tr.Tick(t0.Add(500 * time.Millisecond))
				if g3.called {
					t.Fatal("timed out before its timeout")
				}
				tr.Tick(t0.Add(time.Second))
			} else {
				tr.GiveUp(t0.Add(time.Second), 2)
			}
			if !g3.called || g3.ab == nil || g3.ab.Reason != vowdbpb.TxnAbort_LOCK_TIMEOUT {
				t.Fatalf("wait result %+v, want LOCK_TIMEOUT", g3)
			}
			if string(g3.ab.Key) != "b" || g3.ab.ConflictingTxnId != 1 || g3.ab.LockMode != "X" {
				t.Fatalf("abort lacks key/holder/mode: %v", g3.ab)
			}
			for _, lk := range tr.Held() {
				if lk.Txn == 2 {
					t.Fatalf("aborted t2 still holds %v", lk)
				}
			}
			var g4 grant
			err := tr.Do(t0, put(2, "d"), g4.done)
			if err == nil || !strings.Contains(err.Error(), "LOCK_TIMEOUT") {
				t.Fatalf("op of the aborted attempt: %v, want refused naming LOCK_TIMEOUT", err)
			}
		})
	}
}

// Rule 1 through the driver: the YES vote leaves only after the prepare
// record applied; a record applied in another state ends the tenure and
// no vote leaves.
func TestTenureVotesOnlyAfterPrepareApplied(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	var g grant
	_ = tr.Do(t0, put(1, "b"), g.done)
	if err := tr.Step(prepare(1, tr.Number())); err != nil {
		t.Fatal(err)
	}
	if len(h.proposals) != 1 {
		t.Fatalf("proposals = %d, want the prepare record", len(h.proposals))
	}
	if v := h.sentOf(txn.MsgVote); len(v) != 0 {
		t.Fatalf("voted before the prepare record applied: %v", v)
	}
	h.apply()
	if v := h.sentOf(txn.MsgVote); len(v) != 1 || v[0].Vote != txn.VoteYes {
		t.Fatalf("votes = %v, want one YES", v)
	}

	h2 := newFakeHost(t)
	tr2 := newTenure(t, h2)
	_ = tr2.Do(t0, put(1, "b"), g.done)
	_ = tr2.Step(prepare(1, tr2.Number()))
	h2.apply(vowdbpb.TxnState_TXN_ABORTED)
	if !tr2.Dead() || len(h2.invariant) != 1 || len(h2.sentOf(txn.MsgVote)) != 0 {
		t.Fatalf("dead %v, invariant %v, votes %v: want the tenure ended, reported, no vote", tr2.Dead(), h2.invariant, h2.sentOf(txn.MsgVote))
	}
}

// By default one batch of records at a time: a second txn's prepare waits
// for the first's record, then goes.
func TestTenureOneBatchInFlight(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	var g grant
	_ = tr.Do(t0, put(1, "b"), g.done)
	_ = tr.Do(t0, put(2, "c"), g.done)
	_ = tr.Step(prepare(1, tr.Number()))
	_ = tr.Step(prepare(2, tr.Number()))
	if len(h.proposals) != 1 {
		t.Fatalf("%d proposals in flight, want 1", len(h.proposals))
	}
	h.apply()
	if len(h.proposals) != 1 {
		t.Fatalf("second prepare not proposed after the first applied (%d pending)", len(h.proposals))
	}
	h.apply()
	if v := h.sentOf(txn.MsgVote); len(v) != 2 {
		t.Fatalf("votes = %v, want two", v)
	}
}

// Pipelined (PipelineRecords 4): a second txn's prepare is proposed while
// the first's is in flight, but confirmations follow the log's order: a later record that
// reports first is held until every earlier one applied, and a failure of
// an earlier one ends the tenure with no vote for either.
func TestTenurePipelinedRecordsConfirmInOrder(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenurePipelined(t, h, 4)
	var g grant
	_ = tr.Do(t0, put(1, "b"), g.done)
	_ = tr.Do(t0, put(2, "c"), g.done)
	_ = tr.Step(prepare(1, tr.Number()))
	_ = tr.Step(prepare(2, tr.Number()))
	if len(h.proposals) != 2 {
		t.Fatalf("%d proposals in flight, want both prepares", len(h.proposals))
	}
	first, second := h.proposals[0], h.proposals[1]
	second.done(replica.Result{TxnState: vowdbpb.TxnState_TXN_PENDING})
	if v := h.sentOf(txn.MsgVote); len(v) != 0 {
		t.Fatalf("voted %v before the earlier record applied", v)
	}
	first.done(replica.Result{TxnState: vowdbpb.TxnState_TXN_PENDING})
	v := h.sentOf(txn.MsgVote)
	if len(v) != 2 || v[0].Txn != 1 || v[1].Txn != 2 {
		t.Fatalf("votes = %v, want t1 then t2", v)
	}

	h2 := newFakeHost(t)
	tr2 := newTenurePipelined(t, h2, 4)
	_ = tr2.Do(t0, put(1, "b"), g.done)
	_ = tr2.Do(t0, put(2, "c"), g.done)
	_ = tr2.Step(prepare(1, tr2.Number()))
	_ = tr2.Step(prepare(2, tr2.Number()))
	h2.proposals[1].done(replica.Result{TxnState: vowdbpb.TxnState_TXN_PENDING})
	h2.proposals[0].done(replica.Result{Err: errNotLeader})
	if !tr2.Dead() || len(h2.sentOf(txn.MsgVote)) != 0 {
		t.Fatalf("dead %v votes %v: an earlier failed record must end the tenure with no vote", tr2.Dead(), h2.sentOf(txn.MsgVote))
	}
}

// Rules 8, 9: a READ-ONLY vote waits for a ReadIndex round; if leadership
// is not confirmed the tenure ends and no vote leaves.
func TestTenureReadOnlyVoteAfterConfirmedLeadership(t *testing.T) {
	for _, confirmed := range []bool{true, false} {
		t.Run(fmt.Sprint("confirmed=", confirmed), func(t *testing.T) {
			h := newFakeHost(t)
			tr := newTenure(t, h)
			var g grant
			_ = tr.Do(t0, get(1, "b"), g.done)
			m := prepare(1, tr.Number())
			m.Participants[0].Writes = false
			_ = tr.Step(m)
			if len(h.sentOf(txn.MsgVote)) != 0 || len(h.confirms) != 1 {
				t.Fatalf("votes %v confirms %d: want no vote before a ReadIndex round", h.sentOf(txn.MsgVote), len(h.confirms))
			}
			if confirmed {
				h.confirms[0](nil)
				if v := h.sentOf(txn.MsgVote); len(v) != 1 || v[0].Vote != txn.VoteReadOnly {
					t.Fatalf("votes = %v, want READ-ONLY", v)
				}
				return
			}
			h.status = &replica.Status{Term: 6, LeaderID: 2, Desc: h.status.Desc}
			h.confirms[0](nil)
			if len(h.sentOf(txn.MsgVote)) != 0 || !tr.Dead() {
				t.Fatalf("deposed leader voted %v (dead %v)", h.sentOf(txn.MsgVote), tr.Dead())
			}
		})
	}
}

// A rollback that arrives before the attempt's first operation is
// remembered and the late operation refused; a prepared txn is never
// rolled back.
func TestTenureRollbackBeforeFirstOp(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	tr.Rollback(3, 1)
	var g grant
	err := tr.Do(t0, put(3, "b"), g.done)
	if err == nil || g.called {
		t.Fatalf("late op after rollback: err %v, granted %v", err, g.called)
	}
	_ = tr.Do(t0, put(4, "c"), g.done)
	_ = tr.Step(prepare(4, tr.Number()))
	h.apply()
	tr.Rollback(4, 1)
	if st := tr.Txns(); len(st) != 1 || st[0].Txn != 4 || st[0].State != txn.StatePrepared {
		t.Fatalf("txns = %+v, want t4 still PREPARED", st)
	}
}

// A tenure ends when its node loses the lead, and its waiters fail with
// STATE_LOST; a rebuilt tenure re-takes the prepared txns' X locks.
func TestTenureEndsOnLeaderChangeAndRebuildRelocks(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	var g1, g2 grant
	_ = tr.Do(t0, put(1, "b"), g1.done)
	_ = tr.Do(t0, put(2, "b"), g2.done)
	h.status = &replica.Status{Term: 6, LeaderID: 2, Desc: h.status.Desc}
	tr.Tick(t0)
	if !tr.Dead() || len(h.ended) != 1 {
		t.Fatalf("tenure not ended on leader change (ended %v)", h.ended)
	}
	if !g2.called || g2.ab == nil || g2.ab.Reason != vowdbpb.TxnAbort_STATE_LOST {
		t.Fatalf("waiter got %+v, want STATE_LOST", g2)
	}
	rec := txn.PrepareRecord{Range: 7, Txn: 9, Attempt: 1, Writes: []txn.Write{{Key: []byte("c"), Value: []byte("x")}},
		Anchor: 7, AnchorKey: []byte("c"), Participants: []txn.Participation{{Range: 7, Writes: true}}, Coordinator: 2,
		Locks: []lock.Lock{{Txn: 9, Span: lock.Point([]byte("c")), Mode: lock.X}}}
	h2 := newFakeHost(t)
	tr2 := newTenure(t, h2, rec)
	held := tr2.Held()
	if len(held) != 1 || held[0].Txn != 9 || held[0].Mode != lock.X {
		t.Fatalf("rebuilt tenure holds %v, want t9's X lock on c", held)
	}
}

// Over the size limit the txn is aborted and the op refused as a limit.
func TestTenureSizeLimit(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenure(t, h)
	var g grant
	big := put(1, "b")
	big.Write.Value = make([]byte, 40)
	if err := tr.Do(t0, big, g.done); err != nil {
		t.Fatal(err)
	}
	big2 := put(1, "c")
	big2.Write.Value = make([]byte, 40)
	err := tr.Do(t0, big2, g.done)
	ref, ok := err.(*Refusal)
	if !ok || !ref.Limit {
		t.Fatalf("err = %v, want a limit refusal", err)
	}
	if len(tr.Held()) != 0 {
		t.Fatalf("locks left after the limit abort: %v", tr.Held())
	}
}

// The gateway records the decision by compare-and-set before any COMMIT
// leaves and before the caller hears the outcome; END follows the acks.
func TestGatewayDecisionBeforeCommitAndResult(t *testing.T) {
	h := newFakeHost(t)
	g, err := NewGateway(h, 2, GatewayConfig{ResendTicks: 4, VoteTimeoutTicks: 100, DecideTimeoutTicks: 100, PrepareAnchor: true})
	if err != nil {
		t.Fatal(err)
	}
	var res *txn.Result
	req := txn.CommitRequest{Txn: 1, Attempt: 1, Anchor: 7, AnchorKey: []byte("b"),
		Participants: []txn.Participation{{Range: 7, Term: 3, Writes: true}, {Range: 8, Term: 4, Writes: true}}}
	if err := g.Commit(t0, req, func(r txn.Result) { res = &r }); err != nil {
		t.Fatal(err)
	}
	if p := h.sentOf(txn.MsgPrepare); len(p) != 2 {
		t.Fatalf("prepares = %v", p)
	}
	for _, r := range []txn.RangeID{7, 8} {
		_ = g.Step(txn.Message{Type: txn.MsgVote, Txn: 1, Attempt: 1, From: txn.Addr{Range: r}, To: txn.Addr{Node: 2}, Vote: txn.VoteYes})
	}
	if len(h.proposals) != 1 || len(h.sentOf(txn.MsgCommit)) != 0 || res != nil {
		t.Fatalf("after the votes: %d proposals, commits %v, result %v: want the decision CAS only", len(h.proposals), h.sentOf(txn.MsgCommit), res)
	}
	h.apply()
	if res == nil || res.Outcome != txn.OutcomeCommitted || len(h.sentOf(txn.MsgCommit)) != 2 {
		t.Fatalf("after the decision: result %v, commits %v", res, h.sentOf(txn.MsgCommit))
	}
	if c := g.Committing(); len(c) != 1 {
		t.Fatalf("committing = %v, want t1 until acked", c)
	}
	for _, r := range []txn.RangeID{7, 8} {
		_ = g.Step(txn.Message{Type: txn.MsgAck, Txn: 1, Attempt: 1, From: txn.Addr{Range: r}, To: txn.Addr{Node: 2}, Decision: txn.DecisionCommitted})
	}
	if len(h.proposals) != 0 {
		t.Fatalf("END proposed before the tick that batches it: %v", h.log)
	}
	g.Tick()
	if len(h.proposals) != 1 || !strings.Contains(h.log[len(h.log)-1], "propose-at") {
		t.Fatalf("no END proposed after the acks and a tick: %v", h.log)
	}
	if g.Has(1, 1) || len(g.Committing()) != 0 {
		t.Fatal("gateway still runs t1 after the acks")
	}
}

// A lost race (the record already says ABORTED) is what the caller hears.
func TestGatewayCASLostToAbort(t *testing.T) {
	h := newFakeHost(t)
	g, _ := NewGateway(h, 2, GatewayConfig{ResendTicks: 4, VoteTimeoutTicks: 100, DecideTimeoutTicks: 100, PrepareAnchor: true})
	var res *txn.Result
	req := txn.CommitRequest{Txn: 1, Attempt: 1, Anchor: 7, AnchorKey: []byte("b"),
		Participants: []txn.Participation{{Range: 7, Term: 3, Writes: true}, {Range: 8, Term: 4, Writes: true}}}
	_ = g.Commit(t0, req, func(r txn.Result) { res = &r })
	for _, r := range []txn.RangeID{7, 8} {
		_ = g.Step(txn.Message{Type: txn.MsgVote, Txn: 1, Attempt: 1, From: txn.Addr{Range: r}, To: txn.Addr{Node: 2}, Vote: txn.VoteYes})
	}
	h.apply(vowdbpb.TxnState_TXN_ABORTED)
	if res == nil || res.Outcome != txn.OutcomeAborted || len(h.sentOf(txn.MsgCommit)) != 0 {
		t.Fatalf("result %v commits %v: want ABORTED and no COMMIT", res, h.sentOf(txn.MsgCommit))
	}
}

// An ACTIVE txn that heard neither an operation nor a keep-alive for the
// idle timeout is aborted and its locks go to the next waiter; a keep-alive,
// a grant after a wait, or a wait in progress keeps a txn; a prepared txn
// is never aborted for silence (rule 2).
func TestTenureIdleTimeout(t *testing.T) {
	h := newFakeHost(t)
	tr := newTenureConfig(t, h, Config{IdleTimeout: 5 * time.Second})
	long := func(op Op) Op { op.LockTimeout = time.Minute; return op }
	var g1, g2, g3, g4 grant
	_ = tr.Do(t0, put(1, "b"), g1.done)       // t1 goes silent
	_ = tr.Do(t0, put(2, "c"), g2.done)       // t2 keeps alive
	_ = tr.Do(t0, long(put(3, "b")), g3.done) // t3 waits for t1
	_ = tr.Do(t0, put(4, "d"), g4.done)       // t4 prepares
	if err := tr.Step(prepare(4, tr.Number())); err != nil {
		t.Fatal(err)
	}
	h.apply()
	state := func(id lock.TxnID) txn.State {
		for _, v := range tr.Txns() {
			if v.Txn == id {
				return v.State
			}
		}
		return 0
	}
	tick := func(at time.Time) { h.now = at; tr.Tick(at) }
	tr.KeepAlive(t0.Add(3*time.Second), 2, 1)
	tr.KeepAlive(t0.Add(3*time.Second), 1, 99) // another attempt's keep-alive is not t1's
	tick(t0.Add(5 * time.Second))
	if state(1) != txn.StateActive || g3.called {
		t.Fatalf("t1 %v, t3 granted %v: aborted at, not after, the idle timeout", state(1), g3.called)
	}
	tick(t0.Add(5*time.Second + time.Millisecond))
	if state(1) != 0 || !g3.called || g3.ab != nil || g3.waited != 5*time.Second+time.Millisecond {
		t.Fatalf("t1 %v, t3 %+v: want t1 aborted for silence and t3 granted after waiting 5.001s", state(1), g3)
	}
	if state(2) != txn.StateActive || state(3) != txn.StateActive {
		t.Fatalf("t2 %v (kept alive), t3 %v (was waiting): want both ACTIVE", state(2), state(3))
	}
	var g5 grant
	if err := tr.Do(t0.Add(6*time.Second), put(1, "e"), g5.done); err == nil || !strings.Contains(err.Error(), "IDLE") {
		t.Fatalf("op of the idle-aborted attempt: %v, want refused naming IDLE", err)
	}
	tick(t0.Add(9 * time.Second))
	if state(2) != 0 || state(3) != txn.StateActive {
		t.Fatalf("t2 %v (silent since 3s), t3 %v (granted at 5s): want t2 aborted, t3 ACTIVE", state(2), state(3))
	}
	tick(t0.Add(30 * time.Second))
	if state(4) != txn.StatePrepared {
		t.Fatalf("prepared t4 is %v after 30s of silence, want PREPARED", state(4))
	}
	if state(3) != 0 {
		t.Fatalf("t3 %v: want aborted once silent past the timeout", state(3))
	}
}
