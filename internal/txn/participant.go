package txn

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vowdb/vowdb/internal/lock"
)

// ParticipantConfig configures a Participant.
type ParticipantConfig struct {
	Range RangeID
	// Term is the leader term of this Participant. A Participant lives for
	// one leader tenure: when the replica loses leadership the driver drops
	// it, and the next leader builds a new one from the durable prepare
	// records. Raft never lets one node lead twice in the same term, so a
	// term names a tenure, and locks are valid only within it (rule 8).
	Term uint64
	// InquireTicks is how many ticks a PREPARED txn waits in silence before
	// it asks its txn record (rule 5). Must be > 0.
	InquireTicks int
	// MaxFinished bounds how many finished txns are remembered (rule 7).
	// When it is exceeded the oldest are forgotten; from then on an unknown
	// txn is answered conservatively (see neverPrepared). It must cover the
	// txns that finish within the longest delay of a duplicated operation.
	MaxFinished int
}

// Op is one operation the leader admitted for a txn under locks the lock
// table granted in this term: a read (S, no Write) or a write (X, Write).
type Op struct {
	Txn     lock.TxnID
	Attempt uint64
	Span    lock.Span
	Mode    lock.Mode
	Write   *Write
}

// ptxn is a live (ACTIVE or PREPARED) txn attempt on this range.
type ptxn struct {
	id      lock.TxnID
	attempt uint64
	state   State // StateActive or StatePrepared
	xlocks  []lock.Lock
	writes  []Write
	rec     PrepareRecord // valid in StatePrepared
	durable bool          // rec confirmed durable by Advance
	// finishing is the decision whose Commit/AbortRecord is out but not
	// yet durable; DecisionPending if none.
	finishing Decision
	onePhase  bool
	decide    *DecisionRecord // onePhase: the commit also records the decision
	voteTo    Addr            // who asked Prepare: gets the YES
	ackTo     Addr            // who sent Commit/Abort/OnePhaseCommit: gets the answer
	idle      int             // ticks since this txn last heard anything (PREPARED)
}

// vowed reports whether t is past the point of no return: prepared, or its
// one-phase commit record is out. Only the decision ends it now (rule 2).
func (t *ptxn) vowed() bool { return t.state == StatePrepared || t.finishing != DecisionPending }

// Participant is the 2PC participant of one range, run by the range's
// leader for all txns that touch the range. It is not safe for concurrent
// use; the replica calls it from one goroutine.
type Participant struct {
	cfg      ParticipantConfig
	live     map[lock.TxnID]*ptxn
	finished map[lock.TxnID]done
	order    []lock.TxnID // finished ids, oldest first (bounds finished)
	// forgot is set once a finished txn was dropped: from then on "unknown"
	// no longer proves "never prepared here in this tenure".
	forgot bool
	out    Ready
}

// NewParticipant builds the participant of a new leader tenure from the
// range's durable prepare records (rule 6): each becomes PREPARED again,
// asks its txn record at once, and its X locks are returned for the driver
// to re-acquire before the leader serves any request.
func NewParticipant(cfg ParticipantConfig, prepared []PrepareRecord) (*Participant, []lock.Lock, error) {
	if cfg.Range == 0 || cfg.InquireTicks <= 0 || cfg.MaxFinished <= 0 {
		return nil, nil, fmt.Errorf("%w: participant config %+v", ErrInvalid, cfg)
	}
	p := &Participant{cfg: cfg, live: map[lock.TxnID]*ptxn{}, finished: map[lock.TxnID]done{}}
	recs := slices.Clone(prepared)
	slices.SortFunc(recs, func(a, b PrepareRecord) int { return cmp.Compare(a.Txn, b.Txn) })
	var relock []lock.Lock
	for _, r := range recs {
		if r.Range != cfg.Range {
			return nil, nil, fmt.Errorf("%w: prepare record of r%d given to r%d", ErrInvalid, r.Range, cfg.Range)
		}
		t := &ptxn{id: r.Txn, attempt: r.Attempt, state: StatePrepared, xlocks: r.Locks, writes: r.Writes,
			rec: r, durable: true, voteTo: Addr{Node: r.Coordinator}}
		p.live[r.Txn] = t
		relock = append(relock, r.Locks...)
		p.inquire(t)
	}
	return p, relock, nil
}

