package txn

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vowdb/vowdb/internal/lock"
)

// world is an in-test cluster for the crash and randomized tests: one
// coordinator node, a few ranges (each a participant leader plus the txn
// records it anchors), and a network of in-flight messages. Its driver loop
// (flush) follows the order documented on Ready, and it checks the safety
// invariants at every durable write, send and client result:
//
//	I1 a decision, once recorded, never changes (rule 2);
//	I2 no range applies a 2PC commit unless the decision is COMMITTED;
//	I3 a prepared range never aborts if the decision is COMMITTED, and the
//	   decision never becomes COMMITTED after a prepared range aborted;
//	I4 YES leaves a range only with its prepare record durable, COMMIT
//	   leaves the coordinator only with COMMITTED recorded (rule 1);
//	I5 the client hears "committed" only if the record is COMMITTED (2PC)
//	   or the one writer applied (1PC), and "aborted" only if nothing was
//	   or ever will be applied.
//
// checkFinal adds, after heal: every prepared range applied the decision,
// and nothing is left prepared, pending or recorded (liveness).
type world struct {
	tb     testing.TB
	name   string // e.g. the seed, printed with every failure
	rng    *rand.Rand
	faults bool // rng injects faults in flush and network
	hook   func(point string) action
	coord  *Coordinator
	// coordCfg configures the coordinator (and its restarts); with a rng,
	// half of the seeds run with AnchorDecides.
	coordCfg CoordinatorConfig
	epoch    int // coordinator restarts
	ranges   []*rangeSim
	net      []Message
	txns     map[recordKey]*txnInfo
	healed   bool
	trace    []string
	// maxFinished is each participant's MaxFinished; small values make
	// them forget and answer conservatively.
	maxFinished int
}

type rangeSim struct {
	id          RangeID
	term        uint64
	p           *Participant
	prepared    map[lock.TxnID]PrepareRecord // durable range state
	records     RecordTable                  // durable txn records anchored here
	applied     map[recordKey]Decision       // durable outcomes applied here
	unreachable bool                         // Inquire to this range is lost
}

type txnInfo struct {
	req        CommitRequest
	epoch      int      // coordinator epoch at Commit
	decision   Decision // first decision ever recorded (the record may be Ended since)
	result     *Result
	preparedAt map[RangeID]bool // prepare record became durable there
	committed  map[RangeID]bool
	abortedPre bool // some prepared range applied an AbortRecord
}

var simCoordCfg = CoordinatorConfig{Node: 9, ResendTicks: 2, VoteTimeoutTicks: 12, DecideTimeoutTicks: 12}

func (w *world) partCfg(r RangeID, term uint64) ParticipantConfig {
	return ParticipantConfig{Range: r, Term: term, InquireTicks: 3, MaxFinished: w.maxFinished}
}

func newWorld(tb testing.TB, name string, nranges int, rng *rand.Rand) *world {
	w := &world{tb: tb, name: name, rng: rng, txns: map[recordKey]*txnInfo{}, maxFinished: 1000}
	if rng != nil && rng.IntN(4) == 0 {
		w.maxFinished = 1
	}
	w.coordCfg = simCoordCfg
	if rng != nil && rng.IntN(2) == 0 {
		w.coordCfg.AnchorDecides = true
	}
	w.coord = must(NewCoordinator(w.coordCfg))
	for i := 1; i <= nranges; i++ {
		rs := &rangeSim{id: RangeID(i), term: 1, prepared: map[lock.TxnID]PrepareRecord{},
			applied: map[recordKey]Decision{}}
		p, _, err := NewParticipant(w.partCfg(rs.id, 1), nil)
		if err != nil {
			tb.Fatal(err)
		}
		rs.p = p
		w.ranges = append(w.ranges, rs)
	}
	return w
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf(format, args...))
}

func (w *world) fatalf(format string, args ...any) {
	w.tb.Helper()
	tail := w.trace[max(0, len(w.trace)-60):]
	w.tb.Fatalf("%s: %s\ntrace (last %d events):\n  %s", w.name, fmt.Sprintf(format, args...), len(tail),
		strings.Join(tail, "\n  "))
}

func (w *world) rangeOf(r RangeID) *rangeSim { return w.ranges[r-1] }

