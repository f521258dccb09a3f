package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/transport"
)

// adminService serves cluster membership, placement and routing requests.
type adminService struct {
	vowdbpb.UnimplementedAdminServer
	n *Node
}

func (a *adminService) Init(ctx context.Context, _ *vowdbpb.InitRequest) (*vowdbpb.InitResponse, error) {
	id, err := a.n.initCluster()
	if errors.Is(err, errAlreadyInitialized) {
		if err != errAlreadyInitialized {
			return nil, status.Errorf(codes.AlreadyExists, "%s; nothing changed", strings.TrimPrefix(err.Error(), "server: "))
		}
		return nil, status.Errorf(codes.AlreadyExists, "cluster already initialized (cluster %s, this is node %d); nothing changed", id.ClusterId, id.NodeId)
	}
	if err != nil {
		return nil, err
	}
	return &vowdbpb.InitResponse{ClusterId: id.ClusterId, NodeId: id.NodeId}, nil
}

func (a *adminService) Ident(context.Context, *vowdbpb.IdentRequest) (*vowdbpb.IdentResponse, error) {
	return &vowdbpb.IdentResponse{ClusterId: a.n.clusterID(), NodeId: a.n.nodeID()}, nil
}

func (a *adminService) Join(ctx context.Context, req *vowdbpb.JoinRequest) (*vowdbpb.JoinResponse, error) {
	if req.Address == "" {
		return nil, transport.Invalid("join: the joining node must give its address")
	}
	if a.n.ident.Load() == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet (run vowdb init)", a.n.addr)
	}
	resp, err := a.n.proposeMeta(ctx, &vowdbpb.Command{Op: &vowdbpb.Command_AllocNode{AllocNode: &vowdbpb.AllocNodeOp{Address: req.Address, HttpAddress: req.HttpAddress}}})
	if err != nil {
		return nil, err
	}
	nd := &vowdbpb.NodeDescriptor{NodeId: resp.NodeId, Address: req.Address, HttpAddress: req.HttpAddress}
	a.n.updateNodes([]*vowdbpb.NodeDescriptor{nd})
	a.n.log.Info("node joined", "node_id", nd.NodeId, "addr", nd.Address)
	return &vowdbpb.JoinResponse{ClusterId: a.n.clusterID(), NodeId: resp.NodeId, Nodes: a.n.knownNodes()}, nil
}

func (a *adminService) MetaCommand(ctx context.Context, req *vowdbpb.MetaCommandRequest) (*vowdbpb.MetaCommandResponse, error) {
	s, r, err := a.n.localMetaLeader()
	if err != nil {
		return nil, err
	}
	if req.Cmd == nil {
		return nil, transport.Invalid("meta command is empty")
	}
	res, err := a.n.proposeTo(ctx, s, r, req.Cmd)
	if err != nil {
		return nil, err
	}
	return &vowdbpb.MetaCommandResponse{NodeId: res.NodeID, RangeId: res.RangeID}, nil
}

func (a *adminService) Lookup(ctx context.Context, req *vowdbpb.LookupRequest) (*vowdbpb.LookupResponse, error) {
	if !req.LocalOnly {
		var out *vowdbpb.LookupResponse
		err := a.n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
			r := proto.Clone(req).(*vowdbpb.LookupRequest)
			r.LocalOnly = true
			resp, err := c.Lookup(ctx, r)
			out = resp
			return err
		})
		return out, err
	}
	if _, _, err := a.n.localMetaLeader(); err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	descs, err := a.n.metaLookup(req.Key, limit)
	if err != nil {
		return nil, err
	}
	resp := &vowdbpb.LookupResponse{}
	s := a.n.sched.Load()
	for _, d := range descs {
		rt := &vowdbpb.RangeRoute{Desc: d}
		if r := s.ReplicaByID(d.RangeId); r != nil {
			rt.LeaderNodeId = r.Status().LeaderID
		}
		resp.Routes = append(resp.Routes, rt)
	}
	if resp.Nodes, err = a.n.metaNodes(); err != nil {
		return nil, err
	}
	return resp, nil
}

func (a *adminService) ListRanges(context.Context, *vowdbpb.ListRangesRequest) (*vowdbpb.ListRangesResponse, error) {
	s := a.n.sched.Load()
	if s == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", a.n.addr)
	}
	resp := &vowdbpb.ListRangesResponse{}
	for _, r := range s.Replicas() {
		st := r.Status()
		if st.Desc == nil {
			continue
		}
		resp.Ranges = append(resp.Ranges, &vowdbpb.RangeStatus{Desc: st.Desc, LeaderNodeId: st.LeaderID, Term: st.Term, CommitIndex: st.Commit, AppliedIndex: st.Applied})
	}
	return resp, nil
}

