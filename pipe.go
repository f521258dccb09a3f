package vowdb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// errNotSent means an operation never left the client: retrying it is safe.
var errNotSent = errors.New("vowdb: request not sent")

// errStreamBroken means the stream broke after the operation was sent: its
// outcome is unknown.
var errStreamBroken = errors.New("vowdb: connection lost after the request was sent")

// pipe multiplexes the concurrent single-key operations sent to one node over
// one Batch stream. Operations queued while a send is in flight leave
// together in the next message, so under load many operations share one
// network write and one server-side Raft round.
type pipe struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	stream grpc.BidiStreamingClient[vowdbpb.BatchRequest, vowdbpb.BatchResponse]

	mu struct {
		sync.Mutex
		nextID  uint64
		pending map[uint64]*pendingOp
		queue   []*vowdbpb.BatchOp
		sending bool // some caller is sending the queue
		broken  bool
	}
}

type pendingOp struct {
	sent bool
	done chan pipeResult // buffered(1)
}

type pipeResult struct {
	res *vowdbpb.BatchResult
	err error
}

// pipeFor returns the live pipe on conn, opening one if needed.
func (db *DB) pipeFor(conn *grpc.ClientConn) (*pipe, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return nil, ErrClosed
	}
	if p, ok := db.mu.pipes[conn]; ok {
		return p, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := vowdbpb.NewKVClient(conn).Batch(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %v", errNotSent, err)
	}
	p := &pipe{conn: conn, cancel: cancel, stream: st}
	p.mu.pending = map[uint64]*pendingOp{}
	if db.mu.pipes == nil {
		db.mu.pipes = map[*grpc.ClientConn]*pipe{}
	}
	db.mu.pipes[conn] = p
	go p.recvLoop(db)
	return p, nil
}

// do sends op and waits for its result. A failure carries a gRPC status
// (with ErrorDetail) exactly as the unary call would have returned.
func (p *pipe) do(ctx context.Context, op *vowdbpb.BatchOp) (*vowdbpb.BatchResult, error) {
	p.mu.Lock()
	if p.mu.broken {
		p.mu.Unlock()
		return nil, errNotSent
	}
	p.mu.nextID++
	op.Id = p.mu.nextID
	po := &pendingOp{done: make(chan pipeResult, 1)}
	p.mu.pending[op.Id] = po
	p.mu.queue = append(p.mu.queue, op)
	if p.mu.sending {
		// The caller that is sending will pick this operation up.
		p.mu.Unlock()
	} else {
		p.mu.sending = true
		p.flushLocked()
	}
	select {
	case r := <-po.done:
		if r.err != nil {
			return nil, r.err
		}
		if r.res.GrpcCode != 0 {
			st := status.New(codes.Code(r.res.GrpcCode), r.res.ErrorMessage)
			if r.res.Error != nil {
				if withD, err := st.WithDetails(r.res.Error); err == nil {
					st = withD
				}
			}
			return nil, st.Err()
		}
		return r.res, nil
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.mu.pending, op.Id)
		sent := po.sent
		if !sent {
			for i, q := range p.mu.queue {
				if q == op {
					p.mu.queue = append(p.mu.queue[:i], p.mu.queue[i+1:]...)
					break
				}
			}
		}
		// Tell the node to stop a sent transactional request, as a unary
		// call's cancellation would: left running, an operation could take
		// a lock for a transaction its client no longer runs.
		stop := sent && cancellable(op) && !p.mu.broken
		if stop {
			p.mu.queue = append(p.mu.queue, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Cancel{Cancel: &vowdbpb.BatchCancel{Id: op.Id}}})
		}
		if stop && !p.mu.sending {
			p.mu.sending = true
			p.flushLocked() // releases p.mu
		} else {
			p.mu.Unlock()
		}
		if !sent {
			return nil, fmt.Errorf("%w: %v", errNotSent, ctx.Err())
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// cancellable reports whether op runs on the node until it is answered or
// cancelled (a transactional operation or commit), rather than being
// proposed or read at once.
func cancellable(op *vowdbpb.BatchOp) bool {
	switch op.Op.(type) {
	case *vowdbpb.BatchOp_TxnOp, *vowdbpb.BatchOp_TxnCommit:
		return true
	}
	return false
}

// flushLocked sends the queue, and whatever queues meanwhile, from the
// calling goroutine (no hand-off to a sender goroutine: at low load a request
// leaves at once, at high load one caller sends for many). Called with p.mu
// held and p.mu.sending set; returns with p.mu released.
func (p *pipe) flushLocked() {
	for {
		ops := p.mu.queue
		p.mu.queue = nil
		if len(ops) == 0 || p.mu.broken {
			p.mu.sending = false
			p.mu.Unlock()
			return
		}
		for _, op := range ops {
			if po, ok := p.mu.pending[op.Id]; ok {
				po.sent = true
			}
		}
		p.mu.Unlock()
		err := p.stream.Send(&vowdbpb.BatchRequest{Ops: ops})
		p.mu.Lock()
		if err != nil {
			// recvLoop sees the broken stream too and fails everything.
			p.mu.sending = false
			p.mu.Unlock()
			p.cancel()
			return
		}
	}
}

func (p *pipe) recvLoop(db *DB) {
	for {
		resp, err := p.stream.Recv()
		if err != nil {
			p.breakAll(db)
			return
		}
		p.mu.Lock()
		for _, r := range resp.Results {
			if po, ok := p.mu.pending[r.Id]; ok {
				delete(p.mu.pending, r.Id)
				po.done <- pipeResult{res: r}
			}
		}
		p.mu.Unlock()
	}
}

// breakAll retires the pipe: operations never sent fail with errNotSent,
// sent ones with errStreamBroken.
func (p *pipe) breakAll(db *DB) {
	db.mu.Lock()
	if db.mu.pipes[p.conn] == p {
		delete(db.mu.pipes, p.conn)
	}
	db.mu.Unlock()
	p.mu.Lock()
	p.mu.broken = true
	for id, po := range p.mu.pending {
		if po.sent {
			po.done <- pipeResult{err: errStreamBroken}
		} else {
			po.done <- pipeResult{err: errNotSent}
		}
		delete(p.mu.pending, id)
	}
	p.mu.queue = nil
	p.mu.Unlock()
	p.cancel()
}
