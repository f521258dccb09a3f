package check

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// randomGraph returns n nodes and random edges of random kinds.
func randomGraph(rng *rand.Rand, n int) (*graph, [][]uint8) {
	kinds := make([][]uint8, n) // kinds[u][v]: mask of the edges u -> v
	var raw []rawEdge
	for u := range n {
		kinds[u] = make([]uint8, n)
		for v := range n {
			if u == v || rng.IntN(3) != 0 {
				continue
			}
			for _, k := range []uint8{edgeWW, edgeWR, edgeRW, edgeRT} {
				if rng.IntN(3) == 0 {
					kinds[u][v] |= k
					raw = append(raw, rawEdge{from: int32(u), to: int32(v), kind: k})
				}
			}
		}
	}
	rng.Shuffle(len(raw), func(i, j int) { raw[i], raw[j] = raw[j], raw[i] })
	return buildGraph(n, raw), kinds
}

// TestSCCsAgainstReachability: two nodes share a component iff each
// reaches the other (transitive closure computed naively).
func TestSCCsAgainstReachability(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	for round := 0; round < 300; round++ {
		n := 1 + rng.IntN(9)
		g, kinds := randomGraph(rng, n)
		mask := uint8(1 + rng.IntN(15))
		reach := make([][]bool, n)
		for u := range n {
			reach[u] = make([]bool, n)
			for v := range n {
				reach[u][v] = kinds[u][v]&mask != 0
			}
		}
		for k := range n {
			for u := range n {
				for v := range n {
					reach[u][v] = reach[u][v] || reach[u][k] && reach[k][v]
				}
			}
		}
		comp, comps := g.sccs(mask)
		for u := range n {
			for v := range n {
				same := u != v && reach[u][v] && reach[v][u]
				if got := comp[u] >= 0 && comp[u] == comp[v] && u != v; got != same {
					t.Fatalf("round %d mask %b: nodes %d,%d together=%v, want %v (comps %v, kinds %v)", round, mask, u, v, got, same, comps, kinds)
				}
			}
			if comp[u] >= 0 && !slices.Contains(comps[comp[u]], int32(u)) {
				t.Fatalf("node %d not in its component %v", u, comps[comp[u]])
			}
		}
	}
}

// TestCycleThroughAgainstEnumeration: cycleThrough finds a cycle iff one
// exists among all simple cycles, and what it finds is a cycle of the
// graph within the limits.
func TestCycleThroughAgainstEnumeration(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	all := edgeWW | edgeWR | edgeRW | edgeRT
	for round := 0; round < 500; round++ {
		n := 2 + rng.IntN(6)
		g, kinds := randomGraph(rng, n)
		first := []uint8{edgeWW, edgeWR, edgeRW, edgeRT}[rng.IntN(4)]
		allowed := uint8(1+rng.IntN(15)) | first
		rwLimit := []int{rwAny, rwNone, rwOne}[rng.IntN(3)]
		comp, comps := g.sccs(all)
		s := newSearcher(g)
		for cid, members := range comps {
			got := s.cycleThrough(members, comp, int32(cid), first, allowed, rwLimit, false)
			want := existsCycle(kinds, members, first, allowed, rwLimit)
			if (got != nil) != want {
				t.Fatalf("round %d: component %v first %s allowed %b rw %d: found %v, exists %v (kinds %v)",
					round, members, edgeName(first), allowed, rwLimit, got, want, kinds)
			}
			if got == nil {
				continue
			}
			rw := 0
			for i, st := range got {
				if kinds[st.from][st.to]&st.kind == 0 || st.e.to != st.to || got[(i+1)%len(got)].from != st.to {
					t.Fatalf("round %d: not a cycle of the graph: %v", round, got)
				}
				if (i == 0 && st.kind != first) || (i > 0 && allowed&st.kind == 0) {
					t.Fatalf("round %d: edge %d of kind %s not allowed: %v", round, i, edgeName(st.kind), got)
				}
				if st.kind == edgeRW {
					rw++
				}
			}
			if rwLimit != rwAny && rw > rwLimit {
				t.Fatalf("round %d: %d rw edges, limit %d", round, rw, rwLimit)
			}
		}
	}
}