// spec is one range of a txn in the workload: does T write there?
type spec struct {
	r      RangeID
	writes bool
}

// begin admits T's operations on each range (locks granted in the current
// term) and asks the coordinator to commit. The anchor is the first range
// T writes.
func (w *world) begin(txn lock.TxnID, specs []spec) {
	req := CommitRequest{Txn: txn, Attempt: 1}
	for _, s := range specs {
		rs := w.rangeOf(s.r)
		key := []byte(fmt.Sprintf("k%d", txn))
		op := Op{Txn: txn, Attempt: 1, Span: lock.Point(key), Mode: lock.S}
		if s.writes {
			op.Mode, op.Write = lock.X, &Write{Key: key, Value: []byte(fmt.Sprintf("v%d", txn))}
			if req.Anchor == 0 {
				req.Anchor, req.AnchorKey = s.r, key
			}
		}
		if err := rs.p.Admit(op); err != nil {
			w.fatalf("admit t%d at r%d: %v", txn, s.r, err)
		}
		req.Participants = append(req.Participants, Participation{Range: s.r, Term: rs.term, Writes: s.writes})
	}
	if req.Anchor == 0 {
		req.Anchor, req.AnchorKey = specs[0].r, []byte(fmt.Sprintf("k%d", txn))
	}
	w.txns[recordKey{txn, 1}] = &txnInfo{req: req, epoch: w.epoch, preparedAt: map[RangeID]bool{},
		committed: map[RangeID]bool{}}
	w.logf("begin t%d %+v", txn, req.Participants)
	if err := w.coord.Commit(req); err != nil {
		w.fatalf("commit: %v", err)
	}
}

// action is what a fault hook does at a point.
type action uint8

const (
	proceed action = iota
	crash          // the node crashes and restarts from its durable state
	drop           // a send point only: this one message is lost
)

// point is a fault point: before or after a durable write, or before a
// send. It reports what happens there.
func (w *world) point(what string) action {
	a := proceed
	if w.hook != nil {
		a = w.hook(what)
	} else if w.faults && w.rng.IntN(200) < 2 {
		a = crash
	}
	if a != proceed {
		w.logf("%v at %s", a, what)
	}
	return a
}

func (a action) String() string {
	return [...]string{proceed: "proceed", crash: "CRASH", drop: "DROP"}[a]
}

// explainPanic turns a panic of the code under test (a broken internal
// invariant) into a failure that shows the seed and the trace.
func (w *world) explainPanic() {
	if r := recover(); r != nil {
		w.fatalf("panic: %v", r)
	}
}

// flush runs every node's Ready until none has one.
func (w *world) flush() {
	defer w.explainPanic()
	for progress := true; progress; {
		progress = false
		if w.coord.HasReady() {
			w.flushCoord()
			progress = true
		}
		for _, rs := range w.ranges {
			if rs.p.HasReady() {
				w.flushRange(rs)
				progress = true
			}
		}
	}
}

type casDone struct {
	rec DecisionRecord
	got Decision
}

func (w *world) flushCoord() {
	rd := w.coord.Ready()
	var done []casDone
	for _, r := range rd.Records {
		if w.point("n9 before "+r.String()) != proceed {
			w.restartCoord()
			return
		}
		switch r := r.(type) {
		case DecisionRecord:
			got := w.cas(w.rangeOf(r.Anchor), r)
			done = append(done, casDone{r, got})
		case EndRecord:
			w.logf("apply %v", r)
			w.rangeOf(r.Anchor).records.End(r)
		}
		if w.point("n9 after "+r.String()) != proceed {
			w.restartCoord()
			return
		}
	}
	for _, m := range rd.Messages {
		switch w.point("n9 send " + m.String()) {
		case crash:
			w.restartCoord()
			return
		case proceed:
			w.send(m)
		}
	}
	for _, res := range rd.Results {
		w.onResult(res)
	}
	w.coord.Advance(rd)
	for _, d := range done {
		switch {
		case w.faults && w.rng.IntN(100) < 5:
			w.logf("CAS result of t%d lost: report unknown", d.rec.Txn)
			w.coord.CASResult(d.rec.Txn, d.rec.Attempt, DecisionPending)
		case w.faults && w.rng.IntN(100) < 5:
			w.logf("CAS result of t%d lost: never reported", d.rec.Txn)
		default:
			w.coord.CASResult(d.rec.Txn, d.rec.Attempt, d.got)
		}
	}
}

