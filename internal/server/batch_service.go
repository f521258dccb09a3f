package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
)

// Batch serves the KV stream: each received operation is started at once
// (proposed or queued for ReadIndex, without a goroutine of its own), and its
// answer is queued for a writer goroutine that sends every answer available
// in one message. Operations of one client that arrive together thus share a
// Raft round, a network message and a stream write.
func (s *kvService) Batch(st grpc.BidiStreamingServer[vowdbpb.BatchRequest, vowdbpb.BatchResponse]) error {
	out := newResponder(st)
	defer out.close()
	running := &streamRequests{parent: st.Context(), cancels: map[uint64]context.CancelFunc{}}
	for {
		req, err := st.Recv()
		if err != nil {
			return nil // the client closed the stream or the connection broke
		}
		for _, op := range req.Ops {
			if c, ok := op.Op.(*vowdbpb.BatchOp_Cancel); ok {
				running.cancel(c.Cancel.Id)
				continue
			}
			s.startOp(running, op, out.push)
		}
	}
}

// streamRequests holds the cancel functions of a stream's transactional
// requests that are still running, by operation id, so that a BatchCancel
// stops one as cancelling a unary call would. Their contexts are the
// stream's: all of them end when the client goes away.
type streamRequests struct {
	parent  context.Context
	mu      sync.Mutex
	cancels map[uint64]context.CancelFunc
}

// start returns the context of request id, bounded by timeout, and the
// function to call once it is answered.
func (r *streamRequests) start(id uint64, timeout time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(r.parent, timeout)
	r.mu.Lock()
	r.cancels[id] = cancel
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		delete(r.cancels, id)
		r.mu.Unlock()
		cancel()
	}
}

// cancel stops request id; an id that already finished (or never was) is
// ignored: the answer and the cancellation crossed.
func (r *streamRequests) cancel(id uint64) {
	r.mu.Lock()
	cancel := r.cancels[id]
	delete(r.cancels, id)
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// startOp starts one operation; done is called exactly once with its result,
// possibly on the scheduler goroutine. Transactional requests run under a
// context of running's.
func (s *kvService) startOp(running *streamRequests, op *vowdbpb.BatchOp, done func(*vowdbpb.BatchResult)) {
	n := s.n
	start := time.Now()
	method := "unknown"
	finish := func(res *vowdbpb.BatchResult, err error) {
		if res == nil {
			res = &vowdbpb.BatchResult{}
		}
		res.Id = op.Id
		outcome := "ok"
		if err != nil {
			outcome = "error"
			st := status.Convert(err)
			res.GrpcCode = int32(st.Code())
			res.ErrorMessage = st.Message()
			if d, ok := transport.Detail(err); ok {
				res.Error = d
			}
		}
		n.metrics.Requests.WithLabelValues(method, outcome).Inc()
		n.metrics.RequestSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
		done(res)
	}
	switch o := op.Op.(type) {
	case *vowdbpb.BatchOp_Get:
		method = "get"
		key := o.Get.Key
		if err := n.checkKV(key, nil); err != nil {
			finish(nil, err)
			return
		}
		sched, r, err := n.leaderFor(key)
		if err != nil {
			finish(nil, err)
			return
		}
		n.txns.plainLock(context.Background(), sched, r, lock.Point(key), lock.S, func(release func(), err error) {
			if err != nil {
				finish(nil, err)
				return
			}
			rd := &replica.Read{OnDone: func(err error) {
				defer release()
				if err != nil {
					finish(nil, n.replicaErr(r, err))
					return
				}
				if d := r.Status().Desc; !keys.Contains(d.StartKey, d.EndKey, key) {
					finish(nil, n.replicaErr(r, &replica.KeyMismatchError{Key: key, Desc: d}))
					return
				}
				v, err := n.eng.Get(keys.UserKey(key))
				switch {
				case errors.Is(err, storage.ErrNotFound):
					finish(&vowdbpb.BatchResult{Get: &vowdbpb.GetResponse{}}, nil)
				case err != nil:
					finish(nil, err)
				default:
					finish(&vowdbpb.BatchResult{Get: &vowdbpb.GetResponse{Found: true, Value: v}}, nil)
				}
			}}
			sched.Read(r.RangeID, rd)
		})
	case *vowdbpb.BatchOp_Put:
		method = "put"
		s.startWrite(o.Put.Key, o.Put.Value, nil, &vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: o.Put.Key, Value: o.Put.Value}}}, finish)
	case *vowdbpb.BatchOp_Delete:
		method = "delete"
		s.startWrite(o.Delete.Key, nil, nil, &vowdbpb.Command{Op: &vowdbpb.Command_Delete{Delete: &vowdbpb.DeleteOp{Key: o.Delete.Key}}}, finish)
	case *vowdbpb.BatchOp_Cas:
		method = "cas"
		c := o.Cas
		s.startWrite(c.Key, c.Value, c.Expected, &vowdbpb.Command{Op: &vowdbpb.Command_Cas{Cas: &vowdbpb.CasOp{
			Key: c.Key, Expected: c.Expected, ExpectAbsent: c.ExpectAbsent, Value: c.Value, DeleteOnSwap: c.DeleteOnSwap}}}, finish)
	case *vowdbpb.BatchOp_TxnOp:
		// A transactional operation may wait for a lock: then it goes on
		// in a goroutine of its own, bounded as the client bounds the
		// unary call; one granted at once is answered from here.
		method = "txn_op"
		ctx, end := running.start(op.Id, streamTimeout(o.TxnOp.TimeoutMs, time.Duration(o.TxnOp.LockTimeoutMs)*time.Millisecond+n.cfg.RequestTimeout))
		(&txnService{n: n}).startOp(ctx, o.TxnOp, func(resp *vowdbpb.TxnOpResponse, err error) {
			end()
			finish(&vowdbpb.BatchResult{TxnOp: resp}, err)
		})
	case *vowdbpb.BatchOp_TxnCommit:
		method = "txn_commit"
		ctx, end := running.start(op.Id, streamTimeout(o.TxnCommit.TimeoutMs, n.cfg.RequestTimeout+5*time.Second))
		go func() {
			defer end()
			resp, err := (&txnService{n: n}).commit(ctx, o.TxnCommit)
			finish(&vowdbpb.BatchResult{TxnCommit: resp}, err)
		}()
	default:
		finish(nil, transport.Invalid("batch operation %d is empty", op.Id))
	}
}

