package vowdb

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound is returned by Get for an absent key.
	ErrNotFound = errors.New("vowdb: key not found")
	// ErrAmbiguousCommit means a write may or may not have been applied: the
	// client lost contact after sending it, or the cluster could not confirm
	// it in time. It is never retried automatically.
	ErrAmbiguousCommit = errors.New("vowdb: ambiguous commit: the write may or may not have been applied")
	// ErrRetryable marks errors after which the same request can safely be
	// sent again (the cluster was certain it did not take effect), for
	// example when no leader could be reached before the deadline.
	ErrRetryable = errors.New("vowdb: retryable")
	// ErrUnavailable means the cluster could not serve the request before
	// the deadline; nothing was applied. It matches ErrRetryable.
	ErrUnavailable = fmt.Errorf("vowdb: cluster unavailable (%w)", ErrRetryable)
	// ErrInvalidArgument means the request was refused as malformed or over
	// a limit; nothing was written.
	ErrInvalidArgument = errors.New("vowdb: invalid argument")
	// ErrNotInitialized means the contacted nodes have not joined a cluster.
	ErrNotInitialized = errors.New("vowdb: cluster not initialized (run `vowdb init`)")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("vowdb: client closed")
)

// wrap attaches the server's message to a sentinel.
func wrap(sentinel error, msg string) error {
	return fmt.Errorf("%w: %s", sentinel, msg)
}
