package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
)

// Node is one running vowdb node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	eng     *storage.Engine
	metrics *metrics.Node
	trans   *transport.Transport
	health  *health.Server

	grpcSrv  *grpc.Server
	lis      net.Listener
	httpSrv  *http.Server
	httpLis  net.Listener
	addr     string // advertised gRPC address
	httpAddr string

	// ident is set once the node is part of a cluster.
	ident atomic.Pointer[vowdbpb.StoreIdent]
	sched atomic.Pointer[multiraft.Scheduler]
	txns  *txnLayer
	// initMu serializes Init and Join handling on this node.
	initMu sync.Mutex

	mu struct {
		sync.Mutex
		nodes      map[uint64]*vowdbpb.NodeDescriptor
		statuses   []*vowdbpb.NodeStatus // latest view of the cluster's nodes
		lastSeen   map[uint64]time.Time  // liveness, kept by the meta leader
		counts     map[uint64][2]int32   // replicas, leaders per node, kept by the meta leader
		lastHB     time.Time             // last successful heartbeat
		metaSynced map[uint64]uint64     // range id -> generation published to meta
	}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start opens the store, binds the listeners and starts serving. A node with
// no cluster identity waits for Init or joins through cfg.Join.
func Start(cfg Config) (*Node, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	eng, err := storage.Open(storage.Options{Dir: cfg.DataDir, FS: cfg.FS})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, eng: eng, metrics: metrics.New()}
	n.mu.nodes = map[uint64]*vowdbpb.NodeDescriptor{}
	n.mu.lastSeen = map[uint64]time.Time{}
	n.mu.counts = map[uint64][2]int32{}
	n.mu.metaSynced = map[uint64]uint64{}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.txns = newTxnLayer(n)
	if err := n.start(); err != nil {
		n.cancel()
		n.closeAll()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	cfg := n.cfg
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", cfg.ListenAddr, err)
	}
	n.lis = lis
	n.addr = cfg.AdvertiseAddr
	if n.addr == "" {
		n.addr = lis.Addr().String()
	}
	n.trans = transport.New(schedHandler{n}, n.resolve, n.clusterID, n.nodeID, n.log)
	if v, err := n.eng.Get(keys.StoreIdentKey); err == nil {
		var id vowdbpb.StoreIdent
		if err := proto.Unmarshal(v, &id); err != nil {
			return fmt.Errorf("server: store ident in %s is corrupt: %w", cfg.DataDir, err)
		}
		if err := n.checkJoinTargets(&id); err != nil {
			return err
		}
		n.loadNodeCache()
		if err := n.becomeMember(&id, nil); err != nil {
			return err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}

	n.grpcSrv = grpc.NewServer(grpc.MaxRecvMsgSize(transport.MaxMessageBytes), grpc.MaxSendMsgSize(transport.MaxMessageBytes),
		grpc.InitialWindowSize(4<<20), grpc.InitialConnWindowSize(16<<20),
		// Accept the keepalive pings clients and peers send (every 10 s,
		// also on idle connections); gRPC's default policy would close
		// such connections with "too_many_pings".
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	vowdbpb.RegisterKVServer(n.grpcSrv, &kvService{n: n})
	vowdbpb.RegisterAdminServer(n.grpcSrv, &adminService{n: n})
	vowdbpb.RegisterTxnServer(n.grpcSrv, &txnService{n: n})
	vowdbpb.RegisterRaftServer(n.grpcSrv, &transport.Server{Handler: schedHandler{n}, ClusterID: n.clusterID, Transport: n.trans})
	n.health = health.NewServer()
	healthpb.RegisterHealthServer(n.grpcSrv, n.health)
	n.goLoop(func() { _ = n.grpcSrv.Serve(lis) })

	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("server: listen on %s (http): %w", cfg.HTTPAddr, err)
		}
		n.httpLis = hl
		n.httpAddr = hl.Addr().String()
		n.httpSrv = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		n.goLoop(func() { _ = n.httpSrv.Serve(hl) })
	}
	if n.ident.Load() == nil && len(cfg.Join) > 0 {
		n.goLoop(n.joinLoop)
	}
	n.goLoop(n.heartbeatLoop)
	n.goLoop(n.replicateLoop)
	n.goLoop(n.txns.loop)
	n.log.Info("node started", "addr", n.addr, "http", n.httpAddr, "data_dir", cfg.DataDir, "node_id", n.nodeID(), "cluster_id", n.clusterID())
	return nil
}

func (n *Node) goLoop(fn func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); fn() }()
}

// Addr is the advertised gRPC address.
func (n *Node) Addr() string { return n.addr }

// HTTPAddr is the bound HTTP address ("" when disabled).
func (n *Node) HTTPAddr() string { return n.httpAddr }