func (w *world) flushRange(rs *rangeSim) {
	rd := rs.p.Ready()
	for i, r := range rd.Records {
		if w.point(fmt.Sprintf("r%d before %v", rs.id, r)) != proceed {
			w.restartRange(rs)
			return
		}
		if applied := w.applyRecord(rs, r); applied != nil {
			rd.Records[i] = applied // confirmed as what it turned out to be
		}
		if w.point(fmt.Sprintf("r%d after %v", rs.id, r)) != proceed {
			w.restartRange(rs)
			return
		}
	}
	for _, m := range rd.Messages {
		w.checkRangeSend(rs, m)
		switch w.point(fmt.Sprintf("r%d send %v", rs.id, m)) {
		case crash:
			w.restartRange(rs)
			return
		case proceed:
			w.send(m)
		}
	}
	rs.p.Advance(rd)
}

// cas applies a DecisionRecord at the anchor and checks I1 and I3.
func (w *world) cas(anchor *rangeSim, r DecisionRecord) Decision {
	got := anchor.records.CAS(r)
	w.logf("apply %v → %v", r, got)
	w.noteDecision(recordKey{r.Txn, r.Attempt}, got)
	return got
}

func (w *world) noteDecision(k recordKey, got Decision) {
	info := w.txns[k]
	switch {
	case info.decision == DecisionPending:
		info.decision = got
	case info.decision != got:
		w.fatalf("I1: t%d decision changed %v → %v", k.txn, info.decision, got)
	}
	if got == DecisionCommitted && info.abortedPre {
		w.fatalf("I3: t%d decided COMMITTED after a prepared range aborted", k.txn)
	}
	if got == DecisionAborted && len(info.committed) > 0 {
		w.fatalf("I2: t%d decided ABORTED after ranges %v committed", k.txn, info.committed)
	}
}

// applyRecord applies r at rs. A commit with the decision whose CAS lost
// applies as an abort: it returns the AbortRecord to confirm instead.
func (w *world) applyRecord(rs *rangeSim, r Record) Record {
	w.logf("apply %v", r)
	switch r := r.(type) {
	case PrepareRecord:
		rs.prepared[r.Txn] = r
		w.txns[recordKey{r.Txn, r.Attempt}].preparedAt[rs.id] = true
	case CommitRecord:
		k := recordKey{r.Txn, r.Attempt}
		info := w.txns[k]
		if r.Decide != nil {
			if r.Decide.Anchor != rs.id {
				w.fatalf("r%d commits t%d with the decision of anchor r%d", rs.id, r.Txn, r.Decide.Anchor)
			}
			if got := w.cas(rs, *r.Decide); got != DecisionCommitted {
				w.applyOutcome(rs, k, DecisionAborted)
				return AbortRecord{Txn: r.Txn, Attempt: r.Attempt, Range: r.Range}
			}
		}
		if !r.OnePhase && info.decision != DecisionCommitted {
			w.fatalf("I2: r%d commits t%d with decision %v", rs.id, r.Txn, info.decision)
		}
		if info.result != nil && info.result.Outcome == OutcomeAborted {
			w.fatalf("I5: r%d commits t%d, client was told aborted", rs.id, r.Txn)
		}
		w.applyOutcome(rs, k, DecisionCommitted)
		info.committed[rs.id] = true
	case AbortRecord:
		k := recordKey{r.Txn, r.Attempt}
		info := w.txns[k]
		if info.decision == DecisionCommitted {
			w.fatalf("I3: prepared r%d aborts t%d, decision COMMITTED", rs.id, r.Txn)
		}
		w.applyOutcome(rs, k, DecisionAborted)
		info.abortedPre = true
	}
	return nil
}

func (w *world) applyOutcome(rs *rangeSim, k recordKey, d Decision) {
	if prev, ok := rs.applied[k]; ok && prev != d {
		w.fatalf("r%d applies %v for t%d after %v", rs.id, d, k.txn, prev)
	}
	rs.applied[k] = d
	delete(rs.prepared, k.txn)
}

