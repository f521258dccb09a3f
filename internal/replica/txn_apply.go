package replica

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
)

// This file is the transactional part of the range state machine: durable
// prepare records, the outcome memory that makes late or duplicated messages
// harmless, one-phase commits, and the compare-and-set on transaction
// records. Every function is deterministic; the protocol that decides when
// to propose each command lives in package txn.

func (r *rangeState) outcome(txnID []byte) (vowdbpb.TxnState, error) {
	v, found, err := r.getTxn(keys.SuffixOutcome, txnID)
	if err != nil || !found || len(v) != 1 {
		return vowdbpb.TxnState_TXN_UNKNOWN, err
	}
	return vowdbpb.TxnState(v[0]), nil
}

// remember writes the outcome of a finished attempt, unless the attempt is
// below the range's txn horizon: its outcome would only be collected again,
// and below the horizon absent state is final anyway (txn_gc.go).
func (r *rangeState) remember(txnID []byte, st vowdbpb.TxnState) error {
	if below, err := r.belowHorizon(txnID); err != nil || below {
		return err
	}
	return r.setTxn(keys.SuffixOutcome, txnID, []byte{byte(st)}, false)
}

// rangeState is what the txn commands work on.
type rangeState struct {
	b    batchRW
	desc *vowdbpb.RangeDescriptor
	txns *txnIndex // may be nil
}

// getTxn reads the txn state of the given kind for txnID, from the index
// when it knows the answer.
func (r *rangeState) getTxn(kind byte, txnID []byte) ([]byte, bool, error) {
	k := keys.TxnKey(r.desc.RangeId, kind, txnID)
	if v, found, known := r.txns.get(kind, txnID, k); known {
		return v, found, nil
	}
	return getRW(r.b, k)
}

// setTxn writes txn state of the given kind for txnID; keep asks the index
// to answer later reads of it from memory.
func (r *rangeState) setTxn(kind byte, txnID []byte, v []byte, keep bool) error {
	k := keys.TxnKey(r.desc.RangeId, kind, txnID)
	r.txns.set(kind, txnID, k, v, keep)
	return r.b.Set(k, v, nil)
}

// setTxnProto is setTxn of a message.
func (r *rangeState) setTxnProto(kind byte, txnID []byte, m proto.Message, keep bool) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return r.setTxn(kind, txnID, v, keep)
}

// deleteTxn deletes txn state of the given kind for txnID.
func (r *rangeState) deleteTxn(kind byte, txnID []byte) error {
	k := keys.TxnKey(r.desc.RangeId, kind, txnID)
	r.txns.deleted(k)
	return r.b.Delete(k, nil)
}

func (r *rangeState) checkWrites(ws []*vowdbpb.TxnWrite) error {
	for _, w := range ws {
		if r.desc.IsMeta || !keys.Contains(r.desc.StartKey, r.desc.EndKey, w.Key) {
			return &KeyMismatchError{Key: w.Key, Desc: r.desc}
		}
	}
	return nil
}

