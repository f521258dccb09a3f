package server

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// heartbeatLoop reports this node to the meta leader (liveness) and learns
// the addresses and liveness of every node from the answer.
func (n *Node) heartbeatLoop() {
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	saved := "" // signature of the node list last written to the store
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		id := n.ident.Load()
		s := n.sched.Load()
		if id == nil || s == nil {
			continue
		}
		req := &vowdbpb.HeartbeatRequest{ClusterId: id.ClusterId, LocalOnly: true,
			Node: &vowdbpb.NodeDescriptor{NodeId: id.NodeId, Address: n.addr, HttpAddress: n.httpAddr}}
		for _, r := range s.Replicas() {
			st := r.Status()
			if st.Desc == nil {
				continue
			}
			req.Replicas++
			if st.LeaderID == id.NodeId {
				req.Leaders++
			}
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.HeartbeatInterval+time.Second)
		var resp *vowdbpb.HeartbeatResponse
		err := n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
			var err error
			resp, err = c.Heartbeat(ctx, req)
			return err
		})
		cancel()
		if err != nil {
			n.log.Debug("heartbeat failed", "err", err)
			continue
		}
		n.mu.Lock()
		for _, st := range resp.Nodes {
			n.mu.nodes[st.Node.NodeId] = st.Node
		}
		n.mu.statuses = resp.Nodes
		n.mu.lastHB = time.Now()
		n.mu.Unlock()
		// Persist the peer list whenever it changes, so a restarted node
		// can reach its peers before it hears from anyone.
		if sig := fmt.Sprint(n.knownNodes()); sig != saved {
			n.saveNodeCache()
			saved = sig
		}
	}
}

// replicateLoop runs on every node; for the ranges it leads it adds missing
// replicas on live nodes (as learners), promotes caught-up learners to
// voters, and publishes new descriptor generations to the meta range.
func (n *Node) replicateLoop() {
	t := time.NewTicker(n.cfg.ReplicateInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		s := n.sched.Load()
		if s == nil {
			continue
		}
		live := n.liveNodes()
		var publish []*vowdbpb.RangeDescriptor
		_ = s.Do(n.ctx, func() {
			for _, r := range s.Replicas() {
				if !r.IsLeader() || !r.Initialized() {
					continue
				}
				n.planReplication(r, live)
				d := r.Desc()
				n.mu.Lock()
				synced := n.mu.metaSynced[d.RangeId]
				n.mu.Unlock()
				if !d.IsMeta && d.Generation > synced {
					publish = append(publish, d)
				}
			}
		})
		for _, d := range publish {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if err := n.publishDesc(ctx, d); err != nil {
				n.log.Debug("publish descriptor", "range", d.RangeId, "err", err)
			}
			cancel()
		}
	}
}

func (n *Node) liveNodes() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []uint64
	for _, st := range n.mu.statuses {
		if st.Live {
			out = append(out, st.Node.NodeId)
		}
	}
	return out
}

// planReplication proposes at most one membership change for a range this
// node leads. Runs on the scheduler goroutine.
func (n *Node) planReplication(r replicaLike, live []uint64) {
	d := r.Desc()
	st := r.RaftStatus()
	for _, rd := range d.Replicas {
		if !rd.Learner {
			continue
		}
		if pr, ok := st.Progress[rd.NodeId]; ok && caughtUp(pr, st.Commit) {
			cc := raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode, NodeID: rd.NodeId}}}
			if err := r.ProposeConfChange(cc); err == nil {
				n.log.Info("promoting learner", "range", d.RangeId, "node", rd.NodeId)
			}
		}
		return // one change at a time
	}
	if len(d.Replicas) >= n.cfg.ReplicationFactor {
		return
	}
	in := map[uint64]bool{}
	for _, rd := range d.Replicas {
		in[rd.NodeId] = true
	}
	var cands []uint64
	for _, id := range live {
		if !in[id] {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return
	}
	target := cands[int(d.RangeId)%len(cands)]
	cc := raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode, NodeID: target}}}
	if err := r.ProposeConfChange(cc); err == nil {
		n.log.Info("adding learner", "range", d.RangeId, "node", target)
	}
}

// promoteLag is how many entries behind the leader's commit index a learner
// may be and still be promoted. Under steady writes a learner's acknowledged
// index trails the commit index by a round or two, all the time: requiring
// it to match exactly left a range written from its start with a single
// voter (and its learners) for as long as the writes went on.
const promoteLag = 1000

// caughtUp reports whether a learner with progress pr can be promoted: it
// receives the log by appends (not probing, not waiting on a snapshot) and
// is at most promoteLag entries behind commit. Promoting a learner that still
// lags is safe either way; waiting only avoids stalling commits on it.
func caughtUp(pr tracker.Progress, commit uint64) bool {
	return pr.Match > 0 && pr.State == tracker.StateReplicate && pr.Match+promoteLag >= commit
}

// isLive reports whether the cluster's latest liveness view (from the meta
// leader's heartbeats) holds node as live. An unknown node is not live.
func (n *Node) isLive(node uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, st := range n.mu.statuses {
		if st.Node.GetNodeId() == node {
			return st.Live
		}
	}
	return false
}