// checkRangeSend checks I4 for a participant's message.
func (w *world) checkRangeSend(rs *rangeSim, m Message) {
	k := recordKey{m.Txn, m.Attempt}
	rec, prepared := rs.prepared[m.Txn]
	durable := prepared && rec.Attempt == m.Attempt
	switch {
	case m.Type == MsgVote && m.Vote == VoteYes && !durable && rs.applied[k] != DecisionCommitted:
		w.fatalf("I4: r%d votes YES for t%d without a durable prepare record", rs.id, m.Txn)
	case (m.Type == MsgAck || m.Type == MsgOnePhaseResp) && m.Decision == DecisionCommitted &&
		rs.applied[k] != DecisionCommitted:
		w.fatalf("I4: r%d answers %v for t%d before applying it", rs.id, m.Decision, m.Txn)
	}
}

// send puts m on the network; with faults it may be lost or duplicated.
func (w *world) send(m Message) {
	if m.Type == MsgCommit && w.txns[recordKey{m.Txn, m.Attempt}].decision != DecisionCommitted {
		w.fatalf("I4: COMMIT for t%d sent without a COMMITTED record", m.Txn)
	}
	w.logf("send %v", m)
	w.net = append(w.net, m)
}

func (w *world) onResult(res Result) {
	w.logf("%v", res)
	info := w.txns[recordKey{res.Txn, res.Attempt}]
	info.result = &res
	switch res.Outcome {
	case OutcomeCommitted:
		if res.Path == PathTwoPhase && info.decision != DecisionCommitted {
			w.fatalf("I5: client told t%d committed with decision %v", res.Txn, info.decision)
		}
		if res.Path == PathOnePhase && len(info.committed) != 1 {
			w.fatalf("I5: client told t%d committed (1PC), applied at %v", res.Txn, info.committed)
		}
	case OutcomeAborted:
		if info.decision == DecisionCommitted || len(info.committed) > 0 {
			w.fatalf("I5: client told t%d aborted, decision %v, committed at %v", res.Txn, info.decision, info.committed)
		}
	}
}

// deliver takes the i-th in-flight message off the network and hands it to
// its receiver.
func (w *world) deliver(i int) {
	defer w.explainPanic()
	m := w.net[i]
	w.net = slices.Delete(w.net, i, i+1)
	if m.To.Node != 0 {
		w.logf("recv %v", m)
		if err := w.coord.Step(m); err != nil {
			w.fatalf("coordinator step: %v", err)
		}
		return
	}
	rs := w.rangeOf(m.To.Range)
	if m.Type == MsgInquire {
		w.inquire(rs, m)
		return
	}
	w.logf("recv %v", m)
	if err := rs.p.Step(m); err != nil {
		w.fatalf("participant step: %v", err)
	}
}

// inquire plays the anchor range's side of Inquire.
func (w *world) inquire(rs *rangeSim, m Message) {
	if rs.unreachable {
		w.logf("lost (anchor unreachable) %v", m)
		return
	}
	k := recordKey{m.Txn, m.Attempt}
	before := rs.records.Get(m.Txn, m.Attempt)
	resp := rs.records.Inquire(m, w.coordGone(k))
	w.logf("recv %v → %v", m, resp.Decision)
	if before == DecisionPending && resp.Decision != DecisionPending {
		w.noteDecision(k, resp.Decision)
	}
	w.send(resp)
}

// coordGone is the anchor's judgement "T's coordinator is gone" (rule 4):
// true once the coordinator restarted or after heal, and, with faults, now
// and then at random. A wrong "gone" must cost liveness only, never safety.
func (w *world) coordGone(k recordKey) bool {
	if w.healed || w.txns[k].epoch < w.epoch {
		return true
	}
	return w.faults && w.rng.IntN(100) < 10
}

func (w *world) tick() {
	defer w.explainPanic()
	w.coord.Tick()
	for _, rs := range w.ranges {
		rs.p.Tick()
		for _, a := range w.ranges {
			if a.unreachable {
				rs.p.Unreachable(a.id) // the driver's failed Inquire reports it
			}
		}
	}
}

