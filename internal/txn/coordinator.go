package txn

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vowdb/vowdb/internal/lock"
)

// phase is where one txn is in the coordinator.
type phase uint8

const (
	phasePreparing  phase = iota + 1 // PREPAREs out, collecting votes
	phaseOnePhase                    // OnePhaseCommit out to the one writing range (rule 10)
	phaseDeciding                    // DecisionRecord out, waiting for the CAS result
	phaseCommitting                  // COMMITTED: COMMIT to the YES voters until each ACKs
	phaseAborting                    // ABORTED: ABORT to the maybe-prepared until each ACKs
	phaseEnding                      // EndRecord out, waiting for Advance
)

func (ph phase) String() string {
	switch ph {
	case phasePreparing:
		return "preparing"
	case phaseOnePhase:
		return "one-phase"
	case phaseDeciding:
		return "deciding"
	case phaseCommitting:
		return "committing"
	case phaseAborting:
		return "aborting"
	case phaseEnding:
		return "ending"
	}
	return fmt.Sprintf("phase(%d)", int(ph))
}

// CoordinatorConfig configures a Coordinator. Tick counts must be > 0.
type CoordinatorConfig struct {
	Node NodeID
	// ResendTicks is the interval at which unanswered PREPARE, COMMIT,
	// ABORT and OnePhaseCommit messages are sent again.
	ResendTicks int
	// VoteTimeoutTicks is how long phase 1 (or a one-phase commit) may take.
	// Then the coordinator aborts (2PC) or answers ambiguous (1PC).
	VoteTimeoutTicks int
	// DecideTimeoutTicks is how long the coordinator waits for CASResult
	// before it treats the CAS as ambiguous.
	DecideTimeoutTicks int
	// AnchorDecides commits a txn with several writing ranges without
	// preparing its anchor range (the last-agent optimisation): the other
	// ranges get PREPARE; once each voted YES (or READ-ONLY) the anchor,
	// still ACTIVE under its locks, gets a OnePhaseCommit that records the
	// decision. Its one Raft entry compare-and-sets the txn record to
	// COMMITTED and applies the anchor's writes, so the decision and the
	// anchor's commit are one durable write, and the anchor's PREPARE and
	// COMMIT records are never written. If the anchor answers anything but
	// COMMITTED (or nothing in time), its entry may still apply: the
	// coordinator then learns the outcome by a compare-and-set to ABORTED,
	// which either wins (nothing was committed anywhere) or finds COMMITTED.
	AnchorDecides bool
}

// CommitRequest asks to commit one attempt of a txn whose operations have
// all been answered (its lock point, rule 9).
type CommitRequest struct {
	Txn          lock.TxnID
	Attempt      uint64
	Participants []Participation
	// Anchor is the range holding AnchorKey, T's first written key, where
	// the txn record lives. It must be a participant with writes, or any
	// participant if T wrote nothing.
	Anchor    RangeID
	AnchorKey []byte
}

// ctxn is one txn attempt in the coordinator.
type ctxn struct {
	req        CommitRequest
	phase      phase
	onePhase   bool        // rule 10 path: the writer gets no PREPARE
	anchorLast bool        // AnchorDecides path: the anchor gets no PREPARE
	learning   bool        // the CAS to ABORTED may find COMMITTED: its result is the outcome
	yesVoters  []RangeID   // anchorLast: phase 2 of a COMMITTED decision
	why        AbortReason // learning: the reason to give if ABORTED wins
	whyRange   RangeID
	asked      map[RangeID]bool     // got a PREPARE (phase 1)
	votes      map[RangeID]Vote     // first vote of each range; never changes
	want       Decision             // the decision asked for by the CAS
	targets    []RangeID            // phase 2 recipients
	acked      map[RangeID]bool     // phase 2 ACKs
	recorded   bool                 // a txn record may exist: End it after phase 2
	answered   bool                 // the client has its Result (or never will)
	ticks      int                  // ticks spent in the current phase
	writers    map[RangeID]struct{} // ranges with writes, per the request
}

