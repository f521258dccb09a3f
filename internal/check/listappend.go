package check

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// ListAppendOptions tunes ListAppend.
type ListAppendOptions struct {
	// Realtime adds an rt edge from every transaction that completed to
	// every transaction invoked after it, and reports the cycles that need
	// one ("G-single-realtime", ...): it checks strict serializability.
	// Without it, ListAppend checks serializability.
	Realtime bool
}

// searchBudget bounds, per component and per search, the states visited
// looking for the mildest kind of cycle (G-single before G2, and the
// realtime classes). A search that runs out reports the component under
// the next kind, which is always found in time linear in its size.
const searchBudget = 1 << 20

// ListAppend checks a history of list-append transactions (Op.Txn) for
// serializability, or strict serializability with opts.Realtime. See the
// package documentation for the anomalies it reports.
//
// Elements must be unique per key. Ok transactions are checked in full;
// info transactions are in the graph only through their appends, which may
// or may not have happened (their reads are ignored); fail transactions did
// nothing, and any read of their appends is G1a.
func ListAppend(history []Op, opts ListAppendOptions) Result {
	c := &laChecker{h: history, rep: newReporter(), keyID: map[string]int32{}}
	c.scan()
	c.orderVersions()
	c.deriveEdges()
	if opts.Realtime {
		c.realtimeEdges()
	}
	c.findCycles(opts.Realtime)
	return c.rep.result()
}

// appendRef is who appended an element to a key.
type appendRef struct {
	op, mop int32 // index in the history, and of the micro-op in the op
	final   bool  // it was the op's last append to the key
}

// readRef is one ok read: micro-op mop of op.
type readRef struct {
	op, mop int32
	key     int32
}

type laChecker struct {
	h   []Op
	rep *reporter

	keys    []string
	keyID   map[string]int32
	writers []map[int]appendRef // per key: element -> appender

	node  []int32 // history index -> graph node, -1 if none
	nodes []int32 // graph node -> history index

	reads  []readRef
	vo     [][]int // per key: version order, the longest ok read
	voRead []int32 // per key: the op of that read, -1 if none

	edges []rawEdge
}

func (c *laChecker) key(k string) int32 {
	id, ok := c.keyID[k]
	if !ok {
		id = int32(len(c.keys))
		c.keyID[k] = id
		c.keys = append(c.keys, k)
		c.writers = append(c.writers, map[int]appendRef{})
	}
	return id
}

// keyState is what a transaction knows of a key from its own ops so far.
type keyState struct {
	key      int32
	read     bool  // it read the key
	last     []int // the last read's list
	appended []int // its appends since that read (or since it began)
	lastApp  int   // its last append
	appends  int
}

