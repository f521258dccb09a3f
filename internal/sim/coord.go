package sim

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
)

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// txnTick runs the node's transaction roles for one tick.
func (n *node) txnTick() {
	for _, r := range n.sched.Replicas() {
		st := r.Status()
		if st.Desc != nil && st.LeaderID == n.id && n.current(r.RangeID) == nil {
			n.build(r.RangeID)
		}
	}
	for _, id := range sortedKeys(n.tenures) {
		if tr := n.tenures[id]; tr != nil {
			tr.Tick(simTime(n.w.now))
		}
	}
	n.gw.Tick()
	if n.w.now%restorePeriod == 0 {
		n.restore()
	}
	if n.w.now%collectPeriod == 0 && n.w.now > retentionTicks {
		n.collect()
	}
}

// collect proposes, on every range this node leads, the collection of the
// finished txn state of attempts older than the retention, as the server's
// txn layer does.
func (n *node) collect() {
	before := uint64(n.w.now - retentionTicks)
	for _, r := range n.sched.Replicas() {
		st := r.Status()
		if st.Desc == nil || st.Desc.IsMeta || st.LeaderID != n.id {
			continue
		}
		ids, err := replica.GcCandidates(n.eng, r.RangeID, before, 1000)
		if err != nil {
			n.w.fail("node %d range %d: txn state collection scan: %v", n.id, r.RangeID, err)
			return
		}
		if len(ids) == 0 {
			continue
		}
		id := r.RangeID
		n.propose(id, &vowdbpb.Command{Op: &vowdbpb.Command_GcTxnState{GcTxnState: &vowdbpb.GcTxnStateOp{
			BeforeAttempt: before, OutcomeIds: ids}}}, func(res replica.Result) {
			if res.Err == nil && res.Collected > 0 {
				n.w.saw("finished txn state collected")
				n.w.event("node %d range %d collects %d remembered outcomes below attempt %d", n.id, id, res.Collected, before)
			}
		})
	}
}

// commit hands a client's commit to this node's gateway.
func (n *node) commit(req txn.CommitRequest, reply func(txn.Result)) {
	if err := n.gw.Commit(simTime(n.w.now), req, reply); err != nil {
		// A duplicated request: the first copy's result answers the client.
		n.w.event("node %d: commit t%d.%d refused: %v", n.id, req.Txn, req.Attempt, err)
	}
}

// leaderHint names the node this node believes leads rangeID: its own
// replica's view, else the range's first replica.
func (n *node) leaderHint(rangeID uint64) uint64 {
	if st := n.status(rangeID); st != nil && st.LeaderID != 0 {
		return st.LeaderID
	}
	return n.w.rangeByID(rangeID).replicas[0]
}

// proposeAt proposes cmd at rangeID's leader, following one leader hint,
// and calls cb on this node with the result.
func (n *node) proposeAt(rangeID uint64, cmd *vowdbpb.Command, cb func(replica.Result, error)) {
	w, from, epoch := n.w, n.id, n.epoch
	target := n.leaderHint(rangeID)
	var try func(at uint64, hops int)
	try = func(at uint64, hops int) {
		w.send(from, at, 0, "propose", func() {
			dst := w.nodes[at-1]
			st := dst.status(rangeID)
			if st == nil || st.LeaderID != dst.id {
				if st != nil && st.LeaderID != 0 && hops < 2 {
					try(st.LeaderID, hops+1)
					return
				}
				w.send(at, from, epoch, "propose-resp", func() { cb(replica.Result{}, fmt.Errorf("not leader")) })
				return
			}
			dst.propose(rangeID, cmd, func(res replica.Result) {
				w.send(at, from, epoch, "propose-resp", func() { cb(res, res.Err) })
			})
		})
	}
	try(target, 0)
}

// sendTxn routes a protocol message: to a node's coordinator, or to the
// leader of a range. An Inquire that finds no way to its anchor turns into
// cooperative termination (rule 5).
func (n *node) sendTxn(m txn.Message) {
	w, from := n.w, n.id
	switch m.Type {
	case txn.MsgInquire:
		w.saw("inquire")
	case txn.MsgInquirePeer:
		w.saw("inquire-peer (cooperative termination)")
	case txn.MsgOnePhaseCommit:
		if m.Coordinator != 0 {
			w.saw("anchor commits with the decision")
		}
	}
	target := uint64(m.To.Node)
	if m.To.Range != 0 {
		target = n.leaderHint(uint64(m.To.Range))
	}
	if w.net.cut[[2]uint64{from, target}] && m.Type == txn.MsgInquire {
		// Like the server's failed gRPC call, this is noticed later, not
		// inside the pump that sent the message.
		epoch := n.epoch
		w.later(func() {
			if n.epoch != epoch || !n.up {
				return
			}
			if tr := n.current(uint64(m.From.Range)); tr != nil {
				tr.Unreachable(m.To.Range)
			}
		})
		return
	}
	w.send(from, target, 0, m.Type.String(), func() { w.nodes[target-1].dispatch(m, 0) })
}

