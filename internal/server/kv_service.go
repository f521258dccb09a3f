package server

import (
	"context"
	"errors"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
)

// kvService serves single-key operations on the ranges this node leads.
// A request for a range led elsewhere is answered with NOT_LEADER and the
// leader's address; the client retries there.
type kvService struct {
	vowdbpb.UnimplementedKVServer
	n *Node
}

// leaderFor returns the local leader replica of the range holding key.
func (n *Node) leaderFor(key []byte) (*multiraft.Scheduler, *replica.Replica, error) {
	s := n.sched.Load()
	if s == nil {
		return nil, nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED},
			"node at %s has not joined a cluster yet (run vowdb init, or check its --join)", n.addr)
	}
	r := s.ReplicaForKey(key)
	if r == nil {
		return nil, nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_RANGE_NOT_FOUND},
			"node %d holds no replica of the range of key %q", n.nodeID(), key)
	}
	st := r.Status()
	if st.LeaderID != n.nodeID() {
		return nil, nil, n.notLeader(st)
	}
	return s, r, nil
}

func (n *Node) notLeader(st *replica.Status) error {
	addr, _ := n.resolve(st.LeaderID)
	return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_LEADER, LeaderNodeId: st.LeaderID, LeaderAddress: addr, Desc: st.Desc},
		"node %d is not the leader of range %d (leader: node %d)", n.nodeID(), st.Desc.GetRangeId(), st.LeaderID)
}

// read waits until the local leader can serve a linearizable read of key.
func (n *Node) read(ctx context.Context, key []byte) (*replica.Replica, error) {
	s, r, err := n.leaderFor(key)
	if err != nil {
		return nil, err
	}
	rd := replica.NewRead()
	s.Read(r.RangeID, rd)
	select {
	case err = <-rd.Done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, n.replicaErr(r, err)
	}
	if d := r.Status().Desc; !keys.Contains(d.StartKey, d.EndKey, key) {
		return nil, n.replicaErr(r, &replica.KeyMismatchError{Key: key, Desc: d})
	}
	return r, nil
}

// replicaErr maps replica and scheduler errors to client statuses.
func (n *Node) replicaErr(r *replica.Replica, err error) error {
	var km *replica.KeyMismatchError
	switch {
	case errors.Is(err, replica.ErrNotLeader), errors.Is(err, replica.ErrProposalDropped):
		return n.notLeader(r.Status())
	case errors.Is(err, multiraft.ErrRangeNotFound):
		return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_RANGE_NOT_FOUND}, "%v", err)
	case errors.As(err, &km):
		return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_KEY_MISMATCH, Desc: km.Desc}, "%v", err)
	case errors.Is(err, replica.ErrAmbiguous), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_AMBIGUOUS}, "write to range %d: outcome unknown: %v", r.RangeID, err)
	case errors.Is(err, replica.ErrInvalidCommand):
		return transport.Invalid("%v", err)
	}
	return err
}

// propose proposes a single-key write to the range holding key and waits
// for it to apply, under an X lock on key so it never overwrites a
// transaction's locked key.
func (n *Node) propose(ctx context.Context, key []byte, cmd *vowdbpb.Command) (replica.Result, error) {
	s, r, err := n.leaderFor(key)
	if err != nil {
		return replica.Result{}, err
	}
	release, err := n.lockPlain(ctx, s, r, lock.Point(key), lock.X)
	if err != nil {
		return replica.Result{}, err
	}
	defer release()
	return n.proposeTo(ctx, s, r, cmd)
}

// lockKey takes a plain operation's lock on span at its range's local
// leader.
func (n *Node) lockKey(ctx context.Context, span lock.Span, mode lock.Mode) (func(), error) {
	s, r, err := n.leaderFor(span.Start)
	if err != nil {
		return nil, err
	}
	return n.lockPlain(ctx, s, r, span, mode)
}

func (n *Node) lockPlain(ctx context.Context, s *multiraft.Scheduler, r *replica.Replica, span lock.Span, mode lock.Mode) (func(), error) {
	type result struct {
		release func()
		err     error
	}
	ch := make(chan result, 1)
	n.txns.plainLock(ctx, s, r, span, mode, func(release func(), err error) { ch <- result{release, err} })
	res := <-ch
	return res.release, res.err
}

func (n *Node) proposeTo(ctx context.Context, s *multiraft.Scheduler, r *replica.Replica, cmd *vowdbpb.Command) (replica.Result, error) {
	p := replica.NewProposal(cmd)
	s.Propose(r.RangeID, p)
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	select {
	case res := <-p.Done:
		if res.Err != nil {
			return res, n.replicaErr(r, res.Err)
		}
		return res, nil
	case <-ctx.Done():
		return replica.Result{}, n.replicaErr(r, ctx.Err())
	}
}

func (n *Node) checkKV(key, value []byte) error {
	if err := keys.ValidateKey(key, n.cfg.MaxKeyBytes); err != nil {
		return transport.Invalid("%v", err)
	}
	if err := keys.ValidateValue(value, n.cfg.MaxValueBytes); err != nil {
		return transport.Invalid("%v", err)
	}
	return nil
}