func (r *rangeState) applyWrites(ws []*vowdbpb.TxnWrite) error {
	for _, w := range ws {
		var err error
		if w.Delete {
			err = r.b.Delete(keys.UserKey(w.Key), nil)
		} else {
			err = r.b.Set(keys.UserKey(w.Key), w.Value, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare makes the vote durable. A txn whose outcome is already known
// is not prepared again (a late PREPARE cannot resurrect it, rule 7): the
// result carries the known outcome instead of PENDING.
func (r *rangeState) prepare(op *vowdbpb.PrepareTxnOp) (Result, error) {
	if len(op.TxnId) == 0 {
		return Result{Err: fmt.Errorf("%w: prepare without txn id", ErrInvalidCommand)}, nil
	}
	if st, err := r.outcome(op.TxnId); err != nil || st != vowdbpb.TxnState_TXN_UNKNOWN {
		return Result{TxnState: st}, err
	}
	if err := r.checkWrites(op.Writes); err != nil {
		return Result{Err: err}, nil
	}
	if _, found, err := r.getTxn(keys.SuffixPrepare, op.TxnId); err != nil || found {
		return Result{TxnState: vowdbpb.TxnState_TXN_PENDING}, err // duplicate PREPARE: same vote
	}
	if below, err := r.belowHorizon(op.TxnId); err != nil || below {
		// Its outcome may have been collected: it must not prepare now.
		return Result{TxnState: vowdbpb.TxnState_TXN_ABORTED}, err
	}
	return Result{TxnState: vowdbpb.TxnState_TXN_PENDING}, r.setTxnProto(keys.SuffixPrepare, op.TxnId, op, true)
}

// resolve applies or drops a prepared write set and remembers the outcome.
// An ABORT for a txn never prepared here is remembered too, so that it can
// never prepare later (cooperative termination, rule 5).
func (r *rangeState) resolve(op *vowdbpb.ResolveTxnOp) (Result, error) {
	if st, err := r.outcome(op.TxnId); err != nil || st != vowdbpb.TxnState_TXN_UNKNOWN {
		return Result{TxnState: st}, err // duplicate or late: nothing changes
	}
	v, found, err := r.getTxn(keys.SuffixPrepare, op.TxnId)
	if err != nil {
		return Result{}, err
	}
	if !found && op.Commit {
		// COMMIT without a prepare record here: never acknowledge it as
		// applied. The caller treats UNKNOWN as a protocol error to report.
		return Result{TxnState: vowdbpb.TxnState_TXN_UNKNOWN}, nil
	}
	out := vowdbpb.TxnState_TXN_ABORTED
	if found {
		var rec vowdbpb.PrepareTxnOp
		if err := proto.Unmarshal(v, &rec); err != nil {
			return Result{}, err
		}
		if op.Commit {
			if err := r.applyWrites(rec.Writes); err != nil {
				return Result{}, err
			}
			out = vowdbpb.TxnState_TXN_COMMITTED
		}
		if err := r.deleteTxn(keys.SuffixPrepare, op.TxnId); err != nil {
			return Result{}, err
		}
	}
	return Result{TxnState: out}, r.remember(op.TxnId, out)
}

// onePhase commits all of a txn's writes with this one entry (rule 10).
func (r *rangeState) onePhase(op *vowdbpb.OnePhaseTxnOp) (Result, error) {
	if len(op.TxnId) == 0 {
		return Result{Err: fmt.Errorf("%w: commit without txn id", ErrInvalidCommand)}, nil
	}
	if st, err := r.outcome(op.TxnId); err != nil || st != vowdbpb.TxnState_TXN_UNKNOWN {
		return Result{TxnState: st}, err // a retry with the same id applies nothing twice
	}
	if err := r.checkWrites(op.Writes); err != nil {
		return Result{Err: err}, nil
	}
	if below, err := r.belowHorizon(op.TxnId); err != nil || below {
		// It may have applied before its outcome was collected: the
		// range cannot tell, and applies nothing.
		return Result{TxnState: vowdbpb.TxnState_TXN_UNKNOWN}, err
	}
	if d := op.Decide; d != nil {
		// The anchor's commit with the decision: the txn record first. An
		// inquirer's presumed ABORTED may have been recorded before this
		// entry; then nothing is applied and the attempt is remembered
		// aborted, so a duplicate cannot commit it later either.
		if !bytes.Equal(d.TxnId, op.TxnId) || d.Expect != vowdbpb.TxnState_TXN_UNKNOWN ||
			d.NewState != vowdbpb.TxnState_TXN_COMMITTED || d.Remove || d.End {
			return Result{Err: fmt.Errorf("%w: a commit with the decision must move its own record from absent to COMMITTED", ErrInvalidCommand)}, nil
		}
		res, err := r.recordCAS(d)
		if err != nil || res.Err != nil {
			return res, err
		}
		switch {
		case res.TxnState == vowdbpb.TxnState_TXN_ABORTED:
			return Result{TxnState: vowdbpb.TxnState_TXN_ABORTED}, r.remember(op.TxnId, vowdbpb.TxnState_TXN_ABORTED)
		case !res.Swapped:
			// Only this entry ever records COMMITTED for the attempt, and
			// the outcome memory said it never applied.
			return Result{Err: fmt.Errorf("%w: txn record already %v", ErrInvalidCommand, res.TxnState)}, nil
		}
	}
	if err := r.applyWrites(op.Writes); err != nil {
		return Result{}, err
	}
	return Result{TxnState: vowdbpb.TxnState_TXN_COMMITTED, Swapped: true}, r.remember(op.TxnId, vowdbpb.TxnState_TXN_COMMITTED)
}

// recordCAS is the compare-and-set on a transaction record: Swapped reports
// whether this command moved the record; TxnState is the state after it.
func (r *rangeState) recordCAS(op *vowdbpb.TxnRecordCasOp) (Result, error) {
	if r.desc.IsMeta || !keys.Contains(r.desc.StartKey, r.desc.EndKey, op.AnchorKey) {
		return Result{Err: &KeyMismatchError{Key: op.AnchorKey, Desc: r.desc}}, nil
	}
	v, found, err := r.getTxn(keys.SuffixTxnRecord, op.TxnId)
	if err != nil {
		return Result{}, err
	}
	cur := vowdbpb.TxnState_TXN_UNKNOWN
	if found {
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return Result{}, err
		}
		cur = rec.State
	}
	if op.End {
		if !found {
			return Result{TxnState: cur}, nil
		}
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return Result{}, err
		}
		rec.Ended = true
		return Result{TxnState: cur, Swapped: true}, r.setTxnProto(keys.SuffixTxnRecord, op.TxnId, &rec, false)
	}
	if cur != op.Expect {
		return Result{TxnState: cur}, nil
	}
	if op.Remove {
		return Result{TxnState: vowdbpb.TxnState_TXN_UNKNOWN, Swapped: true}, r.deleteTxn(keys.SuffixTxnRecord, op.TxnId)
	}
	rec := &vowdbpb.TxnRecord{TxnId: op.TxnId, State: op.NewState, AnchorKey: op.AnchorKey,
		ParticipantRangeIds: op.ParticipantRangeIds, CoordinatorNodeId: op.CoordinatorNodeId}
	return Result{TxnState: op.NewState, Swapped: true}, r.setTxnProto(keys.SuffixTxnRecord, op.TxnId, rec, true)
}

// endTxns marks the records of a batch of ENDs ended. A batch with an op
// that is not an END is refused whole; an END whose anchor key this range
// no longer holds is skipped (recovery ends that record later).
func (r *rangeState) endTxns(op *vowdbpb.EndTxnsOp) (Result, error) {
	for _, e := range op.Ends {
		if !e.End {
			return Result{Err: fmt.Errorf("%w: a batch of ENDs holds another compare-and-set", ErrInvalidCommand)}, nil
		}
	}
	for _, e := range op.Ends {
		if _, err := r.recordCAS(e); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// splitTxnState divides the left range's txn state at a split: each prepare
// record keeps its left writes and a copy with the right writes goes to the
// right range; transaction records follow their anchor key; outcomes are
// remembered on both sides.
func splitTxnState(b batchRW, left, right *vowdbpb.RangeDescriptor) error {
	type kv struct{ k, v []byte }
	var found []kv
	for _, suffix := range keys.TxnSuffixes {
		p := keys.RangeLocalKey(left.RangeId, suffix)
		it, err := b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: keys.PrefixEnd(p)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			found = append(found, kv{append([]byte(nil), it.Key()...), append([]byte(nil), it.Value()...)})
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	// The right range starts with the left's txn horizon.
	if h, err := readHorizon(b, left.RangeId); err != nil {
		return err
	} else if h > 0 {
		if err := writeHorizon(b, right.RangeId, h); err != nil {
			return err
		}
	}
	lp := len(keys.RangeLocalKey(left.RangeId, 0))
	for _, e := range found {
		suffix, txnID := e.k[lp-1], e.k[lp:]
		rightKey := keys.TxnKey(right.RangeId, suffix, txnID)
		switch suffix {
		case keys.SuffixOutcome:
			if err := b.Set(rightKey, e.v, nil); err != nil {
				return err
			}
		case keys.SuffixTxnRecord:
			var rec vowdbpb.TxnRecord
			if err := proto.Unmarshal(e.v, &rec); err != nil {
				return err
			}
			if string(rec.AnchorKey) >= string(right.StartKey) {
				if err := b.Delete(e.k, nil); err != nil {
					return err
				}
				if err := b.Set(rightKey, e.v, nil); err != nil {
					return err
				}
			}
		case keys.SuffixPrepare:
			var rec vowdbpb.PrepareTxnOp
			if err := proto.Unmarshal(e.v, &rec); err != nil {
				return err
			}
			var lw, rw []*vowdbpb.TxnWrite
			for _, w := range rec.Writes {
				if string(w.Key) >= string(right.StartKey) {
					rw = append(rw, w)
				} else {
					lw = append(lw, w)
				}
			}
			if len(rw) == 0 {
				continue
			}
			rrec := proto.Clone(&rec).(*vowdbpb.PrepareTxnOp)
			rrec.Writes = rw
			if err := setProto(b, rightKey, rrec); err != nil {
				return err
			}
			rec.Writes = lw
			if err := setProto(b, e.k, &rec); err != nil {
				return err
			}
		}
	}
	return nil
}