// Coordinator runs the commit of the txns begun on one gateway node, and the
// recovery of decided txn records handed to it by Restore. It is not safe
// for concurrent use.
type Coordinator struct {
	cfg  CoordinatorConfig
	txns map[lock.TxnID]*ctxn
	out  Ready
}

// NewCoordinator returns a coordinator with no txns. A restarted gateway
// starts empty: what it decided lives in txn records, and the anchor
// ranges' recovery (Restore) finishes it; what it did not decide is
// presumed aborted (rule 4).
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if cfg.Node == 0 || cfg.ResendTicks <= 0 || cfg.VoteTimeoutTicks <= 0 || cfg.DecideTimeoutTicks <= 0 {
		return nil, fmt.Errorf("%w: coordinator config %+v", ErrInvalid, cfg)
	}
	return &Coordinator{cfg: cfg, txns: map[lock.TxnID]*ctxn{}}, nil
}

// Commit starts the commit of req. With at most one writing range it takes
// the one-phase path (rule 10): the read-only ranges are asked to PREPARE
// (so they check their term and release), then the writer gets one
// OnePhaseCommit. Otherwise every range gets a PREPARE (phase 1).
func (c *Coordinator) Commit(req CommitRequest) error {
	if err := validate(req); err != nil {
		return err
	}
	if _, ok := c.txns[req.Txn]; ok {
		return ErrInProgress
	}
	t := &ctxn{req: req, phase: phasePreparing, asked: map[RangeID]bool{}, votes: map[RangeID]Vote{},
		acked: map[RangeID]bool{}, writers: map[RangeID]struct{}{}}
	for _, p := range req.Participants {
		if p.Writes {
			t.writers[p.Range] = struct{}{}
		}
	}
	t.onePhase = len(t.writers) <= 1
	t.anchorLast = c.cfg.AnchorDecides && !t.onePhase
	c.txns[req.Txn] = t
	for _, p := range req.Participants {
		if t.anchorLast && p.Range == req.Anchor {
			continue // it commits with the decision once the others voted
		}
		if _, w := t.writers[p.Range]; !w || !t.onePhase {
			t.asked[p.Range] = true
			c.sendPrepare(t, p)
		}
	}
	if len(t.asked) == 0 {
		c.startOnePhase(t) // a lone writer: no phase 1 at all
	}
	return nil
}

func validate(req CommitRequest) error {
	if len(req.Participants) == 0 {
		return fmt.Errorf("%w: t%d has no participants", ErrInvalid, req.Txn)
	}
	seen := map[RangeID]bool{}
	anchorWrites, anyWrites := false, false
	for _, p := range req.Participants {
		if p.Range == 0 || seen[p.Range] {
			return fmt.Errorf("%w: t%d: participant r%d zero or repeated", ErrInvalid, req.Txn, p.Range)
		}
		seen[p.Range] = true
		anyWrites = anyWrites || p.Writes
		anchorWrites = anchorWrites || (p.Writes && p.Range == req.Anchor)
	}
	// Even a read-only txn needs an anchor: a range taken for read-only
	// may prepare after all, and then the txn needs a record.
	if !seen[req.Anchor] || anyWrites && !anchorWrites {
		return fmt.Errorf("%w: t%d: anchor r%d is not a (writing) participant", ErrInvalid, req.Txn, req.Anchor)
	}
	return nil
}

// Step handles a participant's answer. Answers for unknown txns, other
// attempts or past phases are ignored: duplicates change nothing (rule 7)
// and a decision never changes (rule 2).
func (c *Coordinator) Step(m Message) error {
	if m.To.Node != c.cfg.Node {
		return fmt.Errorf("%w: %v at n%d", ErrMisrouted, m, c.cfg.Node)
	}
	t := c.txns[m.Txn]
	if t != nil && t.req.Attempt != m.Attempt {
		t = nil
	}
	switch m.Type {
	case MsgVote:
		if t != nil && t.phase == phasePreparing {
			c.onVote(t, m.From.Range, m.Vote)
		}
	case MsgOnePhaseResp:
		if t != nil && t.phase == phaseOnePhase {
			c.onOnePhaseResp(t, m.Decision)
		}
	case MsgAck:
		if t != nil && (t.phase == phaseCommitting || t.phase == phaseAborting) {
			c.onAck(t, m.From.Range)
		}
	default:
		return fmt.Errorf("%w: %v at coordinator n%d", ErrMisrouted, m, c.cfg.Node)
	}
	return nil
}

