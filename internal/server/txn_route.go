package server

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/transport"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// This file moves transaction protocol messages and record commands
// between nodes: to a coordinator by node id, to a participant or anchor by
// range id (delivered to the range's leader, forwarded at most twice).

const maxForwardHops = 2

// send delivers msgs, best effort: the protocol resends what is lost.
func (l *txnLayer) send(msgs []txn.Message) {
	byNode := map[uint64][]*vowdbpb.TxnMessage{}
	for _, m := range msgs {
		target := uint64(m.To.Node)
		if m.To.Range != 0 {
			target = l.rangeLeaderHint(uint64(m.To.Range))
		}
		if target == 0 {
			l.undeliverable(m)
			continue
		}
		if target == l.n.nodeID() {
			// No wire form for a local message: the simulator hands
			// messages over the same way.
			l.dispatchMsg(m, 0)
			continue
		}
		byNode[target] = append(byNode[target], txnwire.MsgToPB(m))
	}
	for node, ms := range byNode {
		go func() {
			if err := l.deliverTo(node, ms); err != nil {
				for _, m := range ms {
					l.undeliverable(txnwire.MsgFromPB(m))
				}
			}
		}()
	}
}

func (l *txnLayer) deliverTo(node uint64, ms []*vowdbpb.TxnMessage) error {
	conn, err := l.n.trans.NodeConn(node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.n.ctx, 2*time.Second)
	defer cancel()
	_, err = vowdbpb.NewTxnClient(conn).Deliver(ctx, &vowdbpb.TxnDeliverRequest{Msgs: ms})
	return err
}

// undeliverable reacts to a message that found no way to its target: an
// Inquire whose anchor range is unreachable turns into cooperative
// termination (rule 5).
func (l *txnLayer) undeliverable(m txn.Message) {
	if m.Type != txn.MsgInquire || m.From.Range == 0 {
		return
	}
	l.mu.Lock()
	tr := l.ranges[uint64(m.From.Range)]
	l.mu.Unlock()
	if tr == nil {
		return
	}
	tr.Unreachable(m.To.Range)
}

// dispatch handles a message that arrived at this node (txnhost.Dispatch
// decides where it goes).
func (l *txnLayer) dispatch(pm *vowdbpb.TxnMessage) {
	l.dispatchMsg(txnwire.MsgFromPB(pm), int(pm.Hops))
}

func (l *txnLayer) dispatchMsg(m txn.Message, hops int) {
	txnhost.Dispatch(routeHost{anchorHost{tenureHost{l}}}, m, hops)
}

// rangeLeaderHint names the node most likely to lead rangeID: this node's
// replica's idea of the leader, else the first replica of the descriptor.
func (l *txnLayer) rangeLeaderHint(rangeID uint64) uint64 {
	if s := l.n.sched.Load(); s != nil {
		if r := s.ReplicaByID(rangeID); r != nil {
			if id := r.Status().LeaderID; id != 0 {
				return id
			}
		}
	}
	d := l.desc(rangeID)
	if d == nil {
		return 0
	}
	l.mu.Lock()
	lead := l.leaders[rangeID]
	l.mu.Unlock()
	if lead != 0 {
		return lead
	}
	for _, rd := range d.Replicas {
		if !rd.Learner && rd.NodeId != l.n.nodeID() {
			return rd.NodeId
		}
	}
	return 0
}

// desc returns a cached descriptor of rangeID, refreshing the cache from
// the meta range at most twice a second.
func (l *txnLayer) desc(rangeID uint64) *vowdbpb.RangeDescriptor {
	l.mu.Lock()
	d, fresh := l.descs[rangeID], time.Since(l.descAt) < 500*time.Millisecond
	l.mu.Unlock()
	if d != nil || fresh {
		return d
	}
	ctx, cancel := context.WithTimeout(l.n.ctx, 2*time.Second)
	defer cancel()
	// Every descriptor, from the meta range (Lookup from the first key).
	var resp *vowdbpb.LookupResponse
	err := l.n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
		var err error
		resp, err = c.Lookup(ctx, &vowdbpb.LookupRequest{LocalOnly: true, Limit: 1000})
		return err
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.descAt = time.Now()
	if err != nil {
		return nil
	}
	for _, rt := range resp.Routes {
		if rt.Desc != nil {
			l.descs[rt.Desc.RangeId] = rt.Desc
			l.leaders[rt.Desc.RangeId] = rt.LeaderNodeId
		}
	}
	return l.descs[rangeID]
}

