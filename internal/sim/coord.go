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
	"github.com/vowdb/vowdb/internal/txnwire"
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
			tr.tick()
		}
	}
	n.coord.Tick()
	n.pumpCoord()
	if n.w.now%restorePeriod == 0 {
		n.restore()
	}
}

// commit hands a client's commit to this node's coordinator.
func (n *node) commit(req txn.CommitRequest, reply func(txn.Result)) {
	if err := n.coord.Commit(req); err != nil {
		// A duplicated request: the first copy's result answers the client.
		n.w.event("node %d: commit t%d.%d refused: %v", n.id, req.Txn, req.Attempt, err)
		return
	}
	n.commits[attemptKey{req.Txn, req.Attempt}] = reply
	n.pumpCoord()
}

// pumpCoord carries out the coordinator's Ready as the server's coordDriver
// does: results to the waiting clients, messages out, the decision as a
// compare-and-set at the anchor range, END records in the background.
func (n *node) pumpCoord() {
	for n.up && n.coord.HasReady() {
		rd := n.coord.Ready()
		for _, res := range rd.Results {
			k := attemptKey{res.Txn, res.Attempt}
			if reply := n.commits[k]; reply != nil {
				delete(n.commits, k)
				reply(res)
			}
		}
		for _, m := range rd.Messages {
			n.sendTxn(m)
		}
		for _, r := range rd.Records {
			switch r := r.(type) {
			case txn.DecisionRecord:
				n.cas(r)
			case txn.EndRecord:
				n.proposeAt(uint64(r.Anchor), txnwire.EndCommand(r), func(replica.Result, error) {})
			}
		}
		n.coord.Advance(rd)
	}
}

// cas records the decision and reports who won; any error leaves it
// unknown (never retried, as package txn requires).
func (n *node) cas(r txn.DecisionRecord) {
	epoch := n.epoch
	n.proposeAt(uint64(r.Anchor), txnwire.DecisionCommand(r, n.id), func(res replica.Result, err error) {
		if n.epoch != epoch || !n.up {
			return
		}
		recorded := txn.DecisionPending
		if err == nil {
			recorded = txnwire.StateDecision(res.TxnState)
		}
		n.w.event("node %d: decision t%d.%d %v recorded as %v (%v)", n.id, r.Txn, r.Attempt, r.Decision, recorded, err)
		n.coord.CASResult(r.Txn, r.Attempt, recorded)
		n.pumpCoord()
	})
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
				tr.part.Unreachable(m.To.Range)
				tr.pump()
			}
		})
		return
	}
	w.send(from, target, 0, m.Type.String(), func() { w.nodes[target-1].dispatch(m, 0) })
}

// dispatch handles a protocol message that arrived at this node.
func (n *node) dispatch(m txn.Message, hops int) {
	if m.To.Node != 0 {
		if uint64(m.To.Node) == n.id {
			if n.coord.Step(m) == nil {
				n.pumpCoord()
			}
		}
		return
	}
	rangeID := uint64(m.To.Range)
	st := n.status(rangeID)
	if st == nil || st.LeaderID != n.id {
		if st != nil && st.LeaderID != 0 && hops < 2 {
			to := st.LeaderID
			n.w.send(n.id, to, 0, m.Type.String(), func() { n.w.nodes[to-1].dispatch(m, hops+1) })
		}
		return
	}
	if m.Type == txn.MsgInquire {
		n.inquire(m)
		return
	}
	tr := n.current(rangeID)
	if tr == nil {
		n.build(rangeID) // the sender resends
		return
	}
	if err := tr.part.Step(m); err == nil {
		tr.pump()
	}
}

// rollback aborts an ACTIVE attempt at the client's request; as in the
// server, a rollback that arrives before the attempt's first operation is
// remembered and that operation refused.
func (n *node) rollback(id lock.TxnID, attempt uint64, rangeID uint64) {
	tr := n.current(rangeID)
	if tr == nil {
		return
	}
	m := tr.meta[id]
	if (m == nil || m.attempt < attempt) && tr.part.State(id) != txn.StatePrepared && attempt > tr.rolledBack[id] {
		tr.rolledBack[id] = attempt
	}
	if m != nil && m.attempt == attempt {
		tr.abort(id, "rollback")
	}
}