// Admit records an operation the leader admitted (its lock granted in this
// term). The first one makes the txn ACTIVE. It fails if the txn is past its
// lock point (ErrVowed, rule 9) or already finished here (ErrFinished, rule 7).
func (p *Participant) Admit(op Op) error {
	if op.Write != nil && op.Mode != lock.X {
		return fmt.Errorf("%w: write under an %v lock", ErrInvalid, op.Mode)
	}
	l := p.resolve(op.Txn, op.Attempt)
	t := l.t
	switch l.v {
	case viewLive, viewBlocked:
		if l.v == viewBlocked || t.vowed() {
			return ErrVowed
		}
	case viewFinished, viewStale:
		return ErrFinished
	case viewUnknown:
		t = &ptxn{id: op.Txn, attempt: op.Attempt, state: StateActive}
		p.live[op.Txn] = t
		delete(p.finished, op.Txn)
	}
	if op.Mode == lock.X {
		t.xlocks = append(t.xlocks, lock.Lock{Txn: op.Txn, Span: op.Span, Mode: lock.X})
	}
	if op.Write != nil {
		t.writes = append(t.writes, *op.Write)
	}
	return nil
}

// Abort aborts an ACTIVE txn on the leader's own initiative (deadlock
// victim, lock-wait timeout, deadline). A prepared txn cannot be aborted
// this way: ErrVowed (rule 2). Unknown or finished txns: nothing to do.
func (p *Participant) Abort(txn lock.TxnID) error {
	t := p.live[txn]
	switch {
	case t == nil:
		return nil
	case t.vowed():
		return ErrVowed
	}
	p.release(t, StateAborted)
	return nil
}

// Tick advances time by one tick: a PREPARED txn that heard nothing for
// InquireTicks asks its txn record (rule 5). It never decides by itself
// (rule 2), however long it waits.
func (p *Participant) Tick() {
	for _, t := range p.waiting() {
		t.idle++
		if t.idle >= p.cfg.InquireTicks {
			t.idle = 0
			p.inquire(t)
		}
	}
}

// Unreachable reports that the anchor range cannot be reached: every
// PREPARED txn whose record lives there asks the other participants instead
// (cooperative termination, rule 5).
func (p *Participant) Unreachable(anchor RangeID) {
	for _, t := range p.waiting() {
		if t.rec.Anchor != anchor {
			continue
		}
		for _, q := range t.rec.Participants {
			if q.Range != p.cfg.Range {
				p.send(Message{Type: MsgInquirePeer, Txn: t.id, Attempt: t.attempt,
					To: Addr{Range: q.Range}, Term: q.Term})
			}
		}
	}
}

// State returns txn's state here (the live or remembered attempt), or 0 if
// unknown.
func (p *Participant) State(txn lock.TxnID) State {
	if t, ok := p.live[txn]; ok {
		return t.state
	}
	return p.finished[txn].state
}

// HasReady reports whether Ready has something to do.
func (p *Participant) HasReady() bool { return !p.out.Empty() }

// Ready returns the outputs accumulated since the last Advance. See Ready
// for the order in which the driver must handle them.
func (p *Participant) Ready() Ready { return p.out }

// Advance confirms that rd (returned by Ready) was handled: its records are
// durable and its messages sent. Messages that waited on those records
// (YES, ACK) appear in the next Ready.
func (p *Participant) Advance(rd Ready) {
	p.out.trim(rd)
	p.Persisted(rd)
}

// Take returns the outputs accumulated since the last Take (or Advance)
// and removes them, so that a driver can have several Readys' records in
// flight at once (pipelining). Its messages and releases are handled at
// once as Ready documents; its records, if any, are confirmed with
// Persisted once durable. A driver that takes must confirm the taken
// Readys in the order it took them, each only after all of its records are
// durable; if any record fails, it discards the Participant (as with
// Advance). A message that depends on a record still never shares a Ready
// with it: it appears only after Persisted confirmed the record.
func (p *Participant) Take() Ready {
	rd := p.out
	p.out = Ready{}
	return rd
}

// Persisted confirms that the records of rd, a Ready returned by Take, are
// durable (Advance does this for a Ready returned by Ready). A CommitRecord
// with Decide whose compare-and-set lost applied nothing: the driver puts
// the AbortRecord of the same attempt in its place before confirming.
func (p *Participant) Persisted(rd Ready) {
	for _, r := range rd.Records {
		switch r := r.(type) {
		case PrepareRecord:
			p.prepareDurable(r)
		case CommitRecord:
			p.finishDurable(r.Txn, r.Attempt, StateCommitted)
		case AbortRecord:
			p.finishDurable(r.Txn, r.Attempt, StateAborted)
		}
	}
}