// userRanges lists every user range, fresh from the meta range.
func (l *txnLayer) userRanges(ctx context.Context) ([]uint64, error) {
	var resp *vowdbpb.LookupResponse
	err := l.n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
		var err error
		resp, err = c.Lookup(ctx, &vowdbpb.LookupRequest{LocalOnly: true, Limit: 1000})
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, rt := range resp.Routes {
		if rt.Desc != nil && !rt.Desc.IsMeta {
			out = append(out, rt.Desc.RangeId)
		}
	}
	return out, nil
}

// proposeAt proposes a txn-record command to the leader of key's range and
// returns its result. It retries only where the command was certainly not
// proposed (no leader, wrong node); after that an error means the outcome is
// unknown.
func (l *txnLayer) proposeAt(ctx context.Context, key []byte, cmd *vowdbpb.Command) (*vowdbpb.TxnProposeResponse, error) {
	var lastErr error
	var hint uint64
	sleep := false
	for attempt := 0; ; attempt++ {
		// Follow a fresh leader hint at once; back off only when there is
		// none to follow.
		if sleep {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("propose at %q: %w (last error: %v)", key, ctx.Err(), lastErr)
			case <-time.After(time.Duration(min(attempt, 5)) * 20 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("propose at %q: %w (last error: %v)", key, ctx.Err(), lastErr)
		}
		prevHint := hint
		sleep = true
		if hint == 0 || hint == l.n.nodeID() {
			resp, err := l.proposeLocal(ctx, key, cmd)
			if err == nil {
				return resp, nil
			}
			d, ok := transport.Detail(err)
			if !ok || (d.Code != vowdbpb.ErrorDetail_NOT_LEADER && d.Code != vowdbpb.ErrorDetail_RANGE_NOT_FOUND) {
				return nil, err
			}
			lastErr, hint = err, d.LeaderNodeId
			if hint == 0 {
				hint = l.anyReplicaFor(key)
			}
			sleep = hint == prevHint || hint == 0
			continue
		}
		conn, err := l.n.trans.NodeConn(hint)
		if err != nil {
			lastErr, hint = err, 0
			continue
		}
		resp, err := vowdbpb.NewTxnClient(conn).Propose(ctx, &vowdbpb.TxnProposeRequest{Key: key, Cmd: cmd})
		if err == nil {
			return resp, nil
		}
		lastErr = err
		d, ok := transport.Detail(err)
		if ok && (d.Code == vowdbpb.ErrorDetail_NOT_LEADER || d.Code == vowdbpb.ErrorDetail_RANGE_NOT_FOUND ||
			d.Code == vowdbpb.ErrorDetail_NOT_INITIALIZED) {
			hint = d.LeaderNodeId
			sleep = hint == prevHint || hint == 0
			continue
		}
		if isNotSent(err) {
			hint = 0
			continue
		}
		return nil, err
	}
}

// proposeLocal proposes cmd if this node leads key's range. An error with a
// NOT_LEADER or RANGE_NOT_FOUND detail means nothing was proposed.
func (l *txnLayer) proposeLocal(ctx context.Context, key []byte, cmd *vowdbpb.Command) (*vowdbpb.TxnProposeResponse, error) {
	switch cmd.Op.(type) {
	case *vowdbpb.Command_TxnRecordCas, *vowdbpb.Command_EndTxns, *vowdbpb.Command_ResolveTxn:
	default:
		return nil, transport.Invalid("only txn record commands may be proposed this way")
	}
	s, r, err := l.n.leaderFor(key)
	if err != nil {
		return nil, err
	}
	res, err := l.n.proposeTo(ctx, s, r, cmd)
	if err != nil {
		if d, ok := transport.Detail(err); ok && d.Code == vowdbpb.ErrorDetail_NOT_LEADER {
			// Proposed, then leadership was lost: the outcome is unknown.
			return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_AMBIGUOUS}, "%v", err)
		}
		return nil, err
	}
	return &vowdbpb.TxnProposeResponse{State: res.TxnState, Swapped: res.Swapped}, nil
}