// streamTimeout bounds a transactional request of the Batch stream: by the
// client's own wait when it sent one (as a unary call's deadline would),
// never beyond def.
func streamTimeout(clientMs int64, def time.Duration) time.Duration {
	if c := time.Duration(clientMs) * time.Millisecond; c > 0 && c < def {
		return c
	}
	return def
}

func (s *kvService) startWrite(key, value, expected []byte, cmd *vowdbpb.Command, finish func(*vowdbpb.BatchResult, error)) {
	n := s.n
	if err := n.checkKV(key, value); err != nil {
		finish(nil, err)
		return
	}
	if err := keys.ValidateValue(expected, n.cfg.MaxValueBytes); err != nil {
		finish(nil, transport.Invalid("expected %v", err))
		return
	}
	sched, r, err := n.leaderFor(key)
	if err != nil {
		finish(nil, err)
		return
	}
	_, isCas := cmd.Op.(*vowdbpb.Command_Cas)
	n.txns.plainLock(context.Background(), sched, r, lock.Point(key), lock.X, func(release func(), err error) {
		if err != nil {
			finish(nil, err)
			return
		}
		p := &replica.Proposal{Cmd: cmd, OnDone: func(res replica.Result) {
			release()
			if res.Err != nil {
				finish(nil, n.replicaErr(r, res.Err))
				return
			}
			out := &vowdbpb.BatchResult{}
			if isCas {
				out.Cas = &vowdbpb.CasResponse{Swapped: res.Swapped, Found: res.Found, Current: res.Current}
			}
			finish(out, nil)
		}}
		sched.Propose(r.RangeID, p)
	})
}

// responder collects results and sends them from one goroutine, as many per
// message as are ready.
type responder struct {
	st   grpc.BidiStreamingServer[vowdbpb.BatchRequest, vowdbpb.BatchResponse]
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	mu   struct {
		sync.Mutex
		results []*vowdbpb.BatchResult
		closed  bool
	}
}

func newResponder(st grpc.BidiStreamingServer[vowdbpb.BatchRequest, vowdbpb.BatchResponse]) *responder {
	r := &responder{st: st, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *responder) push(res *vowdbpb.BatchResult) {
	r.mu.Lock()
	if r.mu.closed {
		r.mu.Unlock()
		return
	}
	r.mu.results = append(r.mu.results, res)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *responder) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.wake:
		}
		r.mu.Lock()
		results := r.mu.results
		r.mu.results = nil
		r.mu.Unlock()
		if len(results) == 0 {
			continue
		}
		if err := r.st.Send(&vowdbpb.BatchResponse{Results: results}); err != nil {
			return
		}
	}
}

// close stops the writer; results that arrive later are dropped (the
// client has lost the stream and treats those operations as unanswered).
func (r *responder) close() {
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
}