// existsCycle enumerates the simple cycles through the members, starting
// with an edge that can be of kind first, and reports whether one can be
// labelled within allowed and the rw limit.
func existsCycle(kinds [][]uint8, members []int32, first, allowed uint8, rwLimit int) bool {
	n := len(kinds)
	onPath := make([]bool, n)
	var walk func(v, target int, rw int) bool
	walk = func(v, target int, rw int) bool {
		if rwLimit != rwAny && rw > rwLimit {
			return false
		}
		if v == target {
			return true
		}
		onPath[v] = true
		defer func() { onPath[v] = false }()
		for w := range n {
			k := kinds[v][w] & allowed
			if k == 0 || (onPath[w] && w != target) {
				continue
			}
			cost := 0
			if k&^edgeRW == 0 {
				cost = 1 // only an rw edge leads there
			}
			if rwLimit == rwAny {
				cost = 0
			}
			if walk(w, target, rw+cost) {
				return true
			}
		}
		return false
	}
	for _, u := range members {
		for v := range n {
			if kinds[u][v]&first == 0 {
				continue
			}
			start := 0
			if first == edgeRW {
				start = 1
			}
			if walk(v, int(u), start) {
				return true
			}
		}
	}
	return false
}

// TestSingleRW: singleRW finds a cycle of one rw edge and ww/wr edges
// whenever an rw edge joins two nodes of one ww/wr component, and only
// then.
func TestSingleRW(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 5))
	all := edgeWW | edgeWR | edgeRW | edgeRT
	for round := 0; round < 500; round++ {
		n := 2 + rng.IntN(7)
		g, kinds := randomGraph(rng, n)
		wwwr, _ := g.sccs(edgeWW | edgeWR)
		comp, comps := g.sccs(all)
		s := newSearcher(g)
		for cid := range comps {
			want := false
			for u := range n {
				for v := range n {
					if comp[u] == int32(cid) && kinds[u][v]&edgeRW != 0 && wwwr[u] >= 0 && wwwr[u] == wwwr[v] {
						want = true
					}
				}
			}
			got := s.singleRW(comps[cid], wwwr)
			if (got != nil) != want {
				t.Fatalf("round %d: found %v, want a cycle: %v (kinds %v)", round, got, want, kinds)
			}
			for i, st := range got {
				k := edgeWW | edgeWR
				if i == 0 {
					k = edgeRW
				}
				if st.kind&k == 0 || kinds[st.from][st.to]&st.kind == 0 || got[(i+1)%len(got)].from != st.to {
					t.Fatalf("round %d: not a G-single cycle: %v (kinds %v)", round, got, kinds)
				}
			}
		}
	}
}

// TestRealtimeEdgesPreserveOrder: the few rt edges the sweep keeps connect
// T1 to T2 (through other transactions) iff T1 is ok and completed before
// T2 was invoked.
func TestRealtimeEdgesPreserveOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 6))
	for round := 0; round < 300; round++ {
		n := 1 + rng.IntN(12)
		h := make([]Op, n)
		for i := range h {
			inv := rng.Int64N(30)
			h[i] = Op{Type: OK, Invoke: inv, Complete: inv + rng.Int64N(10), Txn: []Mop{Append("x", i)}}
			if rng.IntN(4) == 0 {
				h[i].Type = Info
			}
		}
		c := &laChecker{h: h, rep: newReporter(), keyID: map[string]int32{}}
		c.scan()
		c.realtimeEdges()
		g := buildGraph(len(c.nodes), c.edges)
		for a := range n {
			reach := make([]bool, n)
			queue := []int32{int32(a)}
			for len(queue) > 0 {
				v := queue[0]
				queue = queue[1:]
				for _, e := range g.adj[g.start[v]:g.start[v+1]] {
					if !reach[e.to] {
						reach[e.to] = true
						queue = append(queue, e.to)
					}
				}
			}
			for b := range n {
				want := h[a].Type == OK && h[a].Complete < h[b].Invoke
				if reach[b] != want {
					t.Fatalf("round %d: %d reaches %d: %v, want %v\n%s", round, a, b, reach[b], want, dump(h))
				}
			}
		}
	}
}
