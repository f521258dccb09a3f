package server

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/transport"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// msgRollback is a TxnMessage type outside package txn's: a client's
// rollback of an ACTIVE attempt on one range. It can never abort a
// prepared txn (Participant.Abort refuses, rule 2).
const msgRollback = txnhost.MsgRollback

type txnService struct {
	vowdbpb.UnimplementedTxnServer
	n *Node
}

func (s *txnService) layer() (*txnLayer, error) {
	if s.n.sched.Load() == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED},
			"node at %s has not joined a cluster yet", s.n.addr)
	}
	return s.n.txns, nil
}

func (s *txnService) Op(ctx context.Context, req *vowdbpb.TxnOpRequest) (resp *vowdbpb.TxnOpResponse, err error) {
	defer func(start time.Time) { (&kvService{n: s.n}).observe("txn_op", start, err) }(time.Now())
	return s.op(ctx, req)
}

func (s *txnService) op(ctx context.Context, req *vowdbpb.TxnOpRequest) (*vowdbpb.TxnOpResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	return l.op(ctx, req)
}

// startOp serves a transactional operation of the KV.Batch stream: done is
// called exactly once, possibly before startOp returns (txnLayer.startOp).
func (s *txnService) startOp(ctx context.Context, req *vowdbpb.TxnOpRequest, done func(*vowdbpb.TxnOpResponse, error)) {
	l, err := s.layer()
	if err != nil {
		done(nil, err)
		return
	}
	l.startOp(ctx, req, done)
}

func abortReasonOf(r txn.AbortReason) vowdbpb.TxnAbort_Reason {
	switch r {
	case txn.ReasonDecisionLost:
		return vowdbpb.TxnAbort_DECISION_LOST
	default:
		return vowdbpb.TxnAbort_STATE_LOST
	}
}

func (s *txnService) Commit(ctx context.Context, req *vowdbpb.TxnCommitRequest) (resp *vowdbpb.TxnCommitResponse, err error) {
	defer func(start time.Time) { (&kvService{n: s.n}).observe("txn_commit", start, err) }(time.Now())
	return s.commit(ctx, req)
}

// commit serves Txn.Commit and the commits of the KV.Batch stream.
func (s *txnService) commit(ctx context.Context, req *vowdbpb.TxnCommitRequest) (resp *vowdbpb.TxnCommitResponse, err error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if req.TxnId == 0 || lock.TxnID(req.TxnId)&plainTxnBit != 0 || req.Attempt == 0 {
		return nil, transport.Invalid("txn id %d / attempt %d out of range", req.TxnId, req.Attempt)
	}
	resp = &vowdbpb.TxnCommitResponse{GatewayNodeId: s.n.nodeID()}
	if len(req.Participants) == 0 {
		resp.Outcome, resp.Path = vowdbpb.TxnCommitResponse_COMMITTED, txn.PathReadOnly.String()
		return resp, nil
	}
	writers := 0
	for _, p := range req.Participants {
		if p.Writes {
			writers++
		}
	}
	res, err := l.commit(ctx, txn.CommitRequest{Txn: lock.TxnID(req.TxnId), Attempt: req.Attempt,
		Participants: txnwire.ParticipantsFromPB(req.Participants), Anchor: txn.RangeID(req.AnchorRangeId), AnchorKey: req.AnchorKey})
	if errors.Is(err, txn.ErrInvalid) {
		return nil, transport.Invalid("%v", err)
	}
	if errors.Is(err, txn.ErrInProgress) {
		return nil, status.Errorf(codes.FailedPrecondition, "transaction %d is already committing on this node", req.TxnId)
	}
	if err != nil {
		return nil, err
	}
	resp.Path = res.Path.String()
	switch res.Outcome {
	case txn.OutcomeCommitted:
		resp.Outcome = vowdbpb.TxnCommitResponse_COMMITTED
		switch res.Path {
		case txn.PathOnePhase:
			resp.DurableWrites, resp.RoundTrips = 1, 1
			if len(req.Participants) > writers {
				resp.RoundTrips = 2
			}
		case txn.PathTwoPhase:
			resp.DurableWrites, resp.RoundTrips = 2, 2
		case txn.PathReadOnly:
			resp.RoundTrips = 1
		}
		s.n.metrics.TxnCommits.WithLabelValues(res.Path.String()).Inc()
	case txn.OutcomeAborted:
		resp.Outcome = vowdbpb.TxnCommitResponse_ABORTED
		resp.Abort = &vowdbpb.TxnAbort{Reason: abortReasonOf(res.Reason), RangeId: uint64(res.Range)}
		s.n.metrics.TxnAborts.WithLabelValues(resp.Abort.Reason.String()).Inc()
	default:
		resp.Outcome = vowdbpb.TxnCommitResponse_AMBIGUOUS
	}
	return resp, nil
}

