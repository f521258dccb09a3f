package vowdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// ReplicaChecksum is one replica's answer in a consistency check.
type ReplicaChecksum struct {
	Node    uint64
	Learner bool
	// Applied is the replica's applied index when it answered.
	Applied uint64
	// Checksum is the SHA-256 of the range's replicated state at the
	// check's index; nil when Err is set.
	Checksum []byte
	// Err says why the replica gave no checksum (unreachable, lagging, or
	// it restarted since the check's index).
	Err string
}

// ConsistencyCheck is the outcome of CheckConsistency for one range.
type ConsistencyCheck struct {
	Range uint64
	// Index is the Raft log index at which every replica computed its
	// checksum: each had applied exactly the same entries.
	Index    uint64
	Replicas []ReplicaChecksum
}

// Consistent reports whether every replica answered and all checksums are
// equal.
func (c ConsistencyCheck) Consistent() bool {
	return len(c.Replicas) > 0 && !c.Mismatch() && len(c.Failed()) == 0
}

// Mismatch reports whether two replicas answered with different checksums:
// their states differ at the same log index.
func (c ConsistencyCheck) Mismatch() bool {
	var first []byte
	for _, r := range c.Replicas {
		if r.Err != "" {
			continue
		}
		if first == nil {
			first = r.Checksum
		} else if !bytes.Equal(first, r.Checksum) {
			return true
		}
	}
	return false
}

// Failed returns the replicas that gave no checksum.
func (c ConsistencyCheck) Failed() []ReplicaChecksum {
	var out []ReplicaChecksum
	for _, r := range c.Replicas {
		if r.Err != "" {
			out = append(out, r)
		}
	}
	return out
}

// CheckConsistency checks that the replicas of range rangeID hold the same
// state: the range's leader puts a checksum command in the range's Raft
// log, every replica computes a SHA-256 of the range's data and
// transaction state when it applies that entry, and the leader collects
// them. A lagging replica is waited for a few seconds. The answer lists
// every replica; use Consistent and Mismatch to judge it. An error means
// no check ran (ErrInvalidArgument: there is no such range).
func (db *DB) CheckConsistency(ctx context.Context, rangeID uint64) (ConsistencyCheck, error) {
	if rangeID == 0 {
		return ConsistencyCheck{}, fmt.Errorf("%w: range id 0 is not valid", ErrInvalidArgument)
	}
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	var resp *vowdbpb.CheckConsistencyResponse
	var lastErr error
	for _, ep := range db.endpoints() {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := db.readyConn(cctx, ep)
		ccancel()
		if err != nil {
			lastErr = err
			continue
		}
		resp, err = vowdbpb.NewAdminClient(conn).CheckConsistency(ctx, &vowdbpb.CheckConsistencyRequest{RangeId: rangeID})
		if err == nil {
			break
		}
		lastErr = classify(err, false)
		if errors.Is(lastErr, ErrInvalidArgument) || ctx.Err() != nil {
			return ConsistencyCheck{}, lastErr
		}
	}
	if resp == nil {
		if !errors.Is(lastErr, ErrUnavailable) {
			lastErr = fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
		}
		return ConsistencyCheck{}, fmt.Errorf("check range %d: %w", rangeID, lastErr)
	}
	out := ConsistencyCheck{Range: resp.RangeId, Index: resp.Index}
	for _, r := range resp.Replicas {
		out.Replicas = append(out.Replicas, ReplicaChecksum{Node: r.NodeId, Learner: r.Learner, Applied: r.AppliedIndex,
			Checksum: r.Checksum, Err: r.Error})
	}
	return out, nil
}