// inquire answers an Inquire at the anchor range's leader: the txn record's
// decision; undecided with the coordinator proven gone: CAS ABORTED (rule 4).
func (n *node) inquire(m txn.Message) {
	rangeID := uint64(m.To.Range)
	epoch := n.epoch
	n.readIndex(rangeID, func(err error) {
		if err != nil || n.epoch != epoch {
			return
		}
		rec, err := replica.TxnRecord(n.eng, rangeID, txnwire.KeyID(m.Txn, m.Attempt))
		if err != nil {
			n.w.fail("node %d: txn record: %v", n.id, err)
			return
		}
		answer := func(d txn.Decision) {
			n.sendTxn(txn.Message{Type: txn.MsgInquireResp, Txn: m.Txn, Attempt: m.Attempt,
				From: txn.Addr{Range: m.To.Range}, To: m.From, Decision: d})
		}
		if rec != nil {
			answer(txnwire.StateDecision(rec.State))
			return
		}
		if !n.coordinatorGone(uint64(m.Coordinator), m.Txn, m.Attempt) {
			answer(txn.DecisionPending)
			return
		}
		cmd := txnwire.CASCommand(m.Txn, m.Attempt, m.AnchorKey, txn.DecisionAborted,
			txnwire.RangeIDs(m.Participants), uint64(m.Coordinator))
		n.propose(rangeID, cmd, func(res replica.Result) {
			if res.Err != nil || n.epoch != epoch {
				return
			}
			if res.Swapped {
				n.w.saw("presumed abort")
				n.w.event("node %d: t%d.%d presumed aborted, coordinator %d gone", n.id, m.Txn, m.Attempt, m.Coordinator)
			}
			answer(txnwire.StateDecision(res.TxnState))
		})
	})
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
	return !c.coord.Has(id, attempt)
}

// restore hands decided, un-ended txn records anchored at ranges this node
// leads to its coordinator once they were seen twice (rule 6).
func (n *node) restore() {
	seen := map[string]int{}
	var recs []txn.DecisionRecord
	for _, rangeID := range sortedKeys(n.tenures) {
		all, err := replica.TxnRecords(n.eng, rangeID)
		if err != nil {
			n.w.fail("node %d: txn records: %v", n.id, err)
			return
		}
		for _, rec := range all {
			dr, ok := txnwire.UnendedDecision(rangeID, rec)
			if !ok {
				continue
			}
			k := string(rec.TxnId)
			seen[k] = n.restoreSeen[k] + 1
			if seen[k] >= 2 {
				recs = append(recs, dr)
			}
		}
	}
	n.restoreSeen = seen
	if len(recs) > 0 {
		n.w.saw("restore of decided records")
		n.w.event("node %d restores %d decided records", n.id, len(recs))
		n.coord.Restore(recs)
		n.pumpCoord()
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
			tr := n.tenures[id]
			for _, e := range tr.locks.WaitsFor() {
				edges = append(edges, e)
				wi, hi := tr.info(e.Waiter), tr.info(e.Holder)
				info[e.Waiter] = deadlock.TxnInfo{Age: wi.Age, Prepared: wi.Prepared || info[e.Waiter].Prepared}
				info[e.Holder] = deadlock.TxnInfo{Age: hi.Age, Prepared: hi.Prepared || info[e.Holder].Prepared}
			}
		}
		d.Report(n.id, edges)
	}
	for _, v := range d.Detect(func(id lock.TxnID) deadlock.TxnInfo { return info[id] }) {
		w.saw("global deadlock victim")
		w.event("detector on node %d: victim t%d of cycle %v", host.id, v.Txn, v.Cycle)
		for _, n := range reached {
			for _, id := range sortedKeys(n.tenures) {
				if tr := n.tenures[id]; tr != nil && tr.waiters[v.Txn] != nil {
					tr.abortVictim(v)
				}
			}
		}
	}
}