func (s *txnService) Rollback(ctx context.Context, req *vowdbpb.TxnRollbackRequest) (*vowdbpb.TxnRollbackResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	var msgs []txn.Message
	for _, p := range req.Participants {
		msgs = append(msgs, txn.Message{Type: msgRollback, Txn: lock.TxnID(req.TxnId), Attempt: req.Attempt,
			From: txn.Addr{Node: txn.NodeID(s.n.nodeID())}, To: txn.Addr{Range: txn.RangeID(p.RangeId)}})
	}
	l.send(msgs)
	return &vowdbpb.TxnRollbackResponse{}, nil
}

// KeepAlive marks the attempt as still run by its client on the range of
// req.Key, which this node must lead (else the usual not-leader error).
func (s *txnService) KeepAlive(ctx context.Context, req *vowdbpb.TxnKeepAliveRequest) (*vowdbpb.TxnKeepAliveResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if err := checkAttempt(req.TxnId, req.Attempt); err != nil {
		return nil, err
	}
	sched, r, err := s.n.leaderFor(req.Key)
	if err != nil {
		return nil, err
	}
	tr, err := l.rangeFor(ctx, sched, r)
	if err != nil {
		return nil, err
	}
	tr.KeepAlive(time.Now(), lock.TxnID(req.TxnId), req.Attempt)
	return &vowdbpb.TxnKeepAliveResponse{RangeId: tr.Range()}, nil
}

func (s *txnService) Deliver(ctx context.Context, req *vowdbpb.TxnDeliverRequest) (*vowdbpb.TxnDeliverResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	for _, m := range req.Msgs {
		l.dispatch(m)
	}
	return &vowdbpb.TxnDeliverResponse{}, nil
}

func (s *txnService) Propose(ctx context.Context, req *vowdbpb.TxnProposeRequest) (*vowdbpb.TxnProposeResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if req.Cmd == nil {
		return nil, transport.Invalid("propose without a command")
	}
	return l.proposeLocal(ctx, req.Key, req.Cmd)
}

func (s *txnService) CoordinatorStatus(ctx context.Context, req *vowdbpb.CoordinatorStatusRequest) (*vowdbpb.CoordinatorStatusResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	return &vowdbpb.CoordinatorStatusResponse{Running: l.gw.Has(lock.TxnID(req.TxnId), req.Attempt)}, nil
}

func (s *txnService) ReportWaits(ctx context.Context, req *vowdbpb.WaitsReport) (*vowdbpb.WaitsReportResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if _, _, err := s.n.localMetaLeader(); err != nil {
		return nil, err
	}
	victims := l.detect(req)
	for _, v := range victims {
		l.recordDeadlockPB(v)
	}
	return &vowdbpb.WaitsReportResponse{Victims: victims}, nil
}

// fanOut calls fn on every known node (this one included) in parallel.
func (n *Node) fanOut(ctx context.Context, fn func(ctx context.Context, c vowdbpb.TxnClient) error) {
	var wg sync.WaitGroup
	for _, nd := range n.knownNodes() {
		conn, err := n.trans.NodeConn(nd.NodeId)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func(conn *grpc.ClientConn) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_ = fn(cctx, vowdbpb.NewTxnClient(conn))
		}(conn)
	}
	wg.Wait()
}

