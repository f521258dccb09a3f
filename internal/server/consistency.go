package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
)

// Consistency checks (vowdb range check): the range's leader proposes a
// ComputeChecksumOp; every replica computes the checksum of the range's
// state when it applies that entry (package replica, checksum.go); the
// leader then asks each replica's node for its checksum at that index.

// consistencyWait bounds how long a node waits for its replica to apply the
// checksum command before it answers that the replica lags.
const consistencyWait = 5 * time.Second

// CheckConsistency runs a consistency check of one range. Any node serves
// it: it finds the range's leader and has it run the check (at_leader).
func (a *adminService) CheckConsistency(ctx context.Context, req *vowdbpb.CheckConsistencyRequest) (*vowdbpb.CheckConsistencyResponse, error) {
	if req.RangeId == 0 {
		return nil, transport.Invalid("check: range id 0 is not valid")
	}
	if a.n.ident.Load() == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", a.n.addr)
	}
	if req.AtLeader {
		return a.n.checkConsistencyHere(ctx, req.RangeId)
	}
	return a.n.checkConsistency(ctx, req.RangeId)
}

// RangeChecksum answers with this node's checksum of a range at an index.
func (a *adminService) RangeChecksum(ctx context.Context, req *vowdbpb.RangeChecksumRequest) (*vowdbpb.RangeChecksumResponse, error) {
	return a.n.localChecksum(ctx, req.RangeId, req.Index)
}

// checkConsistency sends the check to the leader of rangeID, following
// leader hints (and, with none, trying the known nodes in turn) until one
// runs it or ctx ends.
func (n *Node) checkConsistency(ctx context.Context, rangeID uint64) (*vowdbpb.CheckConsistencyResponse, error) {
	var lastErr error
	var hint uint64
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, status.Errorf(codes.Unavailable, "check range %d: no leader ran the check: %v", rangeID, lastErr)
			case <-time.After(time.Duration(min(attempt, 5)) * 50 * time.Millisecond):
			}
		}
		if hint == 0 {
			hint = n.txns.rangeLeaderHint(rangeID)
		}
		if hint == 0 && rangeID != replica.MetaRangeID && n.txns.desc(rangeID) == nil {
			if s := n.sched.Load(); s == nil || s.ReplicaByID(rangeID) == nil {
				if _, err := n.txns.userRanges(ctx); err == nil && n.txns.desc(rangeID) == nil {
					return nil, transport.Invalid("check: there is no range %d", rangeID)
				}
			}
		}
		if hint == 0 {
			if nodes := n.knownNodes(); len(nodes) > 0 {
				hint = nodes[attempt%len(nodes)].NodeId
			}
		}
		var resp *vowdbpb.CheckConsistencyResponse
		var err error
		switch {
		case hint == 0:
			err = fmt.Errorf("no node known to hold range %d", rangeID)
		case hint == n.nodeID():
			resp, err = n.checkConsistencyHere(ctx, rangeID)
		default:
			var conn *grpc.ClientConn
			if conn, err = n.trans.NodeConn(hint); err == nil {
				resp, err = vowdbpb.NewAdminClient(conn).CheckConsistency(ctx, &vowdbpb.CheckConsistencyRequest{RangeId: rangeID, AtLeader: true})
			}
		}
		if err == nil {
			return resp, nil
		}
		lastErr = err
		d, ok := transport.Detail(err)
		switch {
		case ok && d.Code == vowdbpb.ErrorDetail_INVALID:
			return nil, err
		case ok && d.Code == vowdbpb.ErrorDetail_NOT_LEADER && d.LeaderNodeId != hint:
			hint = d.LeaderNodeId // 0: look for the leader again
		default:
			hint = 0
		}
	}
}