// restartRange is a leader change (or crash) of rs: volatile state is lost,
// the next leader rebuilds from durable prepare records (rule 6).
func (w *world) restartRange(rs *rangeSim) {
	rs.term++
	recs := make([]PrepareRecord, 0, len(rs.prepared))
	for _, r := range rs.prepared {
		recs = append(recs, r)
	}
	p, relock, err := NewParticipant(w.partCfg(rs.id, rs.term), recs)
	if err != nil {
		w.fatalf("restart r%d: %v", rs.id, err)
	}
	slices.SortFunc(recs, func(a, b PrepareRecord) int { return cmp.Compare(a.Txn, b.Txn) })
	var want []lock.Lock
	for _, r := range recs {
		want = append(want, r.Locks...)
	}
	if !reflect.DeepEqual(relock, want) {
		w.fatalf("restart r%d: re-acquire %v, want %v", rs.id, relock, want)
	}
	rs.p = p
	w.logf("restart r%d term %d with %d prepared", rs.id, rs.term, len(recs))
}

// restartCoord crashes the coordinator node: it comes back empty, and the
// anchor ranges' recovery hands it the decided records (rule 6).
func (w *world) restartCoord() {
	w.epoch++
	w.coord = must(NewCoordinator(w.coordCfg))
	w.logf("restart n9 (epoch %d)", w.epoch)
	w.recover()
}

func (w *world) recover() {
	for _, rs := range w.ranges {
		w.coord.Restore(rs.records.Decided())
	}
}

// heal stops all faults and runs until the system is quiet, then checks
// the final state.
func (w *world) heal() {
	w.healed, w.faults, w.hook = true, false, nil
	for _, rs := range w.ranges {
		rs.unreachable = false
	}
	w.settle()
	w.checkFinal()
}

// settle delivers messages in order and ticks until the system is quiet.
func (w *world) settle() {
	for round := 0; ; round++ {
		w.flush()
		for len(w.net) > 0 {
			w.deliver(0)
			w.flush()
		}
		if w.quiet() {
			break
		}
		if round > 500 {
			w.fatalf("no progress after heal: %d coordinator txns, prepared %v", w.coord.Pending(), w.preparedLeft())
		}
		w.tick()
		if round%20 == 19 {
			w.recover() // as a new anchor leader would
		}
	}
}

func (w *world) quiet() bool {
	if len(w.net) > 0 || w.coord.Pending() > 0 || len(w.preparedLeft()) > 0 {
		return false
	}
	for _, rs := range w.ranges {
		if len(rs.records.Decided()) > 0 {
			return false
		}
	}
	return true
}

func (w *world) preparedLeft() []string {
	var out []string
	for _, rs := range w.ranges {
		for id := range rs.prepared {
			out = append(out, fmt.Sprintf("t%d@r%d", id, rs.id))
		}
	}
	slices.Sort(out)
	return out
}

// checkFinal: every range that prepared applied the decision; a txn never
// decided (or decided ABORTED) committed nowhere, except a 1PC commit; no
// range still holds a txn PREPARED. (An ACTIVE txn whose coordinator
// crashed before its PREPAREs stays ACTIVE here: the host ends it by its
// deadline or the client's rollback, which this world does not model.)
func (w *world) checkFinal() {
	for _, rs := range w.ranges {
		for id, t := range rs.p.live {
			if t.state == StatePrepared {
				w.fatalf("final: t%d still PREPARED at r%d", id, rs.id)
			}
		}
	}
	for k, info := range w.txns {
		for r := range info.preparedAt {
			got := w.rangeOf(r).applied[k]
			want := info.decision
			if want == DecisionPending {
				want = DecisionAborted // presumed abort (rule 4)
			}
			if got != want {
				w.fatalf("final: t%d prepared at r%d applied %v, decision %v", k.txn, r, got, info.decision)
			}
		}
		if info.decision == DecisionCommitted || info.result != nil && info.result.Outcome == OutcomeCommitted {
			for _, p := range info.req.Participants {
				if p.Writes && !info.committed[p.Range] {
					w.fatalf("final: t%d committed, but writer r%d did not apply it", k.txn, p.Range)
				}
			}
		}
		if info.decision != DecisionCommitted && len(info.committed) > 0 && len(info.preparedAt) > 0 {
			w.fatalf("final: t%d committed at %v without a COMMITTED decision", k.txn, info.committed)
		}
	}
}