// dispatch handles a protocol message that arrived at this node, as the
// server does: txnhost.Dispatch decides where it goes.
func (n *node) dispatch(m txn.Message, hops int) { txnhost.Dispatch(nodeHost{n}, m, hops) }

// rollback aborts an ACTIVE attempt at the client's request; as in the
// server, a rollback that arrives before the attempt's first operation is
// remembered and that operation refused.
func (n *node) rollback(id lock.TxnID, attempt uint64, rangeID uint64) {
	if tr := n.current(rangeID); tr != nil {
		tr.Rollback(id, attempt)
	}
}

// keepAlive serves a client's keep-alive for rangeID (Config.KeepAlive).
func (n *node) keepAlive(id lock.TxnID, attempt uint64, rangeID uint64) {
	if tr := n.current(rangeID); tr != nil {
		tr.KeepAlive(simTime(n.w.now), id, attempt)
	}
}

// coordinatorGone models the server's CoordinatorStatus call: a reachable
// coordinator says whether it still runs the attempt; an unreachable one
// counts as gone only when it is down (the server's liveness check).
func (n *node) coordinatorGone(node uint64, id lock.TxnID, attempt uint64) bool {
	c := n.w.nodes[node-1]
	if !c.up {
		return true
	}
	if n.w.net.cut[[2]uint64{n.id, node}] {
		return false
	}
	return !c.gw.Has(id, attempt)
}

// restore hands decided, un-ended txn records anchored at ranges this node
// leads to its coordinator once they were seen twice (rule 6).
func (n *node) restore() {
	recs := n.restorer.Scan(sortedKeys(n.tenures), func(rangeID uint64) ([]*vowdbpb.TxnRecord, error) {
		recs, err := replica.TxnRecords(n.eng, rangeID)
		if err != nil {
			n.w.fail("node %d: txn records: %v", n.id, err)
		}
		return recs, err
	})
	if len(recs) > 0 {
		n.w.saw("restore of decided records")
		n.w.event("node %d restores %d decided records", n.id, len(recs))
		n.gw.Restore(recs)
	}
}

// detectDeadlocks runs the cluster's detector on the lowest-numbered live
// node, with the edges of every node it can reach, and aborts the victims
// where they wait.
func (w *world) detectDeadlocks() {
	var host *node
	for _, n := range w.nodes {
		if n.up {
			host = n
			break
		}
	}
	if host == nil {
		return
	}
	var d deadlock.Detector
	info := map[lock.TxnID]deadlock.TxnInfo{}
	var reached []*node
	for _, n := range w.nodes {
		if !n.up || w.net.cut[[2]uint64{n.id, host.id}] {
			continue
		}
		reached = append(reached, n)
		var edges []lock.Edge
		for _, id := range sortedKeys(n.tenures) {
			for _, e := range n.tenures[id].Edges() {
				wt, ht := lock.TxnID(e.Waiter), lock.TxnID(e.Holder)
				edges = append(edges, lock.Edge{Waiter: wt, Holder: ht})
				info[wt] = deadlock.TxnInfo{Age: e.WaiterAge, Prepared: e.WaiterPrepared || info[wt].Prepared}
				info[ht] = deadlock.TxnInfo{Age: e.HolderAge, Prepared: e.HolderPrepared || info[ht].Prepared}
			}
		}
		d.Report(n.id, edges)
	}
	for _, v := range d.Detect(func(id lock.TxnID) deadlock.TxnInfo { return info[id] }) {
		if info[v.Txn].Prepared {
			w.fail("deadlock detector chose prepared txn %d as victim (cycle %v)", v.Txn, v.Cycle)
			return
		}
		w.saw("global deadlock victim")
		w.event("detector on node %d: victim t%d of cycle %v", host.id, v.Txn, v.Cycle)
		for _, n := range reached {
			for _, id := range sortedKeys(n.tenures) {
				if tr := n.tenures[id]; tr != nil {
					tr.AbortVictim(simTime(w.now), v)
				}
			}
		}
	}
}
