package replica

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/storage"
)

// TestTxnIndexChangesNoAnswer applies the same random txn commands (with
// duplicates, late messages and conflicting records) to two copies of a
// range, one with the txn index and one without, and requires the same
// result for every command and the same stored state at the end. The
// indexed copy's index is also dropped and rebuilt at random points, as a
// snapshot or a restart does.
func TestTxnIndexChangesNoAnswer(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		plain, indexed := memBatch(t), memBatch(t)
		d := userDesc("", "m")
		idx := &txnIndex{}
		// Some state exists before the index is first built.
		for i := 0; i < rng.IntN(4); i++ {
			cmd := randomTxnCmd(rng)
			for _, b := range []*pebble.Batch{plain, indexed} {
				if _, err := applyCommand(b, d, nil, cmd); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := idx.build(indexed, d.RangeId); err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 60; step++ {
			switch rng.IntN(20) {
			case 0:
				idx.reset() // unbuilt: every read goes to Pebble
			case 1:
				if err := idx.build(indexed, d.RangeId); err != nil {
					t.Fatal(err)
				}
			}
			cmd := randomTxnCmd(rng)
			want, err := applyCommand(plain, d, nil, cmd)
			if err != nil {
				t.Fatal(err)
			}
			got, err := applyCommand(indexed, d, idx, cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got.TxnState != want.TxnState || got.Swapped != want.Swapped || (got.Err == nil) != (want.Err == nil) {
				t.Fatalf("seed %d step %d %v: with index %v swapped=%v err=%v, without %v swapped=%v err=%v",
					seed, step, cmd, got.TxnState, got.Swapped, got.Err, want.TxnState, want.Swapped, want.Err)
			}
		}
		if a, b := dump(t, plain), dump(t, indexed); a != b {
			t.Fatalf("seed %d: stored state differs\nwithout index:\n%s\nwith index:\n%s", seed, a, b)
		}
		// The records recovery looks at: from memory, exactly the stored
		// records not ended.
		if recs, ok, err := idx.liveRecords(d.RangeId); err != nil {
			t.Fatal(err)
		} else if ok {
			if got, want := recordSet(recs), unendedRecords(t, indexed, d.RangeId); got != want {
				t.Fatalf("seed %d: live records from the index\n%s\nstored records not ended\n%s", seed, got, want)
			}
		}
	}
}

func recordSet(recs []*vowdbpb.TxnRecord) string {
	var lines []string
	for _, r := range recs {
		lines = append(lines, fmt.Sprintf("%s %v %q", r.TxnId, r.State, r.AnchorKey))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func unendedRecords(t *testing.T, b *pebble.Batch, rangeID uint64) string {
	t.Helper()
	p := keys.RangeLocalKey(rangeID, keys.SuffixTxnRecord)
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: keys.PrefixEnd(p)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var recs []*vowdbpb.TxnRecord
	for it.First(); it.Valid(); it.Next() {
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(it.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if !rec.Ended {
			recs = append(recs, &rec)
		}
	}
	return recordSet(recs)
}

// attemptID is the txn state id of txn n, attempt n+1 (txn id, then
// attempt, as the txn layer writes them), so that collection can place it.
func attemptID(n int) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n))
	binary.BigEndian.PutUint64(b[8:], uint64(n+1))
	return string(b[:])
}

func randomTxnCmd(rng *rand.Rand) *vowdbpb.Command {
	id := attemptID(rng.IntN(6))
	key := string(rune('a' + rng.IntN(4)))
	states := []vowdbpb.TxnState{unknown, pending, committed, aborted}
	switch rng.IntN(8) {
	case 7:
		// Collect the finished state of attempts 1..before-1.
		var ids []string
		for range rng.IntN(5) {
			ids = append(ids, attemptID(rng.IntN(6)))
		}
		return gcCmd(uint64(rng.IntN(8)), ids...)
	case 6:
		var ends []*vowdbpb.TxnRecordCasOp
		for range 1 + rng.IntN(3) {
			ends = append(ends, &vowdbpb.TxnRecordCasOp{TxnId: []byte(attemptID(rng.IntN(6))), AnchorKey: []byte("b"), End: true})
		}
		return &vowdbpb.Command{Op: &vowdbpb.Command_EndTxns{EndTxns: &vowdbpb.EndTxnsOp{Ends: ends}}}
	case 0:
		return prepareCmd(id, w(key, id))
	case 1:
		return resolveCmd(id, rng.IntN(2) == 0)
	case 2:
		return onePhaseCmd(id, w(key, id))
	case 3:
		return decideCmd(id, "b", w(key, id))
	case 4:
		c := casCmd(id, "b", states[rng.IntN(4)], states[1+rng.IntN(3)], rng.IntN(4) == 0)
		c.GetTxnRecordCas().End = rng.IntN(4) == 0
		return c
	default:
		return casCmd(id, "b", unknown, aborted, false) // an inquirer's presumed abort
	}
}

// dump renders every key in b.
func dump(t *testing.T, b *pebble.Batch) string {
	t.Helper()
	it, err := b.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out bytes.Buffer
	for it.First(); it.Valid(); it.Next() {
		fmt.Fprintf(&out, "%q=%q\n", it.Key(), it.Value())
	}
	return out.String()
}

// TestTxnIndexFindsStateWrittenBeforeBuild: state that is on disk when the
// index is built (a restart, a snapshot) is found; a txn never seen is
// proven absent, and what the state machine writes later is found too.
func TestTxnIndexFindsStateWrittenBeforeBuild(t *testing.T) {
	b := memBatch(t)
	d := userDesc("", "m")
	for _, cmd := range []*vowdbpb.Command{
		resolveCmd("aborted-before", false),
		prepareCmd("prepared-before", w("a", "1")),
		casCmd("record-before", "b", unknown, committed, false),
	} {
		if _, err := applyCommand(b, d, nil, cmd); err != nil {
			t.Fatal(err)
		}
	}
	idx := &txnIndex{}
	if err := idx.build(b, d.RangeId); err != nil {
		t.Fatal(err)
	}
	// The outcome must be read from storage; the prepare record and the
	// record not ended are kept in memory.
	for _, c := range []struct {
		kind         byte
		id           string
		known, found bool
	}{{keys.SuffixOutcome, "aborted-before", false, false}, {keys.SuffixPrepare, "prepared-before", true, true},
		{keys.SuffixTxnRecord, "record-before", true, true}} {
		_, found, known := idx.get(c.kind, []byte(c.id), keys.TxnKey(d.RangeId, c.kind, []byte(c.id)))
		if known != c.known || found != c.found {
			t.Fatalf("index built over %s's state: known %v found %v, want %v %v", c.id, known, found, c.known, c.found)
		}
	}
	for _, kind := range keys.TxnSuffixes {
		if _, found, known := idx.get(kind, []byte("never"), keys.TxnKey(d.RangeId, kind, []byte("never"))); !known || found {
			t.Fatalf("index cannot prove a txn never seen has no state (known=%v found=%v): it saves no read", known, found)
		}
	}
	if recs, ok, err := idx.liveRecords(d.RangeId); err != nil || !ok || len(recs) != 1 || string(recs[0].TxnId) != "record-before" {
		t.Fatalf("records to recover after the build: %v %v %v, want record-before", recs, ok, err)
	}
	// A late PREPARE of the aborted txn must still see its outcome.
	if res, _ := applyCommand(b, d, idx, prepareCmd("aborted-before", w("a", "2"))); res.TxnState != aborted {
		t.Fatalf("late prepare after build: %v, want ABORTED", res.TxnState)
	}
	if _, err := applyCommand(b, d, idx, prepareCmd("new", w("c", "1"))); err != nil {
		t.Fatal(err)
	}
	pk := keys.TxnKey(d.RangeId, keys.SuffixPrepare, []byte("new"))
	if v, found, known := idx.get(keys.SuffixPrepare, []byte("new"), pk); !known || !found || len(v) == 0 {
		t.Fatal("a prepare written after the build is not answered from the index")
	}
	if _, found, known := idx.get(keys.SuffixOutcome, []byte("new"), keys.TxnKey(d.RangeId, keys.SuffixOutcome, []byte("new"))); !known || found {
		t.Fatal("a prepared txn's absent outcome is not proven absent")
	}
}

// TestTxnIndexGivesUpWhenFull: a range with more txn ids than the bound
// keeps no index (every read goes to Pebble) instead of growing without
// limit, and does not rescan on every command.
func TestTxnIndexGivesUpWhenFull(t *testing.T) {
	idx := &txnIndex{built: true, kinds: map[uint64]uint8{}, live: map[string][]byte{}}
	for i := range maxTxnIndex {
		idx.kinds[uint64(i)] = 4
	}
	idx.set(keys.SuffixOutcome, []byte("one-more"), []byte("k"), nil, false)
	if _, _, known := idx.get(keys.SuffixOutcome, []byte("anything"), []byte("k")); idx.built || idx.needsBuild() || known {
		t.Fatalf("full index: built=%v needsBuild=%v known=%v", idx.built, idx.needsBuild(), known)
	}
	idx.reset()
	if !idx.needsBuild() {
		t.Fatal("after a snapshot replaced the state the index is not rebuilt")
	}
}

// TestSnapshotResetsTxnIndex: a snapshot replaces the range's txn state
// wholesale, so a replica must drop its index (and rebuild it from the
// snapshot's state) — otherwise an outcome carried by the snapshot would be
// missed and a late PREPARE accepted on this replica alone.
func TestSnapshotResetsTxnIndex(t *testing.T) {
	eng, err := storage.Open(storage.Options{Dir: t.TempDir(), CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	desc := userDesc("", "m")
	// The snapshot carries the outcome of t1.
	snap := snapshotWith(t, desc, keys.TxnKey(desc.RangeId, keys.SuffixOutcome, []byte("t1")), []byte{byte(aborted)})
	r, err := Open(eng, desc.RangeId, Config{NodeID: 1, ElectionTicks: 10, HeartbeatTicks: 1,
		Logger: slog.New(slog.DiscardHandler), Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	b := eng.DB().NewIndexedBatch()
	if err := r.txns.build(b, desc.RangeId); err != nil { // built before the snapshot: empty
		t.Fatal(err)
	}
	if err := r.persistSnapshot(b, snap); err != nil {
		t.Fatal(err)
	}
	if r.txns.built {
		t.Fatal("the index survived a snapshot that replaced the range's txn state")
	}
	if err := r.txns.build(b, desc.RangeId); err != nil {
		t.Fatal(err)
	}
	if res, _ := applyCommand(b, desc, &r.txns, prepareCmd("t1", w("a", "1"))); res.TxnState != aborted {
		t.Fatalf("late prepare after a snapshot: %v, want ABORTED", res.TxnState)
	}
}

// snapshotWith is a Raft snapshot of desc at index 20 holding one key.
func snapshotWith(t *testing.T, desc *vowdbpb.RangeDescriptor, k, v []byte) raftpb.Snapshot {
	t.Helper()
	data, err := proto.Marshal(&vowdbpb.SnapshotData{Desc: desc, Kvs: []*vowdbpb.KeyValue{{Key: k, Value: v}}})
	if err != nil {
		t.Fatal(err)
	}
	return raftpb.Snapshot{Data: data, Metadata: raftpb.SnapshotMetadata{Index: 20, Term: 6,
		ConfState: raftpb.ConfState{Voters: []uint64{1, 2}}}}
}