func (p *Participant) prepareDurable(r PrepareRecord) {
	t := p.live[r.Txn]
	if t == nil || t.attempt != r.Attempt || t.state != StatePrepared {
		panic(fmt.Sprintf("txn: r%d: durable %v for a txn not PREPARED", p.cfg.Range, r))
	}
	t.durable = true
	if t.finishing == DecisionPending {
		p.send(Message{Type: MsgVote, Txn: t.id, Attempt: t.attempt, To: t.voteTo, Vote: VoteYes})
	}
}

func (p *Participant) finishDurable(txn lock.TxnID, attempt uint64, s State) {
	t := p.live[txn]
	if t == nil || t.attempt != attempt {
		panic(fmt.Sprintf("txn: r%d: durable outcome %v of t%d.%d that is not finishing", p.cfg.Range, s, txn, attempt))
	}
	p.release(t, s)
	if t.ackTo == (Addr{}) {
		return // learned by inquiry: nobody waits for an answer
	}
	typ := MsgAck
	if t.onePhase {
		typ = MsgOnePhaseResp
	}
	p.send(Message{Type: typ, Txn: txn, Attempt: attempt, To: t.ackTo, Decision: decisionOf(s)})
}

// waiting returns, sorted by id, the PREPARED txns that wait for the
// decision: durable and not yet finishing.
func (p *Participant) waiting() []*ptxn {
	var out []*ptxn
	for _, t := range p.live {
		if t.state == StatePrepared && t.durable && t.finishing == DecisionPending {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *ptxn) int { return cmp.Compare(a.id, b.id) })
	return out
}

func (p *Participant) inquire(t *ptxn) {
	p.send(Message{Type: MsgInquire, Txn: t.id, Attempt: t.attempt, To: Addr{Range: t.rec.Anchor},
		Participants: t.rec.Participants, Anchor: t.rec.Anchor, AnchorKey: t.rec.AnchorKey,
		Coordinator: t.rec.Coordinator})
}

func (p *Participant) send(m Message) {
	m.From = Addr{Range: p.cfg.Range}
	p.out.Messages = append(p.out.Messages, m)
}

// reply answers m with a message of type typ.
func (p *Participant) reply(m Message, typ MsgType, v Vote, d Decision) {
	p.send(Message{Type: typ, Txn: m.Txn, Attempt: m.Attempt, To: m.From, Vote: v, Decision: d})
}

// release ends a live txn here: its locks go, its outcome is remembered.
func (p *Participant) release(t *ptxn, s State) {
	delete(p.live, t.id)
	p.remember(t.id, t.attempt, s)
	p.out.Release = append(p.out.Release, t.id)
}

// view classifies a message's (txn, attempt) against what this participant
// knows.
type view uint8

const (
	viewUnknown  view = iota // never seen here in this tenure, or forgotten
	viewLive                 // ACTIVE or PREPARED, same attempt
	viewFinished             // finished here, same attempt
	viewStale                // older than the attempt known here: that one aborted (rule 7)
	viewBlocked              // newer than an attempt still PREPARED here
)

type lookup struct {
	v view
	t *ptxn // viewLive
	f done  // viewFinished
}

// resolve classifies (txn, attempt). NB: a newer attempt proves that an
// ACTIVE older one aborted (attempts follow aborts), so resolve releases it.
func (p *Participant) resolve(txn lock.TxnID, attempt uint64) lookup {
	if t, ok := p.live[txn]; ok {
		switch {
		case attempt == t.attempt:
			return lookup{v: viewLive, t: t}
		case attempt < t.attempt:
			return lookup{v: viewStale}
		case !t.vowed():
			p.release(t, StateAborted)
		default:
			return lookup{v: viewBlocked}
		}
	}
	if f, ok := p.finished[txn]; ok {
		switch {
		case attempt == f.attempt:
			return lookup{v: viewFinished, f: f}
		case attempt < f.attempt:
			return lookup{v: viewStale}
		}
	}
	return lookup{v: viewUnknown}
}

