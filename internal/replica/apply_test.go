package replica

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
)

func memBatch(t *testing.T) *pebble.Batch {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db.NewIndexedBatch()
}

func userDesc(start, end string) *vowdbpb.RangeDescriptor {
	return &vowdbpb.RangeDescriptor{RangeId: 2, StartKey: []byte(start), EndKey: []byte(end), Generation: 1,
		Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}, {NodeId: 2}}}
}

func metaDesc() *vowdbpb.RangeDescriptor {
	return &vowdbpb.RangeDescriptor{RangeId: MetaRangeID, IsMeta: true, Generation: 1}
}

func put(k, v string) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: []byte(k), Value: []byte(v)}}}
}

func del(k string) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_Delete{Delete: &vowdbpb.DeleteOp{Key: []byte(k)}}}
}

func cas(k string, old *string, v *string) *vowdbpb.Command {
	c := &vowdbpb.CasOp{Key: []byte(k)}
	if old == nil {
		c.ExpectAbsent = true
	} else {
		c.Expected = []byte(*old)
	}
	if v == nil {
		c.DeleteOnSwap = true
	} else {
		c.Value = []byte(*v)
	}
	return &vowdbpb.Command{Op: &vowdbpb.Command_Cas{Cas: c}}
}

func sp(s string) *string { return &s }

