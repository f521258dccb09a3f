package check

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestJSONLRoundTrip(t *testing.T) {
	history := []Op{
		{Process: 0, Type: OK, Invoke: 1, Complete: 2, Txn: []Mop{Append("x", 1), Read("y", 1, 2, 3)}},
		{Process: 1, Type: Info, Invoke: 3, Txn: []Mop{Append("x", 2), {F: FR, Key: "y"}}},
		{Process: 2, Type: OK, Invoke: 4, Complete: 5, F: FCAS, Key: "r", Expected: 1, Value: 2, Found: true},
		{Process: 3, Type: Fail, Invoke: 6, Complete: 7, F: FTransfer, ID: "t1", From: "a", To: "b", Amount: 5},
		{Process: 3, Type: OK, Invoke: 8, Complete: 9, F: FRead, Balances: map[string]int{"a": 5, "b": 15}},
		{Process: 4, Type: OK, Invoke: 10, Complete: 11, F: FRead, Elements: []int{1, 2}},
	}
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, history); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != len(history) {
		t.Fatalf("%d lines for %d ops:\n%s", lines, len(history), buf.String())
	}
	got, err := ReadJSONL(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, history) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, history)
	}
	// The same verdict after the round trip.
	if a, b := ListAppend(history[:2], ListAppendOptions{Realtime: true}), ListAppend(got[:2], ListAppendOptions{Realtime: true}); !reflect.DeepEqual(a, b) {
		t.Fatalf("verdicts differ: %+v vs %+v", a, b)
	}
}

func TestReadJSONLErrors(t *testing.T) {
	_, err := ReadJSONL(strings.NewReader(`{"process":1,"type":"ok"}` + "\n" + `{"process":`))
	if err == nil || !strings.Contains(err.Error(), "op 1") {
		t.Fatalf("truncated history: err = %v, want one naming op 1", err)
	}
	h, err := ReadJSONL(strings.NewReader(""))
	if err != nil || len(h) != 0 {
		t.Fatalf("empty history: %v, %v", h, err)
	}
}

func TestRealtimeEnd(t *testing.T) {
	for _, tc := range []struct {
		op   Op
		want int64
	}{
		{Op{Type: OK, Invoke: 1, Complete: 5}, 5},
		{Op{Type: Fail, Invoke: 1, Complete: 5}, 5},
		{Op{Type: Info, Invoke: 1, Complete: 5}, math.MaxInt64},
		{Op{Type: Info, Invoke: 1}, math.MaxInt64},
	} {
		if got := tc.op.RealtimeEnd(); got != tc.want {
			t.Errorf("%+v: RealtimeEnd = %d, want %d", tc.op, got, tc.want)
		}
	}
}

func TestOpString(t *testing.T) {
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Process: 3, Type: OK, Txn: []Mop{Append("x", 5), Read("y", 1, 2)}}, "p3 ok [append(x, 5) r(y)=[1 2]]"},
		{Op{Process: 3, Type: Info, Txn: []Mop{Read("y")}}, "p3 info [r(y)]"},
		{Op{Process: 1, Type: OK, F: FGet, Key: "k", Value: 7, Found: true}, "p1 ok get(k)=7"},
		{Op{Process: 1, Type: OK, F: FGet, Key: "k"}, "p1 ok get(k)=nil"},
		{Op{Process: 1, Type: OK, F: FCAS, Key: "k", Expected: 1, Value: 2}, "p1 ok cas(k, 1->2) not swapped"},
		{Op{Process: 2, Type: OK, F: FRead, Balances: map[string]int{"b": 2, "a": 1}}, "p2 ok read {a:1 b:2}"},
		{Op{Process: 2, Type: OK, F: FRead, Elements: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, "p2 ok read [1 2 3 4 ...2 more... 7 8 9 10]"},
	} {
		if got := tc.op.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
