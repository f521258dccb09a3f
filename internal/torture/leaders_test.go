package torture

import (
	"slices"
	"strings"
	"testing"
)

// testLeaders is five ranges over four nodes: n2 leads the meta range and
// r3, n1 leads r2, n4 leads r5, and r4 has no known leader.
func testLeaders() []rangeLeader {
	return []rangeLeader{
		{Range: 1, Meta: true, Node: 1},
		{Range: 2, Node: 0},
		{Range: 3, Node: 1},
		{Range: 4, Node: -1},
		{Range: 5, Node: 3},
	}
}

// TestBusiestLeader: the node leading the most ranges is chosen; a tie is
// broken by the rng among the tied nodes only, each of them sometimes; no
// known leader is not ok.
func TestBusiestLeader(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		node, led, ok := busiestLeader(Step{Seed: seed}.Rand(), testLeaders(), 4)
		if !ok || node != 1 || led != 2 {
			t.Fatalf("seed %d: busiest %s leading %d (ok %v), want n2 leading 2", seed, nodeName(node), led, ok)
		}
	}
	tie := []rangeLeader{{Range: 1, Meta: true, Node: 0}, {Range: 2, Node: 2}, {Range: 3, Node: -1}}
	seen := map[int]bool{}
	for seed := uint64(0); seed < 50; seed++ {
		node, led, ok := busiestLeader(Step{Seed: seed}.Rand(), tie, 3)
		if !ok || led != 1 || (node != 0 && node != 2) {
			t.Fatalf("seed %d: tie broken to %d leading %d", seed, node, led)
		}
		seen[node] = true
	}
	if len(seen) != 2 {
		t.Fatalf("a tie always went to %v", seen)
	}
	if _, _, ok := busiestLeader(Step{}.Rand(), []rangeLeader{{Range: 1, Node: -1}}, 3); ok {
		t.Fatal("no known leader, but ok")
	}
	if _, _, ok := busiestLeader(Step{}.Rand(), nil, 3); ok {
		t.Fatal("no ranges, but ok")
	}
}

// TestPickLeaderVictim: the victim always leads a range; both ways of
// choosing it are used; the same seed makes the same choice; no known
// leader is an error.
func TestPickLeaderVictim(t *testing.T) {
	ls := testLeaders()
	leaders := []int{0, 1, 3}
	busiest, random := 0, 0
	for seed := uint64(0); seed < 200; seed++ {
		node, why, err := pickLeaderVictim(Step{Seed: seed}.Rand(), ls, 4, nodeName)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(leaders, node) {
			t.Fatalf("seed %d: %s leads nothing (%s)", seed, nodeName(node), why)
		}
		again, why2, _ := pickLeaderVictim(Step{Seed: seed}.Rand(), ls, 4, nodeName)
		if again != node || why2 != why {
			t.Fatalf("seed %d: %s (%s), then %s (%s)", seed, nodeName(node), why, nodeName(again), why2)
		}
		switch {
		case strings.HasPrefix(why, "leads the most ranges"):
			busiest++
			if node != 1 || why != "leads the most ranges (2 of 5: r1(meta), r3)" {
				t.Fatalf("seed %d: busiest is %s: %s", seed, nodeName(node), why)
			}
		case strings.Contains(why, "drawn at random"):
			random++
		default:
			t.Fatalf("seed %d: %q", seed, why)
		}
	}
	if busiest < 50 || random < 50 {
		t.Fatalf("200 draws: %d busiest, %d random ranges; want both about half", busiest, random)
	}
	if _, _, err := pickLeaderVictim(Step{}.Rand(), []rangeLeader{{Range: 1, Meta: true, Node: -1}}, 3, nodeName); err == nil {
		t.Fatal("no known leader, no error")
	}
}

