package transport

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// MaxMessageBytes bounds one gRPC message (a snapshot travels in one).
const MaxMessageBytes = 512 << 20

// Handler receives what the transport learns.
type Handler interface {
	Deliver(msgs []*vowdbpb.RaftMessage)
	ReportSnapshot(rangeID, to uint64, ok bool)
	ReportUnreachable(to uint64)
}

// Resolver maps a node id to its advertised gRPC address.
type Resolver func(nodeID uint64) (string, bool)

// Transport is a node's Raft transport and connection pool.
type Transport struct {
	handler   Handler
	resolve   Resolver
	log       *slog.Logger
	clusterID func() string
	nodeID    func() uint64

	mu struct {
		sync.Mutex
		peers  map[uint64]*peer
		conns  map[string]*grpc.ClientConn
		closed bool
		// cut lists peers with which Raft traffic is dropped in both
		// directions (a network partition injected by tests).
		cut map[uint64]bool
	}
}

// Cut drops all Raft traffic to and from the given peers until Heal, as a
// network partition would. It exists for fault tests.
func (t *Transport) Cut(peers ...uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.cut == nil {
		t.mu.cut = map[uint64]bool{}
	}
	for _, p := range peers {
		t.mu.cut[p] = true
	}
}

// Heal ends every Cut.
func (t *Transport) Heal() {
	t.mu.Lock()
	t.mu.cut = nil
	t.mu.Unlock()
}

// IsCut reports whether traffic with peer is being dropped.
func (t *Transport) IsCut(peer uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.cut[peer]
}

// New returns a Transport. clusterID and nodeID are read on every batch,
// since a node learns them only when it joins.
func New(h Handler, resolve Resolver, clusterID func() string, nodeID func() uint64, log *slog.Logger) *Transport {
	t := &Transport{handler: h, resolve: resolve, clusterID: clusterID, nodeID: nodeID, log: log}
	t.mu.peers = map[uint64]*peer{}
	t.mu.conns = map[string]*grpc.ClientConn{}
	return t
}

// DialOptions are the options used for every connection between nodes and
// from clients.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Reconnect quickly to a restarted peer: gRPC's default backoff grows
		// to two minutes, far longer than a node restart.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
	}
}

// Conn returns the shared connection to addr.
func (t *Transport) Conn(addr string) (*grpc.ClientConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return nil, fmt.Errorf("transport: closed")
	}
	if c, ok := t.mu.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, DialOptions()...)
	if err != nil {
		return nil, err
	}
	t.mu.conns[addr] = c
	return c, nil
}

// NodeConn returns the shared connection to node id.
func (t *Transport) NodeConn(id uint64) (*grpc.ClientConn, error) {
	addr, ok := t.resolve(id)
	if !ok {
		return nil, fmt.Errorf("transport: address of node %d unknown", id)
	}
	return t.Conn(addr)
}

// Send queues msgs for node to. It never blocks.
func (t *Transport) Send(to uint64, msgs []*vowdbpb.RaftMessage) {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return
	}
	if t.mu.cut[to] {
		t.mu.Unlock()
		return
	}
	p := t.mu.peers[to]
	if p == nil {
		p = &peer{t: t, id: to, queue: make(chan []*vowdbpb.RaftMessage, 1024), stop: make(chan struct{})}
		t.mu.peers[to] = p
		go p.run()
	}
	t.mu.Unlock()
	select {
	case p.queue <- msgs:
	default:
		t.dropped(to, msgs)
	}
}

func (t *Transport) dropped(to uint64, msgs []*vowdbpb.RaftMessage) {
	for _, m := range msgs {
		if isSnapshot(m) {
			t.handler.ReportSnapshot(m.RangeId, to, false)
		}
	}
	t.handler.ReportUnreachable(to)
}

func isSnapshot(m *vowdbpb.RaftMessage) bool { return m.Snapshot }

// Close stops every peer goroutine and closes connections.
func (t *Transport) Close() {
	t.mu.Lock()
	t.mu.closed = true
	peers := t.mu.peers
	conns := t.mu.conns
	t.mu.peers = map[uint64]*peer{}
	t.mu.conns = map[string]*grpc.ClientConn{}
	t.mu.Unlock()
	for _, p := range peers {
		close(p.stop)
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

type peer struct {
	t     *Transport
	id    uint64
	queue chan []*vowdbpb.RaftMessage
	stop  chan struct{}
}

func (p *peer) run() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		err := p.stream()
		if err == nil {
			return
		}
		p.t.log.Debug("raft stream to peer ended", "peer", p.id, "err", err)
		// Drop what queued while the peer was away; Raft retransmits.
		p.drain()
		select {
		case <-p.stop:
			return
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

func (p *peer) drain() {
	for {
		select {
		case msgs := <-p.queue:
			p.t.dropped(p.id, msgs)
		default:
			return
		}
	}
}

// stream runs one stream until it fails (error) or the peer stops (nil).
func (p *peer) stream() error {
	conn, err := p.t.NodeConn(p.id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := vowdbpb.NewRaftClient(conn).Stream(ctx)
	if err != nil {
		return err
	}
	for {
		var msgs []*vowdbpb.RaftMessage
		select {
		case <-p.stop:
			_, _ = st.CloseAndRecv()
			return nil
		case msgs = <-p.queue:
		}
	more:
		for len(msgs) < 4096 {
			select {
			case m := <-p.queue:
				msgs = append(msgs, m...)
			default:
				break more
			}
		}
		err := st.Send(&vowdbpb.RaftBatch{ClusterId: p.t.clusterID(), FromNodeId: p.t.nodeID(), Msgs: msgs})
		for _, m := range msgs {
			if isSnapshot(m) {
				p.t.handler.ReportSnapshot(m.RangeId, p.id, err == nil)
			}
		}
		if err != nil {
			p.t.handler.ReportUnreachable(p.id)
			if _, rerr := st.CloseAndRecv(); rerr != nil {
				return rerr
			}
			return err
		}
	}
}

// Server is the receiving side: the Raft gRPC service.
type Server struct {
	vowdbpb.UnimplementedRaftServer
	Handler   Handler
	ClusterID func() string
	// Transport, when set, filters inbound batches from cut peers.
	Transport *Transport
}

// Stream receives batches from one peer until it disconnects.
func (s *Server) Stream(st grpc.ClientStreamingServer[vowdbpb.RaftBatch, vowdbpb.RaftBatchAck]) error {
	for {
		b, err := st.Recv()
		if err != nil {
			return err
		}
		if cid := s.ClusterID(); cid == "" || b.ClusterId != cid {
			return status.Errorf(codes.FailedPrecondition, "transport: raft batch from node %d of cluster %q refused by a node of cluster %q", b.FromNodeId, b.ClusterId, cid)
		}
		if s.Transport != nil && s.Transport.IsCut(b.FromNodeId) {
			continue
		}
		s.Handler.Deliver(b.Msgs)
	}
}
