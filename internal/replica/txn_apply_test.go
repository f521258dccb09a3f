package replica

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
)

func prepareCmd(id string, writes ...*vowdbpb.TxnWrite) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_PrepareTxn{PrepareTxn: &vowdbpb.PrepareTxnOp{TxnId: []byte(id), AnchorKey: []byte("a"), Writes: writes}}}
}

func resolveCmd(id string, commit bool) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_ResolveTxn{ResolveTxn: &vowdbpb.ResolveTxnOp{TxnId: []byte(id), Commit: commit}}}
}

func onePhaseCmd(id string, writes ...*vowdbpb.TxnWrite) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_OnePhaseTxn{OnePhaseTxn: &vowdbpb.OnePhaseTxnOp{TxnId: []byte(id), Writes: writes}}}
}

func casCmd(id, anchor string, expect, to vowdbpb.TxnState, remove bool) *vowdbpb.Command {
	return &vowdbpb.Command{Op: &vowdbpb.Command_TxnRecordCas{TxnRecordCas: &vowdbpb.TxnRecordCasOp{
		TxnId: []byte(id), AnchorKey: []byte(anchor), Expect: expect, NewState: to, Remove: remove}}}
}

// decideCmd is the anchor's commit with the decision: writes applied only if
// the txn record at anchor moves from absent to COMMITTED.
func decideCmd(id, anchor string, writes ...*vowdbpb.TxnWrite) *vowdbpb.Command {
	c := onePhaseCmd(id, writes...)
	c.GetOnePhaseTxn().Decide = &vowdbpb.TxnRecordCasOp{TxnId: []byte(id), AnchorKey: []byte(anchor),
		Expect: unknown, NewState: committed, ParticipantRangeIds: []uint64{2}, CoordinatorNodeId: 1}
	return c
}

func w(k, v string) *vowdbpb.TxnWrite { return &vowdbpb.TxnWrite{Key: []byte(k), Value: []byte(v)} }

const (
	unknown   = vowdbpb.TxnState_TXN_UNKNOWN
	pending   = vowdbpb.TxnState_TXN_PENDING
	committed = vowdbpb.TxnState_TXN_COMMITTED
	aborted   = vowdbpb.TxnState_TXN_ABORTED
)

// TestTxnCommands runs scripts of txn commands against the range state
// machine and checks each command's resulting state and the final data,
// once without and once with the txn index (which must change no answer).
type txnStep struct {
	cmd         *vowdbpb.Command
	wantState   vowdbpb.TxnState
	wantSwapped bool
	wantErr     bool
}

func TestTxnCommands(t *testing.T) {
	type step = txnStep
	tests := []struct {
		name  string
		steps []step
		want  map[string]string
	}{
		{"prepare then commit applies the writes", []step{
			{cmd: prepareCmd("t1", w("a", "1"), w("b", "2")), wantState: pending},
			{cmd: get("a")}, // prepared writes are not visible
			{cmd: resolveCmd("t1", true), wantState: committed},
		}, map[string]string{"a": "1", "b": "2"}},
		// Ref: DESIGN.md rule 7 (duplicates change nothing).
		{"duplicate prepare and commit apply once", []step{
			{cmd: prepareCmd("t1", w("a", "1")), wantState: pending},
			{cmd: prepareCmd("t1", w("a", "1")), wantState: pending},
			{cmd: resolveCmd("t1", true), wantState: committed},
			{cmd: put("a", "later")},
			{cmd: resolveCmd("t1", true), wantState: committed},
			{cmd: prepareCmd("t1", w("a", "1")), wantState: committed},
			{cmd: resolveCmd("t1", true), wantState: committed},
		}, map[string]string{"a": "later"}},
		// Ref: DESIGN.md rule 5 (one that has not prepared records ABORT so it can never prepare later).
		{"abort before prepare blocks a late prepare", []step{
			{cmd: resolveCmd("t1", false), wantState: aborted},
			{cmd: prepareCmd("t1", w("a", "1")), wantState: aborted},
			{cmd: resolveCmd("t1", true), wantState: aborted},
		}, map[string]string{}},
		{"abort drops the prepared writes", []step{
			{cmd: prepareCmd("t1", w("a", "1")), wantState: pending},
			{cmd: resolveCmd("t1", false), wantState: aborted},
		}, map[string]string{}},
		{"commit without prepare is not acknowledged", []step{
			{cmd: resolveCmd("t1", true), wantState: unknown},
			{cmd: prepareCmd("t1", w("a", "1")), wantState: pending},
		}, map[string]string{}},
		// Ref: DESIGN.md rule 10 and "exactly-once commits".
		{"one-phase commit applies once per txn id", []step{
			{cmd: onePhaseCmd("t1", w("a", "1")), wantState: committed, wantSwapped: true},
			{cmd: put("a", "later")},
			{cmd: onePhaseCmd("t1", w("a", "1")), wantState: committed},
		}, map[string]string{"a": "later"}},
		// Ref: DESIGN.md rule 4 (exactly one of COMMITTED and ABORTED wins).
		{"record compare-and-set: first writer wins", []step{
			{cmd: casCmd("t1", "a", unknown, committed, false), wantState: committed, wantSwapped: true},
			{cmd: casCmd("t1", "a", unknown, aborted, false), wantState: committed},
			{cmd: casCmd("t1", "a", aborted, unknown, true), wantState: committed},
			{cmd: casCmd("t1", "a", committed, unknown, true), wantState: unknown, wantSwapped: true},
		}, map[string]string{}},
		// Ref: DESIGN.md rules 1, 4; docs/design/2pc.md "The anchor decides".
		{"commit with the decision records COMMITTED and applies once", []step{
			{cmd: decideCmd("t1", "a", w("a", "1")), wantState: committed, wantSwapped: true},
			{cmd: casCmd("t1", "a", unknown, aborted, false), wantState: committed}, // a late presumed abort loses
			{cmd: put("a", "later")},
			{cmd: decideCmd("t1", "a", w("a", "1")), wantState: committed},
		}, map[string]string{"a": "later"}},
		{"commit with the decision after a presumed abort applies nothing", []step{
			{cmd: casCmd("t1", "a", unknown, aborted, false), wantState: aborted, wantSwapped: true},
			{cmd: decideCmd("t1", "a", w("a", "1")), wantState: aborted},
			{cmd: decideCmd("t1", "a", w("a", "1")), wantState: aborted}, // and never will
			{cmd: onePhaseCmd("t1", w("a", "1")), wantState: aborted},
		}, map[string]string{}},
		{"commit with the decision for an anchor key outside the range is refused", []step{
			{cmd: decideCmd("t1", "zz", w("a", "1")), wantErr: true},
		}, map[string]string{}},
		{"write outside the range is refused", []step{
			{cmd: prepareCmd("t1", w("a", "1"), w("zz", "2")), wantErr: true},
			{cmd: resolveCmd("t1", true), wantState: unknown},
		}, map[string]string{}},
	}
	for _, tc := range tests {
		for _, indexed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/indexed=%v", tc.name, indexed), func(t *testing.T) {
				runTxnScript(t, indexed, tc.steps, tc.want)
			})
		}
	}
}