func (c *Coordinator) onVote(t *ctxn, r RangeID, v Vote) {
	if !t.asked[r] {
		return
	}
	if _, ok := t.votes[r]; ok {
		return // a range votes once; a later, different vote is a late message
	}
	if _, w := t.writers[r]; w && v == VoteReadOnly {
		// The client wrote on r, yet r holds no write of this attempt: a
		// leader that never saw the writes (or lost them) answered. Its
		// vote cannot stand for them (rules 3, 8).
		v = VoteNo
	}
	t.votes[r] = v
	if v == VoteNo {
		c.abort(t, ReasonVotedNo, r)
		return
	}
	if len(t.votes) == len(t.asked) {
		c.allVoted(t)
	}
}

// allVoted acts on a complete phase 1 with no NO vote: unanimity (rule 3).
func (c *Coordinator) allVoted(t *ctxn) {
	yes := t.yes()
	switch {
	case t.onePhase && len(yes) > 0:
		// A range taken for read-only prepared: it wrote after all. Fall
		// back to 2PC, which needs every writer prepared too.
		t.onePhase = false
		for _, p := range t.req.Participants {
			if !t.asked[p.Range] {
				t.asked[p.Range] = true
				c.sendPrepare(t, p)
			}
		}
		if len(t.votes) == len(t.asked) {
			c.allVoted(t)
		}
	case t.onePhase && len(t.writers) == 1:
		c.startOnePhase(t)
	case t.anchorLast:
		t.yesVoters = yes
		c.startOnePhase(t)
	case len(yes) == 0:
		c.answer(t, OutcomeCommitted, PathReadOnly, ReasonNone, 0) // nothing to commit
		delete(c.txns, t.req.Txn)
	default:
		c.decide(t, DecisionCommitted, yes)
	}
}

func (c *Coordinator) onOnePhaseResp(t *ctxn, d Decision) {
	if t.anchorLast {
		c.onAnchorResp(t, d)
		return
	}
	switch d {
	case DecisionCommitted:
		c.answer(t, OutcomeCommitted, PathOnePhase, ReasonNone, 0)
	case DecisionAborted:
		c.answer(t, OutcomeAborted, PathOnePhase, ReasonOnePhaseAbort, t.onlyWriter())
	default:
		c.answer(t, OutcomeAmbiguous, PathOnePhase, ReasonNone, 0)
	}
	delete(c.txns, t.req.Txn)
}

// onAnchorResp acts on the anchor's answer to its commit with the
// decision. COMMITTED: its entry won the CAS, so the decision is durable and
// phase 2 commits the YES voters. Anything else: the entry may yet apply (a
// duplicate in flight, a leader that cannot tell), so the outcome is
// learned by a CAS to ABORTED; the client hears nothing before it.
func (c *Coordinator) onAnchorResp(t *ctxn, d Decision) {
	if d == DecisionCommitted {
		t.recorded, t.targets = true, t.yesVoters
		c.answer(t, OutcomeCommitted, PathTwoPhase, ReasonNone, 0)
		c.phase2(t, DecisionCommitted)
		return
	}
	// If ABORTED wins, the anchor did not commit: it refused or could not
	// tell (its locks were lost with its tenure, rule 8), or its entry lost
	// to an inquirer's ABORTED.
	c.learn(t, ReasonVotedNo)
}

// learn settles an anchor that may have committed with the decision: a CAS
// to ABORTED, whose result is the outcome (CASResult).
func (c *Coordinator) learn(t *ctxn, why AbortReason) {
	t.learning, t.why, t.whyRange = true, why, t.req.Anchor
	c.decide(t, DecisionAborted, append(slices.Clone(t.yesVoters), t.req.Anchor))
}

