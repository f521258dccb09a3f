package server

import (
	"encoding/binary"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
)

// txnKeyID is the id under which a range stores the state of one attempt of
// a txn: the txn id then the attempt, big-endian, so that every attempt of
// an id shares the 8-byte prefix that TxnStatus scans.
func txnKeyID(id lock.TxnID, attempt uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(id))
	binary.BigEndian.PutUint64(b[8:], attempt)
	return b
}

func txnIDPrefix(id lock.TxnID) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(id))
	return b
}

func parseTxnKeyID(b []byte) (lock.TxnID, uint64, bool) {
	if len(b) != 16 {
		return 0, 0, false
	}
	return lock.TxnID(binary.BigEndian.Uint64(b)), binary.BigEndian.Uint64(b[8:]), true
}

func participantsToPB(ps []txn.Participation) []*vowdbpb.TxnParticipant {
	out := make([]*vowdbpb.TxnParticipant, len(ps))
	for i, p := range ps {
		out[i] = &vowdbpb.TxnParticipant{RangeId: uint64(p.Range), Term: p.Term, Writes: p.Writes}
	}
	return out
}

func participantsFromPB(ps []*vowdbpb.TxnParticipant) []txn.Participation {
	out := make([]txn.Participation, len(ps))
	for i, p := range ps {
		out[i] = txn.Participation{Range: txn.RangeID(p.RangeId), Term: p.Term, Writes: p.Writes}
	}
	return out
}

func msgToPB(m txn.Message) *vowdbpb.TxnMessage {
	return &vowdbpb.TxnMessage{
		Type: uint32(m.Type), TxnId: uint64(m.Txn), Attempt: m.Attempt,
		FromNode: uint64(m.From.Node), FromRange: uint64(m.From.Range),
		ToNode: uint64(m.To.Node), ToRange: uint64(m.To.Range), Term: m.Term,
		Participants: participantsToPB(m.Participants), AnchorRangeId: uint64(m.Anchor),
		AnchorKey: m.AnchorKey, CoordinatorNodeId: uint64(m.Coordinator),
		Vote: uint32(m.Vote), Decision: uint32(m.Decision),
	}
}

func msgFromPB(p *vowdbpb.TxnMessage) txn.Message {
	return txn.Message{
		Type: txn.MsgType(p.Type), Txn: lock.TxnID(p.TxnId), Attempt: p.Attempt,
		From:         txn.Addr{Node: txn.NodeID(p.FromNode), Range: txn.RangeID(p.FromRange)},
		To:           txn.Addr{Node: txn.NodeID(p.ToNode), Range: txn.RangeID(p.ToRange)},
		Term:         p.Term,
		Participants: participantsFromPB(p.Participants), Anchor: txn.RangeID(p.AnchorRangeId),
		AnchorKey: p.AnchorKey, Coordinator: txn.NodeID(p.CoordinatorNodeId),
		Vote: txn.Vote(p.Vote), Decision: txn.Decision(p.Decision),
	}
}

func writesToPB(ws []txn.Write) []*vowdbpb.TxnWrite {
	out := make([]*vowdbpb.TxnWrite, len(ws))
	for i, w := range ws {
		out[i] = &vowdbpb.TxnWrite{Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	return out
}

func writesFromPB(ws []*vowdbpb.TxnWrite) []txn.Write {
	out := make([]txn.Write, len(ws))
	for i, w := range ws {
		out[i] = txn.Write{Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	return out
}

// prepareFromPB rebuilds the pure core's view of a durable prepare record.
func prepareFromPB(rangeID uint64, id []byte, p *vowdbpb.PrepareTxnOp) (txn.PrepareRecord, bool) {
	tid, attempt, ok := parseTxnKeyID(id)
	if !ok {
		return txn.PrepareRecord{}, false
	}
	ws := writesFromPB(p.Writes)
	locks := make([]lock.Lock, len(ws))
	for i, w := range ws {
		locks[i] = lock.Lock{Txn: tid, Span: lock.Point(w.Key), Mode: lock.X}
	}
	return txn.PrepareRecord{Txn: tid, Attempt: attempt, Range: txn.RangeID(rangeID),
		Anchor: txn.RangeID(p.AnchorRangeId), AnchorKey: p.AnchorKey,
		Participants: participantsFromPB(p.Participants), Coordinator: txn.NodeID(p.CoordinatorNodeId),
		Writes: ws, Locks: locks}, true
}

// recordCommand is the range command that makes a participant's record
// durable.
func recordCommand(r txn.Record) *vowdbpb.Command {
	switch r := r.(type) {
	case txn.PrepareRecord:
		return &vowdbpb.Command{Op: &vowdbpb.Command_PrepareTxn{PrepareTxn: &vowdbpb.PrepareTxnOp{
			TxnId: txnKeyID(r.Txn, r.Attempt), AnchorKey: r.AnchorKey, CoordinatorNodeId: uint64(r.Coordinator),
			ParticipantRangeIds: rangeIDs(r.Participants), Writes: writesToPB(r.Writes),
			AnchorRangeId: uint64(r.Anchor), Participants: participantsToPB(r.Participants)}}}
	case txn.CommitRecord:
		if r.OnePhase {
			return &vowdbpb.Command{Op: &vowdbpb.Command_OnePhaseTxn{OnePhaseTxn: &vowdbpb.OnePhaseTxnOp{
				TxnId: txnKeyID(r.Txn, r.Attempt), Writes: writesToPB(r.Writes)}}}
		}
		return &vowdbpb.Command{Op: &vowdbpb.Command_ResolveTxn{ResolveTxn: &vowdbpb.ResolveTxnOp{
			TxnId: txnKeyID(r.Txn, r.Attempt), Commit: true}}}
	case txn.AbortRecord:
		return &vowdbpb.Command{Op: &vowdbpb.Command_ResolveTxn{ResolveTxn: &vowdbpb.ResolveTxnOp{
			TxnId: txnKeyID(r.Txn, r.Attempt)}}}
	}
	return nil
}

func rangeIDs(ps []txn.Participation) []uint64 {
	out := make([]uint64, len(ps))
	for i, p := range ps {
		out[i] = uint64(p.Range)
	}
	return out
}

func decisionState(d txn.Decision) vowdbpb.TxnState {
	switch d {
	case txn.DecisionCommitted:
		return vowdbpb.TxnState_TXN_COMMITTED
	case txn.DecisionAborted:
		return vowdbpb.TxnState_TXN_ABORTED
	}
	return vowdbpb.TxnState_TXN_PENDING
}

func stateDecision(s vowdbpb.TxnState) txn.Decision {
	switch s {
	case vowdbpb.TxnState_TXN_COMMITTED:
		return txn.DecisionCommitted
	case vowdbpb.TxnState_TXN_ABORTED:
		return txn.DecisionAborted
	}
	return txn.DecisionPending
}
