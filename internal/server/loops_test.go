package server

import (
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// fakeReplica is a range led here, with a chosen Raft status.
type fakeReplica struct {
	desc     *vowdbpb.RangeDescriptor
	status   raft.Status
	proposed []raftpb.ConfChangeV2
}

func (f *fakeReplica) Desc() *vowdbpb.RangeDescriptor { return f.desc }
func (f *fakeReplica) RaftStatus() raft.Status        { return f.status }
func (f *fakeReplica) ProposeConfChange(cc raftpb.ConfChangeV2) error {
	f.proposed = append(f.proposed, cc)
	return nil
}

// TestPlanReplicationPromotesBusyLearner: a learner that receives appends
// and trails the commit index by a few entries, as it always does while the
// range is written, is promoted; one waiting on a snapshot, or far behind,
// is not yet; a range short of replicas gets one learner at a time.
func TestPlanReplicationPromotesBusyLearner(t *testing.T) {
	n := &Node{cfg: Config{ReplicationFactor: 3}, log: slog.New(slog.DiscardHandler)}
	desc := &vowdbpb.RangeDescriptor{RangeId: 7, Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}, {NodeId: 2, Learner: true}}}
	status := func(state tracker.StateType, match, commit uint64) raft.Status {
		var st raft.Status
		st.Commit = commit
		st.Progress = map[uint64]tracker.Progress{
			1: {Match: commit, State: tracker.StateReplicate},
			2: {Match: match, State: state, IsLearner: true},
		}
		return st
	}
	cases := []struct {
		name    string
		st      raft.Status
		promote bool
	}{
		{"caught up exactly", status(tracker.StateReplicate, 500, 500), true},
		{"a round behind under load", status(tracker.StateReplicate, 480, 500), true},
		{"waiting on a snapshot", status(tracker.StateSnapshot, 0, 500), false},
		{"probing", status(tracker.StateProbe, 400, 500), false},
		{"far behind", status(tracker.StateReplicate, 100, 100+promoteLag+1), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &fakeReplica{desc: desc, status: c.st}
			n.planReplication(r, []uint64{1, 2, 3})
			promoted := len(r.proposed) == 1 && r.proposed[0].Changes[0].Type == raftpb.ConfChangeAddNode &&
				r.proposed[0].Changes[0].NodeID == 2
			if promoted != c.promote || len(r.proposed) > 1 {
				t.Fatalf("proposed %v, want promotion %v", r.proposed, c.promote)
			}
		})
	}
	// No learner left and a replica missing: one learner is added.
	r := &fakeReplica{desc: &vowdbpb.RangeDescriptor{RangeId: 7, Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}, {NodeId: 2}}}}
	n.planReplication(r, []uint64{1, 2, 3})
	if len(r.proposed) != 1 || r.proposed[0].Changes[0].Type != raftpb.ConfChangeAddLearnerNode || r.proposed[0].Changes[0].NodeID != 3 {
		t.Fatalf("proposed %v, want node 3 added as a learner", r.proposed)
	}
}
