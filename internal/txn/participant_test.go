package txn

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vowdb/vowdb/internal/lock"
)

// TestParticipantVotesYesOnlyAfterRecordDurable: PREPARE yields only the
// prepare record; YES comes in the Ready after Advance confirmed it. A
// driver that crashes before the record is durable never sent YES, and the
// next leader votes NO.
//
// Ref: DESIGN.md rule 1.
func TestParticipantVotesYesOnlyAfterRecordDurable(t *testing.T) {
	p := newPart(t, 1, 5)
	admitWrite(t, p, 7, 1, "a")
	step(t, p, prepare(7, 1, 5))
	step(t, p, prepare(7, 1, 5)) // duplicate before the record is durable: nothing more
	rd := p.Ready()
	expect(t, trace(rd), `persist r1 PrepareRecord t7.1 writes=["a"="v"]`)

	t.Run("crash before the record is durable", func(t *testing.T) {
		// The driver drops rd; the next leader (term 6) has no record.
		q := newPart(t, 1, 6)
		expect(t, round(q))
		step(t, q, prepare(7, 1, 5))
		expect(t, round(q), "send r1→n9 Vote t7.1 NO")
	})

	p.Advance(rd)
	expect(t, round(p), "send r1→n9 Vote t7.1 YES")
	step(t, p, prepare(7, 1, 5)) // duplicate after YES: YES again, no new record
	expect(t, round(p), "send r1→n9 Vote t7.1 YES")
	if got := p.State(7); got != StatePrepared {
		t.Fatalf("state %v, want PREPARED", got)
	}
}

// TestParticipantPreparedNeverAbortsOnItsOwn: a PREPARED txn refuses local
// aborts, and however long it waits and whatever undecided answers it gets,
// it only asks; it ends only by the decision.
//
// Ref: DESIGN.md rule 2.
func TestParticipantPreparedNeverAbortsOnItsOwn(t *testing.T) {
	p := preparedAt(t, 2, 7, "b")
	if err := p.Abort(7); !errors.Is(err, ErrVowed) {
		t.Fatalf("Abort of a prepared txn: %v, want ErrVowed", err)
	}
	for i := 0; i < 100; i++ {
		p.Tick()
		for _, line := range round(p) {
			if line != "send r2→r1 Inquire t7.1" {
				t.Fatalf("tick %d: %s", i, line)
			}
		}
	}
	step(t, p, withDecision(msg(MsgInquireResp, 7, rg(1), rg(2)), DecisionPending))
	step(t, p, withDecision(msg(MsgInquirePeerResp, 7, rg(3), rg(2)), DecisionPending))
	expect(t, round(p))
	if got := p.State(7); got != StatePrepared {
		t.Fatalf("state %v, want PREPARED", got)
	}
	step(t, p, withDecision(msg(MsgInquireResp, 7, rg(1), rg(2)), DecisionCommitted))
	expect(t, round(p), `persist r2 CommitRecord t7.1 writes=["b"="v"]`)
	expect(t, round(p), "release t7") // learned by inquiry: nobody waits for an ACK
}

// TestParticipantTermBoundVote: locks are valid only in the term they were
// granted in. A PREPARE that expects another term, or finds the state lost,
// votes NO, and nothing admitted later can make the txn prepare here.
//
// Ref: DESIGN.md rule 8.
func TestParticipantTermBoundVote(t *testing.T) {
	t.Run("prepare expects another term", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		step(t, p, prepare(7, 1, 4))
		expect(t, round(p), "send r1→n9 Vote t7.1 NO ABORTED", "release t7")
	})
	t.Run("state lost by a leader change", func(t *testing.T) {
		p := newPart(t, 1, 6) // the new leader: no ACTIVE state
		step(t, p, prepare(7, 1, 5))
		expect(t, round(p), "send r1→n9 Vote t7.1 NO")
		w := &Write{Key: []byte("a")}
		if err := p.Admit(Op{Txn: 7, Attempt: 1, Mode: lock.X, Write: w}); !errors.Is(err, ErrFinished) {
			t.Fatalf("late op after NO: %v, want ErrFinished", err)
		}
	})
	t.Run("ops after failover rebuild a partial state", func(t *testing.T) {
		p := newPart(t, 1, 6)
		admitWrite(t, p, 7, 1, "b") // a later op of T, admitted by the new leader
		step(t, p, prepare(7, 1, 5))
		expect(t, round(p), "send r1→n9 Vote t7.1 NO ABORTED", "release t7")
	})
	t.Run("a prepared vow survives the term", func(t *testing.T) {
		rec := PrepareRecord{Txn: 7, Attempt: 1, Range: 1, Anchor: 1, Participants: parts3, Coordinator: gw}
		p := newPart(t, 1, 6, rec)
		round(p)
		step(t, p, prepare(7, 1, 5))
		expect(t, round(p), "send r1→n9 Vote t7.1 YES")
	})
}