func (c *Coordinator) onAck(t *ctxn, r RangeID) {
	if slices.Contains(t.targets, r) {
		t.acked[r] = true
		c.maybeEnd(t)
	}
}

// maybeEnd ends phase 2 once every target ACKed: the txn record, if there
// may be one, is deleted (End), and the txn is forgotten.
func (c *Coordinator) maybeEnd(t *ctxn) {
	if len(t.acked) < len(t.targets) {
		return
	}
	if !t.recorded {
		delete(c.txns, t.req.Txn)
		return
	}
	t.phase, t.ticks = phaseEnding, 0
	c.out.Records = append(c.out.Records, EndRecord{Txn: t.req.Txn, Attempt: t.req.Attempt,
		Anchor: t.req.Anchor, AnchorKey: t.req.AnchorKey})
}

// CASResult reports the outcome of a DecisionRecord's compare-and-set:
// recorded is the decision the txn record holds after it applied, or
// DecisionPending if the driver cannot tell whether it applied (the anchor
// leader changed under it). Only a won CAS to COMMITTED commits (rule 1);
// a lost one means an inquirer aborted first (rule 4). An unknown one is
// never retried: once the record is ended and its tombstone dropped, a
// retried CAS could create a second, different decision. The client hears
// "ambiguous" and the anchor range's recovery finishes the txn (rule 6).
func (c *Coordinator) CASResult(txn lock.TxnID, attempt uint64, recorded Decision) {
	t := c.txns[txn]
	if t == nil || t.req.Attempt != attempt || t.phase != phaseDeciding {
		return
	}
	if t.learning {
		// The anchor's commit with the decision, or this CAS, applied
		// first: the record tells which.
		switch recorded {
		case DecisionCommitted:
			t.recorded, t.want, t.targets = true, DecisionCommitted, t.yesVoters
			c.answer(t, OutcomeCommitted, PathTwoPhase, ReasonNone, 0)
			c.phase2(t, DecisionCommitted)
		case DecisionAborted:
			t.recorded = true
			c.answer(t, OutcomeAborted, PathTwoPhase, t.why, t.whyRange)
			c.phase2(t, DecisionAborted)
		default:
			c.answer(t, OutcomeAmbiguous, PathTwoPhase, ReasonNone, 0)
			delete(c.txns, txn)
		}
		return
	}
	switch {
	case t.want == DecisionAborted && recorded == DecisionCommitted:
		panic(fmt.Sprintf("txn: t%d.%d: record COMMITTED but the coordinator aborted", txn, attempt))
	case t.want == DecisionAborted:
		// Even if unknown, End it after phase 2: deleting a record that
		// never applied is harmless, and one that did should not linger.
		t.recorded = true
		c.phase2(t, DecisionAborted)
	case recorded == DecisionCommitted:
		t.recorded = true
		c.answer(t, OutcomeCommitted, PathTwoPhase, ReasonNone, 0)
		c.phase2(t, DecisionCommitted)
	case recorded == DecisionAborted:
		t.recorded = true
		c.answer(t, OutcomeAborted, PathTwoPhase, ReasonDecisionLost, t.req.Anchor)
		c.phase2(t, DecisionAborted)
	default:
		c.answer(t, OutcomeAmbiguous, PathTwoPhase, ReasonNone, 0)
		delete(c.txns, txn)
	}
}

// Restore takes over decided txn records found by an anchor range's
// recovery (rule 6): the decision is sent again to the record's
// participants until each ACKs, then the record is ended. Txns this
// coordinator is already running are left alone; undecided records are the
// inquirers' business (rule 4).
func (c *Coordinator) Restore(recs []DecisionRecord) {
	for _, r := range recs {
		if _, ok := c.txns[r.Txn]; ok || r.Decision == DecisionPending {
			continue
		}
		t := &ctxn{req: CommitRequest{Txn: r.Txn, Attempt: r.Attempt, Anchor: r.Anchor, AnchorKey: r.AnchorKey},
			acked: map[RangeID]bool{}, targets: r.Participants, recorded: true, answered: true, want: r.Decision}
		c.txns[r.Txn] = t
		c.phase2(t, r.Decision)
	}
}

