// Package txnwire converts between the pure transaction core (package txn)
// and its wire and storage forms (package vowdbpb): messages, participant
// records as range commands, decision and end records as compare-and-set
// commands on the txn record, and the key id of a txn attempt. The server
// and the simulator (package sim) both drive the core through it, so they
// write the same commands.
package txnwire

import (
	"encoding/binary"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
)

// KeyID is the id under which a range stores the state of one attempt of
// a txn: the txn id then the attempt, big-endian, so that every attempt of
// an id shares the 8-byte prefix that TxnStatus scans.
func KeyID(id lock.TxnID, attempt uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(id))
	binary.BigEndian.PutUint64(b[8:], attempt)
	return b
}

func IDPrefix(id lock.TxnID) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(id))
	return b
}

func ParseKeyID(b []byte) (lock.TxnID, uint64, bool) {
	if len(b) != 16 {
		return 0, 0, false
	}
	return lock.TxnID(binary.BigEndian.Uint64(b)), binary.BigEndian.Uint64(b[8:]), true
}

func ParticipantsToPB(ps []txn.Participation) []*vowdbpb.TxnParticipant {
	out := make([]*vowdbpb.TxnParticipant, len(ps))
	for i, p := range ps {
		out[i] = &vowdbpb.TxnParticipant{RangeId: uint64(p.Range), Term: p.Term, Writes: p.Writes}
	}
	return out
}

func ParticipantsFromPB(ps []*vowdbpb.TxnParticipant) []txn.Participation {
	out := make([]txn.Participation, len(ps))
	for i, p := range ps {
		out[i] = txn.Participation{Range: txn.RangeID(p.RangeId), Term: p.Term, Writes: p.Writes}
	}
	return out
}

func MsgToPB(m txn.Message) *vowdbpb.TxnMessage {
	return &vowdbpb.TxnMessage{
		Type: uint32(m.Type), TxnId: uint64(m.Txn), Attempt: m.Attempt,
		FromNode: uint64(m.From.Node), FromRange: uint64(m.From.Range),
		ToNode: uint64(m.To.Node), ToRange: uint64(m.To.Range), Term: m.Term,
		Participants: ParticipantsToPB(m.Participants), AnchorRangeId: uint64(m.Anchor),
		AnchorKey: m.AnchorKey, CoordinatorNodeId: uint64(m.Coordinator),
		Vote: uint32(m.Vote), Decision: uint32(m.Decision),
	}
}

func MsgFromPB(p *vowdbpb.TxnMessage) txn.Message {
	return txn.Message{
		Type: txn.MsgType(p.Type), Txn: lock.TxnID(p.TxnId), Attempt: p.Attempt,
		From:         txn.Addr{Node: txn.NodeID(p.FromNode), Range: txn.RangeID(p.FromRange)},
		To:           txn.Addr{Node: txn.NodeID(p.ToNode), Range: txn.RangeID(p.ToRange)},
		Term:         p.Term,
		Participants: ParticipantsFromPB(p.Participants), Anchor: txn.RangeID(p.AnchorRangeId),
		AnchorKey: p.AnchorKey, Coordinator: txn.NodeID(p.CoordinatorNodeId),
		Vote: txn.Vote(p.Vote), Decision: txn.Decision(p.Decision),
	}
}

