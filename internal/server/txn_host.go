package server

import (
	"context"
	"fmt"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// The protocol drivers (package txnhost) run here with goroutines, the
// node's Raft scheduler and gRPC; the simulator runs the same drivers with
// its own host. Both hosts report asynchronously, never from inside a call.

// plainTxnBit marks the lock-table ids of non-transactional operations.
const plainTxnBit = txnhost.PlainTxnBit

// tenureHost is the node as txnhost.Host for the tenures of the ranges it
// leads.
type tenureHost struct{ l *txnLayer }

var _ txnhost.Host = tenureHost{}

func (h tenureHost) NodeID() uint64 { return h.l.n.nodeID() }

func (h tenureHost) Now() time.Time { return time.Now() }

func (h tenureHost) Status(rangeID uint64) *replica.Status {
	s := h.l.n.sched.Load()
	if s == nil {
		return nil
	}
	r := s.ReplicaByID(rangeID)
	if r == nil {
		return nil
	}
	return r.Status()
}

func (h tenureHost) Propose(rangeID uint64, cmd *vowdbpb.Command, done func(replica.Result)) {
	s := h.l.n.sched.Load()
	if s == nil {
		go done(replica.Result{Err: fmt.Errorf("node not started")})
		return
	}
	p := replica.NewProposal(cmd)
	s.Propose(rangeID, p)
	timeout := h.l.n.cfg.RequestTimeout
	go awaitOr(p.Done, timeout, replica.Result{Err: fmt.Errorf("not applied in %v", timeout)}, done)
}

func (h tenureHost) ConfirmLeadership(rangeID uint64, done func(error)) {
	s := h.l.n.sched.Load()
	if s == nil {
		go done(fmt.Errorf("node not started"))
		return
	}
	rd := replica.NewRead()
	s.Read(rangeID, rd)
	timeout := h.l.n.cfg.RequestTimeout
	go awaitOr(rd.Done, timeout, fmt.Errorf("leadership not confirmed in %v", timeout), done)
}

// awaitOr calls done with the value from ch, or with late if none came
// within timeout.
func awaitOr[T any](ch <-chan T, timeout time.Duration, late T, done func(T)) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case v := <-ch:
		done(v)
	case <-t.C:
		done(late)
	}
}

func (h tenureHost) Send(msgs []txn.Message) { go h.l.send(msgs) }

func (h tenureHost) TenureEnded(t *txnhost.Tenure, why string) {
	h.l.dropRange(t)
	h.l.n.log.Debug("txn tenure ended", "range", t.Range(), "tenure", t.Number(), "why", why)
}

func (h tenureHost) Aborted(t *txnhost.Tenure, id lock.TxnID, ab *vowdbpb.TxnAbort) {
	h.l.n.log.Debug("txn aborted by range", "range", t.Range(), "txn", id, "reason", ab.Reason.String())
}

func (h tenureHost) LocalDeadlock(v deadlock.Victim) { h.l.recordDeadlock(v) }

func (h tenureHost) Invariant(t *txnhost.Tenure, msg string) {
	h.l.n.log.Error("txn protocol invariant broken", "range", t.Range(), "tenure", t.Number(), "what", msg)
}

// anchorHost is the node as txnhost.AnchorHost, answering inquiries at
// the anchor ranges it leads.
type anchorHost struct{ tenureHost }

var _ txnhost.AnchorHost = anchorHost{}

func (h anchorHost) TxnRecord(rangeID uint64, id lock.TxnID, attempt uint64) (*vowdbpb.TxnRecord, error) {
	return replica.TxnRecord(h.l.n.eng, rangeID, txnwire.KeyID(id, attempt))
}

func (h anchorHost) CoordinatorGone(node uint64, id lock.TxnID, attempt uint64, done func(bool)) {
	go func() {
		ctx, cancel := context.WithTimeout(h.l.n.ctx, 5*time.Second)
		defer cancel()
		done(h.l.coordinatorGone(ctx, node, id, attempt))
	}()
}

func (h anchorHost) PresumedAbort(m txn.Message) {
	h.l.n.log.Info("txn presumed aborted: coordinator gone", "txn", m.Txn, "attempt", m.Attempt, "coordinator", m.Coordinator)
}

