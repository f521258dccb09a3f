package replica

import (
	"errors"
	"fmt"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// ErrNotLeader means this replica is not its range's leader; nothing was
// proposed.
var ErrNotLeader = errors.New("replica: not leader")

// ErrProposalDropped means Raft refused the proposal (no leader, leadership
// transfer, or a pending membership change); nothing was proposed.
var ErrProposalDropped = errors.New("replica: proposal dropped")

// KeyMismatchError means a command reached a range that no longer holds its
// key (the range split or the client's cache was stale). Nothing was written.
type KeyMismatchError struct {
	Key  []byte
	Desc *vowdbpb.RangeDescriptor
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("replica: key %q is outside range %d [%q, %q)", e.Key, e.Desc.GetRangeId(), e.Desc.GetStartKey(), e.Desc.GetEndKey())
}
