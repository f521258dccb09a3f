package replica

import (
	"encoding/binary"
	"fmt"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// Collecting finished transactions' state.
//
// A range remembers the outcome of every txn attempt it took part in, so
// that a late or duplicated message never resurrects or re-applies a
// finished transaction (rule 7). Kept forever, that memory grows with every
// transaction: on disk, in the txn index (which gives up beyond a million
// ids), in snapshots, and in splits, which copy outcomes to both sides.
//
// The state is keyed by txn id and attempt, and the attempt is the
// transaction's begin time in Unix nanoseconds. The leader scans for the
// remembered outcomes of the attempts below a cutoff (GcCandidates, outside
// the Raft loop) and proposes GcTxnStateOp, which deletes those it names
// that are below the cutoff and makes the cutoff the range's txn horizon.
// Below the horizon an absent outcome is final:
//
//   - a PREPARE is refused (it reads as ABORTED) and writes nothing;
//   - a one-phase commit, with or without the decision, is answered UNKNOWN
//     and applies nothing: it may have applied before its outcome was
//     collected;
//   - no outcome is remembered (a resolution without a prepare record, an
//     abort of an unknown attempt).
//
// Operations of an attempt that began more than half the retention ago are
// refused before they take a lock (server/txn_layer.go), and an ACTIVE
// attempt is aborted MaxTxnDuration after its last operation, so no attempt
// that can still prepare or commit in one phase is ever below the horizon.
//
// Prepare records are never collected: a txn still in flight, however old,
// finishes as before.
//
// Txn records (and the tombstones that ended records leave) are not
// collected either. A split copies a prepare record to the new right range,
// which the coordinator never heard of: the coordinator ends the record once
// the participants it knows acknowledged, and the copy learns the outcome
// later by asking the record. A collected record could only be presumed
// ABORTED, and the copy would abort writes the rest of the txn committed.
// Collecting records needs to know that no such copy is left anywhere.
//
// The horizon only moves forward. It travels with the range's txn state:
// snapshots carry it, checksums cover it, a split gives it to both sides.

// attemptOf returns the attempt encoded in a txn state id (txn id, then
// attempt, both 8 bytes big-endian), or false.
func attemptOf(txnID []byte) (uint64, bool) {
	if len(txnID) != 16 {
		return 0, false
	}
	return binary.BigEndian.Uint64(txnID[8:]), true
}

// readHorizon reads the txn horizon of range rangeID from b (0: none).
func readHorizon(b batchRW, rangeID uint64) (uint64, error) {
	v, found, err := getRW(b, keys.RangeLocalKey(rangeID, keys.SuffixTxnHorizon))
	if err != nil || !found {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("replica %d: txn horizon of %d bytes", rangeID, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func writeHorizon(b batchRW, rangeID, h uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], h)
	return b.Set(keys.RangeLocalKey(rangeID, keys.SuffixTxnHorizon), v[:], nil)
}

// horizon returns the range's txn horizon, from the index when it is built.
func (r *rangeState) horizon() (uint64, error) {
	if r.txns != nil && r.txns.built {
		return r.txns.horizon, nil
	}
	return readHorizon(r.b, r.desc.RangeId)
}

// belowHorizon reports whether txnID's attempt is below the range's txn
// horizon, so that its absent state is final.
func (r *rangeState) belowHorizon(txnID []byte) (bool, error) {
	a, ok := attemptOf(txnID)
	if !ok {
		return false, nil
	}
	h, err := r.horizon()
	return a < h, err
}

// gcTxnState deletes the named outcomes whose attempts are below
// op.BeforeAttempt, and moves the horizon there (never back).
// Result.Collected counts the deletions.
func (r *rangeState) gcTxnState(op *vowdbpb.GcTxnStateOp) (Result, error) {
	h, err := r.horizon()
	if err != nil {
		return Result{}, err
	}
	before := op.BeforeAttempt
	if before > h {
		if err := writeHorizon(r.b, r.desc.RangeId, before); err != nil {
			return Result{}, err
		}
		if r.txns != nil && r.txns.built {
			r.txns.horizon = before
		}
	}
	n := 0
	for _, id := range op.OutcomeIds {
		if a, ok := attemptOf(id); !ok || a >= before {
			continue
		}
		if _, found, err := r.getTxn(keys.SuffixOutcome, id); err != nil {
			return Result{}, err
		} else if found {
			n++
			if err := r.deleteTxn(keys.SuffixOutcome, id); err != nil {
				return Result{}, err
			}
		}
	}
	// The index remembers which kinds of state were ever written per
	// hash of a txn id, and cannot forget one id's kinds without risking
	// another's that shares the hash: a deleted key only costs it a read
	// from Pebble. Rebuilt, it holds what is left, so a big one (or one
	// that gave up) is dropped and rebuilt.
	if n > 0 && r.txns != nil && (r.txns.full || len(r.txns.kinds) > maxTxnIndex/2) {
		r.txns.reset()
	}
	return Result{Collected: n}, nil
}

// GcCandidates returns the ids of the range's remembered outcomes whose
// attempts are below before, at most limit of them, from eng (the applied
// state; the command re-checks each id when it applies). It runs outside
// the Raft loop.
func GcCandidates(eng *storage.Engine, rangeID, before uint64, limit int) ([][]byte, error) {
	var out [][]byte
	err := scanTxn(eng, rangeID, keys.SuffixOutcome, nil, func(id, _ []byte) error {
		if a, ok := attemptOf(id); ok && a < before && len(out) < limit {
			out = append(out, id)
		}
		return nil
	})
	return out, err
}
