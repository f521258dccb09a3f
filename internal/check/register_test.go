package check

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func put(p int, typ OpType, key string, v int, invoke, complete int64) Op {
	return Op{Process: p, Type: typ, F: FPut, Key: key, Value: v, Invoke: invoke, Complete: complete}
}

// get returns an ok get of key that found v, or found nothing if v < 0.
func get(p int, key string, v int, invoke, complete int64) Op {
	op := Op{Process: p, Type: OK, F: FGet, Key: key, Invoke: invoke, Complete: complete}
	if v >= 0 {
		op.Value, op.Found = v, true
	}
	return op
}

func cas(p int, typ OpType, key string, from, to int, swapped bool, invoke, complete int64) Op {
	return Op{Process: p, Type: typ, F: FCAS, Key: key, Expected: from, Value: to, Found: swapped, Invoke: invoke, Complete: complete}
}

func TestRegister(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []Op
		want    []string
	}{
		{"valid", []Op{
			get(0, "x", -1, 0, 5),
			put(0, OK, "x", 1, 10, 20), get(1, "x", 1, 25, 30),
			cas(0, OK, "x", 1, 2, true, 40, 50), get(1, "x", 2, 60, 70),
			cas(0, OK, "x", 5, 6, false, 80, 90), get(1, "x", 2, 95, 99),
			get(2, "y", -1, 0, 100),
		}, nil},
		{"concurrent ops in either order", []Op{
			put(0, OK, "x", 1, 0, 100), put(1, OK, "x", 2, 0, 100),
			get(2, "x", 2, 10, 20), get(2, "x", 1, 30, 40),
		}, nil},
		{"stale read", []Op{
			put(0, OK, "x", 1, 0, 10), put(0, OK, "x", 2, 20, 30), get(1, "x", 1, 40, 50),
		}, []string{AnomalyNonlinearizable}},
		{"read of a value never written", []Op{put(0, OK, "x", 1, 0, 10), get(1, "x", 3, 20, 30)}, []string{AnomalyNonlinearizable}},
		{"info put that happened", []Op{
			put(0, Info, "x", 1, 0, 5), get(1, "x", 1, 40, 50), cas(1, OK, "x", 1, 2, true, 60, 70),
		}, nil},
		{"info put that did not happen", []Op{
			put(0, Info, "x", 1, 0, 5), get(1, "x", -1, 40, 50), get(1, "x", -1, 60, 70),
		}, nil},
		{"info put that happened long after it timed out", []Op{
			put(0, Info, "x", 1, 0, 5), get(1, "x", -1, 40, 50), get(1, "x", 1, 60, 70),
		}, nil},
		{"info put that happened, then un-happened", []Op{
			put(0, Info, "x", 1, 0, 5), get(1, "x", 1, 40, 50), get(1, "x", -1, 60, 70),
		}, []string{AnomalyNonlinearizable}},
		{"info cas either way", []Op{
			put(0, OK, "x", 1, 0, 5), cas(0, Info, "x", 1, 2, false, 10, 0), get(1, "x", 1, 40, 50), get(1, "x", 2, 60, 70),
		}, nil},
		{"fail put did not happen", []Op{put(0, Fail, "x", 1, 0, 5), get(1, "x", -1, 40, 50)}, nil},
		{"fail put seen", []Op{put(0, Fail, "x", 1, 0, 5), get(1, "x", 1, 40, 50)}, []string{AnomalyNonlinearizable}},
		{"info get tells nothing", []Op{put(0, OK, "x", 1, 0, 5), {Process: 1, Type: Info, F: FGet, Key: "x", Value: 9, Found: true, Invoke: 10}}, nil},
		{"cas that should have swapped", []Op{put(0, OK, "x", 1, 0, 5), cas(1, OK, "x", 1, 2, false, 10, 20)}, []string{AnomalyNonlinearizable}},
		{"cas that should not have swapped", []Op{put(0, OK, "x", 1, 0, 5), cas(1, OK, "x", 3, 2, true, 10, 20)}, []string{AnomalyNonlinearizable}},
		{"keys are independent", []Op{
			put(0, OK, "x", 1, 0, 10), get(1, "y", -1, 20, 30), get(1, "x", 1, 20, 30),
		}, nil},
		{"malformed", []Op{{Type: OK, F: FAdd}}, []string{AnomalyMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := Register(tc.history, time.Minute)
			checkTypes(t, res, tc.want...)
		})
	}
}

func TestRegisterNamesTheKey(t *testing.T) {
	history := []Op{
		put(0, OK, "x", 1, 0, 10), get(1, "x", 1, 20, 30),
		put(0, OK, "y", 1, 0, 10), put(0, OK, "y", 2, 20, 30), get(1, "y", 1, 40, 50),
	}
	res, _ := Register(history, time.Minute)
	checkTypes(t, res, AnomalyNonlinearizable)
	a := res.Anomalies[0]
	if !strings.HasPrefix(a.Explanation, "key y:") || !strings.Contains(a.Explanation, "get(y) = 1 (op 4)") {
		t.Fatalf("explanation %q should name key y and the stale get", a.Explanation)
	}
	if res.Stats["nonlinearizable-keys"] != 1 || res.Stats["keys"] != 2 {
		t.Fatalf("stats %v", res.Stats)
	}
}

func TestRegisterWriteHTML(t *testing.T) {
	for _, history := range [][]Op{
		{put(0, OK, "x", 1, 0, 10), get(1, "x", 1, 20, 30), put(2, Info, "y", 1, 0, 0)},
		{put(0, OK, "x", 1, 0, 10), put(0, OK, "x", 2, 20, 30), get(1, "x", 1, 40, 50)},
	} {
		_, lin := Register(history, time.Minute)
		var buf bytes.Buffer
		if err := lin.WriteHTML(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "<html") || !strings.Contains(buf.String(), "put(x, 1)") {
			t.Fatalf("not a visualization of the history: %.200s", buf.String())
		}
	}
}

// TestRegisterTimeoutIsFailure: a search that runs out of time must not
// pass. Thirty concurrent puts and then a read of a value none wrote: to
// reject it porcupine must try every order of the puts, which takes far
// longer than the timeout.
func TestRegisterTimeoutIsFailure(t *testing.T) {
	var history []Op
	for p := 0; p < 30; p++ {
		history = append(history, put(p, OK, "x", p, 0, 100))
	}
	history = append(history, get(30, "x", 999, 200, 300))
	res, _ := Register(history, 20*time.Millisecond)
	if res.Valid || !res.Has(AnomalyUnknown) {
		t.Fatalf("timed-out search: valid=%v types %v", res.Valid, res.Types())
	}
}
