package torture

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

// TestRecorder: lines land in the file as JSON; counts and
// acknowledgement times feed the recovery measures.
func TestRecorder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	rec, err := NewRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	for _, r := range []struct {
		typ OpType
		at  time.Duration
	}{{OK, 1 * s}, {Fail, 2 * s}, {OK, 3 * s}, {Info, 4 * s}, {OK, 9 * s}} {
		if err := rec.Record(r.typ, r.at, map[string]any{"type": r.typ, "complete": r.at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	st := rec.Stats()
	if st.Attempted() != 5 || st.OK != 3 || st.Fail != 1 || st.Info != 1 {
		t.Fatalf("stats %+v", st)
	}
	if at, ok := st.FirstAckAfter(3 * s); !ok || at != 9*s {
		t.Fatalf("first ack after 3s: %v %v, want 9s", at, ok)
	}
	if _, ok := st.FirstAckAfter(9 * s); ok {
		t.Fatal("an ack after the last one")
	}
	if gap, at := st.LongestGap(0, 10*s); gap != 6*s || at != 3*s {
		t.Fatalf("longest gap %v at %v, want 6s at 3s", gap, at)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); n++ {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %d: %v: %s", n+1, err, sc.Text())
		}
	}
	if n != 5 {
		t.Fatalf("%d lines, want 5", n)
	}
}

// TestOutcome follows the client's error contract.
func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		err         error
		read, write OpType
	}{
		{nil, OK, OK},
		{fmt.Errorf("x: %w", vowdb.ErrAmbiguousCommit), Info, Info},
		{fmt.Errorf("x: %w", vowdb.ErrUnavailable), Fail, Fail},
		{vowdb.ErrRetryable, Fail, Fail},
		{vowdb.ErrInvalidArgument, Fail, Fail},
		{vowdb.ErrNotInitialized, Fail, Fail},
		{errors.New("something else"), Fail, Info},
	} {
		if got := outcome(c.err, false); got != c.read {
			t.Errorf("read, %v: %s, want %s", c.err, got, c.read)
		}
		if got := outcome(c.err, true); got != c.write {
			t.Errorf("write, %v: %s, want %s", c.err, got, c.write)
		}
	}
}

// checkHistory runs Register.Check over ops, as if a run had recorded
// them; a key has its final read if ops hold an ok one.
func checkHistory(t *testing.T, ops []regOp) (bool, string) {
	t.Helper()
	r := NewRegister(WorkloadOptions{})
	r.ops = ops
	for _, op := range ops {
		if !r.finals[op.Key] && op.Final && op.Type == OK {
			r.finals[op.Key] = true
		}
		found := false
		for _, k := range r.keys {
			found = found || k == op.Key
		}
		if !found {
			r.keys = append(r.keys, op.Key)
		}
	}
	return r.Check()
}

// TestRegisterCheck: a clean history passes; each invariant catches its
// violation.
func TestRegisterCheck(t *testing.T) {
	put := func(p int, typ OpType, inv, comp int64, v int) regOp {
		return regOp{Process: p, Type: typ, Invoke: inv, Complete: comp, F: "put", Key: "k", Value: v}
	}
	get := func(p int, inv, comp int64, v int, found bool) regOp {
		return regOp{Process: p, Type: OK, Invoke: inv, Complete: comp, F: "get", Key: "k", Value: v, Found: found}
	}
	final := func(v int) regOp {
		op := get(99, 100, 101, v, true)
		op.Final = true
		return op
	}
	clean := []regOp{
		get(0, 0, 1, 0, false),
		put(0, OK, 2, 3, 1),
		put(1, Info, 4, 5, 2), // unknown: may be read
		get(2, 6, 7, 2, true),
		{Process: 3, Type: OK, Invoke: 8, Complete: 9, F: "cas", Key: "k", Expected: 2, Value: 3, Found: true},
		final(3),
	}
	if ok, rep := checkHistory(t, clean); !ok {
		t.Fatalf("clean history rejected:\n%s", rep)
	}
	for _, c := range []struct {
		name string
		ops  []regOp
		want string
	}{
		{"garbage", []regOp{put(0, OK, 0, 1, 1), get(1, 2, 3, 7, true), final(1)}, "garbage read"},
		{"unparsable", []regOp{{Process: 1, Type: OK, F: "get", Key: "k", Found: true, Raw: "xyz"}, final(1), put(0, OK, 0, 1, 1)}, "garbage read"},
		{"failed write", []regOp{put(0, Fail, 0, 1, 1), get(1, 2, 3, 1, true), final(1)}, "read of a failed write"},
		{"future", []regOp{get(1, 0, 1, 1, true), put(0, OK, 2, 3, 1), final(1)}, "read from the future"},
		{"cas of garbage", []regOp{put(0, OK, 0, 1, 1), {Process: 1, Type: OK, Invoke: 2, Complete: 3, F: "cas", Key: "k", Expected: 5, Value: 6, Found: true}, final(6)}, "garbage read"},
		{"no final read", []regOp{put(0, OK, 0, 1, 1)}, "no final read"},
	} {
		ok, rep := checkHistory(t, c.ops)
		if ok || !strings.Contains(rep, c.want) {
			t.Errorf("%s: ok=%v, want a %q anomaly:\n%s", c.name, ok, c.want, rep)
		}
	}
}
