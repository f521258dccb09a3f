package server

import (
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// replicaLike is what planReplication needs of a replica, so the decision
// can be tested without a Raft group.
type replicaLike interface {
	Desc() *vowdbpb.RangeDescriptor
	RaftStatus() raft.Status
	ProposeConfChange(cc raftpb.ConfChangeV2) error
}