// runTxnScript applies steps to an empty range, with or without the txn
// index, and checks each result and the final user data.
func runTxnScript(t *testing.T, indexed bool, steps []txnStep, want map[string]string) {
	t.Helper()
	b := memBatch(t)
	d := userDesc("", "m")
	var idx *txnIndex
	if indexed {
		idx = &txnIndex{}
		if err := idx.build(b, d.RangeId); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range steps {
		res, err := applyCommand(b, d, idx, s.cmd)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if (res.Err != nil) != s.wantErr {
			t.Fatalf("step %d: err %v, want error %v", i, res.Err, s.wantErr)
		}
		if res.TxnState != s.wantState || res.Swapped != s.wantSwapped {
			t.Fatalf("step %d: state %v swapped %v, want %v %v", i, res.TxnState, res.Swapped, s.wantState, s.wantSwapped)
		}
	}
	got := userData(t, b)
	if len(got) != len(want) {
		t.Fatalf("data %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("data %v, want %v", got, want)
		}
	}
}

func get(k string) *vowdbpb.Command {
	// A CAS that never swaps: reads without writing.
	return &vowdbpb.Command{Op: &vowdbpb.Command_Cas{Cas: &vowdbpb.CasOp{Key: []byte(k), Expected: []byte("\x00never")}}}
}

func userData(t *testing.T, b batchRW) map[string]string {
	t.Helper()
	got := map[string]string{}
	s, e := keys.UserSpan(nil, nil)
	it, err := b.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for it.SeekGE(s); it.Valid() && string(it.Key()) < string(e); it.Next() {
		uk, _ := keys.DecodeUserKey(it.Key())
		got[string(uk)] = string(it.Value())
	}
	_ = it.Close()
	return got
}

// TestSplitCarriesTxnState: prepared write sets are divided at the split key,
// records follow their anchor, outcomes are remembered on both sides; then
// resolving on each side applies exactly its own writes.
func TestSplitCarriesTxnState(t *testing.T) {
	for _, indexed := range []bool{false, true} {
		t.Run(fmt.Sprintf("indexed=%v", indexed), func(t *testing.T) { testSplitCarriesTxnState(t, indexed) })
	}
}

// testSplitCarriesTxnState runs with or without txn indexes; the left
// range's index must not answer from state the split rewrote.
func testSplitCarriesTxnState(t *testing.T, indexed bool) {
	b := memBatch(t)
	d := userDesc("", "")
	indexes := map[uint64]*txnIndex{}
	mustApply := func(desc *vowdbpb.RangeDescriptor, cmd *vowdbpb.Command) Result {
		t.Helper()
		idx := indexes[desc.RangeId]
		if indexed && idx == nil {
			idx = &txnIndex{}
			indexes[desc.RangeId] = idx
		}
		if idx != nil && idx.needsBuild() {
			if err := idx.build(b, desc.RangeId); err != nil {
				t.Fatal(err)
			}
		}
		res, err := applyCommand(b, desc, idx, cmd)
		if err != nil || res.Err != nil {
			t.Fatalf("apply: %v %v", err, res.Err)
		}
		return res
	}
	mustApply(d, prepareCmd("t1", w("a", "1"), w("x", "2")))
	mustApply(d, casCmd("t2", "y", unknown, committed, false))
	mustApply(d, resolveCmd("t3", false))
	res := mustApply(d, &vowdbpb.Command{Op: &vowdbpb.Command_Split{Split: &vowdbpb.SplitOp{SplitKey: []byte("m"), NewRangeId: 9}}})
	left, right := res.Left, res.Right
	// The transaction record anchored at "y" moved right.
	if r := mustApply(right, casCmd("t2", "y", committed, unknown, true)); !r.Swapped {
		t.Fatalf("txn record did not move to the right range: %+v", r)
	}
	// t3's abort is remembered on both sides.
	for _, desc := range []*vowdbpb.RangeDescriptor{left, right} {
		if r := mustApply(desc, prepareCmd("t3")); r.TxnState != aborted {
			t.Fatalf("range %d forgot t3's outcome: %v", desc.RangeId, r.TxnState)
		}
	}
	// Each side commits exactly its part of t1.
	mustApply(left, resolveCmd("t1", true))
	if got := userData(t, b); got["a"] != "1" || got["x"] != "" {
		t.Fatalf("after left commit: %v", got)
	}
	mustApply(right, resolveCmd("t1", true))
	if got := userData(t, b); got["a"] != "1" || got["x"] != "2" {
		t.Fatalf("after right commit: %v", got)
	}
	var rec vowdbpb.PrepareTxnOp
	if v, found, _ := getRW(b, keys.TxnKey(right.RangeId, keys.SuffixPrepare, []byte("t1"))); found {
		_ = proto.Unmarshal(v, &rec)
		t.Fatalf("prepare record left behind: %v", &rec)
	}
	var km *KeyMismatchError
	if r, _ := applyCommand(b, left, nil, prepareCmd("t4", w("x", "1"))); !errors.As(r.Err, &km) {
		t.Fatalf("left range accepted a write beyond the split: %v", r.Err)
	}
}

// TestEndTxns: a batch of ENDs marks every record it names ended in one
// entry; an END whose anchor key is outside the range is skipped; a batch
// holding anything but ENDs is refused and changes nothing.
func TestEndTxns(t *testing.T) {
	b := memBatch(t)
	d := userDesc("", "m")
	for _, id := range []string{"t1", "t2"} {
		if res, err := applyCommand(b, d, nil, casCmd(id, "b", unknown, committed, false)); err != nil || !res.Swapped {
			t.Fatalf("record %s: %+v %v", id, res, err)
		}
	}
	ended := func(id string) bool {
		t.Helper()
		v, found, err := getRW(b, keys.TxnKey(d.RangeId, keys.SuffixTxnRecord, []byte(id)))
		if err != nil || !found {
			t.Fatalf("record %s: found %v, %v", id, found, err)
		}
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Ended
	}
	end := func(id, anchor string) *vowdbpb.TxnRecordCasOp {
		return &vowdbpb.TxnRecordCasOp{TxnId: []byte(id), AnchorKey: []byte(anchor), End: true}
	}
	bad := &vowdbpb.Command{Op: &vowdbpb.Command_EndTxns{EndTxns: &vowdbpb.EndTxnsOp{Ends: []*vowdbpb.TxnRecordCasOp{
		end("t1", "b"), {TxnId: []byte("t2"), AnchorKey: []byte("b"), Expect: committed, Remove: true}}}}}
	if res, err := applyCommand(b, d, nil, bad); err != nil || !errors.Is(res.Err, ErrInvalidCommand) {
		t.Fatalf("a batch with a removal: %+v %v", res, err)
	}
	if ended("t1") || ended("t2") {
		t.Fatal("a refused batch ended a record")
	}
	ok := &vowdbpb.Command{Op: &vowdbpb.Command_EndTxns{EndTxns: &vowdbpb.EndTxnsOp{Ends: []*vowdbpb.TxnRecordCasOp{
		end("t1", "b"), end("t9", "z"), end("t2", "b")}}}}
	if res, err := applyCommand(b, d, nil, ok); err != nil || res.Err != nil {
		t.Fatalf("batch of ENDs: %+v %v", res, err)
	}
	if !ended("t1") || !ended("t2") {
		t.Fatal("a batch of ENDs left a record not ended")
	}
}
