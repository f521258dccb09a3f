package txn

import (
	"fmt"

	"github.com/vowdb/vowdb/internal/lock"
)

// State is the state of one transaction attempt on one participant.
type State uint8

// Participant states. ACTIVE and PREPARED are live; the others are finished
// and only remembered (rule 7).
const (
	StateActive    State = iota + 1 // locks and buffered writes in leader memory only
	StatePrepared                   // prepare record written; YES once it is durable
	StateCommitted                  // writes applied, locks released
	StateAborted                    // locks released; this attempt will never prepare here
	// StateReadOnly: voted READ-ONLY and released (rule 9). It is not
	// ABORTED: the txn may still commit, so a read-only participant can never
	// answer a cooperative-termination inquiry (rule 5).
	StateReadOnly
)

func (s State) String() string {
	switch s {
	case 0:
		return "UNKNOWN"
	case StateActive:
		return "ACTIVE"
	case StatePrepared:
		return "PREPARED"
	case StateCommitted:
		return "COMMITTED"
	case StateAborted:
		return "ABORTED"
	case StateReadOnly:
		return "READ-ONLY"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// done is a finished attempt.
type done struct {
	attempt uint64
	state   State
	// vague marks an ABORTED that is a refusal, not knowledge: an unknown
	// txn was vowed never to prepare here, but an earlier tenure may have
	// prepared and committed it. It answers as "cannot tell".
	vague bool
}

// decision is the outcome d can vouch for.
func (d done) decision() Decision {
	if d.vague {
		return DecisionPending
	}
	return decisionOf(d.state)
}

// The participant's memory of finished attempts (rule 7). It lives as long
// as the Participant (one leader tenure) and holds at most MaxFinished
// entries, so the answers below must stay correct when an entry is missing.

// remember keeps a finished attempt's outcome, forgetting the oldest beyond
// MaxFinished.
func (p *Participant) remember(txn lock.TxnID, attempt uint64, s State) {
	p.keep(txn, done{attempt: attempt, state: s})
}

// refuse vows that an unknown txn attempt never prepares here. The vow is
// knowledge (ABORTED) only if it certainly never prepared (neverPrepared);
// otherwise it is vague.
func (p *Participant) refuse(txn lock.TxnID, attempt uint64, term uint64) {
	p.keep(txn, done{attempt: attempt, state: StateAborted, vague: !p.neverPrepared(term)})
}

func (p *Participant) keep(txn lock.TxnID, d done) {
	if _, ok := p.finished[txn]; !ok {
		p.order = append(p.order, txn)
	}
	p.finished[txn] = d
	for len(p.order) > p.cfg.MaxFinished {
		delete(p.finished, p.order[0])
		p.order = p.order[1:]
		p.forgot = true
	}
}

// neverPrepared reports whether an unknown txn, whose first operation here
// the coordinator saw in term, certainly never prepared here. Only then may
// it be answered ABORTED and vowed never to prepare (rule 5). NB: after a
// restart (another term) or a forgotten outcome, "unknown" may mean
// "prepared, committed and forgotten": answering ABORTED then would let a
// peer abort a committed txn.
func (p *Participant) neverPrepared(term uint64) bool {
	return term == p.cfg.Term && !p.forgot
}