func (s *kvService) observe(method string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	s.n.metrics.Requests.WithLabelValues(method, outcome).Inc()
	s.n.metrics.RequestSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (s *kvService) Get(ctx context.Context, req *vowdbpb.GetRequest) (resp *vowdbpb.GetResponse, err error) {
	defer func(start time.Time) { s.observe("get", start, err) }(time.Now())
	if err := s.n.checkKV(req.Key, nil); err != nil {
		return nil, err
	}
	release, err := s.n.lockKey(ctx, lock.Point(req.Key), lock.S)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := s.n.read(ctx, req.Key); err != nil {
		return nil, err
	}
	v, err := s.n.eng.Get(keys.UserKey(req.Key))
	if errors.Is(err, storage.ErrNotFound) {
		return &vowdbpb.GetResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &vowdbpb.GetResponse{Found: true, Value: v}, nil
}

func (s *kvService) Put(ctx context.Context, req *vowdbpb.PutRequest) (_ *vowdbpb.PutResponse, err error) {
	defer func(start time.Time) { s.observe("put", start, err) }(time.Now())
	if err := s.n.checkKV(req.Key, req.Value); err != nil {
		return nil, err
	}
	_, err = s.n.propose(ctx, req.Key, &vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: req.Key, Value: req.Value}}})
	if err != nil {
		return nil, err
	}
	return &vowdbpb.PutResponse{}, nil
}

func (s *kvService) Delete(ctx context.Context, req *vowdbpb.DeleteRequest) (_ *vowdbpb.DeleteResponse, err error) {
	defer func(start time.Time) { s.observe("delete", start, err) }(time.Now())
	if err := s.n.checkKV(req.Key, nil); err != nil {
		return nil, err
	}
	_, err = s.n.propose(ctx, req.Key, &vowdbpb.Command{Op: &vowdbpb.Command_Delete{Delete: &vowdbpb.DeleteOp{Key: req.Key}}})
	if err != nil {
		return nil, err
	}
	return &vowdbpb.DeleteResponse{}, nil
}

func (s *kvService) CompareAndSwap(ctx context.Context, req *vowdbpb.CasRequest) (_ *vowdbpb.CasResponse, err error) {
	defer func(start time.Time) { s.observe("cas", start, err) }(time.Now())
	if err := s.n.checkKV(req.Key, req.Value); err != nil {
		return nil, err
	}
	if err := keys.ValidateValue(req.Expected, s.n.cfg.MaxValueBytes); err != nil {
		return nil, transport.Invalid("expected %v", err)
	}
	res, err := s.n.propose(ctx, req.Key, &vowdbpb.Command{Op: &vowdbpb.Command_Cas{Cas: &vowdbpb.CasOp{
		Key: req.Key, Expected: req.Expected, ExpectAbsent: req.ExpectAbsent, Value: req.Value, DeleteOnSwap: req.DeleteOnSwap}}})
	if err != nil {
		return nil, err
	}
	return &vowdbpb.CasResponse{Swapped: res.Swapped, Found: res.Found, Current: res.Current}, nil
}

// maxScanLimit bounds one Scan response; clients page through larger scans.
const maxScanLimit = 10000

func (s *kvService) Scan(ctx context.Context, req *vowdbpb.ScanRequest) (_ *vowdbpb.ScanResponse, err error) {
	defer func(start time.Time) { s.observe("scan", start, err) }(time.Now())
	if len(req.EndKey) > 0 && string(req.EndKey) <= string(req.StartKey) {
		return nil, transport.Invalid("scan end key %q is not after start key %q", req.EndKey, req.StartKey)
	}
	if len(req.StartKey) > s.n.cfg.MaxKeyBytes || len(req.EndKey) > s.n.cfg.MaxKeyBytes {
		return nil, transport.Invalid("scan bound over the key limit of %d bytes", s.n.cfg.MaxKeyBytes)
	}
	if req.Limit < 0 {
		return nil, transport.Invalid("scan limit %d is negative", req.Limit)
	}
	limit := req.Limit
	if limit == 0 || limit > maxScanLimit {
		limit = maxScanLimit
	}
	sched, lr, err := s.n.leaderFor(req.StartKey)
	if err != nil {
		return nil, err
	}
	lockEnd := req.EndKey
	if d := lr.Status().Desc; len(d.EndKey) > 0 && (len(lockEnd) == 0 || string(d.EndKey) < string(lockEnd)) {
		lockEnd = d.EndKey
	}
	release, err := s.n.lockPlain(ctx, sched, lr, lock.Span{Start: req.StartKey, End: lockEnd}, lock.S)
	if err != nil {
		return nil, err
	}
	defer release()
	r, err := s.n.read(ctx, req.StartKey)
	if err != nil {
		return nil, err
	}
	d := r.Status().Desc
	end := req.EndKey
	if len(d.EndKey) > 0 && (len(end) == 0 || string(d.EndKey) < string(end)) {
		end = d.EndKey
	}
	start, stop := keys.UserSpan(req.StartKey, end)
	resp := &vowdbpb.ScanResponse{RangeEnd: d.EndKey}
	err = s.n.eng.Scan(start, stop, func(k, v []byte) bool {
		uk, _ := keys.DecodeUserKey(k)
		resp.Kvs = append(resp.Kvs, &vowdbpb.KeyValue{Key: append([]byte(nil), uk...), Value: append([]byte(nil), v...)})
		return int64(len(resp.Kvs)) < limit
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
