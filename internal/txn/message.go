package txn

import (
	"fmt"
	"strings"

	"github.com/vowdb/vowdb/internal/lock"
)

// RangeID identifies a range. A message addressed to a range is delivered to
// its current leader (the participant, or the keeper of txn records).
type RangeID uint64

// NodeID identifies a node. A coordinator is addressed by its gateway node.
type NodeID uint64

// Addr is where a message comes from or goes to: a coordinator (Node set)
// or a range's leader (Range set). Exactly one field is non-zero.
type Addr struct {
	Node  NodeID
	Range RangeID
}

func (a Addr) String() string {
	if a.Range != 0 {
		return fmt.Sprintf("r%d", a.Range)
	}
	return fmt.Sprintf("n%d", a.Node)
}

// MsgType is the kind of a Message.
type MsgType uint8

// Message types. The table in doc.go says who sends each and what the
// receiver does.
const (
	MsgPrepare         MsgType = iota + 1 // coordinator → participant: phase 1
	MsgVote                               // participant → coordinator: Vote
	MsgCommit                             // coordinator → participant: decision COMMITTED
	MsgAbort                              // coordinator → participant: decision ABORTED
	MsgAck                                // participant → coordinator: Commit/Abort applied (or nothing to do)
	MsgOnePhaseCommit                     // coordinator → the only writing participant (rule 10)
	MsgOnePhaseResp                       // participant → coordinator: Decision of the one-phase commit
	MsgInquire                            // participant → anchor range: what does the txn record say?
	MsgInquireResp                        // anchor range → participant: Decision (Pending: undecided)
	MsgInquirePeer                        // participant → participant: cooperative termination (rule 5)
	MsgInquirePeerResp                    // participant → participant: Decision (Pending: cannot tell)
)

var msgTypeNames = [...]string{
	MsgPrepare: "Prepare", MsgVote: "Vote", MsgCommit: "Commit", MsgAbort: "Abort", MsgAck: "Ack",
	MsgOnePhaseCommit: "OnePhaseCommit", MsgOnePhaseResp: "OnePhaseResp", MsgInquire: "Inquire",
	MsgInquireResp: "InquireResp", MsgInquirePeer: "InquirePeer", MsgInquirePeerResp: "InquirePeerResp",
}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) && msgTypeNames[t] != "" {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MsgType(%d)", int(t))
}

// Vote is a participant's answer to Prepare.
type Vote uint8

// Votes.
const (
	VoteYes      Vote = iota + 1 // prepared: the prepare record is durable (rule 1)
	VoteNo                       // will never prepare this attempt
	VoteReadOnly                 // only read here: locks released, no part in phase 2 (rule 9)
)

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "YES"
	case VoteNo:
		return "NO"
	case VoteReadOnly:
		return "READ-ONLY"
	}
	return fmt.Sprintf("Vote(%d)", int(v))
}

// Decision is a transaction's outcome. The zero value, DecisionPending, means
// "no decision known": in a txn record it means absent or PENDING, which
// rule 4 reads as abort once the coordinator is proven gone.
type Decision uint8

// Decisions.
const (
	DecisionPending Decision = iota
	DecisionCommitted
	DecisionAborted
)