// Status answers TxnStatus: local=true asks only this node's leader ranges
// and coordinator; otherwise every node is asked and the answers combined.
func (s *txnService) Status(ctx context.Context, req *vowdbpb.TxnStatusRequest) (*vowdbpb.TxnStatusResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if req.TxnId == 0 {
		return nil, transport.Invalid("txn id 0 is not valid")
	}
	if req.Local {
		return l.localStatus(ctx, lock.TxnID(req.TxnId))
	}
	var mu sync.Mutex
	out := &vowdbpb.TxnStatusResponse{State: vowdbpb.TxnState_TXN_UNKNOWN}
	covered := map[uint64]bool{}
	s.n.fanOut(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		resp, err := c.Status(ctx, &vowdbpb.TxnStatusRequest{TxnId: req.TxnId, Local: true})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range resp.CoveredRangeIds {
			covered[r] = true
		}
		if rank(resp.State) > rank(out.State) {
			out.State, out.Attempt = resp.State, resp.Attempt
		}
		return nil
	})
	if rank(out.State) >= rank(vowdbpb.TxnState_TXN_PENDING) {
		return out, nil // a COMMITTED anywhere, or something in flight: final enough
	}
	// "Aborted" or "unknown" must have heard from every range's leader: a
	// range without a leader right now may hold the COMMITTED record.
	all, err := l.userRanges(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "status of txn %d: cannot list the ranges: %v", req.TxnId, err)
	}
	for _, r := range all {
		if !covered[r] {
			return nil, status.Errorf(codes.Unavailable, "status of txn %d: range %d has no leader that answered; try again", req.TxnId, r)
		}
		out.CoveredRangeIds = append(out.CoveredRangeIds, r)
	}
	return out, nil
}

// rank orders states for combining answers: a COMMITTED anywhere is the
// answer; else anything in flight; else a known abort.
func rank(s vowdbpb.TxnState) int {
	switch s {
	case vowdbpb.TxnState_TXN_COMMITTED:
		return 3
	case vowdbpb.TxnState_TXN_PENDING:
		return 2
	case vowdbpb.TxnState_TXN_ABORTED:
		return 1
	}
	return 0
}