// scan indexes appends, collects ok reads, checks each ok transaction
// against its own earlier ops (internal) and makes graph nodes of ok and
// info transactions.
func (c *laChecker) scan() {
	c.node = make([]int32, len(c.h))
	var state []keyState
	var oks, infos, fails, appends int
	for i, op := range c.h {
		c.node[i] = -1
		if len(op.Txn) == 0 {
			if op.F != "" {
				c.rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): not a list-append transaction", i, op), i)
			}
			continue
		}
		switch op.Type {
		case OK, Info:
			c.node[i] = int32(len(c.nodes))
			c.nodes = append(c.nodes, int32(i))
			if op.Type == OK {
				oks++
			} else {
				infos++
			}
		case Fail:
			fails++
		default:
			c.rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): unknown type %q", i, op, op.Type), i)
			continue
		}
		if op.Type == OK && op.Complete < op.Invoke {
			c.rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s) completed at %d before it was invoked at %d", i, op, op.Complete, op.Invoke), i)
		}
		state = state[:0]
		for j, m := range op.Txn {
			k := c.key(m.Key)
			si := slices.IndexFunc(state, func(s keyState) bool { return s.key == k })
			if si < 0 {
				state = append(state, keyState{key: k})
				si = len(state) - 1
			}
			st := &state[si]
			switch m.F {
			case FAppend:
				appends++
				if prev, dup := c.writers[k][m.Value]; dup {
					c.rep.add(AnomalyMalformed, fmt.Sprintf("ops %d and %d both append %d to %s: elements must be unique per key",
						prev.op, i, m.Value, m.Key), int(prev.op), i)
				} else {
					c.writers[k][m.Value] = appendRef{op: int32(i), mop: int32(j)}
				}
				st.appended = append(st.appended, m.Value)
				st.lastApp = m.Value
				st.appends++
			case FR:
				if op.Type != OK {
					continue
				}
				c.reads = append(c.reads, readRef{op: int32(i), mop: int32(j), key: k})
				c.checkInternal(i, m, st)
				st.read, st.last, st.appended = true, m.List, st.appended[:0:0]
			default:
				c.rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): unknown micro-op %q", i, op, m.F), i)
			}
		}
		for _, st := range state {
			if st.appends > 0 {
				if w, ok := c.writers[st.key][st.lastApp]; ok && w.op == int32(i) {
					w.final = true
					c.writers[st.key][st.lastApp] = w
				}
			}
		}
	}
	c.rep.stats["keys"] = len(c.keys)
	c.rep.stats["txns"] = oks + infos + fails
	c.rep.stats["txns-ok"] = oks
	c.rep.stats["txns-info"] = infos
	c.rep.stats["txns-fail"] = fails
	c.rep.stats["appends"] = appends
	c.rep.stats["reads"] = len(c.reads)
}

// checkInternal checks a read against what its transaction saw and did
// before: after a read of the key, exactly that list plus its own appends
// since; before any, a list ending in its own appends so far.
func (c *laChecker) checkInternal(i int, m Mop, st *keyState) {
	l := m.List
	var want string
	switch {
	case st.read:
		n := len(st.last)
		if len(l) != n+len(st.appended) || !slices.Equal(l[:n], st.last) || !slices.Equal(l[n:], st.appended) {
			want = describeList(append(slices.Clone(st.last), st.appended...))
		}
	case len(st.appended) > 0:
		n := len(l) - len(st.appended)
		if n < 0 || !slices.Equal(l[n:], st.appended) {
			want = "a list ending in " + describeList(st.appended)
		}
	}
	if want != "" {
		c.rep.add(AnomalyInternal, fmt.Sprintf("op %d (%s): r(%s) = %s, but its own earlier ops imply %s",
			i, c.h[i], m.Key, describeList(l), want), i)
	}
}

func (c *laChecker) list(r readRef) []int { return c.h[r.op].Txn[r.mop].List }

// orderVersions takes each key's longest ok read as its version order and
// checks every ok read against it, and the elements of every read.
func (c *laChecker) orderVersions() {
	n := len(c.keys)
	c.vo = make([][]int, n)
	c.voRead = make([]int32, n)
	for k := range c.voRead {
		c.voRead[k] = -1
	}
	for _, r := range c.reads {
		if l := c.list(r); c.voRead[r.key] < 0 || len(l) > len(c.vo[r.key]) {
			c.vo[r.key], c.voRead[r.key] = l, r.op
		}
	}
	reported := make([]map[int]bool, n) // per key: elements already reported
	for k := range c.vo {
		if c.voRead[k] >= 0 {
			reported[k] = map[int]bool{}
			c.checkElements(int(c.voRead[k]), int32(k), c.vo[k], reported[k])
		}
	}
	for _, r := range c.reads {
		l, vo := c.list(r), c.vo[r.key]
		if len(l) <= len(vo) && slices.Equal(l, vo[:len(l)]) {
			continue
		}
		c.rep.add(AnomalyIncompatibleOrder, fmt.Sprintf("op %d (%s): r(%s) = %s is not a prefix of op %d's r(%s) = %s",
			r.op, c.h[r.op], c.keys[r.key], describeList(l), c.voRead[r.key], c.keys[r.key], describeList(vo)), int(r.op), int(c.voRead[r.key]))
		c.checkElements(int(r.op), r.key, l, reported[r.key])
	}
}

