package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/replica"
)

// What `vowdb locks` and `vowdb txn ls` show beyond the waits and the
// in-memory participants: every lock held in this node's lock tables, and
// the durable in-flight state of the ranges this node leads (prepare
// records, undecided transaction records). Both are how an audit proves
// that nothing was left behind after a run.

// heldLocks lists the locks granted in the lock tables of this node's live
// tenures.
func (l *txnLayer) heldLocks() []*vowdbpb.LockHold {
	var out []*vowdbpb.LockHold
	for _, tr := range l.tenures() {
		{
			for _, lk := range tr.Held() {
				h := &vowdbpb.LockHold{Holder: uint64(lk.Txn), Key: lk.Span.Start, Mode: lk.Mode.String(),
					RangeId: tr.Range(), NodeId: l.n.nodeID()}
				if lk.Txn&plainTxnBit != 0 {
					h.Holder = 0 // a single-key operation outside any transaction
				}
				if bytes.Equal(lk.Span.End, append(append([]byte(nil), lk.Span.Start...), 0)) {
					h.Point = true
				} else {
					h.EndKey = lk.Span.End
				}
				out = append(out, h)
			}
		}
	}
	return out
}

// durableTxns lists, for every user range this node leads, the
// transactions its applied state shows in flight: a prepare record
// (PREPARED) or an undecided transaction record (PENDING). Each range is
// read after a ReadIndex round, so everything committed before is applied;
// a range whose round fails (leadership lost meanwhile) is left out, its
// new leader answers for it.
func (l *txnLayer) durableTxns(ctx context.Context) []*vowdbpb.TxnInfo {
	s := l.n.sched.Load()
	if s == nil {
		return nil
	}
	var out []*vowdbpb.TxnInfo
	for _, r := range s.Replicas() {
		st := r.Status()
		if st.Desc == nil || st.Desc.IsMeta || st.LeaderID != l.n.nodeID() {
			continue
		}
		rd := replica.NewRead()
		s.Read(r.RangeID, rd)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		select {
		case err = <-rd.Done:
		case <-rctx.Done():
			err = rctx.Err()
		}
		cancel()
		if err != nil {
			continue
		}
		recs, err := replica.PrepareRecords(l.n.eng, r.RangeID)
		if err != nil {
			continue
		}
		for kid, p := range recs {
			if id, attempt, ok := splitTxnKeyID([]byte(kid)); ok {
				out = append(out, &vowdbpb.TxnInfo{TxnId: id, Attempt: attempt, CoordinatorNodeId: p.CoordinatorNodeId,
					State: "PREPARED", ParticipantRangeIds: []uint64{r.RangeID}, NodeId: l.n.nodeID()})
			}
		}
		txnRecs, err := replica.TxnRecords(l.n.eng, r.RangeID)
		if err != nil {
			continue
		}
		for _, rec := range txnRecs {
			if rec.State != vowdbpb.TxnState_TXN_PENDING {
				continue
			}
			if id, attempt, ok := splitTxnKeyID(rec.TxnId); ok {
				out = append(out, &vowdbpb.TxnInfo{TxnId: id, Attempt: attempt, CoordinatorNodeId: rec.CoordinatorNodeId,
					State: "PENDING", ParticipantRangeIds: []uint64{r.RangeID}, NodeId: l.n.nodeID()})
			}
		}
	}
	return out
}

// splitTxnKeyID splits the txn id under which a range keeps txn state
// (keys.TxnKey, after the suffix): the transaction id and the attempt, 8 bytes each.
func splitTxnKeyID(b []byte) (id, attempt uint64, ok bool) {
	if len(b) != 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), true
}
