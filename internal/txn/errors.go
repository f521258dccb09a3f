package txn

import "errors"

// Errors returned by Participant and Coordinator. A driver maps them to
// client-visible errors; none of them means that anything was written.
var (
	// ErrVowed: the txn is prepared (or its one-phase commit is in the Raft
	// log), so only the decision can end it (rule 2) and it takes no more
	// operations (its lock point has passed, rule 9).
	ErrVowed = errors.New("txn: prepared or committing")
	// ErrFinished: the txn (this attempt) already finished on this range;
	// a late operation must not resurrect it (rule 7).
	ErrFinished = errors.New("txn: already finished")
	// ErrInProgress: Commit was called twice for the same txn.
	ErrInProgress = errors.New("txn: commit already in progress")
	// ErrInvalid: a malformed request or configuration.
	ErrInvalid = errors.New("txn: invalid")
	// ErrMisrouted: a message for another range or node, or of a type this
	// role does not handle.
	ErrMisrouted = errors.New("txn: misrouted message")
)