// checkElements reports, once per element, elements of a read that no op
// appended (garbage) or that only a fail op did (G1a), and elements the
// read holds twice.
func (c *laChecker) checkElements(i int, k int32, l []int, reported map[int]bool) {
	seen := make(map[int]bool, len(l))
	for _, e := range l {
		if seen[e] {
			c.rep.add(AnomalyDuplicateElements, fmt.Sprintf("op %d (%s): r(%s) holds %d more than once", i, c.h[i], c.keys[k], e), i)
		}
		seen[e] = true
		if reported[e] {
			continue
		}
		w, ok := c.writers[k][e]
		switch {
		case !ok:
			reported[e] = true
			c.rep.add(AnomalyGarbage, fmt.Sprintf("op %d (%s): r(%s) holds %d, which no op appended to %s", i, c.h[i], c.keys[k], e, c.keys[k]), i)
		case c.h[w.op].Type == Fail:
			reported[e] = true
			c.rep.add(AnomalyG1a, fmt.Sprintf("op %d (%s): r(%s) holds %d, appended by op %d (%s), which failed",
				i, c.h[i], c.keys[k], e, w.op, c.h[w.op]), i, int(w.op))
		}
	}
}

// writer returns the graph node that appended element pos of key's version
// order, or -1 if none did or its op failed.
func (c *laChecker) writer(k int32, pos int) (appendRef, int32) {
	w, ok := c.writers[k][c.vo[k][pos]]
	if !ok {
		return w, -1
	}
	return w, c.node[w.op]
}

// deriveEdges adds the ww edges of each key's version order and the wr and
// rw edges of each read that agrees with it, and reports G1b reads.
func (c *laChecker) deriveEdges() {
	for k := range c.vo {
		k := int32(k)
		prev := int32(-1)
		for p := range c.vo[k] {
			_, n := c.writer(k, p)
			if p > 0 && prev >= 0 && n >= 0 && prev != n {
				c.edges = append(c.edges, rawEdge{from: prev, to: n, kind: edgeWW, at: where{k, int32(p)}})
			}
			prev = n
		}
	}
	for _, r := range c.reads {
		l, vo := c.list(r), c.vo[r.key]
		if len(l) > len(vo) || !slices.Equal(l, vo[:len(l)]) {
			continue
		}
		t := c.node[r.op]
		// Elements the transaction appended itself, at the end of what it
		// read, say nothing of other transactions: the version it read
		// from them ends before them.
		m := len(l)
		for m > 0 {
			w, ok := c.writers[r.key][l[m-1]]
			if !ok || w.op != r.op {
				break
			}
			if w.mop > r.mop {
				c.rep.add(AnomalyInternal, fmt.Sprintf("op %d (%s): r(%s) holds %d, which the transaction appends only later",
					r.op, c.h[r.op], c.keys[r.key], l[m-1]), int(r.op))
			}
			m--
		}
		if m > 0 {
			w, n := c.writer(r.key, m-1)
			if n >= 0 && n != t {
				c.edges = append(c.edges, rawEdge{from: n, to: t, kind: edgeWR, at: where{r.key, int32(m - 1)}})
				if !w.final {
					c.rep.add(AnomalyG1b, fmt.Sprintf("op %d (%s): r(%s) ends in %d, but op %d (%s) appended more to %s after it",
						r.op, c.h[r.op], c.keys[r.key], l[m-1], w.op, c.h[w.op], c.keys[r.key]), int(r.op), int(w.op))
				}
			}
		}
		if m < len(vo) {
			if _, n := c.writer(r.key, m); n >= 0 && n != t {
				c.edges = append(c.edges, rawEdge{from: t, to: n, kind: edgeRW, at: where{r.key, int32(m)}})
			}
		}
	}
}