// TestParticipantReadOnly: a range where T only read votes READ-ONLY after
// the term check, releases at once, writes nothing and takes no part in
// phase 2. It never learns the outcome, so it must not answer a
// cooperative-termination inquiry with ABORTED: the txn may commit.
//
// Ref: DESIGN.md rules 9 and 5.
func TestParticipantReadOnly(t *testing.T) {
	p := newPart(t, 3, 5)
	admitRead(t, p, 7, "c")
	step(t, p, withTerm(prepare(7, 3, 5), 4))
	expect(t, round(p), "send r3→n9 Vote t7.1 NO ABORTED", "release t7")

	p = newPart(t, 3, 5)
	admitRead(t, p, 7, "c")
	step(t, p, prepare(7, 3, 5))
	expect(t, round(p), "send r3→n9 Vote t7.1 READ-ONLY", "release t7")
	if err := p.Admit(Op{Txn: 7, Attempt: 1, Span: lock.Point([]byte("d")), Mode: lock.S}); !errors.Is(err, ErrFinished) {
		t.Fatalf("op after the lock point: %v, want ErrFinished", err)
	}
	step(t, p, withTerm(msg(MsgInquirePeer, 7, rg(2), rg(3)), 5))
	expect(t, round(p), "send r3→r2 InquirePeerResp t7.1 PENDING")
	step(t, p, msg(MsgCommit, 7, n9, rg(3)))
	expect(t, round(p), "send r3→n9 Ack t7.1")
}

// TestParticipantLockPoint: no operation is admitted once T is prepared.
//
// Ref: DESIGN.md rule 9.
func TestParticipantLockPoint(t *testing.T) {
	p := preparedAt(t, 1, 7, "a")
	if err := p.Admit(Op{Txn: 7, Attempt: 1, Span: lock.Point([]byte("z")), Mode: lock.S}); !errors.Is(err, ErrVowed) {
		t.Fatalf("op after PREPARE: %v, want ErrVowed", err)
	}
}