// Step handles a message addressed to this range. Every handler is
// idempotent: duplicates and late messages are answered from what is known
// and change nothing (rule 7).
func (p *Participant) Step(m Message) error {
	if m.To.Range != p.cfg.Range {
		return fmt.Errorf("%w: %v at r%d", ErrMisrouted, m, p.cfg.Range)
	}
	l := p.resolve(m.Txn, m.Attempt)
	if l.t != nil {
		l.t.idle = 0
	}
	switch m.Type {
	case MsgPrepare:
		p.stepPrepare(m, l)
	case MsgCommit:
		p.stepCommit(m, l)
	case MsgAbort:
		p.stepAbort(m, l)
	case MsgOnePhaseCommit:
		p.stepOnePhase(m, l)
	case MsgInquirePeer:
		p.stepInquirePeer(m, l)
	case MsgInquireResp, MsgInquirePeerResp:
		p.stepOutcome(m, l)
	default:
		return fmt.Errorf("%w: %v at participant r%d", ErrMisrouted, m, p.cfg.Range)
	}
	return nil
}

func (p *Participant) stepPrepare(m Message, l lookup) {
	switch l.v {
	case viewLive:
		t := l.t
		switch {
		case t.vowed():
			// Duplicate. After YES, YES again; before the record is durable,
			// the YES will follow Advance (rule 1); when finishing, the
			// decision is made and a vote adds nothing.
			if t.durable && t.finishing == DecisionPending {
				p.reply(m, MsgVote, VoteYes, DecisionPending)
			}
		case m.Term != p.cfg.Term:
			// The locks the coordinator relied on were granted in another
			// term; this ACTIVE state is a later, partial one (rule 8).
			p.release(t, StateAborted)
			p.reply(m, MsgVote, VoteNo, DecisionAborted)
		case len(t.writes) == 0:
			p.release(t, StateReadOnly) // rule 9: lock point passed, S locks may go
			p.reply(m, MsgVote, VoteReadOnly, DecisionPending)
		default:
			t.state, t.voteTo = StatePrepared, m.From
			t.rec = PrepareRecord{Txn: t.id, Attempt: t.attempt, Range: p.cfg.Range, Anchor: m.Anchor,
				AnchorKey: m.AnchorKey, Participants: m.Participants, Coordinator: m.Coordinator,
				Writes: t.writes, Locks: t.xlocks}
			p.out.Records = append(p.out.Records, t.rec) // the YES waits for Advance (rule 1)
		}
	case viewFinished:
		v := map[State]Vote{StateCommitted: VoteYes, StateAborted: VoteNo, StateReadOnly: VoteReadOnly}[l.f.state]
		p.reply(m, MsgVote, v, l.f.decision())
	case viewStale:
		p.reply(m, MsgVote, VoteNo, DecisionAborted)
	case viewBlocked:
		p.reply(m, MsgVote, VoteNo, DecisionPending)
	case viewUnknown:
		// State lost (leader change) or never here: NO, and remember it so
		// that a late operation cannot make it prepare later (rules 5, 8).
		p.refuse(m.Txn, m.Attempt, m.Term)
		p.reply(m, MsgVote, VoteNo, DecisionPending)
	}
}

func (p *Participant) stepCommit(m Message, l lookup) {
	switch l.v {
	case viewLive:
		t := l.t
		if t.state != StatePrepared {
			// Never voted YES for this attempt, so this cannot be its
			// decision: a duplicate from an older incarnation. ACK, no change.
			p.reply(m, MsgAck, 0, DecisionPending)
			return
		}
		if !t.durable {
			panic(fmt.Sprintf("txn: r%d: %v before the YES vote (rule 1 broken upstream)", p.cfg.Range, m))
		}
		t.ackTo = m.From
		p.finish(t, DecisionCommitted)
	case viewFinished:
		if l.f.decision() == DecisionAborted {
			panic(fmt.Sprintf("txn: r%d: %v for an aborted txn: decision changed (rule 2)", p.cfg.Range, m))
		}
		p.reply(m, MsgAck, 0, l.f.decision())
	default:
		p.reply(m, MsgAck, 0, DecisionPending) // unknown or older attempt: nothing to do (rule 7)
	}
}

func (p *Participant) stepAbort(m Message, l lookup) {
	switch l.v {
	case viewLive:
		t := l.t
		if !t.vowed() {
			p.release(t, StateAborted) // nothing durable to undo
			p.reply(m, MsgAck, 0, DecisionAborted)
			return
		}
		if t.decide != nil {
			// The commit-with-decision entry is out: the decision is
			// ABORTED only if an ABORTED record beat it, and then the entry
			// applies as an abort. Its outcome is the answer; a resent ABORT
			// finds it finished.
			return
		}
		t.ackTo = m.From
		p.finish(t, DecisionAborted)
	case viewFinished:
		if l.f.state == StateCommitted {
			panic(fmt.Sprintf("txn: r%d: %v for a committed txn: decision changed (rule 2)", p.cfg.Range, m))
		}
		p.reply(m, MsgAck, 0, l.f.decision())
	default:
		p.reply(m, MsgAck, 0, DecisionPending)
	}
}