// TestRangeStateMachine applies a sequence of commands per case and checks
// each result and the final user data.
func TestRangeStateMachine(t *testing.T) {
	type step struct {
		cmd         *vowdbpb.Command
		wantSwapped bool
		wantErr     error // errors.Is / errors.As target class
	}
	var km *KeyMismatchError
	tests := []struct {
		name  string
		desc  *vowdbpb.RangeDescriptor
		steps []step
		want  map[string]string
	}{
		{"put then overwrite", userDesc("", ""), []step{{cmd: put("a", "1")}, {cmd: put("a", "2")}}, map[string]string{"a": "2"}},
		{"delete", userDesc("", ""), []step{{cmd: put("a", "1")}, {cmd: del("a")}, {cmd: del("never")}}, map[string]string{}},
		{"cas swaps on match", userDesc("", ""), []step{{cmd: put("a", "1")}, {cmd: cas("a", sp("1"), sp("2")), wantSwapped: true}}, map[string]string{"a": "2"}},
		{"cas refuses mismatch", userDesc("", ""), []step{{cmd: put("a", "1")}, {cmd: cas("a", sp("9"), sp("2"))}}, map[string]string{"a": "1"}},
		{"cas absent on absent", userDesc("", ""), []step{{cmd: cas("a", nil, sp("1")), wantSwapped: true}}, map[string]string{"a": "1"}},
		{"cas absent on present", userDesc("", ""), []step{{cmd: put("a", "0")}, {cmd: cas("a", nil, sp("1"))}}, map[string]string{"a": "0"}},
		{"cas on absent with expected value", userDesc("", ""), []step{{cmd: cas("a", sp(""), sp("1"))}}, map[string]string{}},
		{"cas delete", userDesc("", ""), []step{{cmd: put("a", "1")}, {cmd: cas("a", sp("1"), nil), wantSwapped: true}}, map[string]string{}},
		{"key below range", userDesc("b", "d"), []step{{cmd: put("a", "1"), wantErr: km}}, map[string]string{}},
		{"key at range end", userDesc("b", "d"), []step{{cmd: put("d", "1"), wantErr: km}, {cmd: put("c", "1")}}, map[string]string{"c": "1"}},
		{"user write on meta", metaDesc(), []step{{cmd: put("a", "1"), wantErr: km}}, map[string]string{}},
		{"meta op on user range", userDesc("", ""), []step{{cmd: &vowdbpb.Command{Op: &vowdbpb.Command_AllocRangeId{AllocRangeId: &vowdbpb.AllocRangeIDOp{}}}, wantErr: ErrInvalidCommand}}, map[string]string{}},
		// An empty command is the barrier a new transaction tenure proposes:
		// it applies nothing and succeeds.
		{"empty command is a barrier", userDesc("", ""), []step{
			{cmd: put("a", "1")}, {cmd: &vowdbpb.Command{}}}, map[string]string{"a": "1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := memBatch(t)
			for i, s := range tc.steps {
				res, err := applyCommand(b, tc.desc, nil, s.cmd)
				if err != nil {
					t.Fatalf("step %d: storage error %v", i, err)
				}
				switch want := s.wantErr.(type) {
				case nil:
					if res.Err != nil {
						t.Fatalf("step %d: unexpected error %v", i, res.Err)
					}
				case *KeyMismatchError:
					if !errors.As(res.Err, &want) {
						t.Fatalf("step %d: want key mismatch, got %v", i, res.Err)
					}
				default:
					if !errors.Is(res.Err, want) {
						t.Fatalf("step %d: want %v, got %v", i, want, res.Err)
					}
				}
				if res.Swapped != s.wantSwapped {
					t.Fatalf("step %d: swapped=%v want %v", i, res.Swapped, s.wantSwapped)
				}
			}
			got := map[string]string{}
			it, _ := b.NewIter(&pebble.IterOptions{LowerBound: []byte("u"), UpperBound: []byte("v")})
			for it.First(); it.Valid(); it.Next() {
				uk, _ := keys.DecodeUserKey(it.Key())
				got[string(uk)] = string(it.Value())
			}
			_ = it.Close()
			if len(got) != len(tc.want) {
				t.Fatalf("data %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("data %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		name    string
		desc    *vowdbpb.RangeDescriptor
		key     string
		newID   uint64
		wantErr bool
	}{
		{"middle", userDesc("b", "f"), "d", 9, false},
		{"open end", userDesc("b", ""), "zz", 9, false},
		{"at start", userDesc("b", "f"), "b", 9, true},
		{"at end", userDesc("b", "f"), "f", 9, true},
		{"outside", userDesc("b", "f"), "a", 9, true},
		{"no new id", userDesc("b", "f"), "d", 0, true},
		{"reused id", userDesc("b", "f"), "d", 2, true},
		{"meta", metaDesc(), "d", 9, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := memBatch(t)
			cmd := &vowdbpb.Command{Op: &vowdbpb.Command_Split{Split: &vowdbpb.SplitOp{SplitKey: []byte(tc.key), NewRangeId: tc.newID}}}
			res, err := applyCommand(b, tc.desc, nil, cmd)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr {
				if res.Err == nil || res.Right != nil {
					t.Fatalf("want refusal, got %+v", res)
				}
				return
			}
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			l, r := res.Left, res.Right
			if !bytes.Equal(l.StartKey, tc.desc.StartKey) || string(l.EndKey) != tc.key ||
				string(r.StartKey) != tc.key || !bytes.Equal(r.EndKey, tc.desc.EndKey) || r.RangeId != tc.newID {
				t.Fatalf("bad halves: %v | %v", l, r)
			}
			if l.Generation <= tc.desc.Generation || len(r.Replicas) != len(tc.desc.Replicas) {
				t.Fatalf("generation or replicas wrong: %v | %v", l, r)
			}
			// The input descriptor is not mutated (it is shared with readers).
			if string(tc.desc.EndKey) == tc.key {
				t.Fatal("input descriptor mutated")
			}
		})
	}
}

func TestMetaCommands(t *testing.T) {
	b := memBatch(t)
	m := metaDesc()
	alloc := &vowdbpb.Command{Op: &vowdbpb.Command_AllocNode{AllocNode: &vowdbpb.AllocNodeOp{Address: "h:1"}}}
	for want := uint64(1); want <= 3; want++ {
		res, err := applyCommand(b, m, nil, alloc)
		if err != nil || res.NodeID != want {
			t.Fatalf("alloc node: %+v %v, want id %d", res, err, want)
		}
	}
	rid := &vowdbpb.Command{Op: &vowdbpb.Command_AllocRangeId{AllocRangeId: &vowdbpb.AllocRangeIDOp{}}}
	res, _ := applyCommand(b, m, nil, rid)
	if res.RangeID != firstAllocatedRangeID {
		t.Fatalf("first allocated range id %d", res.RangeID)
	}
	// Descriptor publication keeps the newest generation.
	pub := func(gen uint64, end string) {
		d := userDesc("", end)
		d.Generation = gen
		if _, err := applyCommand(b, m, nil, &vowdbpb.Command{Op: &vowdbpb.Command_PutDescriptor{PutDescriptor: &vowdbpb.PutDescriptorOp{Desc: d}}}); err != nil {
			t.Fatal(err)
		}
	}
	pub(3, "m")
	pub(2, "") // stale: must not overwrite
	v, closer, err := b.Get(keys.MetaDescriptorKey(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got vowdbpb.RangeDescriptor
	if err := proto.Unmarshal(v, &got); err != nil {
		t.Fatal(err)
	}
	_ = closer.Close()
	if got.Generation != 3 || string(got.EndKey) != "m" {
		t.Fatalf("meta kept %v", &got)
	}
}

func TestDescWithConfChange(t *testing.T) {
	d := userDesc("", "")
	d.Replicas = []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}
	add := func(d *vowdbpb.RangeDescriptor, typ raftpb.ConfChangeType, id uint64) *vowdbpb.RangeDescriptor {
		return descWithConfChange(d, raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: typ, NodeID: id}}})
	}
	d2 := add(d, raftpb.ConfChangeAddLearnerNode, 2)
	if len(d.Replicas) != 1 {
		t.Fatal("input mutated")
	}
	if len(d2.Replicas) != 2 || !d2.Replicas[1].Learner || d2.Generation != d.Generation+1 {
		t.Fatalf("add learner: %v", d2)
	}
	d3 := add(d2, raftpb.ConfChangeAddNode, 2)
	if len(d3.Replicas) != 2 || d3.Replicas[1].Learner {
		t.Fatalf("promote: %v", d3)
	}
	d4 := add(d3, raftpb.ConfChangeRemoveNode, 1)
	if len(d4.Replicas) != 1 || d4.Replicas[0].NodeId != 2 {
		t.Fatalf("remove: %v", d4)
	}
	cs := confStateOf(d2)
	if len(cs.Voters) != 1 || len(cs.Learners) != 1 {
		t.Fatalf("conf state %v", cs)
	}
}