func (d Decision) String() string {
	switch d {
	case DecisionPending:
		return "PENDING"
	case DecisionCommitted:
		return "COMMITTED"
	case DecisionAborted:
		return "ABORTED"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Participation is one range a transaction touched, as its coordinator saw
// it.
type Participation struct {
	Range RangeID
	// Term is the leader term the coordinator saw at the transaction's first
	// operation on Range. Locks are valid only in that term (rule 8).
	Term uint64
	// Writes is false if the transaction only read on Range.
	Writes bool
}

// Message is every input and output of the protocol that crosses nodes.
// Every message carries the txn id and attempt (rule 7); an attempt is one
// try of a transaction id, and a new attempt starts only after the previous
// one aborted.
type Message struct {
	Type     MsgType
	Txn      lock.TxnID
	Attempt  uint64
	From, To Addr

	// Term, on Prepare and OnePhaseCommit, is the term the coordinator saw at
	// the first operation on To (rule 8). On InquirePeer it is that term for
	// the asked peer, which lets the peer tell "never prepared" from "forgot".
	Term uint64
	// Participants, Anchor, AnchorKey and Coordinator describe the
	// transaction. They travel on Prepare (and are stored in the prepare
	// record) and on Inquire (so the anchor can write a presumed-abort record
	// that recovery can act on). On OnePhaseCommit a non-zero Coordinator
	// asks the anchor range to commit with the decision
	// (CoordinatorConfig.AnchorDecides): its one Raft entry also records
	// COMMITTED in the txn record at AnchorKey, with Participants as the
	// ranges phase 2 must reach.
	Participants []Participation
	Anchor       RangeID
	AnchorKey    []byte
	Coordinator  NodeID

	Vote     Vote     // MsgVote
	Decision Decision // Ack, OnePhaseResp, InquireResp, InquirePeerResp; Vote: a known outcome
}

func (m Message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v→%v %v t%d.%d", m.From, m.To, m.Type, m.Txn, m.Attempt)
	switch m.Type {
	case MsgPrepare, MsgOnePhaseCommit, MsgInquirePeer:
		fmt.Fprintf(&b, " term=%d", m.Term)
		if m.Type == MsgOnePhaseCommit && m.Coordinator != 0 {
			rs := make([]RangeID, len(m.Participants))
			for i, p := range m.Participants {
				rs[i] = p.Range
			}
			fmt.Fprintf(&b, " with the decision %v", rs)
		}
	case MsgVote:
		fmt.Fprintf(&b, " %v", m.Vote)
	}
	if m.Decision != DecisionPending || m.Type == MsgInquireResp || m.Type == MsgInquirePeerResp ||
		m.Type == MsgOnePhaseResp {
		fmt.Fprintf(&b, " %v", m.Decision)
	}
	return b.String()
}

// Outcome is what the coordinator tells the client about a commit.
type Outcome uint8

// Outcomes.
const (
	OutcomeCommitted Outcome = iota + 1
	// OutcomeAborted is certain: nothing was or will be applied, so the
	// client may retry with a new attempt.
	OutcomeAborted
	// OutcomeAmbiguous means the coordinator cannot tell; the txn record
	// (2PC) or the range (1PC) knows. Never retry blindly.
	OutcomeAmbiguous
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCommitted:
		return "committed"
	case OutcomeAborted:
		return "aborted"
	case OutcomeAmbiguous:
		return "ambiguous"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Path is how a commit went, for commit receipts.
type Path uint8

// Paths.
const (
	PathTwoPhase Path = iota + 1
	PathOnePhase      // one writing range, no txn record (rule 10)
	PathReadOnly      // no writes anywhere: every participant voted READ-ONLY
)

func (p Path) String() string {
	switch p {
	case PathTwoPhase:
		return "2PC"
	case PathOnePhase:
		return "1PC"
	case PathReadOnly:
		return "read-only"
	}
	return fmt.Sprintf("Path(%d)", int(p))
}

// AbortReason says why a commit did not happen.
type AbortReason uint8

// Abort reasons.
const (
	ReasonNone          AbortReason = iota
	ReasonVotedNo                   // Result.Range voted NO
	ReasonVoteTimeout               // some participant did not vote in time
	ReasonDecisionLost              // an inquirer's CAS to ABORTED won (rule 4)
	ReasonOnePhaseAbort             // the one writing range aborted the one-phase commit
)

func (r AbortReason) String() string {
	switch r {
	case ReasonNone:
		return ""
	case ReasonVotedNo:
		return "voted NO"
	case ReasonVoteTimeout:
		return "vote timeout"
	case ReasonDecisionLost:
		return "txn record aborted by an inquirer"
	case ReasonOnePhaseAbort:
		return "one-phase commit aborted"
	}
	return fmt.Sprintf("AbortReason(%d)", int(r))
}

// Result is the coordinator's answer to a Commit, for the client.
type Result struct {
	Txn     lock.TxnID
	Attempt uint64
	Outcome Outcome
	Path    Path
	Reason  AbortReason
	Range   RangeID // the range behind Reason, if one
}

func (r Result) String() string {
	s := fmt.Sprintf("result t%d.%d %v %v", r.Txn, r.Attempt, r.Outcome, r.Path)
	if r.Reason != ReasonNone {
		s += fmt.Sprintf(" (%v", r.Reason)
		if r.Range != 0 {
			s += fmt.Sprintf(" r%d", r.Range)
		}
		s += ")"
	}
	return s
}

func decisionOf(s State) Decision {
	switch s {
	case StateCommitted:
		return DecisionCommitted
	case StateAborted:
		return DecisionAborted
	}
	return DecisionPending
}
