package txnhost

import (
	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// The anchor range's side of the protocol: answering inquiries from the
// txn record (rules 4, 5) and handing decided, un-ended records back to a
// gateway (rule 6). Both run on the anchor range's leader.

// AnchorHost is what the anchor side needs from its node (the package
// doc's rule applies: no call back before returning).
type AnchorHost interface {
	// ConfirmLeadership runs a ReadIndex round on rangeID; done gets nil
	// once everything committed before it has applied here.
	ConfirmLeadership(rangeID uint64, done func(error))
	// Status is the status of this node's replica of rangeID, nil if none.
	Status(rangeID uint64) *replica.Status
	// TxnRecord reads the txn record of (id, attempt) on rangeID from
	// this node's applied state; nil if there is none.
	TxnRecord(rangeID uint64, id lock.TxnID, attempt uint64) (*vowdbpb.TxnRecord, error)
	// CoordinatorGone tells whether the coordinator node can no longer ask
	// for COMMITTED: it says it does not run the attempt, or it is
	// unreachable and known to be down. done gets the answer (it may be
	// called before CoordinatorGone returns: nothing here holds a lock).
	CoordinatorGone(node uint64, id lock.TxnID, attempt uint64, done func(gone bool))
	// Propose proposes cmd on rangeID's Raft log.
	Propose(rangeID uint64, cmd *vowdbpb.Command, done func(replica.Result))
	// Send delivers protocol messages, best effort.
	Send(msgs []txn.Message)
	// PresumedAbort is told when an inquiry aborted an undecided txn
	// whose coordinator is gone.
	PresumedAbort(m txn.Message)
}

// AnswerInquiry answers an Inquire m at rangeID, the range this node leads
// that holds the txn's anchor key (m.AnchorKey, where the txn record lives;
// the host routes an inquiry by that key, not by the anchor's range id,
// since a split may have moved the record to a new range): after a
// ReadIndex round, the txn record's decision; if the record is undecided
// or missing and the coordinator is proven gone, the record is set to
// ABORTED by compare-and-set (presumed abort, rule 4) and whichever
// decision the record then holds is the answer. If the round or the record
// cannot be read, or the range no longer holds the anchor key once the
// round applied everything before it, nothing is answered (the
// participant asks again).
func AnswerInquiry(h AnchorHost, rangeID uint64, m txn.Message) {
	answer := func(d txn.Decision) {
		h.Send([]txn.Message{{Type: txn.MsgInquireResp, Txn: m.Txn, Attempt: m.Attempt,
			From: txn.Addr{Range: m.To.Range}, To: m.From, Decision: d}})
	}
	h.ConfirmLeadership(rangeID, func(err error) {
		if err != nil {
			return
		}
		if st := h.Status(rangeID); st == nil || st.Desc == nil ||
			!keys.Contains(st.Desc.StartKey, st.Desc.EndKey, m.AnchorKey) {
			return // split away meanwhile: the next inquiry finds its new range
		}
		rec, err := h.TxnRecord(rangeID, m.Txn, m.Attempt)
		if err != nil {
			return
		}
		if rec != nil {
			if d := txnwire.StateDecision(rec.State); d != txn.DecisionPending {
				answer(d)
				return
			}
		}
		h.CoordinatorGone(uint64(m.Coordinator), m.Txn, m.Attempt, func(gone bool) {
			if !gone {
				answer(txn.DecisionPending)
				return
			}
			cmd := txnwire.CASCommand(m.Txn, m.Attempt, m.AnchorKey, txn.DecisionAborted,
				txnwire.RangeIDs(m.Participants), uint64(m.Coordinator))
			h.Propose(rangeID, cmd, func(res replica.Result) {
				if res.Err != nil {
					return
				}
				if res.Swapped {
					h.PresumedAbort(m)
				}
				answer(txnwire.StateDecision(res.TxnState))
			})
		})
	})
}

// Restorer finds the decided txn records whose END is missing on the
// ranges a node leads, to hand them to its gateway, which resends the
// decision until every participant acknowledged and then ends the record
// (rule 6). A record counts only once two scans in a row saw it, so a
// commit still in its normal course is left to its own gateway.
type Restorer struct {
	seen map[string]int
}

// Scan reads every record of ranges (records returns a range's txn
// records) and returns the decided, un-ended ones seen by the previous
// scan too.
func (r *Restorer) Scan(ranges []uint64, records func(rangeID uint64) ([]*vowdbpb.TxnRecord, error)) []txn.DecisionRecord {
	seen := map[string]int{}
	var out []txn.DecisionRecord
	for _, rangeID := range ranges {
		all, err := records(rangeID)
		if err != nil {
			continue
		}
		for _, rec := range all {
			dr, ok := txnwire.UnendedDecision(rangeID, rec)
			if !ok {
				continue
			}
			k := string(rec.TxnId)
			seen[k] = r.seen[k] + 1
			if seen[k] >= 2 {
				out = append(out, dr)
			}
		}
	}
	r.seen = seen
	return out
}
