package txn

import (
	"errors"
	"testing"
)

var req3 = CommitRequest{Txn: 7, Attempt: 1, Participants: parts3, Anchor: 1, AnchorKey: []byte("a")}

var prepares3 = []string{"send n9→r1 Prepare t7.1 term=5", "send n9→r2 Prepare t7.1 term=5",
	"send n9→r3 Prepare t7.1 term=5"}

// started returns a coordinator that sent the PREPAREs of req.
func started(t *testing.T, req CommitRequest) *Coordinator {
	t.Helper()
	c := newCoord(t)
	if err := c.Commit(req); err != nil {
		t.Fatal(err)
	}
	round(c)
	return c
}

// TestCoordinatorCommitsOnlyAfterCASWon: all YES yields only the CAS of
// COMMITTED on the anchor; neither COMMIT nor the client's "committed"
// leaves before CASResult reports the CAS won, however long that takes.
//
// Ref: DESIGN.md rule 1.
func TestCoordinatorCommitsOnlyAfterCASWon(t *testing.T) {
	c := newCoord(t)
	if err := c.Commit(req3); err != nil {
		t.Fatal(err)
	}
	expect(t, round(c), prepares3...)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→COMMITTED [1 2 3]")
	ticks(c, 9) // the CAS is slow: nothing may leak meanwhile
	expect(t, round(c))
	c.CASResult(7, 1, DecisionCommitted)
	expect(t, round(c), "send n9→r1 Commit t7.1", "send n9→r2 Commit t7.1", "send n9→r3 Commit t7.1",
		"result t7.1 committed 2PC")
}

// TestCoordinatorUnanimity: one NO, or a missing vote, aborts; a YES that
// arrives after the NO changes nothing. The abort goes to the txn record
// first, then to every range that may be prepared.
//
// Ref: DESIGN.md rule 3.
func TestCoordinatorUnanimity(t *testing.T) {
	t.Run("one NO", func(t *testing.T) {
		c := started(t, req3)
		votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteNo})
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [1 3]",
			"result t7.1 aborted 2PC (voted NO r2)")
		votes(t, c, 7, map[RangeID]Vote{3: VoteYes})
		c.CASResult(7, 1, DecisionAborted)
		expect(t, round(c), "send n9→r1 Abort t7.1", "send n9→r3 Abort t7.1")
	})
	t.Run("a missing vote", func(t *testing.T) {
		c := started(t, req3)
		votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes})
		ticks(c, 2)
		expect(t, round(c), "send n9→r3 Prepare t7.1 term=5") // resent to the silent range
		ticks(c, 7)                                           // every ResendTicks: ticks 4, 6, 8
		expect(t, round(c), "send n9→r3 Prepare t7.1 term=5", "send n9→r3 Prepare t7.1 term=5",
			"send n9→r3 Prepare t7.1 term=5")
		c.Tick()
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [1 2 3]",
			"result t7.1 aborted 2PC (vote timeout)")
	})
}

// TestCoordinatorDecisionNeverChanges: after the decision, late or
// contradicting votes and CAS results are ignored.
//
// Ref: DESIGN.md rule 2.
func TestCoordinatorDecisionNeverChanges(t *testing.T) {
	c := started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	round(c)
	c.CASResult(7, 1, DecisionCommitted)
	round(c)
	votes(t, c, 7, map[RangeID]Vote{1: VoteNo, 2: VoteYes})
	c.CASResult(7, 1, DecisionAborted)
	expect(t, round(c))
	c.Tick()
	c.Tick()
	expect(t, round(c), "send n9→r1 Commit t7.1", "send n9→r2 Commit t7.1", "send n9→r3 Commit t7.1")
}

// TestCoordinatorLosesCAS: an inquirer aborted the record first; the
// coordinator's CAS to COMMITTED loses, the client hears "aborted", and
// the prepared ranges hear ABORT, never COMMIT.
//
// Ref: DESIGN.md rule 4.
func TestCoordinatorLosesCAS(t *testing.T) {
	c := started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	round(c)
	c.CASResult(7, 1, DecisionAborted)
	expect(t, round(c), "send n9→r1 Abort t7.1", "send n9→r2 Abort t7.1", "send n9→r3 Abort t7.1",
		"result t7.1 aborted 2PC (txn record aborted by an inquirer r1)")
}