func (a *adminService) ListNodes(ctx context.Context, req *vowdbpb.ListNodesRequest) (*vowdbpb.ListNodesResponse, error) {
	if !req.LocalOnly {
		var out *vowdbpb.ListNodesResponse
		err := a.n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
			resp, err := c.ListNodes(ctx, &vowdbpb.ListNodesRequest{LocalOnly: true})
			out = resp
			return err
		})
		return out, err
	}
	if _, _, err := a.n.localMetaLeader(); err != nil {
		return nil, err
	}
	nodes, err := a.n.nodeStatuses()
	if err != nil {
		return nil, err
	}
	return &vowdbpb.ListNodesResponse{Nodes: nodes}, nil
}

func (a *adminService) Heartbeat(ctx context.Context, req *vowdbpb.HeartbeatRequest) (*vowdbpb.HeartbeatResponse, error) {
	if cid := a.n.clusterID(); req.ClusterId != "" && cid != "" && req.ClusterId != cid {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_CLUSTER_MISMATCH},
			"heartbeat from node %d of cluster %s refused by a node of cluster %s", req.Node.GetNodeId(), req.ClusterId, cid)
	}
	if !req.LocalOnly {
		var out *vowdbpb.HeartbeatResponse
		err := a.n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
			r := proto.Clone(req).(*vowdbpb.HeartbeatRequest)
			r.LocalOnly = true
			resp, err := c.Heartbeat(ctx, r)
			out = resp
			return err
		})
		return out, err
	}
	if _, _, err := a.n.localMetaLeader(); err != nil {
		return nil, err
	}
	if req.Node != nil {
		a.n.mu.Lock()
		a.n.mu.lastSeen[req.Node.NodeId] = time.Now()
		a.n.mu.counts[req.Node.NodeId] = [2]int32{req.Replicas, req.Leaders}
		a.n.mu.Unlock()
	}
	nodes, err := a.n.nodeStatuses()
	if err != nil {
		return nil, err
	}
	return &vowdbpb.HeartbeatResponse{Nodes: nodes}, nil
}

func (a *adminService) Split(ctx context.Context, req *vowdbpb.SplitRequest) (*vowdbpb.SplitResponse, error) {
	if err := keys.ValidateKey(req.SplitKey, a.n.cfg.MaxKeyBytes); err != nil {
		return nil, transport.Invalid("split: %v", err)
	}
	s, r, err := a.n.leaderFor(req.SplitKey)
	if err != nil {
		return nil, err
	}
	if d := r.Status().Desc; string(d.StartKey) == string(req.SplitKey) {
		return nil, transport.Invalid("split: range %d already starts at %q", d.RangeId, req.SplitKey)
	}
	alloc, err := a.n.proposeMeta(ctx, &vowdbpb.Command{Op: &vowdbpb.Command_AllocRangeId{AllocRangeId: &vowdbpb.AllocRangeIDOp{}}})
	if err != nil {
		return nil, err
	}
	res, err := a.n.proposeTo(ctx, s, r, &vowdbpb.Command{Op: &vowdbpb.Command_Split{Split: &vowdbpb.SplitOp{SplitKey: req.SplitKey, NewRangeId: alloc.RangeId}}})
	if err != nil {
		return nil, err
	}
	// Publish both halves now; the replicate loop repairs the index later if
	// this fails.
	for _, d := range []*vowdbpb.RangeDescriptor{res.Left, res.Right} {
		if err := a.n.publishDesc(ctx, d); err != nil {
			a.n.log.Warn("publishing split descriptor failed; will retry", "range", d.RangeId, "err", err)
		}
	}
	return &vowdbpb.SplitResponse{Left: res.Left, Right: res.Right}, nil
}

// publishDesc records d in the meta range and remembers the generation.
func (n *Node) publishDesc(ctx context.Context, d *vowdbpb.RangeDescriptor) error {
	_, err := n.proposeMeta(ctx, &vowdbpb.Command{Op: &vowdbpb.Command_PutDescriptor{PutDescriptor: &vowdbpb.PutDescriptorOp{Desc: d}}})
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.mu.metaSynced[d.RangeId] < d.Generation {
		n.mu.metaSynced[d.RangeId] = d.Generation
	}
	n.mu.Unlock()
	return nil
}
