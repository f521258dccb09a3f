package lock

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

func k(s string) Span           { return Point([]byte(s)) }
func sp(a, b string) Span       { return Span{Start: []byte(a), End: []byte(b)} }
func txns(ids ...TxnID) []TxnID { return ids }

func TestScenarios(t *testing.T) {
	type op struct {
		acquire     bool
		txn         TxnID
		span        Span
		mode        Mode
		wantGranted bool
		wantBlock   []TxnID
		wantGrants  []TxnID // for release: txns granted, in order
	}
	acq := func(txn TxnID, span Span, mode Mode, granted bool, blockers ...TxnID) op {
		return op{acquire: true, txn: txn, span: span, mode: mode, wantGranted: granted, wantBlock: blockers}
	}
	rel := func(txn TxnID, grants ...TxnID) op { return op{txn: txn, wantGrants: grants} }
	tests := []struct {
		name  string
		ops   []op
		edges []Edge
	}{
		{"shared locks share", []op{acq(1, k("a"), S, true), acq(2, k("a"), S, true)}, nil},
		{"writer waits for reader", []op{acq(1, k("a"), S, true), acq(2, k("a"), X, false, 1)}, []Edge{{2, 1}}},
		{"reader waits for writer", []op{acq(1, k("a"), X, true), acq(2, k("a"), S, false, 1)}, []Edge{{2, 1}}},
		{"different keys", []op{acq(1, k("a"), X, true), acq(2, k("b"), X, true)}, nil},
		{"reentrant", []op{acq(1, k("a"), X, true), acq(1, k("a"), X, true), acq(1, k("a"), S, true)}, nil},
		{"scan span blocks insert (no phantom)", []op{acq(1, sp("a", "m"), S, true), acq(2, k("c"), X, false, 1)}, []Edge{{2, 1}}},
		{"span end exclusive", []op{acq(1, sp("a", "m"), S, true), acq(2, k("m"), X, true)}, nil},
		{"open span", []op{acq(1, sp("a", ""), S, true), acq(2, k("zzz"), X, false, 1)}, nil},
		{"FIFO: reader queues behind waiting writer", []op{
			acq(1, k("a"), S, true), acq(2, k("a"), X, false, 1), acq(3, k("a"), S, false, 2),
		}, []Edge{{2, 1}, {3, 2}}},
		{"release grants in order", []op{
			acq(1, k("a"), X, true), acq(2, k("a"), S, false, 1), acq(3, k("a"), S, false, 1), acq(4, k("a"), X, false, 1, 2, 3),
			rel(1, 2, 3), rel(2), rel(3, 4),
		}, nil},
		{"upgrade jumps queue", []op{
			acq(1, k("a"), S, true), acq(2, k("a"), X, false, 1), acq(1, k("a"), X, true),
		}, []Edge{{2, 1}}},
		{"two upgraders deadlock", []op{
			acq(1, k("a"), S, true), acq(2, k("a"), S, true), acq(1, k("a"), X, false, 2), acq(2, k("a"), X, false, 1),
		}, []Edge{{1, 2}, {2, 1}}},
		{"release of waiter drops its request", []op{
			acq(1, k("a"), X, true), acq(2, k("a"), X, false, 1), acq(3, k("a"), X, false, 1, 2), rel(2), rel(1, 3),
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tb Table
			for i, o := range tc.ops {
				if o.acquire {
					g, b := tb.Acquire(o.txn, o.span, o.mode)
					if g != o.wantGranted || !reflect.DeepEqual(b, o.wantBlock) {
						t.Fatalf("op %d: acquire txn %d %v %v: granted=%v blockers=%v, want %v %v", i, o.txn, o.span, o.mode, g, b, o.wantGranted, o.wantBlock)
					}
					continue
				}
				var got []TxnID
				for _, l := range tb.ReleaseAll(o.txn) {
					got = append(got, l.Txn)
				}
				if !reflect.DeepEqual(got, o.wantGrants) {
					t.Fatalf("op %d: release %d granted %v, want %v", i, o.txn, got, o.wantGrants)
				}
			}
			if tc.edges != nil {
				if got := tb.WaitsFor(); !reflect.DeepEqual(got, tc.edges) {
					t.Fatalf("edges %v, want %v", got, tc.edges)
				}
			}
		})
	}
}

// TestAgainstOracle drives the table with seeded random operations and
// checks, by brute force after every step, that no two conflicting locks
// are held, that no waiter could be granted, and that every waiter's
// blockers are exactly the conflicting holders and earlier waiters. It
// also runs naiveTable, the table as a plain list of every held lock, on
// the same operations: every answer (granted, blockers, grants on release,
// waits-for edges, the held locks in grant order) must be the same.
func TestAgainstOracle(t *testing.T) {
	// In order, with the boundary cases of ordered span lookups: the empty
	// key, and a key right after another ("a\x00" follows "a").
	keys := []string{"", "a", "a\x00", "ab", "b", "c"}
	for seed := uint64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		var tb Table
		var nv naiveTable
		for step := 0; step < 200; step++ {
			txn := TxnID(1 + rng.IntN(5))
			if rng.IntN(4) == 0 {
				got, want := tb.ReleaseAll(txn), nv.ReleaseAll(txn)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: release %d granted %v, naive %v", seed, step, txn, got, want)
				}
			} else if !tb.Waiting(txn) { // a transaction waits for one lock at a time
				var span Span
				if rng.IntN(3) == 0 {
					a := rng.IntN(len(keys))
					b := a + 1 + rng.IntN(len(keys)-a)
					end := ""
					if b < len(keys) {
						end = keys[b]
					}
					span = sp(keys[a], end)
				} else {
					span = k(keys[rng.IntN(len(keys))])
				}
				mode := S
				if rng.IntN(2) == 0 {
					mode = X
				}
				g, b := tb.Acquire(txn, span, mode)
				ng, nb := nv.Acquire(txn, span, mode)
				if g != ng || !reflect.DeepEqual(b, nb) {
					t.Fatalf("seed %d step %d: acquire %d %v %v: %v %v, naive %v %v", seed, step, txn, span, mode, g, b, ng, nb)
				}
			}
			if err := checkInvariants(&tb); err != nil {
				t.Fatalf("seed %d step %d: %v\nheld %v\nqueue %v", seed, step, err, tb.AllHeld(), tb.queue)
			}
			if got, want := tb.AllHeld(), nv.held; !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Fatalf("seed %d step %d: held %v, naive %v", seed, step, got, want)
			}
			if got, want := tb.WaitsFor(), nv.WaitsFor(); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: waits-for %v, naive %v", seed, step, got, want)
			}
			for id := TxnID(1); id <= 5; id++ {
				var want []Lock
				for _, h := range nv.held {
					if h.Txn == id {
						want = append(want, h)
					}
				}
				if got := tb.Held(id); !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: txn %d holds %v, naive %v", seed, step, id, got, want)
				}
			}
			if h, w := tb.Len(); h != len(nv.held) || w != len(nv.queue) {
				t.Fatalf("seed %d step %d: Len %d %d, naive %d %d", seed, step, h, w, len(nv.held), len(nv.queue))
			}
		}
	}
}