// TestCoordinatorUnknownCAS: when the driver cannot tell whether the CAS
// applied, or it never answers, the client hears "ambiguous" and the
// coordinator sends nothing more: no COMMIT (it may have lost), no retried
// CAS (after an End it could decide twice).
//
// Ref: DESIGN.md rules 1 and 2.
func TestCoordinatorUnknownCAS(t *testing.T) {
	c := started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	round(c)
	c.CASResult(7, 1, DecisionPending)
	expect(t, round(c), "result t7.1 ambiguous 2PC")

	c = started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	round(c)
	ticks(c, 10)
	expect(t, round(c), "result t7.1 ambiguous 2PC")
	ticks(c, 50)
	expect(t, round(c))
	if c.Pending() != 0 {
		t.Fatalf("%d txns left", c.Pending())
	}
}

// TestCoordinatorOnePhase: with one writing range there is no PREPARE to
// it and no txn record: read-only ranges are checked first, then the writer
// gets one OnePhaseCommit.
//
// Ref: DESIGN.md rules 10 and 9.
func TestCoordinatorOnePhase(t *testing.T) {
	writer := Participation{Range: 1, Term: 5, Writes: true}
	reader := Participation{Range: 2, Term: 5}
	one := CommitRequest{Txn: 7, Attempt: 1, Participants: []Participation{writer}, Anchor: 1}
	mixed := CommitRequest{Txn: 7, Attempt: 1, Participants: []Participation{writer, reader}, Anchor: 1}
	t.Run("lone writer", func(t *testing.T) {
		c := newCoord(t)
		if err := c.Commit(one); err != nil {
			t.Fatal(err)
		}
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5")
		step(t, c, withDecision(msg(MsgOnePhaseResp, 7, rg(1), n9), DecisionCommitted))
		expect(t, round(c), "result t7.1 committed 1PC")
	})
	t.Run("reader first", func(t *testing.T) {
		c := started(t, mixed)
		votes(t, c, 7, map[RangeID]Vote{2: VoteReadOnly})
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5")
	})
	t.Run("reader says NO: abort, no record", func(t *testing.T) {
		c := started(t, mixed)
		votes(t, c, 7, map[RangeID]Vote{2: VoteNo})
		expect(t, round(c), "send n9→r1 Abort t7.1", "result t7.1 aborted 1PC (voted NO r2)")
	})
	t.Run("reader prepared after all: fall back to 2PC", func(t *testing.T) {
		c := started(t, mixed)
		votes(t, c, 7, map[RangeID]Vote{2: VoteYes})
		expect(t, round(c), "send n9→r1 Prepare t7.1 term=5")
		votes(t, c, 7, map[RangeID]Vote{1: VoteYes})
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→COMMITTED [1 2]")
	})
	t.Run("answer lost: resend, then ambiguous", func(t *testing.T) {
		c := started(t, one)
		ticks(c, 2)
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5")
		ticks(c, 8) // ticks 4, 6, 8 resend; 10 gives up: it may have applied
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5", "send n9→r1 OnePhaseCommit t7.1 term=5",
			"send n9→r1 OnePhaseCommit t7.1 term=5", "result t7.1 ambiguous 1PC")
	})
	t.Run("writer cannot tell", func(t *testing.T) {
		c := started(t, one)
		step(t, c, withDecision(msg(MsgOnePhaseResp, 7, rg(1), n9), DecisionPending))
		expect(t, round(c), "result t7.1 ambiguous 1PC")
	})
}

// TestCoordinatorReadOnlyRanges: READ-ONLY voters take no part in phase 2;
// a txn that wrote nothing commits without any record.
//
// Ref: DESIGN.md rule 9.
func TestCoordinatorReadOnlyRanges(t *testing.T) {
	req := req3
	req.Participants = []Participation{parts3[0], parts3[1], {Range: 3, Term: 5}}
	c := started(t, req)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteReadOnly})
	expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→COMMITTED [1 2]")
	c.CASResult(7, 1, DecisionCommitted)
	expect(t, round(c), "send n9→r1 Commit t7.1", "send n9→r2 Commit t7.1", "result t7.1 committed 2PC")

	ro := CommitRequest{Txn: 8, Attempt: 1, Anchor: 1,
		Participants: []Participation{{Range: 1, Term: 5}, {Range: 2, Term: 5}}}
	c = started(t, ro)
	votes(t, c, 8, map[RangeID]Vote{1: VoteReadOnly, 2: VoteReadOnly})
	expect(t, round(c), "result t8.1 committed read-only")
}

