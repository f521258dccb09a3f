package check

import (
	"cmp"
	"slices"
)

// Edge kinds of the dependency graph, as bits of a mask.
const (
	edgeWW uint8 = 1 << iota // write-write: T2 appended the element after T1's
	edgeWR                   // write-read: T2 read the element T1 appended last
	edgeRW                   // read-write: T2 appended the element after the one T1 read last
	edgeRT                   // realtime: T1 completed before T2 was invoked
)

// edgeOrder is the order in which a search labels an edge that stands for
// several kinds: the weakest kind first, so witnesses classify as mildly as
// the history allows.
var edgeOrder = [...]uint8{edgeWW, edgeWR, edgeRT, edgeRW}

func edgeName(kind uint8) string {
	switch kind {
	case edgeWW:
		return "ww"
	case edgeWR:
		return "wr"
	case edgeRW:
		return "rw"
	case edgeRT:
		return "rt"
	}
	return "?"
}

// where locates the elements behind a ww, wr or rw edge: position pos in
// the version order of key.
type where struct{ key, pos int32 }

// rawEdge is one derived dependency before edges are merged.
type rawEdge struct {
	from, to int32
	kind     uint8
	at       where
}

// adjEdge is every dependency from one node to another, merged: mask holds
// their kinds and at[k] where the first edge of kind 1<<k came from.
type adjEdge struct {
	to   int32
	mask uint8
	at   [3]where // ww, wr, rw
}

func (e *adjEdge) origin(kind uint8) where {
	switch kind {
	case edgeWW:
		return e.at[0]
	case edgeWR:
		return e.at[1]
	case edgeRW:
		return e.at[2]
	}
	return where{}
}

// graph is the dependency graph in compressed sparse row form: the edges
// out of node v are adj[start[v]:start[v+1]], sorted by target.
type graph struct {
	n     int
	start []int32
	adj   []adjEdge
}

// buildGraph merges raw edges (in any order) into a graph of n nodes. The
// first raw edge of each kind between two nodes gives its where.
func buildGraph(n int, raw []rawEdge) *graph {
	count := make([]int32, n+1)
	for _, e := range raw {
		count[e.from+1]++
	}
	for v := 0; v < n; v++ {
		count[v+1] += count[v]
	}
	// Counting sort by source, stable, so "first" keeps meaning the order
	// the edges were derived in.
	sorted := make([]rawEdge, len(raw))
	next := slices.Clone(count[:n])
	for _, e := range raw {
		sorted[next[e.from]] = e
		next[e.from]++
	}
	g := &graph{n: n, start: make([]int32, n+1), adj: make([]adjEdge, 0, len(raw))}
	for v := 0; v < n; v++ {
		g.start[v] = int32(len(g.adj))
		out := sorted[count[v]:count[v+1]]
		slices.SortStableFunc(out, func(a, b rawEdge) int { return cmp.Compare(a.to, b.to) })
		for i, e := range out {
			if i == 0 || out[i-1].to != e.to {
				g.adj = append(g.adj, adjEdge{to: e.to})
			}
			a := &g.adj[len(g.adj)-1]
			if a.mask&e.kind == 0 {
				a.mask |= e.kind
				switch e.kind {
				case edgeWW:
					a.at[0] = e.at
				case edgeWR:
					a.at[1] = e.at
				case edgeRW:
					a.at[2] = e.at
				}
			}
		}
	}
	g.start[n] = int32(len(g.adj))
	return g
}

// sccs returns the strongly connected components with more than one node
// of the subgraph of edges whose kinds intersect mask (Tarjan's algorithm,
// iterative), and comp: the component of each node, or -1.
func (g *graph) sccs(mask uint8) (comp []int32, comps [][]int32) {
	n := g.n
	index := make([]int32, n)
	low := make([]int32, n)
	onStack := make([]bool, n)
	comp = make([]int32, n)
	for i := range index {
		index[i] = -1
		comp[i] = -1
	}
	var stack []int32
	type frame struct{ v, e int32 }
	var calls []frame
	counter := int32(0)
	visit := func(v int32) {
		index[v], low[v] = counter, counter
		counter++
		stack = append(stack, v)
		onStack[v] = true
		calls = append(calls, frame{v, g.start[v]})
	}
	for s := int32(0); s < int32(n); s++ {
		if index[s] >= 0 {
			continue
		}
		visit(s)
		for len(calls) > 0 {
			f := &calls[len(calls)-1]
			v := f.v
			if f.e < g.start[v+1] {
				e := &g.adj[f.e]
				f.e++
				if e.mask&mask == 0 {
					continue
				}
				w := e.to
				if index[w] < 0 {
					visit(w)
				} else if onStack[w] && index[w] < low[v] {
					low[v] = index[w]
				}
				continue
			}
			calls = calls[:len(calls)-1]
			if len(calls) > 0 {
				if p := calls[len(calls)-1].v; low[v] < low[p] {
					low[p] = low[v]
				}
			}
			if low[v] != index[v] {
				continue
			}
			i := len(stack) - 1
			for stack[i] != v {
				i--
			}
			members := stack[i:]
			for _, w := range members {
				onStack[w] = false
			}
			if len(members) > 1 {
				id := int32(len(comps))
				c := slices.Clone(members)
				slices.Sort(c)
				for _, w := range c {
					comp[w] = id
				}
				comps = append(comps, c)
			}
			stack = stack[:i]
		}
	}
	return comp, comps
}

// step is one edge of a witness cycle: from -kind-> to, with e the merged
// edge it used.
type step struct {
	from, to int32
	kind     uint8
	e        *adjEdge
}