// TestPickCoordinatorLeader: partition-leader isolates the meta range's
// leader or a data range's leader, both over many seeds; a side with no
// known leader falls back to the other; no leader at all is an error.
func TestPickCoordinatorLeader(t *testing.T) {
	ls := testLeaders()
	meta, data := 0, 0
	for seed := uint64(0); seed < 200; seed++ {
		node, why, err := pickCoordinatorLeader(Step{Seed: seed}.Rand(), ls, nodeName)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(why, "meta range r1"):
			meta++
			if node != 1 {
				t.Fatalf("seed %d: the meta range's leader is n2, not %s", seed, nodeName(node))
			}
		case strings.Contains(why, "transaction records"):
			data++
			if !slices.Contains([]int{0, 1, 3}, node) {
				t.Fatalf("seed %d: %s leads no data range", seed, nodeName(node))
			}
		default:
			t.Fatalf("seed %d: %q", seed, why)
		}
	}
	if meta < 50 || data < 50 {
		t.Fatalf("200 draws: %d meta, %d data; want both about half", meta, data)
	}
	noMeta := []rangeLeader{{Range: 1, Meta: true, Node: -1}, {Range: 2, Node: 2}}
	onlyMeta := []rangeLeader{{Range: 1, Meta: true, Node: 0}, {Range: 2, Node: -1}}
	for seed := uint64(0); seed < 20; seed++ {
		if node, _, err := pickCoordinatorLeader(Step{Seed: seed}.Rand(), noMeta, nodeName); err != nil || node != 2 {
			t.Fatalf("seed %d: meta leaderless: %s, %v; want n3", seed, nodeName(node), err)
		}
		if node, _, err := pickCoordinatorLeader(Step{Seed: seed}.Rand(), onlyMeta, nodeName); err != nil || node != 0 {
			t.Fatalf("seed %d: data leaderless: %s, %v; want n1", seed, nodeName(node), err)
		}
	}
	if _, _, err := pickCoordinatorLeader(Step{}.Rand(), []rangeLeader{{Range: 1, Meta: true, Node: -1}}, nodeName); err == nil {
		t.Fatal("no known leader, no error")
	}
}

// TestIsolateLeader: the partition partition-leader builds cuts the chosen
// node off from every other node and nothing else.
func TestIsolateLeader(t *testing.T) {
	for n := 2; n <= 7; n++ {
		for node := 0; node < n; node++ {
			blocked, desc := planPartition(partIsolate, isolateFirst(node, n), nodeName)
			if !strings.HasPrefix(desc, "isolate "+nodeName(node)+" from ") {
				t.Fatalf("%d nodes, isolating %s: %q", n, nodeName(node), desc)
			}
			for i := 0; i < n; i++ {
				for j := 0; j < n; j++ {
					want := i != j && (i == node || j == node)
					if blocked[i][j] != want {
						t.Fatalf("%d nodes, isolating %s: %s-%s blocked %v", n, nodeName(node), nodeName(i), nodeName(j), blocked[i][j])
					}
				}
			}
		}
	}
}

// TestDescribeLeaders: the line faults.log and errors show.
func TestDescribeLeaders(t *testing.T) {
	if got, want := describeLeaders(testLeaders(), nodeName), "r1(meta)=n2 r2=n1 r3=n2 r4=- r5=n4"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := rangesLedBy(testLeaders(), 1); got != "r1(meta), r3" {
		t.Fatalf("n2 leads %q", got)
	}
	if !anyLeader(testLeaders()) || anyLeader([]rangeLeader{{Range: 1, Node: -1}}) {
		t.Fatal("anyLeader")
	}
}

// TestFaultNames: every listed fault can be built and answers to its name;
// the faults that need --unsafe-lose-unsynced or a view of the leaders say
// so; an unknown name is an error.
func TestFaultNames(t *testing.T) {
	for _, name := range FaultNames {
		f, err := NewFault(name, nil, nil, "vowdb")
		if err != nil {
			t.Fatal(err)
		}
		if f.Name() != name {
			t.Fatalf("NewFault(%q).Name() = %q", name, f.Name())
		}
		_, flags := f.(nodeFlagger)
		if want := name == "lose-unsynced" || name == "power-loss"; flags != want {
			t.Fatalf("%s: node flags %v, want %v", name, flags, want)
		}
		_, prep := f.(preparer)
		if want := strings.HasSuffix(name, "-leader"); prep != want {
			t.Fatalf("%s: looks for leaders %v, want %v", name, prep, want)
		}
	}
	if _, err := NewFault("meteor", nil, nil, "vowdb"); err == nil {
		t.Fatal("unknown fault built")
	}
}
