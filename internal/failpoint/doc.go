// Package failpoint names the points in vowdb's durable-write and send paths
// where a test can inject a crash, an error or a delay.
//
// Call sites use Hit(name). In normal builds Hit is an empty function that
// the compiler removes; built with `-tags failpoints`, Hit runs whatever a
// test registered for that name with Enable.
//
// Names are "<package>/<point>", for example "multiraft/after-persist".
// Every name is listed in Names so tests can iterate over all of them.
package failpoint

// The failpoints placed in the code.
const (
	// BeforePersist: a scheduler round built its batch of Raft state but has
	// not written it.
	BeforePersist = "multiraft/before-persist"
	// AfterPersist: the Raft state of the round is durable; no message of
	// the round has been sent.
	AfterPersist = "multiraft/after-persist"
	// AfterSend: the round's messages were handed to the transport.
	AfterSend = "multiraft/after-send"
	// AfterApply: the round's committed entries were applied (not synced);
	// no client has been answered yet.
	AfterApply = "multiraft/after-apply"
)

// Transaction failpoints, on the gateway (coordinator) side.
const (
	// TxnBeforePrepare: the gateway accepted a commit; no PREPARE was
	// sent yet, so every participant is still ACTIVE.
	TxnBeforePrepare = "txn/before-prepare"
	// TxnBeforeDecision: every participant voted YES; the COMMITTED
	// compare-and-set on the txn record is not proposed yet. When the
	// anchor decides, every other participant voted YES and the anchor's
	// commit with the decision is not sent yet.
	TxnBeforeDecision = "txn/before-decision"
	// TxnAfterDecision: the decision is durable in the txn record (when
	// the anchor decides: its commit with the decision applied on its
	// leader, which has not answered yet); no COMMIT was sent and the
	// client was not answered.
	TxnAfterDecision = "txn/after-decision"
	// TxnBeforeCommitSend: COMMIT messages are about to be sent.
	TxnBeforeCommitSend = "txn/before-commit-send"
	// TxnBeforeEnd: every participant acknowledged; the record is not
	// ended yet.
	TxnBeforeEnd = "txn/before-end"
	// TxnOpGranted: a transactional operation's lock was granted on the
	// range's leader; its answer is not sent yet.
	TxnOpGranted = "txn/op-granted"
	// TxnAfterPrepareDurable: a participant's prepare record applied; the
	// YES vote is not sent.
	TxnAfterPrepareDurable = "txn/participant-after-prepare"
	// TxnAfterCommitApplied: a participant applied the commit; the ACK is
	// not sent and the locks are not released.
	TxnAfterCommitApplied = "txn/participant-after-commit"
)

// Names lists every failpoint of the scheduler round.
var Names = []string{BeforePersist, AfterPersist, AfterSend, AfterApply}

// TxnNames lists the transaction failpoints.
var TxnNames = []string{TxnBeforePrepare, TxnAfterPrepareDurable, TxnBeforeDecision, TxnAfterDecision, TxnBeforeCommitSend,
	TxnAfterCommitApplied, TxnBeforeEnd}