// stepOnePhase commits an ACTIVE txn with a single Raft entry (rule 10).
// The coordinator sends it only to the txn's one writing range, after every
// other range voted READ-ONLY; or, with a Coordinator set, to the anchor
// range after every other range voted YES or READ-ONLY, and then the entry
// also records the decision (CoordinatorConfig.AnchorDecides).
func (p *Participant) stepOnePhase(m Message, l lookup) {
	switch l.v {
	case viewLive:
		t := l.t
		switch {
		case t.state == StatePrepared:
			// Not a one-phase txn here; nothing sensible to answer.
		case t.finishing != DecisionPending:
			t.ackTo = m.From // duplicate: the answer follows the durable record
		case m.Term != p.cfg.Term, m.Coordinator != 0 && len(t.writes) == 0:
			// rule 8; or the anchor holds none of the writes the client
			// made here, so they are lost and T cannot commit.
			p.release(t, StateAborted)
			p.reply(m, MsgOnePhaseResp, 0, DecisionAborted)
		default:
			t.onePhase, t.ackTo = true, m.From
			if m.Coordinator != 0 {
				targets := make([]RangeID, len(m.Participants))
				for i, q := range m.Participants {
					targets[i] = q.Range
				}
				t.decide = &DecisionRecord{Txn: t.id, Attempt: t.attempt, Anchor: p.cfg.Range,
					AnchorKey: m.AnchorKey, Decision: DecisionCommitted, Participants: targets,
					Coordinator: m.Coordinator}
			}
			p.finish(t, DecisionCommitted)
		}
	case viewFinished:
		p.reply(m, MsgOnePhaseResp, 0, l.f.decision())
	case viewStale:
		p.reply(m, MsgOnePhaseResp, 0, DecisionAborted)
	case viewBlocked:
		p.reply(m, MsgOnePhaseResp, 0, DecisionPending)
	case viewUnknown:
		// Never commit it later. But unless this tenure saw the txn's first
		// operation, an earlier leader may have committed it: say so.
		p.refuse(m.Txn, m.Attempt, m.Term)
		p.reply(m, MsgOnePhaseResp, 0, p.finished[m.Txn].decision())
	}
}

// stepInquirePeer answers a prepared peer's cooperative-termination
// question (rule 5): a known outcome, or ABORTED when this range certainly
// never prepared the txn (and now never will), or PENDING when it cannot
// tell.
func (p *Participant) stepInquirePeer(m Message, l lookup) {
	d := DecisionPending
	switch l.v {
	case viewLive:
		t := l.t
		if !t.vowed() && m.Term == p.cfg.Term {
			p.release(t, StateAborted) // vote NO forever: it can never prepare now
			d = DecisionAborted
		}
	case viewFinished:
		d = l.f.decision() // READ-ONLY: PENDING, it never learns the outcome
	case viewStale:
		d = DecisionAborted
	case viewUnknown:
		if p.neverPrepared(m.Term) {
			p.refuse(m.Txn, m.Attempt, m.Term)
			d = DecisionAborted
		}
	}
	p.reply(m, MsgInquirePeerResp, 0, d)
}

// stepOutcome applies an outcome learned by inquiry to a waiting PREPARED
// txn. PENDING changes nothing: a prepared txn waits (rule 2).
func (p *Participant) stepOutcome(m Message, l lookup) {
	if l.v != viewLive || l.t.state != StatePrepared || !l.t.durable {
		return
	}
	if m.Decision != DecisionPending {
		p.finish(l.t, m.Decision)
	}
}

// finish writes the record of decision d for t; the answer and the lock
// release follow Advance (finishDurable).
func (p *Participant) finish(t *ptxn, d Decision) {
	if t.finishing != DecisionPending {
		if t.finishing != d {
			panic(fmt.Sprintf("txn: r%d: t%d.%d told %v while finishing %v (rule 2)", p.cfg.Range, t.id, t.attempt, d, t.finishing))
		}
		return
	}
	t.finishing = d
	if d == DecisionCommitted {
		p.out.Records = append(p.out.Records, CommitRecord{Txn: t.id, Attempt: t.attempt, Range: p.cfg.Range,
			Writes: t.writes, OnePhase: t.onePhase, Decide: t.decide})
		return
	}
	p.out.Records = append(p.out.Records, AbortRecord{Txn: t.id, Attempt: t.attempt, Range: p.cfg.Range})
}
