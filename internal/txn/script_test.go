package txn

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vowdb/vowdb/internal/lock"
)

// Helpers for the step-by-step tests. A test drives one role by hand and
// compares the trace of each driver round (what the Ready asked for) with
// the lines it expects:
//
//	persist <record>   a record the driver must make durable
//	send <message>     a message to send (after the records)
//	release t<id>      locks to drop
//	result ...         an answer for the client

const gw NodeID = 9

var n9 = Addr{Node: gw}

func rg(id RangeID) Addr { return Addr{Range: id} }

// parts3 is the usual txn: writes on r1 (the anchor), r2 and r3, whose
// first operations the coordinator saw in term 5.
var parts3 = []Participation{{Range: 1, Term: 5, Writes: true}, {Range: 2, Term: 5, Writes: true},
	{Range: 3, Term: 5, Writes: true}}

type stepper interface {
	HasReady() bool
	Ready() Ready
	Advance(Ready)
}

// round runs one driver round on s as Ready documents it (persist, send,
// release, answer, Advance) and returns its trace.
func round(s stepper) []string {
	if !s.HasReady() {
		return nil
	}
	rd := s.Ready()
	s.Advance(rd)
	return trace(rd)
}

func trace(rd Ready) []string {
	var out []string
	for _, r := range rd.Records {
		out = append(out, "persist "+r.String())
	}
	for _, m := range rd.Messages {
		out = append(out, "send "+m.String())
	}
	for _, id := range rd.Release {
		out = append(out, fmt.Sprintf("release t%d", id))
	}
	for _, r := range rd.Results {
		out = append(out, r.String())
	}
	return out
}

// expect fails unless got equals want, showing both in full.
func expect(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("trace differs\ngot:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func newPart(t *testing.T, id RangeID, term uint64, recs ...PrepareRecord) *Participant {
	t.Helper()
	p, _, err := NewParticipant(ParticipantConfig{Range: id, Term: term, InquireTicks: 3, MaxFinished: 100}, recs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newCoord(t *testing.T) *Coordinator {
	t.Helper()
	c, err := NewCoordinator(CoordinatorConfig{Node: gw, ResendTicks: 2, VoteTimeoutTicks: 10, DecideTimeoutTicks: 10})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func admitWrite(t *testing.T, p *Participant, txn lock.TxnID, attempt uint64, key string) {
	t.Helper()
	w := &Write{Key: []byte(key), Value: []byte("v")}
	if err := p.Admit(Op{Txn: txn, Attempt: attempt, Span: lock.Point(w.Key), Mode: lock.X, Write: w}); err != nil {
		t.Fatal(err)
	}
}

func admitRead(t *testing.T, p *Participant, txn lock.TxnID, key string) {
	t.Helper()
	if err := p.Admit(Op{Txn: txn, Attempt: 1, Span: lock.Point([]byte(key)), Mode: lock.S}); err != nil {
		t.Fatal(err)
	}
}

// prepare is the coordinator's PREPARE of t<txn>.1 to range to, expecting
// term.
func prepare(txn lock.TxnID, to RangeID, term uint64) Message {
	return Message{Type: MsgPrepare, Txn: txn, Attempt: 1, From: n9, To: rg(to), Term: term,
		Participants: parts3, Anchor: 1, AnchorKey: []byte("a"), Coordinator: gw}
}

// msg builds a message of attempt 1.
func msg(typ MsgType, txn lock.TxnID, from, to Addr) Message {
	return Message{Type: typ, Txn: txn, Attempt: 1, From: from, To: to}
}

func withDecision(m Message, d Decision) Message { m.Decision = d; return m }
func withTerm(m Message, term uint64) Message    { m.Term = term; return m }
func withAttempt(m Message, a uint64) Message    { m.Attempt = a; return m }

func step(t *testing.T, s interface{ Step(Message) error }, m Message) {
	t.Helper()
	if err := s.Step(m); err != nil {
		t.Fatal(err)
	}
}

// preparedAt returns participant id (term 5) with t<txn>.1 PREPARED and its
// YES sent, writing key.
func preparedAt(t *testing.T, id RangeID, txn lock.TxnID, key string) *Participant {
	t.Helper()
	p := newPart(t, id, 5)
	admitWrite(t, p, txn, 1, key)
	step(t, p, prepare(txn, id, 5))
	round(p)
	expect(t, round(p), fmt.Sprintf("send r%d→n9 Vote t%d.1 YES", id, txn))
	return p
}

func votes(t *testing.T, c *Coordinator, txn lock.TxnID, vs map[RangeID]Vote) {
	t.Helper()
	for _, r := range []RangeID{1, 2, 3, 4} {
		if v, ok := vs[r]; ok {
			m := msg(MsgVote, txn, rg(r), n9)
			m.Vote = v
			step(t, c, m)
		}
	}
}

func ticks(s interface{ Tick() }, n int) {
	for range n {
		s.Tick()
	}
}