// TestManyLocksOneTxn: a transaction holding many locks, and others
// taking and releasing locks beside it, get the same answers as anywhere
// else (BenchmarkAcquireManyHeld shows that their cost does not grow with
// the number of locks held).
func TestManyLocksOneTxn(t *testing.T) {
	var tb Table
	const n = 20000
	for i := 0; i < n; i++ {
		if g, _ := tb.Acquire(1, k(fmt.Sprintf("key%07d", i)), X); !g {
			t.Fatalf("lock %d not granted", i)
		}
	}
	if g, _ := tb.Acquire(1, k("key0000009"), S); !g {
		t.Fatal("a weaker lock on a key the txn holds was not granted")
	}
	if g, b := tb.Acquire(2, k("key0000007"), S); g || !reflect.DeepEqual(b, []TxnID{1}) {
		t.Fatalf("conflicting request: granted %v blockers %v", g, b)
	}
	if g, b := tb.Acquire(4, sp("key0000100", "key0000102"), S); g || !reflect.DeepEqual(b, []TxnID{1}) {
		t.Fatalf("conflicting scan: granted %v blockers %v", g, b)
	}
	if g, _ := tb.Acquire(3, k("other"), X); !g {
		t.Fatal("a free key was not granted")
	}
	got := tb.ReleaseAll(1)
	if len(got) != 2 || got[0].Txn != 2 || got[1].Txn != 4 {
		t.Fatalf("release granted %v, want txns 2 then 4", got)
	}
	if h, w := tb.Len(); h != 3 || w != 0 {
		t.Fatalf("Len after release: %d held, %d waiting", h, w)
	}
}

// BenchmarkAcquireManyHeld: one point lock taken and released beside
// 100,000 locks held by another transaction.
func BenchmarkAcquireManyHeld(b *testing.B) {
	var tb Table
	for i := 0; i < 100000; i++ {
		tb.Acquire(1, k(fmt.Sprintf("key%07d", i)), X)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tb.Acquire(2, k(fmt.Sprintf("new%07d", i)), X)
		tb.ReleaseAll(2)
	}
}

// BenchmarkScanManyHeld: a scan's span lock taken and released beside
// 100,000 point locks held by another transaction outside the span.
func BenchmarkScanManyHeld(b *testing.B) {
	var tb Table
	for i := 0; i < 100000; i++ {
		tb.Acquire(1, k(fmt.Sprintf("key%07d", i)), X)
	}
	b.ResetTimer()
	for b.Loop() {
		tb.Acquire(2, sp("new", "new\xff"), S)
		tb.ReleaseAll(2)
	}
}

// BenchmarkReleaseHotKey: a release on a key 1,000 transactions wait for
// (one is granted, the others stay behind the new holder), then the granted
// one rejoins the end of the queue.
func BenchmarkReleaseHotKey(b *testing.B) {
	var tb Table
	hot := k("hot")
	for id := TxnID(1); id <= 1000; id++ {
		tb.Acquire(id, hot, X)
	}
	holder := TxnID(1)
	b.ResetTimer()
	for b.Loop() {
		g := tb.ReleaseAll(holder)
		tb.Acquire(holder, hot, X)
		holder = g[0].Txn
	}
}

func checkInvariants(tb *Table) error {
	held := tb.AllHeld()
	for i, a := range held {
		for _, b := range held[i+1:] {
			if a.Txn != b.Txn && (a.Mode == X || b.Mode == X) && a.Span.overlaps(b.Span) {
				return fmt.Errorf("conflicting locks held: %v and %v", a, b)
			}
		}
	}
	for i, w := range tb.queue {
		blocked := false
		for _, h := range held {
			if h.Txn != w.Txn && (h.Mode == X || w.Mode == X) && h.Span.overlaps(w.Span) {
				blocked = true
			}
		}
		upgrader := false
		for _, h := range held {
			upgrader = upgrader || (h.Txn == w.Txn && h.Span.overlaps(w.Span))
		}
		if !upgrader {
			for _, e := range tb.queue[:i] {
				if e.Txn != w.Txn && (e.Mode == X || w.Mode == X) && e.Span.overlaps(w.Span) {
					blocked = true
				}
			}
		}
		if !blocked {
			return fmt.Errorf("waiter %v could be granted", w)
		}
	}
	return nil
}
