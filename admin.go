package vowdb

import (
	"context"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/transport"
)

// NodeInfo describes one node of the cluster.
type NodeInfo struct {
	ID       uint64    `json:"id"`
	Address  string    `json:"address"`
	HTTP     string    `json:"http_address"`
	Live     bool      `json:"live"`
	LastSeen time.Time `json:"last_seen"`
	Replicas int       `json:"replicas"`
	Leaders  int       `json:"leaders"`
}

// RangeInfo describes one range.
type RangeInfo struct {
	ID         uint64   `json:"id"`
	StartKey   []byte   `json:"start_key"`
	EndKey     []byte   `json:"end_key"` // empty: +infinity
	Generation uint64   `json:"generation"`
	Voters     []uint64 `json:"voters"`
	Learners   []uint64 `json:"learners"`
	Leader     uint64   `json:"leader"`
	Term       uint64   `json:"term"`
	Applied    uint64   `json:"applied_index"`
	Meta       bool     `json:"meta"`
}

// Init bootstraps a new cluster through the node at endpoint. It returns the
// new cluster id. On a node that already belongs to a cluster it changes
// nothing and returns an error saying so.
func Init(ctx context.Context, endpoint string) (string, error) {
	c, err := grpc.NewClient(endpoint, transport.DialOptions()...)
	if err != nil {
		return "", fmt.Errorf("%w: endpoint %q: %v", ErrInvalidArgument, endpoint, err)
	}
	defer c.Close()
	resp, err := vowdbpb.NewAdminClient(c).Init(ctx, &vowdbpb.InitRequest{})
	if status.Code(err) == codes.AlreadyExists {
		return "", fmt.Errorf("vowdb: %s", status.Convert(err).Message())
	}
	if err != nil {
		return "", fmt.Errorf("vowdb: init via %s: %w", endpoint, classify(err, false))
	}
	return resp.ClusterId, nil
}

// Nodes lists the cluster's nodes with their liveness.
func (db *DB) Nodes(ctx context.Context) ([]NodeInfo, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	var resp *vowdbpb.ListNodesResponse
	err := db.admin(ctx, func(ctx context.Context, c vowdbpb.AdminClient) (err error) {
		resp, err = c.ListNodes(ctx, &vowdbpb.ListNodesRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]NodeInfo, 0, len(resp.Nodes))
	for _, n := range resp.Nodes {
		ni := NodeInfo{ID: n.Node.NodeId, Address: n.Node.Address, HTTP: n.Node.HttpAddress, Live: n.Live, Replicas: int(n.Replicas), Leaders: int(n.Leaders)}
		if n.LastSeenUnixMs > 0 {
			ni.LastSeen = time.UnixMilli(n.LastSeenUnixMs)
		}
		out = append(out, ni)
	}
	return out, nil
}

func (db *DB) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, db.cfg.RequestTimeout)
}

// Ranges lists every range: descriptors from the meta range, and leader,
// term and applied index as reported by the nodes that host replicas.
func (db *DB) Ranges(ctx context.Context) ([]RangeInfo, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	var look *vowdbpb.LookupResponse
	err := db.admin(ctx, func(ctx context.Context, c vowdbpb.AdminClient) (err error) {
		look, err = c.Lookup(ctx, &vowdbpb.LookupRequest{Limit: 1000})
		return err
	})
	if err != nil {
		return nil, err
	}
	db.learn(look)
	byID := map[uint64]*RangeInfo{}
	put := func(d *vowdbpb.RangeDescriptor) *RangeInfo {
		ri := byID[d.RangeId]
		if ri == nil || ri.Generation < d.Generation {
			nri := RangeInfo{ID: d.RangeId, StartKey: d.StartKey, EndKey: d.EndKey, Generation: d.Generation, Meta: d.IsMeta}
			for _, r := range d.Replicas {
				if r.Learner {
					nri.Learners = append(nri.Learners, r.NodeId)
				} else {
					nri.Voters = append(nri.Voters, r.NodeId)
				}
			}
			if ri != nil {
				nri.Leader, nri.Term, nri.Applied = ri.Leader, ri.Term, ri.Applied
			}
			ri = &nri
			byID[d.RangeId] = ri
		}
		return ri
	}
	for _, rt := range look.Routes {
		put(rt.Desc)
	}
	for _, nd := range look.Nodes {
		c, err := db.readyConn(ctx, nd.Address)
		if err != nil {
			continue
		}
		resp, err := vowdbpb.NewAdminClient(c).ListRanges(ctx, &vowdbpb.ListRangesRequest{})
		if err != nil {
			continue
		}
		for _, rs := range resp.Ranges {
			ri := put(rs.Desc)
			if rs.LeaderNodeId != 0 && rs.Term >= ri.Term {
				ri.Leader, ri.Term = rs.LeaderNodeId, rs.Term
			}
			if rs.LeaderNodeId == nd.NodeId {
				ri.Applied = rs.AppliedIndex
			}
		}
	}
	out := make([]RangeInfo, 0, len(byID))
	for _, ri := range byID {
		out = append(out, *ri)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Meta != out[j].Meta {
			return out[i].Meta
		}
		return string(out[i].StartKey) < string(out[j].StartKey)
	})
	return out, nil
}

// Split splits the range holding key into two at key. Both halves keep the
// same replicas; traffic continues while the split applies.
func (db *DB) Split(ctx context.Context, key []byte) (left, right RangeInfo, err error) {
	if err := checkKey(key); err != nil {
		return left, right, err
	}
	var resp *vowdbpb.SplitResponse
	err = db.send(ctx, key, true, func(ctx context.Context, c *grpc.ClientConn) (err error) {
		resp, err = vowdbpb.NewAdminClient(c).Split(ctx, &vowdbpb.SplitRequest{SplitKey: key})
		return err
	})
	if err != nil {
		return left, right, err
	}
	db.mu.Lock()
	db.insertRouteLocked(&route{desc: resp.Left})
	db.insertRouteLocked(&route{desc: resp.Right})
	db.mu.Unlock()
	return rangeInfo(resp.Left), rangeInfo(resp.Right), nil
}

func rangeInfo(d *vowdbpb.RangeDescriptor) RangeInfo {
	ri := RangeInfo{ID: d.RangeId, StartKey: d.StartKey, EndKey: d.EndKey, Generation: d.Generation, Meta: d.IsMeta}
	for _, r := range d.Replicas {
		if r.Learner {
			ri.Learners = append(ri.Learners, r.NodeId)
		} else {
			ri.Voters = append(ri.Voters, r.NodeId)
		}
	}
	return ri
}