// Tick advances time by one tick: resends, timeouts.
func (c *Coordinator) Tick() {
	for _, t := range c.sorted() {
		t.ticks++
		switch t.phase {
		case phasePreparing:
			if t.ticks >= c.cfg.VoteTimeoutTicks {
				c.abort(t, ReasonVoteTimeout, 0)
			} else if t.ticks%c.cfg.ResendTicks == 0 {
				for _, p := range t.req.Participants {
					if _, voted := t.votes[p.Range]; t.asked[p.Range] && !voted {
						c.sendPrepare(t, p)
					}
				}
			}
		case phaseOnePhase:
			if t.anchorLast && t.ticks >= c.cfg.VoteTimeoutTicks {
				c.learn(t, ReasonVoteTimeout) // its entry may have applied
			} else if t.ticks >= c.cfg.VoteTimeoutTicks {
				c.onOnePhaseResp(t, DecisionPending) // it may have applied: ambiguous
			} else if t.ticks%c.cfg.ResendTicks == 0 {
				c.sendOnePhase(t)
			}
		case phaseDeciding:
			if t.ticks >= c.cfg.DecideTimeoutTicks {
				c.CASResult(t.req.Txn, t.req.Attempt, DecisionPending)
			}
		case phaseCommitting, phaseAborting:
			if t.ticks%c.cfg.ResendTicks == 0 {
				c.sendDecision(t)
			}
		}
	}
}

// HasReady reports whether Ready has something to do.
func (c *Coordinator) HasReady() bool { return !c.out.Empty() }

// Ready returns the outputs accumulated since the last Advance. See Ready
// for the order in which the driver must handle them.
func (c *Coordinator) Ready() Ready { return c.out }

// Advance confirms that rd was handled. A durable EndRecord lets the
// coordinator forget its txn. (DecisionRecords are confirmed by CASResult,
// which carries what Advance cannot: who won.)
func (c *Coordinator) Advance(rd Ready) {
	c.out.trim(rd)
	for _, r := range rd.Records {
		if e, ok := r.(EndRecord); ok {
			if t := c.txns[e.Txn]; t != nil && t.req.Attempt == e.Attempt && t.phase == phaseEnding {
				delete(c.txns, e.Txn)
			}
		}
	}
}

// Pending returns the number of txns the coordinator is still working on.
func (c *Coordinator) Pending() int { return len(c.txns) }

// abort decides ABORTED. The client may hear it now: only this coordinator
// ever asks for COMMITTED, and it never will. Ranges that voted NO or
// READ-ONLY are done; every other one may be prepared (or holds ACTIVE
// locks) and must hear ABORT. If any may be prepared, the decision goes to
// the txn record first, so their inquiries find it.
func (c *Coordinator) abort(t *ctxn, why AbortReason, r RangeID) {
	path := PathTwoPhase
	if t.onePhase {
		path = PathOnePhase
	}
	c.answer(t, OutcomeAborted, path, why, r)
	var targets []RangeID
	mayBePrepared := false
	for _, p := range t.req.Participants {
		if v, ok := t.votes[p.Range]; !ok || v == VoteYes {
			targets = append(targets, p.Range)
			mayBePrepared = mayBePrepared || t.asked[p.Range]
		}
	}
	switch {
	case len(targets) == 0:
		delete(c.txns, t.req.Txn)
	case mayBePrepared:
		c.decide(t, DecisionAborted, targets)
	default:
		t.targets = targets
		c.phase2(t, DecisionAborted)
	}
}

// decide emits the CAS of decision d on the anchor range; phase 2 waits for
// CASResult (rule 1).
func (c *Coordinator) decide(t *ctxn, d Decision, targets []RangeID) {
	t.phase, t.ticks, t.want, t.targets = phaseDeciding, 0, d, targets
	c.out.Records = append(c.out.Records, DecisionRecord{Txn: t.req.Txn, Attempt: t.req.Attempt,
		Anchor: t.req.Anchor, AnchorKey: t.req.AnchorKey, Decision: d, Participants: targets,
		Coordinator: c.cfg.Node})
}