// anyReplicaFor names a node holding a replica of key's range, from this
// node's replicas or the descriptor cache.
func (l *txnLayer) anyReplicaFor(key []byte) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.descs {
		if !d.IsMeta && containsKey(d, key) {
			for _, rd := range d.Replicas {
				if rd.NodeId != l.n.nodeID() && !rd.Learner {
					return rd.NodeId
				}
			}
		}
	}
	if time.Since(l.descAt) > 500*time.Millisecond {
		l.descs = map[uint64]*vowdbpb.RangeDescriptor{} // stale: the next desc() refreshes
		l.leaders = map[uint64]uint64{}
	}
	for _, nd := range l.n.knownNodes() {
		if nd.NodeId != l.n.nodeID() {
			return nd.NodeId
		}
	}
	return 0
}

func containsKey(d *vowdbpb.RangeDescriptor, key []byte) bool {
	return string(key) >= string(d.StartKey) && (len(d.EndKey) == 0 || string(key) < string(d.EndKey))
}

// isNotSent reports an RPC error after which the request was not handled
// (no connection, or the server refused it before running it).
func isNotSent(err error) bool {
	_, hasDetail := transport.Detail(err)
	return err != nil && status.Code(err) == codes.Unavailable && !hasDetail
}

// coordinatorGone reports whether the coordinator of (id, attempt) can no
// longer ask for COMMITTED: it says it does not have the attempt (it
// restarted or gave up), or it is unreachable and the cluster's liveness
// says it is down.
func (l *txnLayer) coordinatorGone(ctx context.Context, node uint64, id lock.TxnID, attempt uint64) bool {
	if node == l.n.nodeID() {
		return !l.gw.Has(id, attempt)
	}
	conn, err := l.n.trans.NodeConn(node)
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var resp *vowdbpb.CoordinatorStatusResponse
		resp, err = vowdbpb.NewTxnClient(conn).CoordinatorStatus(cctx, &vowdbpb.CoordinatorStatusRequest{TxnId: uint64(id), Attempt: attempt})
		cancel()
		if err == nil {
			return !resp.Running
		}
	}
	return !l.n.isLive(node)
}

// reportWaits ships this node's waits-for edges to the detector on the
// meta leader and aborts the victims it names that wait here.
func (l *txnLayer) reportWaits() {
	if l.n.sched.Load() == nil {
		return
	}
	var edges []*vowdbpb.WaitsEdge
	for _, tr := range l.tenures() {
		edges = append(edges, tr.Edges()...)
	}
	// An empty report is sent once, to clear what the detector holds.
	if len(edges) == 0 && !l.reportedEdges.Swap(false) {
		return
	}
	l.reportedEdges.Store(len(edges) > 0)
	ctx, cancel := context.WithTimeout(l.n.ctx, time.Second)
	defer cancel()
	var resp *vowdbpb.WaitsReportResponse
	err := l.n.withMetaConn(ctx, func(ctx context.Context, c *grpc.ClientConn) error {
		var err error
		resp, err = vowdbpb.NewTxnClient(c).ReportWaits(ctx, &vowdbpb.WaitsReport{NodeId: l.n.nodeID(), Edges: edges})
		return err
	})
	if err != nil {
		l.n.log.Debug("waits-for report failed", "edges", len(edges), "err", err)
		return
	}
	if len(resp.Victims) == 0 {
		return
	}
	for _, v := range resp.Victims {
		vic := deadlock.Victim{Txn: lock.TxnID(v.Victim)}
		for _, t := range v.Cycle {
			vic.Cycle = append(vic.Cycle, lock.TxnID(t))
		}
		for _, tr := range l.tenures() {
			tr.AbortVictim(time.Now(), vic)
		}
	}
}