// NodeID is 0 until the node joined a cluster.
func (n *Node) NodeID() uint64 { return n.nodeID() }

// ClusterID is "" until the node joined a cluster.
func (n *Node) ClusterID() string { return n.clusterID() }

func (n *Node) nodeID() uint64 {
	if id := n.ident.Load(); id != nil {
		return id.NodeId
	}
	return 0
}

func (n *Node) clusterID() string {
	if id := n.ident.Load(); id != nil {
		return id.ClusterId
	}
	return ""
}

type joinTargetIdent struct {
	addr  string
	ident *vowdbpb.IdentResponse
}

// joinTargetIdents asks each reachable --join address (other than this
// node) for its identity and returns those that belong to a cluster.
func (n *Node) joinTargetIdents() []joinTargetIdent {
	var out []joinTargetIdent
	for _, addr := range n.cfg.Join {
		if addr == n.addr || addr == n.cfg.ListenAddr {
			continue
		}
		conn, err := n.trans.Conn(addr)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		resp, err := vowdbpb.NewAdminClient(conn).Ident(ctx, &vowdbpb.IdentRequest{})
		cancel()
		if err == nil && resp.ClusterId != "" {
			out = append(out, joinTargetIdent{addr, resp})
		}
	}
	return out
}

// checkJoinTargets refuses to start a node whose store belongs to another
// cluster than the nodes it was told to join.
func (n *Node) checkJoinTargets(id *vowdbpb.StoreIdent) error {
	for _, t := range n.joinTargetIdents() {
		addr, resp := t.addr, t.ident
		if resp.ClusterId != id.ClusterId {
			return fmt.Errorf("server: data dir %s belongs to cluster %s, but --join address %s is a node of cluster %s; use an empty data dir to join that cluster",
				n.cfg.DataDir, id.ClusterId, addr, resp.ClusterId)
		}
	}
	return nil
}

// becomeMember persists id (when new) and starts the Raft scheduler.
// bootstrap, when set, holds the ranges of a brand new cluster.
func (n *Node) becomeMember(id *vowdbpb.StoreIdent, bootstrap func(*multiraft.Scheduler) error) error {
	mcfg := multiraft.Config{
		NodeID:       id.NodeId,
		TickInterval: n.cfg.TickInterval,
		Logger:       n.log,
		Metrics:      n.metrics,
		Replica: replica.Config{
			NodeID: id.NodeId, ElectionTicks: n.cfg.ElectionTicks, HeartbeatTicks: n.cfg.HeartbeatTicks,
			LogKeepEntries:       n.cfg.LogKeepEntries,
			ProposalTimeoutTicks: int(n.cfg.RequestTimeout/n.cfg.TickInterval) + 1,
			Logger:               n.log, Metrics: n.metrics,
		},
	}
	s, err := multiraft.New(mcfg, n.eng, n.trans)
	if err != nil {
		return err
	}
	if bootstrap != nil {
		if err := bootstrap(s); err != nil {
			return err
		}
	}
	if err := n.txns.gw.SetNode(id.NodeId); err != nil {
		return err
	}
	n.ident.Store(id)
	s.Start()
	n.sched.Store(s)
	n.mu.Lock()
	if _, ok := n.mu.nodes[id.NodeId]; !ok || n.mu.nodes[id.NodeId].Address != n.addr {
		n.mu.nodes[id.NodeId] = &vowdbpb.NodeDescriptor{NodeId: id.NodeId, Address: n.addr, HttpAddress: n.httpAddr}
	}
	n.mu.Unlock()
	return nil
}

// initCluster bootstraps a new cluster with this node as node 1.
func (n *Node) initCluster() (*vowdbpb.StoreIdent, error) {
	n.initMu.Lock()
	defer n.initMu.Unlock()
	if id := n.ident.Load(); id != nil {
		return id, errAlreadyInitialized
	}
	// A node told to join others must not found a second cluster when one
	// of them already belongs to one.
	if ts := n.joinTargetIdents(); len(ts) > 0 {
		t := ts[0]
		return &vowdbpb.StoreIdent{ClusterId: t.ident.ClusterId, NodeId: t.ident.NodeId}, fmt.Errorf("%w: --join address %s (node %d) belongs to cluster %s; this node joins it on its own",
			errAlreadyInitialized, t.addr, t.ident.NodeId, t.ident.ClusterId)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	id := &vowdbpb.StoreIdent{ClusterId: hex.EncodeToString(raw[:]), NodeId: 1}
	self := &vowdbpb.NodeDescriptor{NodeId: 1, Address: n.addr, HttpAddress: n.httpAddr}
	meta := &vowdbpb.RangeDescriptor{RangeId: replica.MetaRangeID, IsMeta: true, Generation: 1,
		Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}}
	first := &vowdbpb.RangeDescriptor{RangeId: replica.FirstUserRangeID, Generation: 1,
		Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}}
	b := n.eng.NewBatch()
	put := func(k []byte, m proto.Message) {
		v, _ := proto.Marshal(m)
		_ = b.Set(k, v, nil)
	}
	put(keys.MetaNodeKey(1), self)
	put(keys.MetaDescriptorKey(nil), first)
	_ = b.Set(keys.MetaCounterKey("node"), u64(1), nil)
	_ = b.Set(keys.MetaCounterKey("range"), u64(replica.FirstUserRangeID), nil)
	put(keys.StoreIdentKey, id)
	if err := n.eng.Commit(b, true); err != nil {
		return nil, err
	}
	err := n.becomeMember(id, func(s *multiraft.Scheduler) error { return s.Bootstrap(meta, first) })
	if err != nil {
		return nil, err
	}
	n.log.Info("cluster initialized", "cluster_id", id.ClusterId, "node_id", 1)
	return id, nil
}