func (c *Coordinator) phase2(t *ctxn, d Decision) {
	t.phase, t.ticks, t.want = phaseAborting, 0, d
	if d == DecisionCommitted {
		t.phase = phaseCommitting
	}
	c.sendDecision(t)
	c.maybeEnd(t) // no targets: nothing to wait for
}

func (c *Coordinator) startOnePhase(t *ctxn) {
	t.phase, t.ticks = phaseOnePhase, 0
	c.sendOnePhase(t)
}

func (c *Coordinator) sendPrepare(t *ctxn, p Participation) {
	c.send(Message{Type: MsgPrepare, Txn: t.req.Txn, Attempt: t.req.Attempt, To: Addr{Range: p.Range},
		Term: p.Term, Participants: t.req.Participants, Anchor: t.req.Anchor, AnchorKey: t.req.AnchorKey,
		Coordinator: c.cfg.Node})
}

func (c *Coordinator) sendOnePhase(t *ctxn) {
	if t.anchorLast {
		ps := make([]Participation, len(t.yesVoters))
		for i, r := range t.yesVoters {
			ps[i] = Participation{Range: r}
		}
		for _, p := range t.req.Participants {
			if p.Range == t.req.Anchor {
				c.send(Message{Type: MsgOnePhaseCommit, Txn: t.req.Txn, Attempt: t.req.Attempt,
					To: Addr{Range: p.Range}, Term: p.Term, Participants: ps, Anchor: t.req.Anchor,
					AnchorKey: t.req.AnchorKey, Coordinator: c.cfg.Node})
			}
		}
		return
	}
	r := t.onlyWriter()
	for _, p := range t.req.Participants {
		if p.Range == r {
			c.send(Message{Type: MsgOnePhaseCommit, Txn: t.req.Txn, Attempt: t.req.Attempt,
				To: Addr{Range: r}, Term: p.Term})
		}
	}
}

// sendDecision sends COMMIT or ABORT to every target that has not ACKed.
// COMMIT is only ever sent from phaseCommitting, entered after a won CAS.
func (c *Coordinator) sendDecision(t *ctxn) {
	typ := MsgAbort
	if t.phase == phaseCommitting {
		typ = MsgCommit
	}
	for _, r := range t.targets {
		if !t.acked[r] {
			c.send(Message{Type: typ, Txn: t.req.Txn, Attempt: t.req.Attempt, To: Addr{Range: r}})
		}
	}
}

func (c *Coordinator) send(m Message) {
	m.From = Addr{Node: c.cfg.Node}
	c.out.Messages = append(c.out.Messages, m)
}

// answer hands the client its Result, once.
func (c *Coordinator) answer(t *ctxn, o Outcome, path Path, why AbortReason, r RangeID) {
	if t.answered {
		return
	}
	t.answered = true
	c.out.Results = append(c.out.Results, Result{Txn: t.req.Txn, Attempt: t.req.Attempt, Outcome: o,
		Path: path, Reason: why, Range: r})
}

func (c *Coordinator) sorted() []*ctxn {
	out := make([]*ctxn, 0, len(c.txns))
	for _, t := range c.txns {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *ctxn) int { return cmp.Compare(a.req.Txn, b.req.Txn) })
	return out
}

// yes returns the ranges that voted YES, in participant order.
func (t *ctxn) yes() []RangeID {
	var out []RangeID
	for _, p := range t.req.Participants {
		if t.votes[p.Range] == VoteYes {
			out = append(out, p.Range)
		}
	}
	return out
}

func (t *ctxn) onlyWriter() RangeID {
	for r := range t.writers {
		return r
	}
	return 0
}

// Has reports whether the coordinator is working on this attempt of txn.
// An inquirer that hears "no" from a coordinator that is up may presume
// abort (rule 4): the coordinator asks for COMMITTED only while it has the
// attempt, so a CAS to ABORTED can only race its own loss of it.
func (c *Coordinator) Has(txn lock.TxnID, attempt uint64) bool {
	t := c.txns[txn]
	return t != nil && t.req.Attempt == attempt
}