// routeHost is the node as txnhost.RouteHost, for the messages that
// arrive at it.
type routeHost struct{ anchorHost }

var _ txnhost.RouteHost = routeHost{}

func (h routeHost) Gateway() *txnhost.Gateway { return h.l.gw }

func (h routeHost) RangeForKey(key []byte) (uint64, bool) {
	s := h.l.n.sched.Load()
	if s == nil {
		return 0, false
	}
	if r := s.ReplicaForKey(key); r != nil {
		return r.RangeID, true
	}
	return 0, false
}

func (h routeHost) LeaderHint(rangeID uint64) uint64 { return h.l.rangeLeaderHint(rangeID) }

func (h routeHost) AnyReplicaFor(key []byte) uint64 { return h.l.anyReplicaFor(key) }

func (h routeHost) Forward(node uint64, m txn.Message, hops int) {
	pm := txnwire.MsgToPB(m)
	pm.Hops = uint32(hops)
	go func() { _ = h.l.deliverTo(node, []*vowdbpb.TxnMessage{pm}) }()
}

func (h routeHost) WithTenure(rangeID uint64, fn func(*txnhost.Tenure)) {
	s := h.l.n.sched.Load()
	if s == nil {
		return
	}
	r := s.ReplicaByID(rangeID)
	if r == nil {
		return
	}
	h.l.mu.Lock()
	tr := h.l.ranges[rangeID]
	h.l.mu.Unlock()
	if tr != nil && tr.Current(r.Status()) {
		fn(tr)
		return
	}
	go func() {
		if tr, err := h.l.rangeFor(h.l.n.ctx, s, r); err == nil {
			fn(tr)
		}
	}()
}

// gatewayHost is the node as txnhost.GatewayHost for the txns it
// coordinates.
type gatewayHost struct{ l *txnLayer }

var _ txnhost.GatewayHost = gatewayHost{}

func (h gatewayHost) NodeID() uint64 { return h.l.n.nodeID() }

func (h gatewayHost) Send(msgs []txn.Message) { go h.l.send(msgs) }

func (h gatewayHost) ProposeAt(anchor txn.RangeID, anchorKey []byte, cmd *vowdbpb.Command, done func(vowdbpb.TxnState, error)) {
	go func() {
		ctx, cancel := context.WithTimeout(h.l.n.ctx, h.l.n.cfg.RequestTimeout)
		defer cancel()
		resp, err := h.l.proposeAt(ctx, anchorKey, cmd)
		if err != nil {
			done(0, err)
			return
		}
		done(resp.State, nil)
	}()
}

func (h gatewayHost) Background(fn func()) { go fn() }

func (h gatewayHost) DecisionUnknown(r txn.DecisionRecord, err error) {
	h.l.n.log.Warn("txn decision outcome unknown", "txn", r.Txn, "attempt", r.Attempt, "err", err)
}

// commit runs req through the gateway and waits for its result; a caller
// that stops waiting gets an ambiguous outcome (the commit goes on).
func (l *txnLayer) commit(ctx context.Context, req txn.CommitRequest) (txn.Result, error) {
	ch := make(chan txn.Result, 1)
	if err := l.gw.Commit(time.Now(), req, func(res txn.Result) { ch <- res }); err != nil {
		return txn.Result{}, err
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		l.gw.Forget(req.Txn, req.Attempt)
		return txn.Result{Txn: req.Txn, Attempt: req.Attempt, Outcome: txn.OutcomeAmbiguous}, nil
	}
}

// committingInfos is what `vowdb txn ls` shows of the txns committing here.
func (l *txnLayer) committingInfos() []*vowdbpb.TxnInfo {
	var out []*vowdbpb.TxnInfo
	for _, c := range l.gw.Committing() {
		out = append(out, &vowdbpb.TxnInfo{TxnId: uint64(c.Txn), Attempt: c.Attempt, CoordinatorNodeId: l.n.nodeID(),
			State: "COMMITTING", ParticipantRangeIds: c.Ranges, AgeMicros: time.Since(c.Since).Microseconds(),
			NodeId: l.n.nodeID()})
	}
	return out
}
