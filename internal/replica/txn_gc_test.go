package replica

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// gcCmd collects, below before, the remembered outcomes of ids.
func gcCmd(before uint64, ids ...string) *vowdbpb.Command {
	op := &vowdbpb.GcTxnStateOp{BeforeAttempt: before}
	for _, id := range ids {
		op.OutcomeIds = append(op.OutcomeIds, []byte(id))
	}
	return &vowdbpb.Command{Op: &vowdbpb.Command_GcTxnState{GcTxnState: op}}
}

// TestGcTxnState: collection deletes the named remembered outcomes of
// attempts below the horizon, and nothing else: not the outcomes above it
// even when named, not prepare records, not txn records. Below the horizon
// an absent outcome is final (no prepare, no one-phase commit, nothing
// remembered) while a prepared txn still finishes. Each case fails if its
// rule is removed from txn_gc.go or txn_apply.go.
func TestGcTxnState(t *testing.T) {
	for _, indexed := range []bool{false, true} {
		t.Run(fmt.Sprintf("indexed=%v", indexed), func(t *testing.T) { testGcTxnState(t, indexed) })
	}
}

func testGcTxnState(t *testing.T, indexed bool) {
	b := memBatch(t)
	d := userDesc("", "")
	var idx *txnIndex
	if indexed {
		idx = &txnIndex{}
	}
	apply := func(cmd *vowdbpb.Command) Result {
		t.Helper()
		if idx != nil && idx.needsBuild() {
			if err := idx.build(b, d.RangeId); err != nil {
				t.Fatal(err)
			}
		}
		res, err := applyCommand(b, d, idx, cmd)
		if err != nil || res.Err != nil {
			t.Fatalf("apply %v: %v %v", cmd, err, res.Err)
		}
		return res
	}
	has := func(kind byte, id string) bool {
		t.Helper()
		_, found, err := getRW(b, keys.TxnKey(d.RangeId, kind, []byte(id)))
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	old1, old2, old3, new9 := attemptID(0), attemptID(1), attemptID(2), attemptID(8) // attempts 1, 2, 3, 9

	// old1: prepared, committed (outcome remembered); its record ended.
	apply(prepareCmd(old1, w("a", "1")))
	apply(resolveCmd(old1, true))
	apply(casCmd(old1, "a", unknown, committed, false))
	apply(&vowdbpb.Command{Op: &vowdbpb.Command_EndTxns{EndTxns: &vowdbpb.EndTxnsOp{Ends: []*vowdbpb.TxnRecordCasOp{{TxnId: []byte(old1), AnchorKey: []byte("a"), End: true}}}}})
	// old2: prepared and still waiting.
	apply(prepareCmd(old2, w("b", "2")))
	// new9: aborted above the horizon.
	apply(resolveCmd(new9, false))

	// Every id is named; the command itself must keep what does not qualify.
	if res := apply(gcCmd(4, old1, old2, old3, new9)); res.Collected != 1 {
		t.Fatalf("collected %d outcomes, want 1 (old1's)", res.Collected)
	}
	switch {
	case has(keys.SuffixOutcome, old1):
		t.Fatal("old1's outcome survived collection")
	case !has(keys.SuffixTxnRecord, old1):
		t.Fatal("a txn record was collected")
	case !has(keys.SuffixPrepare, old2):
		t.Fatal("a prepare record was collected")
	case !has(keys.SuffixOutcome, new9):
		t.Fatal("an outcome above the horizon was collected")
	}
	if h, _ := readHorizon(b, d.RangeId); h != 4 {
		t.Fatalf("horizon %d, want 4", h)
	}

	// A late PREPARE of old1 must not prepare it again.
	if r := apply(prepareCmd(old1, w("a", "late"))); r.TxnState != aborted || has(keys.SuffixPrepare, old1) {
		t.Fatalf("a collected txn prepared again: %v", r.TxnState)
	}
	// A duplicate PREPARE of the waiting old2 still gets its vote.
	if r := apply(prepareCmd(old2, w("b", "2"))); r.TxnState != pending {
		t.Fatalf("duplicate prepare below the horizon: %v", r.TxnState)
	}
	// A one-phase commit below the horizon applies nothing and cannot
	// tell; so does the anchor's commit with the decision, which leaves
	// the record alone.
	if r := apply(onePhaseCmd(old3, w("c", "3"))); r.TxnState != unknown {
		t.Fatalf("one-phase commit below the horizon: %v", r.TxnState)
	}
	if r := apply(decideCmd(old3, "a", w("c", "3"))); r.TxnState != unknown || has(keys.SuffixTxnRecord, old3) {
		t.Fatalf("commit with the decision below the horizon: %v", r.TxnState)
	}
	if got := userData(t, b); got["c"] != "" || got["a"] != "1" {
		t.Fatalf("user data %v", got)
	}
	// The txn record still answers for old1.
	if r := apply(casCmd(old1, "a", unknown, aborted, false)); r.TxnState != committed || r.Swapped {
		t.Fatalf("old1's record: %v swapped=%v", r.TxnState, r.Swapped)
	}
	// An abort of an unknown txn below the horizon remembers nothing.
	apply(resolveCmd(old3, false))
	if has(keys.SuffixOutcome, old3) {
		t.Fatal("an outcome was remembered below the horizon")
	}
	// The prepared old2 still commits.
	if r := apply(resolveCmd(old2, true)); r.TxnState != committed || userData(t, b)["b"] != "2" {
		t.Fatalf("prepared txn below the horizon did not commit: %v %v", r.TxnState, userData(t, b))
	}
	// The horizon never moves back.
	apply(gcCmd(2, old2))
	if h, _ := readHorizon(b, d.RangeId); h != 4 {
		t.Fatalf("horizon moved back to %d", h)
	}
	// Above the horizon nothing changed.
	if r := apply(prepareCmd(attemptID(20), w("d", "4"))); r.TxnState != pending {
		t.Fatalf("prepare above the horizon: %v", r.TxnState)
	}
}

// TestGcHorizonTravels: a split gives the right range the left's horizon,
// and the range checksum covers it (a replica that missed a collection
// would disagree).
func TestGcHorizonTravels(t *testing.T) {
	b := memBatch(t)
	d := userDesc("", "")
	before, err := Checksum(b, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := applyCommand(b, d, nil, gcCmd(7)); err != nil {
		t.Fatal(err)
	}
	after, err := Checksum(b, d)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Fatal("the checksum does not cover the txn horizon")
	}
	res, err := applyCommand(b, d, nil, &vowdbpb.Command{Op: &vowdbpb.Command_Split{Split: &vowdbpb.SplitOp{SplitKey: []byte("m"), NewRangeId: 9}}})
	if err != nil || res.Err != nil {
		t.Fatal(err, res.Err)
	}
	if h, _ := readHorizon(b, res.Right.RangeId); h != 7 {
		t.Fatalf("right range's horizon %d, want 7", h)
	}
	if r, _ := applyCommand(b, res.Right, nil, prepareCmd(attemptID(1), w("x", "1"))); r.TxnState != aborted {
		t.Fatalf("right range prepared a txn below the horizon: %v", r.TxnState)
	}
}

// TestGcCandidates: the leader's scan names the remembered outcomes below
// the cutoff, and no more than the limit.
func TestGcCandidates(t *testing.T) {
	eng, err := storage.Open(storage.Options{Dir: "/store", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	d := userDesc("", "")
	b := eng.DB().NewIndexedBatch()
	for _, cmd := range []*vowdbpb.Command{
		resolveCmd(attemptID(0), false),                    // outcome, attempt 1
		resolveCmd(attemptID(1), false),                    // outcome, attempt 2
		resolveCmd(attemptID(8), false),                    // outcome, attempt 9: too new
		casCmd(attemptID(3), "a", unknown, aborted, false), // a record: never a candidate
		prepareCmd(attemptID(4), w("a", "1")),              // a prepare record: never a candidate
	} {
		if res, err := applyCommand(b, d, nil, cmd); err != nil || res.Err != nil {
			t.Fatal(err, res.Err)
		}
	}
	if err := eng.Commit(b, false); err != nil {
		t.Fatal(err)
	}
	ids, err := GcCandidates(eng, d.RangeId, 6, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range ids {
		a, _ := attemptOf(id)
		got = append(got, fmt.Sprint(a))
	}
	if s := strings.Join(got, ","); s != "1,2" {
		t.Fatalf("candidates (attempts): %s, want 1,2", s)
	}
	if ids, _ := GcCandidates(eng, d.RangeId, 6, 1); len(ids) != 1 {
		t.Fatalf("limit 1 gave %d ids", len(ids))
	}
}

// BenchmarkGcCandidates measures the leader's scan for collectable outcomes
// over a range holding 200,000 of them, half below the cutoff (the scan
// runs outside the Raft loop, once per collection pass).
func BenchmarkGcCandidates(b *testing.B) {
	eng, err := storage.Open(storage.Options{Dir: "/store", FS: vfs.NewMem()})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	const n = 200000
	batch := eng.NewBatch()
	for i := range n {
		if err := batch.Set(keys.TxnKey(2, keys.SuffixOutcome, []byte(attemptID(i))), []byte{byte(aborted)}, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := eng.Commit(batch, false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		ids, err := GcCandidates(eng, 2, n/2+1, n) // attempts 1..n/2
		if err != nil || len(ids) != n/2 {
			b.Fatal(len(ids), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/key")
}

// BenchmarkGcTxnStateApply measures applying one collection command of
// 10,000 outcome ids, which runs in the Raft loop (the server names at most
// server.collectBatch per command).
func BenchmarkGcTxnStateApply(b *testing.B) {
	const n = 10000
	d := userDesc("", "")
	var ids []string
	for i := range n {
		ids = append(ids, attemptID(i))
	}
	cmd := gcCmd(n+1, ids...)
	for range b.N {
		b.StopTimer()
		eng, err := storage.Open(storage.Options{Dir: "/store", FS: vfs.NewMem()})
		if err != nil {
			b.Fatal(err)
		}
		db := eng.DB()
		batch := db.NewIndexedBatch()
		for _, id := range ids {
			if err := batch.Set(keys.TxnKey(d.RangeId, keys.SuffixOutcome, []byte(id)), []byte{byte(aborted)}, nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(nil); err != nil {
			b.Fatal(err)
		}
		batch = db.NewIndexedBatch()
		b.StartTimer()
		res, err := applyCommand(batch, d, nil, cmd)
		if err != nil || res.Collected != n {
			b.Fatal(res.Collected, err)
		}
		b.StopTimer()
		_ = batch.Close()
		_ = eng.Close()
	}
}