// TestCoordinatorResendsUntilAckedThenEnds: COMMIT is resent to the ranges
// that have not ACKed; once all have, the record is ended, and the txn is
// forgotten after the End is durable.
//
// Ref: DESIGN.md rules 6 and 7; seed 004 (end record).
func TestCoordinatorResendsUntilAckedThenEnds(t *testing.T) {
	c := started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteYes, 3: VoteYes})
	round(c)
	c.CASResult(7, 1, DecisionCommitted)
	round(c)
	step(t, c, msg(MsgAck, 7, rg(1), n9))
	step(t, c, msg(MsgAck, 7, rg(1), n9))
	step(t, c, msg(MsgAck, 7, rg(2), n9))
	ticks(c, 2)
	expect(t, round(c), "send n9→r3 Commit t7.1")
	step(t, c, msg(MsgAck, 7, rg(3), n9))
	rd := c.Ready()
	expect(t, trace(rd), "persist r1 EndRecord t7.1")
	if c.Pending() != 1 {
		t.Fatal("forgot the txn before its End was durable")
	}
	c.Advance(rd)
	if c.Pending() != 0 {
		t.Fatal("txn kept after End")
	}
	step(t, c, msg(MsgAck, 7, rg(3), n9))
	expect(t, round(c))
}

// TestCoordinatorRestore: the anchor's recovery hands decided records to a
// (restarted) coordinator, which resends the decision until every range
// ACKs and then ends the record. It tells no client anything.
//
// Ref: DESIGN.md rule 6.
func TestCoordinatorRestore(t *testing.T) {
	c := newCoord(t)
	c.Restore([]DecisionRecord{
		{Txn: 7, Attempt: 1, Anchor: 1, Decision: DecisionCommitted, Participants: []RangeID{1, 3}},
		{Txn: 8, Attempt: 1, Anchor: 2, Decision: DecisionAborted, Participants: []RangeID{2}},
		{Txn: 9, Attempt: 1, Anchor: 2, Decision: DecisionPending},
	})
	expect(t, round(c), "send n9→r1 Commit t7.1", "send n9→r3 Commit t7.1", "send n9→r2 Abort t8.1")
	step(t, c, msg(MsgAck, 7, rg(1), n9))
	step(t, c, msg(MsgAck, 7, rg(3), n9))
	step(t, c, msg(MsgAck, 8, rg(2), n9))
	expect(t, round(c), "persist r1 EndRecord t7.1", "persist r2 EndRecord t8.1")
	if c.Pending() != 0 {
		t.Fatalf("%d txns left", c.Pending())
	}
}

func TestCoordinatorRejects(t *testing.T) {
	if _, err := NewCoordinator(CoordinatorConfig{Node: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero ticks: %v", err)
	}
	c := newCoord(t)
	bad := []CommitRequest{
		{Txn: 1},
		{Txn: 1, Anchor: 1, Participants: []Participation{{Range: 1}, {Range: 1}}},
		{Txn: 1, Anchor: 2, Participants: []Participation{{Range: 1, Writes: true}, {Range: 2}}},
		{Txn: 1, Anchor: 3, Participants: []Participation{{Range: 1}}},
	}
	for _, r := range bad {
		if err := c.Commit(r); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Commit(%+v): %v, want ErrInvalid", r, err)
		}
	}
	if err := c.Commit(req3); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(req3); !errors.Is(err, ErrInProgress) {
		t.Fatalf("second Commit: %v", err)
	}
	if err := c.Step(msg(MsgVote, 7, rg(1), Addr{Node: 3})); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("misrouted: %v", err)
	}
	if err := c.Step(msg(MsgPrepare, 7, rg(1), n9)); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("prepare at a coordinator: %v", err)
	}
}