// checkConsistencyHere runs the check on this node, which must lead the
// range: it proposes the checksum command and collects every replica's
// checksum at its index.
func (n *Node) checkConsistencyHere(ctx context.Context, rangeID uint64) (*vowdbpb.CheckConsistencyResponse, error) {
	s := n.sched.Load()
	if s == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", n.addr)
	}
	r := s.ReplicaByID(rangeID)
	if r == nil || r.Status().Desc == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_RANGE_NOT_FOUND}, "node %d holds no replica of range %d", n.nodeID(), rangeID)
	}
	if st := r.Status(); st.LeaderID != n.nodeID() {
		return nil, n.notLeader(st)
	}
	res, err := n.proposeTo(ctx, s, r, &vowdbpb.Command{Op: &vowdbpb.Command_ComputeChecksum{ComputeChecksum: &vowdbpb.ComputeChecksumOp{}}})
	if err != nil {
		if d, ok := transport.Detail(err); ok && d.Code == vowdbpb.ErrorDetail_AMBIGUOUS {
			// Harmless to propose again: the command changes nothing.
			return nil, n.notLeader(r.Status())
		}
		return nil, err
	}
	desc := r.Status().Desc
	out := &vowdbpb.CheckConsistencyResponse{RangeId: rangeID, Index: res.Index}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, rd := range desc.Replicas {
		wg.Go(func() {
			rc := &vowdbpb.ReplicaChecksum{NodeId: rd.NodeId, Learner: rd.Learner}
			resp, err := n.replicaChecksum(ctx, rd.NodeId, rangeID, res.Index)
			if err != nil {
				rc.Error = errorMessage(err)
			} else {
				rc.AppliedIndex, rc.Checksum = resp.AppliedIndex, resp.Checksum
			}
			mu.Lock()
			out.Replicas = append(out.Replicas, rc)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(out.Replicas, func(i, j int) bool { return out.Replicas[i].NodeId < out.Replicas[j].NodeId })
	return out, nil
}

// replicaChecksum asks node for its replica's checksum of rangeID at index.
func (n *Node) replicaChecksum(ctx context.Context, node, rangeID, index uint64) (*vowdbpb.RangeChecksumResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, consistencyWait+time.Second)
	defer cancel()
	if node == n.nodeID() {
		return n.localChecksum(ctx, rangeID, index)
	}
	conn, err := n.trans.NodeConn(node)
	if err != nil {
		return nil, err
	}
	return vowdbpb.NewAdminClient(conn).RangeChecksum(ctx, &vowdbpb.RangeChecksumRequest{RangeId: rangeID, Index: index})
}

// localChecksum waits (up to consistencyWait) until the local replica of
// rangeID has applied index and returns the checksum it computed there.
func (n *Node) localChecksum(ctx context.Context, rangeID, index uint64) (*vowdbpb.RangeChecksumResponse, error) {
	s := n.sched.Load()
	if s == nil {
		return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_NOT_INITIALIZED}, "node at %s has not joined a cluster yet", n.addr)
	}
	ctx, cancel := context.WithTimeout(ctx, consistencyWait)
	defer cancel()
	for {
		r := s.ReplicaByID(rangeID)
		var applied uint64
		if r != nil {
			applied = r.Status().Applied
		}
		if applied >= index {
			sum, ok := r.Checksum(index)
			if !ok {
				return nil, status.Errorf(codes.FailedPrecondition,
					"node %d: replica of range %d is at applied index %d and has no checksum for index %d (it restarted or caught up by snapshot since); check again",
					n.nodeID(), rangeID, applied, index)
			}
			return &vowdbpb.RangeChecksumResponse{NodeId: n.nodeID(), AppliedIndex: applied, Checksum: sum}, nil
		}
		select {
		case <-ctx.Done():
			if r == nil {
				return nil, status.Errorf(codes.Unavailable, "node %d holds no replica of range %d", n.nodeID(), rangeID)
			}
			return nil, status.Errorf(codes.Unavailable, "node %d: replica of range %d is at applied index %d, short of the checksum's index %d after %v",
				n.nodeID(), rangeID, applied, index, consistencyWait)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Engine returns the node's store. It is for tests that inspect the store
// or write to it behind Raft's back (to prove that a consistency check
// notices).
func (n *Node) Engine() *storage.Engine { return n.eng }

// errorMessage is an error's text without the gRPC code prefix.
func errorMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	return err.Error()
}