// TestParticipantDuplicatesAndLateMessages: every handler is idempotent, and
// late messages (duplicates, older attempts, finished txns) are answered
// from what is known and change nothing.
//
// Ref: DESIGN.md rule 7.
func TestParticipantDuplicatesAndLateMessages(t *testing.T) {
	commit := msg(MsgCommit, 7, n9, rg(1))
	abort := msg(MsgAbort, 7, n9, rg(1))
	t.Run("commit of an unknown txn", func(t *testing.T) {
		p := newPart(t, 1, 5)
		step(t, p, commit)
		expect(t, round(p), "send r1→n9 Ack t7.1")
	})
	t.Run("commit twice", func(t *testing.T) {
		p := preparedAt(t, 1, 7, "a")
		step(t, p, commit)
		step(t, p, commit) // while the commit record is in flight: one record
		expect(t, round(p), `persist r1 CommitRecord t7.1 writes=["a"="v"]`)
		expect(t, round(p), "send r1→n9 Ack t7.1 COMMITTED", "release t7")
		step(t, p, commit) // after: ACK, no record
		expect(t, round(p), "send r1→n9 Ack t7.1 COMMITTED")
		step(t, p, prepare(7, 1, 5)) // a late PREPARE: the known outcome
		expect(t, round(p), "send r1→n9 Vote t7.1 YES COMMITTED")
	})
	t.Run("abort twice", func(t *testing.T) {
		p := preparedAt(t, 1, 7, "a")
		step(t, p, abort)
		expect(t, round(p), "persist r1 AbortRecord t7.1")
		expect(t, round(p), "send r1→n9 Ack t7.1 ABORTED", "release t7")
		step(t, p, abort)
		expect(t, round(p), "send r1→n9 Ack t7.1 ABORTED")
	})
	t.Run("abort of an active txn needs no record", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		step(t, p, abort)
		expect(t, round(p), "send r1→n9 Ack t7.1 ABORTED", "release t7")
		step(t, p, prepare(7, 1, 5)) // the PREPARE overtaken by the ABORT
		expect(t, round(p), "send r1→n9 Vote t7.1 NO ABORTED")
	})
	t.Run("older attempt changes nothing", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 2, "a")
		step(t, p, withAttempt(prepare(7, 1, 5), 2))
		round(p)
		expect(t, round(p), "send r1→n9 Vote t7.2 YES")
		step(t, p, prepare(7, 1, 5)) // attempt 1 aborted before attempt 2 began
		step(t, p, commit)
		step(t, p, abort)
		expect(t, round(p), "send r1→n9 Vote t7.1 NO ABORTED", "send r1→n9 Ack t7.1", "send r1→n9 Ack t7.1")
		if got := p.State(7); got != StatePrepared {
			t.Fatalf("attempt 2 is %v, want PREPARED", got)
		}
	})
	t.Run("newer attempt retires an active older one", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		admitWrite(t, p, 7, 2, "b")
		expect(t, round(p), "release t7") // attempt 1's locks
		step(t, p, withAttempt(prepare(7, 1, 5), 2))
		expect(t, round(p), `persist r1 PrepareRecord t7.2 writes=["b"="v"]`)
	})
	t.Run("late op of a finished txn", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		step(t, p, abort)
		round(p)
		w := &Write{Key: []byte("a")}
		if err := p.Admit(Op{Txn: 7, Attempt: 1, Mode: lock.X, Write: w}); !errors.Is(err, ErrFinished) {
			t.Fatalf("late op: %v, want ErrFinished", err)
		}
	})
}

