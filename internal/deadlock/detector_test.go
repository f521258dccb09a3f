package deadlock

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/vowdb/vowdb/internal/lock"
)

func age(id lock.TxnID) TxnInfo { return TxnInfo{Age: uint64(id)} }

// e builds an edge: waiter w waits for holder h.
func e(w, h lock.TxnID) lock.Edge { return lock.Edge{Waiter: w, Holder: h} }

func TestDetect(t *testing.T) {
	tests := []struct {
		name    string
		reports map[uint64][]lock.Edge
		want    []Victim
	}{
		{"no edges", nil, nil},
		{"chain is not a deadlock", map[uint64][]lock.Edge{1: {e(1, 2)}, 2: {e(2, 3)}}, nil},
		{"2-cycle across two nodes", map[uint64][]lock.Edge{1: {e(1, 2)}, 2: {e(2, 1)}}, []Victim{{2, []lock.TxnID{2, 1}}}},
		{"3-cycle across three nodes", map[uint64][]lock.Edge{1: {e(1, 2)}, 2: {e(2, 3)}, 3: {e(3, 1)}}, []Victim{{3, []lock.TxnID{3, 1, 2}}}},
		{"two disjoint cycles, one victim each", map[uint64][]lock.Edge{
			1: {e(1, 2), e(2, 1)}, 2: {e(5, 6), e(6, 7), e(7, 5)},
		}, []Victim{{2, []lock.TxnID{2, 1}}, {7, []lock.TxnID{7, 5, 6}}}},
		{"cycles sharing the victim need one victim", map[uint64][]lock.Edge{
			1: {e(1, 9), e(9, 1)}, 2: {e(2, 9), e(9, 2)},
		}, []Victim{{9, []lock.TxnID{9, 1}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d Detector
			for n, e := range tc.reports {
				d.Report(n, e)
			}
			if got := d.Detect(age); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("victims %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPreparedNeverVictim(t *testing.T) {
	var d Detector
	d.Report(1, []lock.Edge{e(1, 2), e(2, 3), e(3, 1)})
	info := func(id lock.TxnID) TxnInfo { return TxnInfo{Age: uint64(id), Prepared: id == 3} }
	v := d.Detect(info)
	if len(v) != 1 || v[0].Txn != 2 {
		t.Fatalf("victims %v, want txn 2 (3 is prepared)", v)
	}
}

func TestReportReplaces(t *testing.T) {
	var d Detector
	d.Report(1, []lock.Edge{e(1, 2), e(2, 1)})
	d.Report(1, []lock.Edge{e(1, 2)})
	if v := d.Detect(age); v != nil {
		t.Fatalf("stale edges kept: %v", v)
	}
}

// TestAgainstBruteForce: on random small graphs, removing the victims leaves
// an acyclic graph (checked by brute-force path search), every victim lies
// on a cycle of the graph as it was when chosen, and an acyclic graph yields
// no victim.
func TestAgainstBruteForce(t *testing.T) {
	for seed := uint64(1); seed <= 500; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		var d Detector
		n := 2 + rng.IntN(6)
		for node := uint64(1); node <= 3; node++ {
			var edges []lock.Edge
			for i := 0; i < rng.IntN(6); i++ {
				a, b := lock.TxnID(1+rng.IntN(n)), lock.TxnID(1+rng.IntN(n))
				if a != b {
					edges = append(edges, lock.Edge{Waiter: a, Holder: b})
				}
			}
			d.Report(node, edges)
		}
		g := d.Graph()
		victims := d.Detect(age)
		removed := map[lock.TxnID]bool{}
		for _, v := range victims {
			if !onCycle(g, removed, v.Txn) {
				t.Fatalf("seed %d: victim %d not on a cycle of %v", seed, v.Txn, g)
			}
			removed[v.Txn] = true
		}
		for x := range g {
			if !removed[x] && onCycle(g, removed, x) {
				t.Fatalf("seed %d: cycle through %d left after victims %v in %v", seed, x, victims, g)
			}
		}
	}
}

// onCycle: is there a path from x back to x avoiding removed nodes?
func onCycle(g map[lock.TxnID][]lock.TxnID, removed map[lock.TxnID]bool, x lock.TxnID) bool {
	if removed[x] {
		return false
	}
	seen := map[lock.TxnID]bool{}
	var reach func(n lock.TxnID) bool
	reach = func(n lock.TxnID) bool {
		for _, m := range g[n] {
			if removed[m] {
				continue
			}
			if m == x {
				return true
			}
			if !seen[m] {
				seen[m] = true
				if reach(m) {
					return true
				}
			}
		}
		return false
	}
	return reach(x)
}
