package server

import (
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/replica"
)

// collectBatch bounds the outcome ids in one collection command, which
// applies in the Raft loop: 10,000 took 17 ms there
// (BenchmarkGcTxnStateApply), 2,000 hold a loop round up by about 3.5 ms.
const collectBatch = 2000

// collect collects, on every range this node leads, the remembered outcomes
// of the attempts that began more than TxnRetention ago (replica/txn_gc.go
// has the rules the range state machine applies): it scans the range's
// applied state outside the Raft loop and proposes GcTxnStateOp with the
// ids it found, collectBatch at a time; the command re-checks each id and
// moves the range's txn horizon to now - TxnRetention. Only one collection
// runs at a time.
func (l *txnLayer) collect(now time.Time) {
	if !l.collecting.CompareAndSwap(false, true) {
		return
	}
	defer l.collecting.Store(false)
	s := l.n.sched.Load()
	if s == nil {
		return
	}
	before := uint64(now.Add(-l.n.cfg.TxnRetention).UnixNano())
	for _, r := range s.Replicas() {
		for {
			if st := r.Status(); st.Desc == nil || st.Desc.IsMeta || st.LeaderID != l.n.nodeID() {
				break
			}
			ids, err := replica.GcCandidates(l.n.eng, r.RangeID, before, collectBatch)
			if err != nil {
				l.n.log.Warn("txn state collection: scan failed", "range", r.RangeID, "err", err)
				break
			}
			if len(ids) == 0 {
				break
			}
			p := replica.NewProposal(&vowdbpb.Command{Op: &vowdbpb.Command_GcTxnState{GcTxnState: &vowdbpb.GcTxnStateOp{
				BeforeAttempt: before, OutcomeIds: ids}}})
			s.Propose(r.RangeID, p)
			var res replica.Result
			select {
			case res = <-p.Done:
			case <-l.n.ctx.Done():
				return
			}
			if res.Err != nil {
				l.n.log.Debug("txn state not collected", "range", r.RangeID, "err", res.Err)
				break
			}
			l.n.metrics.TxnCollected.Add(float64(res.Collected))
			if res.Collected == 0 || len(ids) < collectBatch {
				break
			}
		}
	}
}
