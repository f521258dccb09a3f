package replica

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// Initial Raft state of a range created by bootstrap or split.
const (
	initialIndex = 10
	initialTerm  = 5
)

// raftStorage is the raft.Storage of one replica: the log lives in a
// MemoryStorage (mirrored durably in Pebble by PersistReady), and Snapshot
// builds a real snapshot of the range from Pebble at the applied index.
type raftStorage struct {
	*raft.MemoryStorage
	r *Replica
}

var _ raft.Storage = (*raftStorage)(nil)

// Snapshot is called by the leader's RawNode when a follower needs entries
// that were truncated. It runs on the scheduler goroutine, where the applied
// state in Pebble is exactly r.applied.
func (s *raftStorage) Snapshot() (raftpb.Snapshot, error) {
	r := s.r
	term, err := s.MemoryStorage.Term(r.applied)
	if err != nil {
		return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	data := &vowdbpb.SnapshotData{Desc: r.desc}
	start, end := spanOf(r.desc)
	err = r.eng.Scan(start, end, func(k, v []byte) bool {
		data.Kvs = append(data.Kvs, &vowdbpb.KeyValue{Key: append([]byte(nil), k...), Value: append([]byte(nil), v...)})
		return true
	})
	if err != nil {
		return raftpb.Snapshot{}, err
	}
	// The range's transaction state travels with its data.
	for _, suffix := range keys.ReplicatedTxnSuffixes {
		p := keys.RangeLocalKey(r.RangeID, suffix)
		err = r.eng.Scan(p, keys.PrefixEnd(p), func(k, v []byte) bool {
			data.Kvs = append(data.Kvs, &vowdbpb.KeyValue{Key: append([]byte(nil), k...), Value: append([]byte(nil), v...)})
			return true
		})
		if err != nil {
			return raftpb.Snapshot{}, err
		}
	}
	buf, err := proto.Marshal(data)
	if err != nil {
		return raftpb.Snapshot{}, err
	}
	r.metrics.SnapshotsSent.Inc()
	return raftpb.Snapshot{
		Data:     buf,
		Metadata: raftpb.SnapshotMetadata{Index: r.applied, Term: term, ConfState: r.confState},
	}, nil
}

// spanOf returns the storage span a range replicates.
func spanOf(d *vowdbpb.RangeDescriptor) ([]byte, []byte) {
	if d.GetIsMeta() {
		return keys.MetaSpan()
	}
	return keys.UserSpan(d.GetStartKey(), d.GetEndKey())
}

// WriteInitialState writes the durable state of a new range with the given
// descriptor at index 10, term 5, voters = the descriptor's non-learner
// replicas. It keeps a higher term and vote already on disk (an uninitialized
// replica may have voted for the range before the split that creates it
// applied here).
func WriteInitialState(eng *storage.Engine, b batchWriter, desc *vowdbpb.RangeDescriptor) error {
	id := desc.RangeId
	hs := raftpb.HardState{Term: initialTerm, Commit: initialIndex}
	if old, err := loadHardState(eng, id); err == nil && old.Term > hs.Term {
		hs.Term, hs.Vote = old.Term, old.Vote
	}
	cs := confStateOf(desc)
	if err := setProtoW(b, keys.RangeLocalKey(id, keys.SuffixDescriptor), desc); err != nil {
		return err
	}
	if err := setGogo(b, keys.RangeLocalKey(id, keys.SuffixHardState), &hs); err != nil {
		return err
	}
	if err := setGogo(b, keys.RangeLocalKey(id, keys.SuffixConfState), &cs); err != nil {
		return err
	}
	if err := setProtoW(b, keys.RangeLocalKey(id, keys.SuffixTruncated), &vowdbpb.RaftTruncatedState{Index: initialIndex, Term: initialTerm}); err != nil {
		return err
	}
	if err := b.DeleteRange(keys.RaftLogPrefix(id), keys.PrefixEnd(keys.RaftLogPrefix(id)), nil); err != nil {
		return err
	}
	return b.Set(keys.RangeLocalKey(id, keys.SuffixApplied), u64(initialIndex), nil)
}

func confStateOf(desc *vowdbpb.RangeDescriptor) raftpb.ConfState {
	var cs raftpb.ConfState
	for _, rd := range desc.Replicas {
		if rd.Learner {
			cs.Learners = append(cs.Learners, rd.NodeId)
		} else {
			cs.Voters = append(cs.Voters, rd.NodeId)
		}
	}
	return cs
}

// batchWriter is a Pebble batch being filled.
type batchWriter = *pebble.Batch

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

type gogoMarshaler interface {
	Marshal() ([]byte, error)
}

func setGogo(b batchWriter, k []byte, m gogoMarshaler) error {
	v, err := m.Marshal()
	if err != nil {
		return err
	}
	return b.Set(k, v, nil)
}

func setProtoW(b batchWriter, k []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return b.Set(k, v, nil)
}

func loadHardState(eng *storage.Engine, id uint64) (raftpb.HardState, error) {
	var hs raftpb.HardState
	v, err := eng.Get(keys.RangeLocalKey(id, keys.SuffixHardState))
	if err != nil {
		return hs, err
	}
	return hs, hs.Unmarshal(v)
}

// loadState reads everything a replica needs to restart.
func loadState(eng *storage.Engine, id uint64) (st *durableState, err error) {
	st = &durableState{}
	st.hs, err = loadHardState(eng, id)
	if err != nil && err != storage.ErrNotFound {
		return st, err
	}
	v, err := eng.Get(keys.RangeLocalKey(id, keys.SuffixDescriptor))
	if err == storage.ErrNotFound {
		return st, nil // uninitialized
	} else if err != nil {
		return st, err
	}
	st.desc = &vowdbpb.RangeDescriptor{}
	if err := proto.Unmarshal(v, st.desc); err != nil {
		return st, fmt.Errorf("replica %d: descriptor: %w", id, err)
	}
	if v, err = eng.Get(keys.RangeLocalKey(id, keys.SuffixConfState)); err != nil {
		return st, fmt.Errorf("replica %d: conf state: %w", id, err)
	}
	if err := st.cs.Unmarshal(v); err != nil {
		return st, err
	}
	if v, err = eng.Get(keys.RangeLocalKey(id, keys.SuffixTruncated)); err != nil {
		return st, fmt.Errorf("replica %d: truncated state: %w", id, err)
	}
	st.trunc = &vowdbpb.RaftTruncatedState{}
	if err := proto.Unmarshal(v, st.trunc); err != nil {
		return st, err
	}
	if v, err = eng.Get(keys.RangeLocalKey(id, keys.SuffixApplied)); err != nil {
		return st, fmt.Errorf("replica %d: applied index: %w", id, err)
	}
	st.applied = binary.BigEndian.Uint64(v)
	prefix := keys.RaftLogPrefix(id)
	err = eng.Scan(keys.RaftLogKey(id, st.trunc.Index+1), keys.PrefixEnd(prefix), func(k, v []byte) bool {
		var e raftpb.Entry
		if err = e.Unmarshal(v); err != nil {
			return false
		}
		st.entries = append(st.entries, e)
		return true
	})
	return st, err
}

type durableState struct {
	desc    *vowdbpb.RangeDescriptor
	hs      raftpb.HardState
	cs      raftpb.ConfState
	trunc   *vowdbpb.RaftTruncatedState
	applied uint64
	entries []raftpb.Entry
}