// TestParticipantForgetsOldestFinished: finished outcomes are remembered up
// to MaxFinished. Once one is forgotten, "unknown" no longer proves "never
// prepared", so cooperative termination answers PENDING instead of ABORTED.
//
// Ref: DESIGN.md rules 7 and 5.
func TestParticipantForgetsOldestFinished(t *testing.T) {
	p, _, err := NewParticipant(ParticipantConfig{Range: 1, Term: 5, InquireTicks: 3, MaxFinished: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := func(txn lock.TxnID) Message { return withTerm(msg(MsgInquirePeer, txn, rg(2), rg(1)), 5) }
	step(t, p, peer(50)) // nothing forgotten yet: certainly never prepared
	expect(t, round(p), "send r1→r2 InquirePeerResp t50.1 ABORTED")
	for _, id := range []lock.TxnID{7, 8} {
		admitWrite(t, p, id, 1, "a")
		step(t, p, msg(MsgAbort, id, n9, rg(1)))
		round(p)
	}
	if got := []State{p.State(50), p.State(7), p.State(8)}; !reflect.DeepEqual(got, []State{0, StateAborted, StateAborted}) {
		t.Fatalf("remembered %v, want [UNKNOWN ABORTED ABORTED]", got)
	}
	step(t, p, peer(50))
	expect(t, round(p), "send r1→r2 InquirePeerResp t50.1 PENDING")
}

// TestParticipantTermination: a silent PREPARED txn asks its txn record
// every InquireTicks; if the record's range is unreachable it asks the
// other participants, and a peer that knows the outcome decides it.
//
// Ref: DESIGN.md rule 5.
func TestParticipantTermination(t *testing.T) {
	p := preparedAt(t, 2, 7, "b")
	ticks(p, 2)
	expect(t, round(p))
	p.Tick()
	expect(t, round(p), "send r2→r1 Inquire t7.1")
	p.Unreachable(9) // another anchor: not ours
	p.Unreachable(1)
	expect(t, round(p), "send r2→r1 InquirePeer t7.1 term=5", "send r2→r3 InquirePeer t7.1 term=5")
	step(t, p, withDecision(msg(MsgInquirePeerResp, 7, rg(3), rg(2)), DecisionAborted))
	expect(t, round(p), "persist r2 AbortRecord t7.1")
	expect(t, round(p), "release t7")
}

// TestParticipantAnswersInquirePeer: a peer answers what it knows; one that
// has not prepared (ACTIVE, or certainly never here) vows never to prepare
// and answers ABORTED; one that cannot tell answers PENDING.
//
// Ref: DESIGN.md rule 5.
func TestParticipantAnswersInquirePeer(t *testing.T) {
	ask := withTerm(msg(MsgInquirePeer, 7, rg(2), rg(3)), 5)
	tests := []struct {
		name  string
		setup func(t *testing.T) *Participant
		ask   Message
		want  []string
	}{
		{"active: vow never to prepare", func(t *testing.T) *Participant {
			p := newPart(t, 3, 5)
			admitWrite(t, p, 7, 1, "c")
			return p
		}, ask, []string{"send r3→r2 InquirePeerResp t7.1 ABORTED", "release t7"}},
		{"unknown in the txn's term: never prepared", func(t *testing.T) *Participant {
			return newPart(t, 3, 5)
		}, ask, []string{"send r3→r2 InquirePeerResp t7.1 ABORTED"}},
		{"unknown after a restart: may have committed and forgotten", func(t *testing.T) *Participant {
			return newPart(t, 3, 6)
		}, ask, []string{"send r3→r2 InquirePeerResp t7.1 PENDING"}},
		{"prepared: cannot tell", func(t *testing.T) *Participant {
			return preparedAt(t, 3, 7, "c")
		}, ask, []string{"send r3→r2 InquirePeerResp t7.1 PENDING"}},
		{"committed: says so", func(t *testing.T) *Participant {
			p := preparedAt(t, 3, 7, "c")
			step(t, p, msg(MsgCommit, 7, n9, rg(3)))
			round(p)
			round(p)
			return p
		}, ask, []string{"send r3→r2 InquirePeerResp t7.1 COMMITTED"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.setup(t)
			step(t, p, tc.ask)
			expect(t, round(p), tc.want...)
			if tc.want[0] == "send r3→r2 InquirePeerResp t7.1 ABORTED" {
				step(t, p, prepare(7, 3, 5)) // the vow holds
				expect(t, round(p), "send r3→n9 Vote t7.1 NO ABORTED")
			}
		})
	}
}

// TestParticipantRestore: a new leader rebuilds PREPARED txns from their
// durable records, returns their X locks to re-acquire, inquires at once,
// answers duplicates with YES and applies the decision.
//
// Ref: DESIGN.md rule 6.
func TestParticipantRestore(t *testing.T) {
	x := lock.Lock{Txn: 7, Span: lock.Point([]byte("a")), Mode: lock.X}
	rec := PrepareRecord{Txn: 7, Attempt: 1, Range: 1, Anchor: 2, Participants: parts3, Coordinator: gw,
		Writes: []Write{{Key: []byte("a"), Value: []byte("v")}}, Locks: []lock.Lock{x}}
	p, relock, err := NewParticipant(ParticipantConfig{Range: 1, Term: 6, InquireTicks: 3, MaxFinished: 9},
		[]PrepareRecord{rec})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(relock, []lock.Lock{x}) {
		t.Fatalf("re-acquire %v, want %v", relock, x)
	}
	expect(t, round(p), "send r1→r2 Inquire t7.1")
	step(t, p, prepare(7, 1, 5))
	expect(t, round(p), "send r1→n9 Vote t7.1 YES")
	step(t, p, msg(MsgCommit, 7, n9, rg(1)))
	expect(t, round(p), `persist r1 CommitRecord t7.1 writes=["a"="v"]`)
	expect(t, round(p), "send r1→n9 Ack t7.1 COMMITTED", "release t7")

	// Crash after the commit record: the next leader has no prepare record,
	// and a resent COMMIT is ACKed without applying anything twice.
	q := newPart(t, 1, 7)
	step(t, q, msg(MsgCommit, 7, n9, rg(1)))
	expect(t, round(q), "send r1→n9 Ack t7.1")
}

// TestParticipantOnePhase: the one writing range commits with one Raft entry
// and no prepare record; the answer follows the durable entry; a term
// change aborts instead; a range that cannot place the txn says PENDING,
// never ABORTED, unless it certainly never saw it commit.
//
// Ref: DESIGN.md rules 10, 1 and 8.
func TestParticipantOnePhase(t *testing.T) {
	one := withTerm(msg(MsgOnePhaseCommit, 7, n9, rg(1)), 5)
	p := newPart(t, 1, 5)
	admitWrite(t, p, 7, 1, "a")
	step(t, p, one)
	step(t, p, one)
	expect(t, round(p), `persist r1 CommitRecord t7.1 writes=["a"="v"] 1PC`)
	expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 COMMITTED", "release t7")
	step(t, p, one)
	expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 COMMITTED")

	p = newPart(t, 1, 5)
	admitWrite(t, p, 7, 1, "a")
	step(t, p, withTerm(one, 4))
	expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 ABORTED", "release t7")

	p = newPart(t, 1, 6)
	step(t, p, one)
	expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 PENDING")
	step(t, p, prepare(7, 1, 5))
	expect(t, round(p), "send r1→n9 Vote t7.1 NO")
}

func TestParticipantRejects(t *testing.T) {
	if _, _, err := NewParticipant(ParticipantConfig{Range: 1, Term: 1}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero ticks: %v", err)
	}
	if _, _, err := NewParticipant(ParticipantConfig{Range: 1, Term: 1, InquireTicks: 1, MaxFinished: 1},
		[]PrepareRecord{{Txn: 1, Range: 2}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign record: %v", err)
	}
	p := newPart(t, 1, 5)
	if err := p.Step(prepare(7, 2, 5)); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("misrouted: %v", err)
	}
	if err := p.Step(msg(MsgVote, 7, rg(2), rg(1))); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("vote at a participant: %v", err)
	}
	if err := p.Admit(Op{Txn: 7, Attempt: 1, Mode: lock.S, Write: &Write{}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("write under S: %v", err)
	}
}

// TestParticipantCommitsWithDecision: the anchor, still ACTIVE, gets a
// OnePhaseCommit that carries the decision: one CommitRecord that also
// records it. An ABORT that arrives while that record is out changes
// nothing (the record's CAS decides); if the CAS lost, the driver confirms
// the record as an abort and the answer is ABORTED. A range whose ACTIVE
// state holds no writes refuses.
//
// Ref: DESIGN.md rules 1, 2, 8; docs/design/2pc.md "The anchor decides".
func TestParticipantCommitsWithDecision(t *testing.T) {
	decide := func(p *Participant) {
		m := msg(MsgOnePhaseCommit, 7, n9, rg(1))
		m.Term, m.Participants, m.Anchor, m.AnchorKey, m.Coordinator = 5, []Participation{{Range: 2}}, 1, []byte("a"), gw
		step(t, p, m)
	}
	t.Run("won", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		decide(p)
		expect(t, round(p), `persist r1 CommitRecord t7.1 writes=["a"="v"] with the decision (CAS→COMMITTED [2])`)
		expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 COMMITTED", "release t7")
	})
	t.Run("lost to an ABORTED record", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitWrite(t, p, 7, 1, "a")
		decide(p)
		rd := p.Ready()
		step(t, p, msg(MsgAbort, 7, n9, rg(1))) // no panic, no answer yet
		rd.Records[0] = AbortRecord{Txn: 7, Attempt: 1, Range: 1}
		p.Advance(rd)
		expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 ABORTED", "release t7")
		step(t, p, msg(MsgAbort, 7, n9, rg(1)))
		expect(t, round(p), "send r1→n9 Ack t7.1 ABORTED")
	})
	t.Run("no writes here", func(t *testing.T) {
		p := newPart(t, 1, 5)
		admitRead(t, p, 7, "a")
		decide(p)
		expect(t, round(p), "send r1→n9 OnePhaseResp t7.1 ABORTED", "release t7")
	})
}