// detect is the detector (on the meta leader): it unions the edges nodes
// report, drops nodes silent for long, and returns one victim per cycle,
// the youngest transaction that is not prepared.
func (l *txnLayer) detect(rep *vowdbpb.WaitsReport) []*vowdbpb.Deadlock {
	l.det.Lock()
	defer l.det.Unlock()
	now := time.Now()
	edges := make([]lock.Edge, len(rep.Edges))
	for i, e := range rep.Edges {
		edges[i] = lock.Edge{Waiter: lock.TxnID(e.Waiter), Holder: lock.TxnID(e.Holder)}
		l.det.info[lock.TxnID(e.Waiter)] = deadlock.TxnInfo{Age: e.WaiterAge, Prepared: e.WaiterPrepared}
		hi := l.det.info[lock.TxnID(e.Holder)]
		l.det.info[lock.TxnID(e.Holder)] = deadlock.TxnInfo{Age: e.HolderAge, Prepared: e.HolderPrepared || hi.Prepared}
	}
	l.det.d.Report(rep.NodeId, edges)
	l.det.reported[rep.NodeId] = now
	for node, at := range l.det.reported {
		if now.Sub(at) > 5*deadlockPeriod {
			l.det.d.Forget(node)
			delete(l.det.reported, node)
		}
	}
	var out []*vowdbpb.Deadlock
	for _, v := range l.det.d.Detect(func(id lock.TxnID) deadlock.TxnInfo { return l.det.info[id] }) {
		dl := &vowdbpb.Deadlock{Victim: uint64(v.Txn), UnixMs: now.UnixMilli()}
		for _, t := range v.Cycle {
			dl.Cycle = append(dl.Cycle, uint64(t))
		}
		out = append(out, dl)
	}
	if len(l.det.info) > 100000 {
		l.det.info = map[lock.TxnID]deadlock.TxnInfo{}
	}
	return out
}

// recordDeadlock keeps a bounded history of deadlocks broken here.
func (l *txnLayer) recordDeadlock(v deadlock.Victim) {
	dl := &vowdbpb.Deadlock{Victim: uint64(v.Txn), UnixMs: time.Now().UnixMilli()}
	for _, t := range v.Cycle {
		dl.Cycle = append(dl.Cycle, uint64(t))
	}
	l.recordDeadlockPB(dl)
}

func (l *txnLayer) recordDeadlockPB(dl *vowdbpb.Deadlock) {
	l.det.Lock()
	defer l.det.Unlock()
	for _, h := range l.det.history {
		if h.Victim == dl.Victim && dl.UnixMs-h.UnixMs < 5000 {
			return
		}
	}
	l.det.history = append(l.det.history, dl)
	if len(l.det.history) > maxDeadlockLog {
		l.det.history = l.det.history[1:]
	}
	l.n.metrics.TxnAborts.WithLabelValues("deadlock").Inc()
}

// restore hands decided txn records that were never ended to the local
// coordinator, which resends the decision until every participant
// acknowledged and then ends the record (rule 6). A record is restored
// only once it was seen un-ended in two scans, to leave a live
// coordinator time to finish it itself.
func (l *txnLayer) restore() {
	s := l.n.sched.Load()
	if s == nil {
		return
	}
	var ranges []uint64
	for _, tr := range l.tenures() {
		if !tr.Dead() {
			ranges = append(ranges, tr.Range())
		}
	}
	// The records not ended come from the replicas' memory, in one visit
	// to the scheduler; a range whose replica cannot tell is scanned (every
	// record, ended ones included).
	live := map[uint64][]*vowdbpb.TxnRecord{}
	_ = s.Do(l.n.ctx, func() {
		for _, id := range ranges {
			if r := s.ReplicaByID(id); r != nil {
				if recs, ok, err := r.LiveTxnRecords(); ok && err == nil {
					live[id] = recs
				}
			}
		}
	})
	l.restoreMu.Lock()
	defer l.restoreMu.Unlock()
	recs := l.restorer.Scan(ranges, func(rangeID uint64) ([]*vowdbpb.TxnRecord, error) {
		if recs, ok := live[rangeID]; ok {
			return recs, nil
		}
		return replica.TxnRecords(l.n.eng, rangeID)
	})
	if len(recs) > 0 {
		l.gw.Restore(recs)
	}
}