// searcher finds short cycles inside one component by breadth-first search.
// Its arrays are sized for the whole graph once and reused: a state is
// node*2+layer, where the layer counts rw edges taken when their number is
// limited to one.
type searcher struct {
	g      *graph
	stamp  []uint32
	gen    uint32
	parent []int32
	via    []int32 // adj index of the edge into the state
	kind   []uint8
	queue  []int32
	// budget bounds the states a search may pop; searches that could run
	// long draw on it, and give up when it is spent.
	budget int
}

func newSearcher(g *graph) *searcher {
	return &searcher{
		g:      g,
		stamp:  make([]uint32, 2*g.n),
		parent: make([]int32, 2*g.n),
		via:    make([]int32, 2*g.n),
		kind:   make([]uint8, 2*g.n),
	}
}

// Limits on rw edges in a path.
const (
	rwAny  = -1 // rw edges allowed, any number
	rwNone = 0  // no rw edge
	rwOne  = 1  // at most one rw edge
)

// path returns a shortest path from src to dst through nodes of component
// cid (per comp), over edges whose kinds intersect allowed, with at most
// rwLimit rw edges (rwAny: no limit). With limited true it draws on the
// budget and fails when it is spent.
func (s *searcher) path(src, dst int32, comp []int32, cid int32, allowed uint8, rwLimit int, limited bool) ([]step, bool) {
	if rwLimit == rwNone {
		allowed &^= edgeRW
	}
	s.gen++
	if s.gen == 0 { // wrapped: clear the stamps
		clear(s.stamp)
		s.gen = 1
	}
	start := src * 2
	s.stamp[start] = s.gen
	s.parent[start] = -1
	s.queue = append(s.queue[:0], start)
	for qi := 0; qi < len(s.queue); qi++ {
		if limited {
			if s.budget <= 0 {
				return nil, false
			}
			s.budget--
		}
		st := s.queue[qi]
		v, layer := st/2, st%2
		for ei := s.g.start[v]; ei < s.g.start[v+1]; ei++ {
			e := &s.g.adj[ei]
			m := e.mask & allowed
			if m == 0 || comp[e.to] != cid {
				continue
			}
			// The edge keeps the layer if it is (also) of a kind that
			// does not count; as an rw edge it moves up one.
			same := m
			if rwLimit == rwOne {
				same &^= edgeRW
			}
			if same != 0 {
				if s.reach(e.to*2+layer, st, ei, firstKind(same), dst) {
					return s.unwind(e.to*2 + layer), true
				}
			}
			if rwLimit == rwOne && m&edgeRW != 0 && layer == 0 {
				if s.reach(e.to*2+1, st, ei, edgeRW, dst) {
					return s.unwind(e.to*2 + 1), true
				}
			}
		}
	}
	return nil, false
}

// reach marks state next as reached from prev over edge ei of the given
// kind, queues it, and reports whether it is the destination.
func (s *searcher) reach(next, prev, ei int32, kind uint8, dst int32) bool {
	if s.stamp[next] == s.gen {
		return false
	}
	s.stamp[next] = s.gen
	s.parent[next] = prev
	s.via[next] = ei
	s.kind[next] = kind
	s.queue = append(s.queue, next)
	return next/2 == dst
}

func (s *searcher) unwind(st int32) []step {
	var p []step
	for s.parent[st] >= 0 {
		prev := s.parent[st]
		p = append(p, step{from: prev / 2, to: st / 2, kind: s.kind[st], e: &s.g.adj[s.via[st]]})
		st = prev
	}
	slices.Reverse(p)
	return p
}

func firstKind(mask uint8) uint8 {
	for _, k := range edgeOrder {
		if mask&k != 0 {
			return k
		}
	}
	return 0
}

// cycleThrough looks for a cycle in component cid that starts with an edge
// of kind first and returns over edges of kinds allowed with at most
// rwLimit rw edges in all (rw edges count toward the limit whether first or
// on the way back). It tries the component's edges of kind first in order
// and returns the first cycle found. With limited true it stops when the
// budget is spent.
func (s *searcher) cycleThrough(members []int32, comp []int32, cid int32, first, allowed uint8, rwLimit int, limited bool) []step {
	back := rwLimit
	if first == edgeRW && rwLimit != rwAny {
		if rwLimit == rwNone {
			return nil
		}
		back--
	}
	for _, u := range members {
		for ei := s.g.start[u]; ei < s.g.start[u+1]; ei++ {
			e := &s.g.adj[ei]
			if e.mask&first == 0 || comp[e.to] != cid {
				continue
			}
			if limited && s.budget <= 0 {
				return nil
			}
			p, ok := s.path(e.to, u, comp, cid, allowed, back, limited)
			if ok {
				return append([]step{{from: u, to: e.to, kind: first, e: e}}, p...)
			}
		}
	}
	return nil
}

// singleRW looks among members for an rw edge u -> v with u and v in one
// component of the ww/wr subgraph (wwwr, from sccs(edgeWW|edgeWR)): v then
// reaches u over ww and wr edges, which closes a cycle with exactly one rw
// edge.
func (s *searcher) singleRW(members []int32, wwwr []int32) []step {
	for _, u := range members {
		cu := wwwr[u]
		if cu < 0 {
			continue
		}
		for ei := s.g.start[u]; ei < s.g.start[u+1]; ei++ {
			e := &s.g.adj[ei]
			if e.mask&edgeRW == 0 || wwwr[e.to] != cu {
				continue
			}
			if p, ok := s.path(e.to, u, wwwr, cu, edgeWW|edgeWR, rwNone, false); ok {
				return append([]step{{from: u, to: e.to, kind: edgeRW, e: e}}, p...)
			}
		}
	}
	return nil
}