func (l *txnLayer) localStatus(ctx context.Context, id lock.TxnID) (*vowdbpb.TxnStatusResponse, error) {
	out := &vowdbpb.TxnStatusResponse{State: vowdbpb.TxnState_TXN_UNKNOWN}
	note := func(st vowdbpb.TxnState, attempt uint64) {
		if rank(st) > rank(out.State) {
			out.State, out.Attempt = st, attempt
		}
	}
	s := l.n.sched.Load()
	for _, r := range s.Replicas() {
		st := r.Status()
		if st.Desc == nil || st.Desc.IsMeta || st.LeaderID != l.n.nodeID() {
			continue
		}
		rd := replica.NewRead()
		s.Read(r.RangeID, rd)
		select {
		case err := <-rd.Done:
			if err != nil {
				continue
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// Per attempt: a decided record or outcome settles it; a prepare
		// record alone means in flight.
		out.CoveredRangeIds = append(out.CoveredRangeIds, r.RangeID)
		per := map[uint64]vowdbpb.TxnState{}
		err := replica.TxnStates(l.n.eng, r.RangeID, txnwire.IDPrefix(id), func(kind byte, kid []byte, st vowdbpb.TxnState) {
			_, attempt, ok := txnwire.ParseKeyID(kid)
			if !ok {
				return
			}
			if cur, seen := per[attempt]; !seen || cur == vowdbpb.TxnState_TXN_PENDING {
				per[attempt] = st
			}
		})
		if err != nil {
			return nil, err
		}
		for attempt, st := range per {
			note(st, attempt)
		}
	}
	for _, tr := range l.tenures() {
		for _, v := range tr.Txns() {
			if v.Txn == id {
				note(vowdbpb.TxnState_TXN_PENDING, v.Attempt)
			}
		}
	}
	for _, info := range l.committingInfos() {
		if lock.TxnID(info.TxnId) == id {
			note(vowdbpb.TxnState_TXN_PENDING, info.Attempt)
		}
	}
	return out, nil
}

func (s *txnService) List(ctx context.Context, req *vowdbpb.TxnListRequest) (*vowdbpb.TxnListResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if req.Local {
		return &vowdbpb.TxnListResponse{Txns: append(l.localTxns(), l.durableTxns(ctx)...)}, nil
	}
	var mu sync.Mutex
	byID := map[uint64]*vowdbpb.TxnInfo{}
	s.n.fanOut(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		resp, err := c.List(ctx, &vowdbpb.TxnListRequest{Local: true})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, t := range resp.Txns {
			cur := byID[t.TxnId]
			if cur == nil {
				byID[t.TxnId] = t
				continue
			}
			cur.ParticipantRangeIds = append(cur.ParticipantRangeIds, t.ParticipantRangeIds...)
			if t.State == "COMMITTING" || t.State == txn.StatePrepared.String() {
				cur.State = t.State
			}
			cur.AgeMicros = max(cur.AgeMicros, t.AgeMicros)
			if cur.IdleMicros == 0 || (t.IdleMicros > 0 && t.IdleMicros < cur.IdleMicros) {
				cur.IdleMicros = t.IdleMicros
			}
			if cur.CoordinatorNodeId == 0 {
				cur.CoordinatorNodeId = t.CoordinatorNodeId
			}
		}
		return nil
	})
	out := &vowdbpb.TxnListResponse{}
	for _, t := range byID {
		sort.Slice(t.ParticipantRangeIds, func(i, j int) bool { return t.ParticipantRangeIds[i] < t.ParticipantRangeIds[j] })
		t.ParticipantRangeIds = dedup(t.ParticipantRangeIds)
		if t.State != txn.StateActive.String() {
			t.IdleMicros = 0 // its commit started: silence no longer matters
		}
		out.Txns = append(out.Txns, t)
	}
	sort.Slice(out.Txns, func(i, j int) bool { return out.Txns[i].AgeMicros > out.Txns[j].AgeMicros })
	return out, nil
}

func dedup(xs []uint64) []uint64 {
	var out []uint64
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func (l *txnLayer) localTxns() []*vowdbpb.TxnInfo {
	out := l.committingInfos()
	now := time.Now()
	for _, tr := range l.tenures() {
		for _, v := range tr.Txns() {
			age, idle := int64(0), int64(0)
			if v.Age > 0 {
				age = (now.UnixNano() - int64(v.Age)) / 1000
			}
			if !v.Heard.IsZero() {
				idle = max(now.Sub(v.Heard).Microseconds(), 1)
			}
			out = append(out, &vowdbpb.TxnInfo{TxnId: uint64(v.Txn), Attempt: v.Attempt, CoordinatorNodeId: v.Gateway,
				State: v.State.String(), ParticipantRangeIds: []uint64{tr.Range()}, AgeMicros: age, IdleMicros: idle,
				NodeId: l.n.nodeID()})
		}
	}
	return out
}

func (s *txnService) Locks(ctx context.Context, req *vowdbpb.LocksRequest) (*vowdbpb.LocksResponse, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	if req.Local {
		return l.localLocks(), nil
	}
	var mu sync.Mutex
	out := &vowdbpb.LocksResponse{}
	s.n.fanOut(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		resp, err := c.Locks(ctx, &vowdbpb.LocksRequest{Local: true})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		out.Waits = append(out.Waits, resp.Waits...)
		out.Deadlocks = append(out.Deadlocks, resp.Deadlocks...)
		out.Held = append(out.Held, resp.Held...)
		return nil
	})
	sort.Slice(out.Held, func(i, j int) bool {
		a, b := out.Held[i], out.Held[j]
		if a.RangeId != b.RangeId {
			return a.RangeId < b.RangeId
		}
		return string(a.Key) < string(b.Key)
	})
	sort.Slice(out.Waits, func(i, j int) bool { return out.Waits[i].WaitMicros > out.Waits[j].WaitMicros })
	sort.Slice(out.Deadlocks, func(i, j int) bool { return out.Deadlocks[i].UnixMs > out.Deadlocks[j].UnixMs })
	return out, nil
}

func (l *txnLayer) localLocks() *vowdbpb.LocksResponse {
	out := &vowdbpb.LocksResponse{Held: l.heldLocks()}
	for _, tr := range l.tenures() {
		for _, w := range tr.Waits() {
			lw := &vowdbpb.LockWait{Waiter: uint64(w.Waiter), Key: w.Key, Mode: w.Mode.String(),
				WaitMicros: time.Since(w.Since).Microseconds(), RangeId: tr.Range(), NodeId: l.n.nodeID(), Holder: uint64(w.Holder)}
			if w.Waiter&plainTxnBit != 0 {
				lw.Waiter = 0 // a single-key operation outside any transaction
			}
			out.Waits = append(out.Waits, lw)
		}
	}
	l.det.Lock()
	out.Deadlocks = append(out.Deadlocks, l.det.history...)
	l.det.Unlock()
	return out
}