var errAlreadyInitialized = errors.New("server: cluster already initialized")

// joinLoop asks the join addresses for a node id until one answers.
func (n *Node) joinLoop() {
	for n.ident.Load() == nil {
		for _, addr := range n.cfg.Join {
			if n.ident.Load() != nil {
				return
			}
			if addr == n.addr {
				continue
			}
			if err := n.tryJoin(addr); err != nil {
				n.log.Debug("join attempt failed", "addr", addr, "err", err)
				continue
			}
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (n *Node) tryJoin(addr string) error {
	conn, err := n.trans.Conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	resp, err := vowdbpb.NewAdminClient(conn).Join(ctx, &vowdbpb.JoinRequest{Address: n.addr, HttpAddress: n.httpAddr})
	if err != nil {
		return err
	}
	n.initMu.Lock()
	defer n.initMu.Unlock()
	if n.ident.Load() != nil {
		return nil
	}
	id := &vowdbpb.StoreIdent{ClusterId: resp.ClusterId, NodeId: resp.NodeId}
	v, _ := proto.Marshal(id)
	b := n.eng.NewBatch()
	_ = b.Set(keys.StoreIdentKey, v, nil)
	if err := n.eng.Commit(b, true); err != nil {
		return err
	}
	n.updateNodes(resp.Nodes)
	if err := n.becomeMember(id, nil); err != nil {
		return err
	}
	n.log.Info("joined cluster", "cluster_id", id.ClusterId, "node_id", id.NodeId, "via", addr)
	return nil
}

func (n *Node) updateNodes(nodes []*vowdbpb.NodeDescriptor) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, nd := range nodes {
		n.mu.nodes[nd.NodeId] = nd
	}
}

// resolve maps a node id to its address.
func (n *Node) resolve(id uint64) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd, ok := n.mu.nodes[id]
	if !ok {
		return "", false
	}
	return nd.Address, true
}

func (n *Node) knownNodes() []*vowdbpb.NodeDescriptor {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*vowdbpb.NodeDescriptor, 0, len(n.mu.nodes))
	for _, nd := range n.mu.nodes {
		out = append(out, nd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeId < out[j].NodeId })
	return out
}

var nodeCacheKey = []byte("snodes")

func (n *Node) saveNodeCache() {
	list := &vowdbpb.LookupResponse{Nodes: n.knownNodes()}
	v, _ := proto.Marshal(list)
	b := n.eng.NewBatch()
	_ = b.Set(nodeCacheKey, v, nil)
	_ = n.eng.Commit(b, false)
}

func (n *Node) loadNodeCache() {
	v, err := n.eng.Get(nodeCacheKey)
	if err != nil {
		return
	}
	var list vowdbpb.LookupResponse
	if proto.Unmarshal(v, &list) == nil {
		n.updateNodes(list.Nodes)
	}
}

// Ready reports whether the node is a cluster member that recently reached
// the meta range leader.
func (n *Node) Ready() bool {
	if n.ident.Load() == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return time.Since(n.mu.lastHB) < 3*n.cfg.HeartbeatInterval+time.Second
}

func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			if n.ident.Load() == nil {
				_, _ = w.Write([]byte("not ready: node has not joined a cluster (run vowdb init, or check --join)\n"))
			} else {
				_, _ = w.Write([]byte("not ready: meta range unreachable\n"))
			}
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	return mux
}

// Stop shuts the node down. With drain set it first hands its range
// leaderships to other replicas (bounded by ctx) so clients fail over without
// waiting for an election timeout.
func (n *Node) Stop(ctx context.Context, drain bool) {
	if drain {
		n.health.Shutdown()
		n.transferLeaderships(ctx)
	}
	n.cancel()
	if n.grpcSrv != nil {
		done := make(chan struct{})
		go func() { n.grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
			// Peers keep their Raft streams open; do not wait for them.
			n.grpcSrv.Stop()
		}
	}
	if n.httpSrv != nil {
		_ = n.httpSrv.Close()
	}
	n.wg.Wait()
	n.closeAll()
}