// realtimeEdges adds an rt edge T1 -> T2 for each ok T1 that completed
// before T2 was invoked, keeping only enough edges to preserve
// reachability: a sweep in time order keeps the frontier of completed
// transactions not yet followed by another completed one, and links each
// invoked transaction from the frontier only.
func (c *laChecker) realtimeEdges() {
	type event struct {
		t        int64
		complete bool
		node     int32
	}
	events := make([]event, 0, 2*len(c.nodes))
	for n, i := range c.nodes {
		op := &c.h[i]
		events = append(events, event{t: op.Invoke, node: int32(n)})
		if op.Type == OK {
			events = append(events, event{t: max(op.Complete, op.Invoke), complete: true, node: int32(n)})
		}
	}
	// At equal times invocations come first: touching intervals overlap.
	slices.SortFunc(events, func(a, b event) int {
		if a.t != b.t {
			return cmp.Compare(a.t, b.t)
		}
		if a.complete != b.complete {
			if !a.complete {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.node, b.node)
	})
	var frontier []int32
	complete := func(n int32) int64 {
		op := &c.h[c.nodes[n]]
		return max(op.Complete, op.Invoke)
	}
	for _, ev := range events {
		if !ev.complete {
			for _, f := range frontier {
				c.edges = append(c.edges, rawEdge{from: f, to: ev.node, kind: edgeRT})
			}
			continue
		}
		// Everything that completed before this transaction was invoked
		// now reaches the frontier through it.
		inv := c.h[c.nodes[ev.node]].Invoke
		frontier = slices.DeleteFunc(frontier, func(f int32) bool { return complete(f) < inv })
		frontier = append(frontier, ev.node)
	}
}

// findCycles reports the cycles of the graph, one witness per strongly
// connected component and kind of cycle.
func (c *laChecker) findCycles(realtime bool) {
	g := buildGraph(len(c.nodes), c.edges)
	c.edges = nil
	for _, kind := range []uint8{edgeWW, edgeWR, edgeRW, edgeRT} {
		c.rep.stats["edges-"+edgeName(kind)] += 0
	}
	for i := range g.adj {
		for _, kind := range []uint8{edgeWW, edgeWR, edgeRW, edgeRT} {
			if g.adj[i].mask&kind != 0 {
				c.rep.stats["edges-"+edgeName(kind)]++
			}
		}
	}
	s := newSearcher(g)

	// G0: cycles of ww edges.
	comp, comps := g.sccs(edgeWW)
	for cid, members := range comps {
		c.reportCycle(s.cycleThrough(members, comp, int32(cid), edgeWW, edgeWW, rwNone, false))
	}
	// G1c: cycles of ww and wr edges with a wr edge; every wr edge inside
	// a component is on one.
	comp1, comps := g.sccs(edgeWW | edgeWR)
	for cid, members := range comps {
		if cyc := s.cycleThrough(members, comp1, int32(cid), edgeWR, edgeWW|edgeWR, rwNone, false); cyc != nil {
			c.reportCycle(cyc)
		}
	}
	// G-single, else G2: cycles through an rw edge. An rw edge between
	// two nodes of one ww/wr component closes a G-single cycle at once;
	// otherwise the search for one is bounded.
	comp, comps = g.sccs(edgeWW | edgeWR | edgeRW)
	for cid, members := range comps {
		cyc := s.singleRW(members, comp1)
		if cyc == nil {
			s.budget = searchBudget
			cyc = s.cycleThrough(members, comp, int32(cid), edgeRW, edgeWW|edgeWR|edgeRW, rwOne, true)
		}
		if cyc == nil {
			cyc = s.cycleThrough(members, comp, int32(cid), edgeRW, edgeWW|edgeWR|edgeRW, rwAny, false)
		}
		if cyc != nil {
			c.reportCycle(cyc)
		}
	}
	if !realtime {
		return
	}
	// Realtime: cycles through an rt edge, the mildest found.
	all := edgeWW | edgeWR | edgeRW | edgeRT
	comp, comps = g.sccs(all)
	for cid, members := range comps {
		var cyc []step
		for _, try := range []struct {
			allowed uint8
			rw      int
		}{
			{edgeWW | edgeRT, rwNone},
			{edgeWW | edgeWR | edgeRT, rwNone},
			{all, rwOne},
		} {
			s.budget = searchBudget
			if cyc = s.cycleThrough(members, comp, int32(cid), edgeRT, try.allowed, try.rw, true); cyc != nil {
				break
			}
		}
		if cyc == nil {
			cyc = s.cycleThrough(members, comp, int32(cid), edgeRT, all, rwAny, false)
		}
		if cyc != nil {
			c.reportCycle(cyc)
		}
	}
}

// classify names a cycle by the kinds of its edges.
func classify(cyc []step) string {
	var rw int
	var wr, rt bool
	for _, st := range cyc {
		switch st.kind {
		case edgeRW:
			rw++
		case edgeWR:
			wr = true
		case edgeRT:
			rt = true
		}
	}
	var name string
	switch {
	case rw == 1:
		name = AnomalyGSingle
	case rw > 1:
		name = AnomalyG2
	case wr:
		name = AnomalyG1c
	default:
		name = AnomalyG0
	}
	if rt {
		name += RealtimeSuffix
	}
	return name
}

// reportCycle reports a witness cycle: the cycle on one line, then each
// transaction, then what each edge stands for.
func (c *laChecker) reportCycle(cyc []step) {
	if len(cyc) == 0 {
		return
	}
	typ := classify(cyc)
	if c.rep.stats[typ] >= MaxListed {
		c.rep.add(typ, "") // counted, not listed: spare the explanation
		return
	}
	name := map[int32]string{}
	var ops []int
	for _, st := range cyc {
		if _, ok := name[st.from]; !ok {
			name[st.from] = fmt.Sprintf("T%d", len(name)+1)
			ops = append(ops, int(c.nodes[st.from]))
		}
	}
	var b strings.Builder
	b.WriteString(name[cyc[0].from])
	for _, st := range cyc {
		b.WriteString(" -")
		b.WriteString(edgeName(st.kind))
		if st.kind != edgeRT {
			fmt.Fprintf(&b, "(%s)", c.keys[st.e.origin(st.kind).key])
		}
		b.WriteString("-> ")
		b.WriteString(name[st.to])
	}
	for _, st := range cyc {
		i := c.nodes[st.from]
		fmt.Fprintf(&b, "\n  %s = op %d: %s", name[st.from], i, c.h[i])
	}
	for _, st := range cyc {
		from, to := name[st.from], name[st.to]
		w := st.e.origin(st.kind)
		key, vo := c.keys[w.key], c.vo[w.key]
		if st.kind == edgeRT {
			fmt.Fprintf(&b, "\n  %s -rt-> %s: ", from, to)
		} else {
			fmt.Fprintf(&b, "\n  %s -%s(%s)-> %s: ", from, edgeName(st.kind), key, to)
		}
		switch st.kind {
		case edgeWW:
			fmt.Fprintf(&b, "%s appended %d to %s, then %s appended %d", from, vo[w.pos-1], key, to, vo[w.pos])
		case edgeWR:
			fmt.Fprintf(&b, "%s read %s ending in %d, which %s appended", to, key, vo[w.pos], from)
		case edgeRW:
			if w.pos == 0 {
				fmt.Fprintf(&b, "%s read %s empty, and %s appended its first element %d", from, key, to, vo[0])
			} else {
				fmt.Fprintf(&b, "%s read %s ending in %d, and %s appended the next element %d", from, key, vo[w.pos-1], to, vo[w.pos])
			}
		case edgeRT:
			fmt.Fprintf(&b, "%s completed at %d, before %s was invoked at %d",
				from, c.h[c.nodes[st.from]].Complete, to, c.h[c.nodes[st.to]].Invoke)
		}
	}
	c.rep.add(typ, b.String(), ops...)
}
