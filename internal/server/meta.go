package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
)

// localMetaLeader returns the scheduler and meta replica if this node leads
// the meta range.
func (n *Node) localMetaLeader() (*multiraft.Scheduler, *replica.Replica, error) {
	s := n.sched.Load()
	if s == nil {
		return nil, nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", n.addr)
	}
	r := s.ReplicaByID(replica.MetaRangeID)
	if r == nil || r.Status().Desc == nil {
		return nil, nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_RANGE_NOT_FOUND}, "node %d holds no meta replica", n.nodeID())
	}
	if st := r.Status(); st.LeaderID != n.nodeID() {
		return nil, nil, n.notLeader(st)
	}
	return s, r, nil
}

// withMeta calls fn against the meta range leader, wherever it is: it tries
// the local replica's idea of the leader, then follows NOT_LEADER hints and
// walks the known nodes until ctx ends.
func (n *Node) withMeta(ctx context.Context, fn func(ctx context.Context, c vowdbpb.AdminClient) error) error {
	return n.withMetaConn(ctx, func(ctx context.Context, c *grpc.ClientConn) error {
		return fn(ctx, vowdbpb.NewAdminClient(c))
	})
}

// withMetaConn is withMeta for any service the meta leader serves.
func (n *Node) withMetaConn(ctx context.Context, fn func(ctx context.Context, c *grpc.ClientConn) error) error {
	if n.ident.Load() == nil {
		return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", n.addr)
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		var candidates []uint64
		if s := n.sched.Load(); s != nil {
			if r := s.ReplicaByID(replica.MetaRangeID); r != nil && r.Status().LeaderID != 0 {
				candidates = append(candidates, r.Status().LeaderID)
			}
		}
		for _, nd := range n.knownNodes() {
			candidates = append(candidates, nd.NodeId)
		}
		// Join addresses come last: they find the cluster when this node
		// knows no peer yet (for example after losing its node cache).
		const joinBase = 1 << 62
		for i := range n.cfg.Join {
			candidates = append(candidates, joinBase+uint64(i))
		}
		tried := map[uint64]bool{}
		for len(candidates) > 0 {
			id := candidates[0]
			candidates = candidates[1:]
			if tried[id] {
				continue
			}
			tried[id] = true
			var conn *grpc.ClientConn
			var err error
			if id >= joinBase {
				conn, err = n.trans.Conn(n.cfg.Join[id-joinBase])
			} else {
				conn, err = n.trans.NodeConn(id)
			}
			if err != nil {
				lastErr = err
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err = fn(cctx, conn)
			cancel()
			if err == nil {
				return nil
			}
			lastErr = err
			n.log.Debug("meta call failed", "target", id, "err", err)
			if d, ok := transport.Detail(err); ok {
				switch d.Code {
				case vowdbpb.ErrorDetail_NOT_LEADER:
					if d.LeaderNodeId != 0 && !tried[d.LeaderNodeId] {
						candidates = append([]uint64{d.LeaderNodeId}, candidates...)
					}
					continue
				case vowdbpb.ErrorDetail_RANGE_NOT_FOUND, vowdbpb.ErrorDetail_NOT_INITIALIZED:
					continue
				case vowdbpb.ErrorDetail_AMBIGUOUS, vowdbpb.ErrorDetail_INVALID:
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return fmt.Errorf("meta range unreachable: %w", lastErr)
		case <-time.After(time.Duration(min(attempt+1, 5)) * 50 * time.Millisecond):
		}
	}
}

// proposeMeta proposes cmd to the meta range through its leader.
func (n *Node) proposeMeta(ctx context.Context, cmd *vowdbpb.Command) (*vowdbpb.MetaCommandResponse, error) {
	var out *vowdbpb.MetaCommandResponse
	err := n.withMeta(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
		resp, err := c.MetaCommand(ctx, &vowdbpb.MetaCommandRequest{Cmd: cmd})
		out = resp
		return err
	})
	return out, err
}

// metaLookup reads descriptors from the local meta replica, starting with
// the range that holds key.
func (n *Node) metaLookup(key []byte, limit int) ([]*vowdbpb.RangeDescriptor, error) {
	prefix := keys.MetaDescriptorPrefix()
	start := prefix
	if k, _, err := n.eng.SeekLE(prefix, keys.MetaDescriptorKey(key)); err == nil {
		start = k
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	var out []*vowdbpb.RangeDescriptor
	var derr error
	err := n.eng.Scan(start, keys.PrefixEnd(prefix), func(_, v []byte) bool {
		d := &vowdbpb.RangeDescriptor{}
		if derr = proto.Unmarshal(v, d); derr != nil {
			return false
		}
		out = append(out, d)
		return len(out) < limit
	})
	if derr != nil {
		return nil, derr
	}
	return out, err
}

// metaNodes reads the node records from the local meta replica.
func (n *Node) metaNodes() ([]*vowdbpb.NodeDescriptor, error) {
	var out []*vowdbpb.NodeDescriptor
	var derr error
	p := keys.MetaNodePrefix()
	err := n.eng.Scan(p, keys.PrefixEnd(p), func(_, v []byte) bool {
		nd := &vowdbpb.NodeDescriptor{}
		if derr = proto.Unmarshal(v, nd); derr != nil {
			return false
		}
		out = append(out, nd)
		return true
	})
	if derr != nil {
		return nil, derr
	}
	return out, err
}

// nodeStatuses is the meta leader's view: node records plus liveness.
func (n *Node) nodeStatuses() ([]*vowdbpb.NodeStatus, error) {
	nodes, err := n.metaNodes()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	window := 4*n.cfg.HeartbeatInterval + time.Second
	out := make([]*vowdbpb.NodeStatus, 0, len(nodes))
	for _, nd := range nodes {
		seen := n.mu.lastSeen[nd.NodeId]
		st := &vowdbpb.NodeStatus{Node: nd, Live: !seen.IsZero() && time.Since(seen) < window}
		if !seen.IsZero() {
			st.LastSeenUnixMs = seen.UnixMilli()
		}
		c := n.mu.counts[nd.NodeId]
		st.Replicas, st.Leaders = c[0], c[1]
		out = append(out, st)
	}
	return out, nil
}
