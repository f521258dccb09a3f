package vowdb

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// fakeStream is a Batch stream that records what the client sends and
// never answers.
type fakeStream struct {
	grpc.ClientStream
	sent chan *vowdbpb.BatchOp
	done chan struct{}
}

func (f *fakeStream) Send(req *vowdbpb.BatchRequest) error {
	for _, op := range req.Ops {
		f.sent <- op
	}
	return nil
}

func (f *fakeStream) Recv() (*vowdbpb.BatchResponse, error) {
	<-f.done
	return nil, io.EOF
}

func newFakePipe() (*pipe, *fakeStream) {
	f := &fakeStream{sent: make(chan *vowdbpb.BatchOp, 16), done: make(chan struct{})}
	p := &pipe{stream: f, cancel: func() {}}
	p.mu.pending = map[uint64]*pendingOp{}
	return p, f
}

func nextSent(t *testing.T, f *fakeStream) *vowdbpb.BatchOp {
	t.Helper()
	select {
	case op := <-f.sent:
		return op
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent")
		return nil
	}
}

// TestPipeCancelsTxnRequests: a transactional request that was sent and
// whose caller stops waiting is followed on the stream by a BatchCancel
// naming it, so that the node stops it as it would stop a cancelled unary
// call; a single-key operation (answered without waiting for locks) is
// not.
func TestPipeCancelsTxnRequests(t *testing.T) {
	for _, c := range []struct {
		name   string
		op     *vowdbpb.BatchOp
		cancel bool
	}{
		{"txn op", &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_TxnOp{TxnOp: &vowdbpb.TxnOpRequest{TxnId: 1, Attempt: 1, Key: []byte("k")}}}, true},
		{"txn commit", &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_TxnCommit{TxnCommit: &vowdbpb.TxnCommitRequest{TxnId: 1, Attempt: 1}}}, true},
		{"get", &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Get{Get: &vowdbpb.GetRequest{Key: []byte("k")}}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, f := newFakePipe()
			defer close(f.done)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := p.do(ctx, c.op)
				errc <- err
			}()
			sent := nextSent(t, f)
			cancel()
			if err := <-errc; err == nil || errors.Is(err, errNotSent) {
				t.Fatalf("cancelled request: %v, want a sent-then-cancelled error", err)
			}
			if !c.cancel {
				select {
				case op := <-f.sent:
					t.Fatalf("sent %v after cancelling a %s", op, c.name)
				case <-time.After(100 * time.Millisecond):
				}
				return
			}
			op := nextSent(t, f)
			if op.GetCancel() == nil || op.GetCancel().Id != sent.Id {
				t.Fatalf("after cancelling request %d the pipe sent %v, want a cancel of it", sent.Id, op)
			}
		})
	}
}