func WritesToPB(ws []txn.Write) []*vowdbpb.TxnWrite {
	out := make([]*vowdbpb.TxnWrite, len(ws))
	for i, w := range ws {
		out[i] = &vowdbpb.TxnWrite{Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	return out
}

func WritesFromPB(ws []*vowdbpb.TxnWrite) []txn.Write {
	out := make([]txn.Write, len(ws))
	for i, w := range ws {
		out[i] = txn.Write{Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	return out
}

// PrepareFromPB rebuilds the pure core's view of a durable prepare record.
func PrepareFromPB(rangeID uint64, id []byte, p *vowdbpb.PrepareTxnOp) (txn.PrepareRecord, bool) {
	tid, attempt, ok := ParseKeyID(id)
	if !ok {
		return txn.PrepareRecord{}, false
	}
	ws := WritesFromPB(p.Writes)
	locks := make([]lock.Lock, len(ws))
	for i, w := range ws {
		locks[i] = lock.Lock{Txn: tid, Span: lock.Point(w.Key), Mode: lock.X}
	}
	return txn.PrepareRecord{Txn: tid, Attempt: attempt, Range: txn.RangeID(rangeID),
		Anchor: txn.RangeID(p.AnchorRangeId), AnchorKey: p.AnchorKey,
		Participants: ParticipantsFromPB(p.Participants), Coordinator: txn.NodeID(p.CoordinatorNodeId),
		Writes: ws, Locks: locks}, true
}

// RecordCommand is the range command that makes a participant's record
// durable.
func RecordCommand(r txn.Record) *vowdbpb.Command {
	switch r := r.(type) {
	case txn.PrepareRecord:
		return &vowdbpb.Command{Op: &vowdbpb.Command_PrepareTxn{PrepareTxn: &vowdbpb.PrepareTxnOp{
			TxnId: KeyID(r.Txn, r.Attempt), AnchorKey: r.AnchorKey, CoordinatorNodeId: uint64(r.Coordinator),
			ParticipantRangeIds: RangeIDs(r.Participants), Writes: WritesToPB(r.Writes),
			AnchorRangeId: uint64(r.Anchor), Participants: ParticipantsToPB(r.Participants)}}}
	case txn.CommitRecord:
		if r.OnePhase {
			op := &vowdbpb.OnePhaseTxnOp{TxnId: KeyID(r.Txn, r.Attempt), Writes: WritesToPB(r.Writes)}
			if d := r.Decide; d != nil {
				op.Decide = DecisionCommand(*d, uint64(d.Coordinator)).GetTxnRecordCas()
			}
			return &vowdbpb.Command{Op: &vowdbpb.Command_OnePhaseTxn{OnePhaseTxn: op}}
		}
		return &vowdbpb.Command{Op: &vowdbpb.Command_ResolveTxn{ResolveTxn: &vowdbpb.ResolveTxnOp{
			TxnId: KeyID(r.Txn, r.Attempt), Commit: true}}}
	case txn.AbortRecord:
		return &vowdbpb.Command{Op: &vowdbpb.Command_ResolveTxn{ResolveTxn: &vowdbpb.ResolveTxnOp{
			TxnId: KeyID(r.Txn, r.Attempt)}}}
	}
	return nil
}

func RangeIDs(ps []txn.Participation) []uint64 {
	out := make([]uint64, len(ps))
	for i, p := range ps {
		out[i] = uint64(p.Range)
	}
	return out
}

func DecisionState(d txn.Decision) vowdbpb.TxnState {
	switch d {
	case txn.DecisionCommitted:
		return vowdbpb.TxnState_TXN_COMMITTED
	case txn.DecisionAborted:
		return vowdbpb.TxnState_TXN_ABORTED
	}
	return vowdbpb.TxnState_TXN_PENDING
}

func StateDecision(s vowdbpb.TxnState) txn.Decision {
	switch s {
	case vowdbpb.TxnState_TXN_COMMITTED:
		return txn.DecisionCommitted
	case vowdbpb.TxnState_TXN_ABORTED:
		return txn.DecisionAborted
	}
	return txn.DecisionPending
}

// CASCommand is the compare-and-set that records decision d for the attempt
// of r in its txn record (expecting no decision yet), naming coordinator.
func CASCommand(txnID lock.TxnID, attempt uint64, anchorKey []byte, d txn.Decision, participants []uint64, coordinator uint64) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_TxnRecordCas{TxnRecordCas: &vowdbpb.TxnRecordCasOp{
		TxnId: KeyID(txnID, attempt), AnchorKey: anchorKey, Expect: vowdbpb.TxnState_TXN_UNKNOWN,
		NewState: DecisionState(d), ParticipantRangeIds: participants, CoordinatorNodeId: coordinator}}}
}

// DecisionCommand is CASCommand for a coordinator's DecisionRecord.
func DecisionCommand(r txn.DecisionRecord, coordinator uint64) *vowdbpb.Command {
	ps := make([]uint64, len(r.Participants))
	for i, p := range r.Participants {
		ps[i] = uint64(p)
	}
	return CASCommand(r.Txn, r.Attempt, r.AnchorKey, r.Decision, ps, coordinator)
}

// EndCommand marks the txn record of e ended.
func EndCommand(e txn.EndRecord) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_TxnRecordCas{TxnRecordCas: &vowdbpb.TxnRecordCasOp{
		TxnId: KeyID(e.Txn, e.Attempt), AnchorKey: e.AnchorKey, End: true}}}
}

// EndsCommand marks the records of ends ended, in one entry (they are
// anchored in one range).
func EndsCommand(ends []txn.EndRecord) *vowdbpb.Command {
	ops := make([]*vowdbpb.TxnRecordCasOp, len(ends))
	for i, e := range ends {
		ops[i] = EndCommand(e).GetTxnRecordCas()
	}
	return &vowdbpb.Command{Op: &vowdbpb.Command_EndTxns{EndTxns: &vowdbpb.EndTxnsOp{Ends: ops}}}
}

// ExpectedState is the state a participant record reports once applied as
// intended: PENDING for a prepare, COMMITTED for a commit, ABORTED for an
// abort.
func ExpectedState(r txn.Record) vowdbpb.TxnState {
	switch r.(type) {
	case txn.PrepareRecord:
		return vowdbpb.TxnState_TXN_PENDING
	case txn.CommitRecord:
		return vowdbpb.TxnState_TXN_COMMITTED
	}
	return vowdbpb.TxnState_TXN_ABORTED
}

// UnendedDecision returns the decision record of a txn record anchored at
// rangeID that is decided but not yet ended (what recovery resends), or
// false.
func UnendedDecision(rangeID uint64, rec *vowdbpb.TxnRecord) (txn.DecisionRecord, bool) {
	d := StateDecision(rec.State)
	if rec.Ended || d == txn.DecisionPending {
		return txn.DecisionRecord{}, false
	}
	id, attempt, ok := ParseKeyID(rec.TxnId)
	if !ok {
		return txn.DecisionRecord{}, false
	}
	ps := make([]txn.RangeID, len(rec.ParticipantRangeIds))
	for i, p := range rec.ParticipantRangeIds {
		ps[i] = txn.RangeID(p)
	}
	return txn.DecisionRecord{Txn: id, Attempt: attempt, Anchor: txn.RangeID(rangeID), AnchorKey: rec.AnchorKey,
		Decision: d, Participants: ps, Coordinator: txn.NodeID(rec.CoordinatorNodeId)}, true
}