// TestCoordinatorReadOnlyVoteFromAWriterIsNo: a range the client wrote on
// that answers READ-ONLY has not got the writes (a leader that never saw
// them answered): the txn aborts rather than commit without them.
//
// Ref: DESIGN.md rules 3, 8.
func TestCoordinatorReadOnlyVoteFromAWriterIsNo(t *testing.T) {
	c := started(t, req3)
	votes(t, c, 7, map[RangeID]Vote{1: VoteYes, 2: VoteReadOnly, 3: VoteYes})
	expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [1 3]",
		"result t7.1 aborted 2PC (voted NO r2)")
}

// TestCoordinatorAnchorDecides: with AnchorDecides the anchor (r1) gets no
// PREPARE. Once the others voted YES it gets one OnePhaseCommit carrying
// the decision; its COMMITTED answer is the durable decision, so the client
// hears "committed" and only the YES voters get COMMIT. Any other answer,
// or none, is settled by a CAS to ABORTED whose result is the outcome: it
// may find the anchor's COMMITTED, and then the txn committed.
//
// Ref: DESIGN.md rules 1, 3, 4; docs/design/2pc.md "The anchor decides".
func TestCoordinatorAnchorDecides(t *testing.T) {
	start := func(t *testing.T) *Coordinator {
		c, err := NewCoordinator(CoordinatorConfig{Node: gw, ResendTicks: 2, VoteTimeoutTicks: 10,
			DecideTimeoutTicks: 10, AnchorDecides: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Commit(req3); err != nil {
			t.Fatal(err)
		}
		expect(t, round(c), "send n9→r2 Prepare t7.1 term=5", "send n9→r3 Prepare t7.1 term=5")
		votes(t, c, 7, map[RangeID]Vote{2: VoteYes, 3: VoteYes})
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5 with the decision [2 3]")
		return c
	}
	t.Run("anchor commits", func(t *testing.T) {
		c := start(t)
		step(t, c, withDecision(msg(MsgOnePhaseResp, 7, rg(1), n9), DecisionCommitted))
		expect(t, round(c), "send n9→r2 Commit t7.1", "send n9→r3 Commit t7.1", "result t7.1 committed 2PC")
	})
	t.Run("anchor cannot tell, its commit had applied", func(t *testing.T) {
		c := start(t)
		step(t, c, withDecision(msg(MsgOnePhaseResp, 7, rg(1), n9), DecisionPending))
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [2 3 1]")
		c.CASResult(7, 1, DecisionCommitted)
		expect(t, round(c), "send n9→r2 Commit t7.1", "send n9→r3 Commit t7.1", "result t7.1 committed 2PC")
	})
	t.Run("anchor refuses", func(t *testing.T) {
		c := start(t)
		step(t, c, withDecision(msg(MsgOnePhaseResp, 7, rg(1), n9), DecisionAborted))
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [2 3 1]") // no answer before the CAS
		c.CASResult(7, 1, DecisionAborted)
		expect(t, round(c), "send n9→r2 Abort t7.1", "send n9→r3 Abort t7.1", "send n9→r1 Abort t7.1",
			"result t7.1 aborted 2PC (voted NO r1)")
	})
	t.Run("anchor silent", func(t *testing.T) {
		c := start(t)
		ticks(c, 9)
		expect(t, round(c), "send n9→r1 OnePhaseCommit t7.1 term=5 with the decision [2 3]",
			"send n9→r1 OnePhaseCommit t7.1 term=5 with the decision [2 3]",
			"send n9→r1 OnePhaseCommit t7.1 term=5 with the decision [2 3]",
			"send n9→r1 OnePhaseCommit t7.1 term=5 with the decision [2 3]")
		c.Tick()
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [2 3 1]")
		c.CASResult(7, 1, DecisionPending)
		expect(t, round(c), "result t7.1 ambiguous 2PC")
	})
	t.Run("a NO before the anchor is asked", func(t *testing.T) {
		c, _ := NewCoordinator(CoordinatorConfig{Node: gw, ResendTicks: 2, VoteTimeoutTicks: 10,
			DecideTimeoutTicks: 10, AnchorDecides: true})
		if err := c.Commit(req3); err != nil {
			t.Fatal(err)
		}
		round(c)
		votes(t, c, 7, map[RangeID]Vote{2: VoteNo})
		// The anchor never got its commit: the client may hear "aborted" now.
		expect(t, round(c), "persist r1 DecisionRecord t7.1 CAS→ABORTED [1 3]",
			"result t7.1 aborted 2PC (voted NO r2)")
	})
}