// Kill stops the node abruptly, as close to a crash as a process can get
// without exiting: no leadership transfer, connections cut at once.
func (n *Node) Kill() {
	n.cancel()
	if n.grpcSrv != nil {
		n.grpcSrv.Stop()
	}
	if n.httpSrv != nil {
		_ = n.httpSrv.Close()
	}
	n.wg.Wait()
	n.closeAll()
}

func (n *Node) closeAll() {
	if s := n.sched.Load(); s != nil {
		s.Stop()
	}
	if n.trans != nil {
		n.trans.Close()
	}
	if n.lis != nil {
		_ = n.lis.Close()
	}
	if n.httpLis != nil {
		_ = n.httpLis.Close()
	}
	_ = n.eng.Close()
}

// Drain hands every range leadership of this node to another voter and
// waits until it leads nothing or ctx ends; it reports how many leaderships
// it still holds.
func (n *Node) Drain(ctx context.Context) int {
	n.transferLeaderships(ctx)
	return len(n.LeaderAppliedIndexes())
}

func (n *Node) transferLeaderships(ctx context.Context) {
	s := n.sched.Load()
	if s == nil {
		return
	}
	for ctx.Err() == nil {
		led := 0
		_ = s.Do(ctx, func() {
			for _, r := range s.Replicas() {
				if !r.IsLeader() {
					continue
				}
				st := r.RaftStatus()
				var best, bestMatch uint64
				for id, pr := range st.Progress {
					if id != n.nodeID() && !pr.IsLearner && pr.Match >= bestMatch {
						best, bestMatch = id, pr.Match
					}
				}
				if best != 0 { // a range with no other voter stays here
					led++
					r.TransferLeader(best)
				}
			}
		})
		if led == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// schedHandler forwards transport events to the scheduler once it exists.
type schedHandler struct{ n *Node }

func (h schedHandler) Deliver(msgs []*vowdbpb.RaftMessage) {
	if s := h.n.sched.Load(); s != nil {
		s.Deliver(msgs)
	}
}

func (h schedHandler) ReportSnapshot(rangeID, to uint64, ok bool) {
	if s := h.n.sched.Load(); s != nil {
		s.ReportSnapshot(rangeID, to, ok)
	}
}

func (h schedHandler) ReportUnreachable(to uint64) {
	if s := h.n.sched.Load(); s != nil {
		s.ReportUnreachable(to)
	}
}

func u64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// SnapshotsApplied reports how many range snapshots this node installed
// (for tests and the demo).
func (n *Node) SnapshotsApplied() float64 {
	mfs, err := n.metrics.Registry.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "vowdb_raft_snapshots_applied_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// AppliedIndexes returns the applied index of every local replica.
func (n *Node) AppliedIndexes() map[uint64]uint64 {
	out := map[uint64]uint64{}
	if s := n.sched.Load(); s != nil {
		for _, r := range s.Replicas() {
			out[r.RangeID] = r.Status().Applied
		}
	}
	return out
}

// LeaderAppliedIndexes returns the applied index of every range this node
// leads.
func (n *Node) LeaderAppliedIndexes() map[uint64]uint64 {
	out := map[uint64]uint64{}
	if s := n.sched.Load(); s != nil {
		for _, r := range s.Replicas() {
			if st := r.Status(); st.LeaderID == n.nodeID() {
				out[r.RangeID] = st.Applied
			}
		}
	}
	return out
}

// CutRaft drops Raft traffic between this node and the given nodes (a
// partition, for fault tests); HealRaft restores it.
func (n *Node) CutRaft(nodes ...uint64) { n.trans.Cut(nodes...) }

// HealRaft ends every CutRaft.
func (n *Node) HealRaft() { n.trans.Heal() }

// TransferLeadership asks the local leader of rangeID to hand leadership
// to node to, and waits until it did or ctx ends. For tests and operators.
func (n *Node) TransferLeadership(ctx context.Context, rangeID, to uint64) error {
	s := n.sched.Load()
	if s == nil {
		return errors.New("server: node has not joined a cluster")
	}
	for {
		var leader uint64
		if err := s.Do(ctx, func() {
			if r := s.ReplicaByID(rangeID); r != nil {
				leader = r.Status().LeaderID
				if r.IsLeader() && leader != to {
					r.TransferLeader(to)
				}
			}
		}); err != nil {
			return err
		}
		if leader == to {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("range %d: leadership not moved to node %d: %w", rangeID, to, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
