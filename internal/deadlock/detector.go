package deadlock

import (
	"sort"

	"github.com/vowdb/vowdb/internal/lock"
)

// TxnInfo is what the detector needs to know to choose a victim.
type TxnInfo struct {
	// Age orders transactions: a higher Age is younger (began later).
	Age uint64
	// Prepared transactions are never chosen.
	Prepared bool
}

// Victim is a transaction to abort and the cycle it was part of.
type Victim struct {
	Txn   lock.TxnID
	Cycle []lock.TxnID // the cycle, starting at the victim, in waits-for order
}

// Detector unions waits-for edges from many nodes.
type Detector struct {
	byNode map[uint64][]lock.Edge
}

// Report replaces the edges last reported by node.
func (d *Detector) Report(node uint64, edges []lock.Edge) {
	if d.byNode == nil {
		d.byNode = map[uint64][]lock.Edge{}
	}
	d.byNode[node] = append([]lock.Edge(nil), edges...)
}

// Forget drops a node's edges (the node is gone).
func (d *Detector) Forget(node uint64) { delete(d.byNode, node) }

// Graph returns the union of all reported edges as adjacency lists.
func (d *Detector) Graph() map[lock.TxnID][]lock.TxnID {
	g := map[lock.TxnID][]lock.TxnID{}
	seen := map[lock.Edge]bool{}
	for _, edges := range d.byNode {
		for _, e := range edges {
			if !seen[e] {
				seen[e] = true
				g[e.Waiter] = append(g[e.Waiter], e.Holder)
			}
		}
	}
	for k := range g {
		sort.Slice(g[k], func(i, j int) bool { return g[k][i] < g[k][j] })
	}
	return g
}

// Detect finds the cycles of the union graph and returns one victim per
// cycle: it repeatedly finds a cycle, removes its youngest non-prepared
// transaction, and continues until the graph is acyclic. A cycle made only
// of prepared transactions cannot exist (prepared transactions do not wait)
// and is skipped if reported.
func (d *Detector) Detect(info func(lock.TxnID) TxnInfo) []Victim {
	g := d.Graph()
	removed := map[lock.TxnID]bool{}
	var victims []Victim
	for {
		cycle := findCycle(g, removed)
		if cycle == nil {
			return victims
		}
		victim, ok := youngest(cycle, info)
		if !ok {
			// Only prepared transactions: break the cycle out of the graph
			// without a victim so detection terminates.
			removed[cycle[0]] = true
			continue
		}
		removed[victim] = true
		victims = append(victims, Victim{Txn: victim, Cycle: rotate(cycle, victim)})
	}
}

func youngest(cycle []lock.TxnID, info func(lock.TxnID) TxnInfo) (lock.TxnID, bool) {
	var best lock.TxnID
	var bestAge uint64
	found := false
	for _, t := range cycle {
		ti := info(t)
		if ti.Prepared {
			continue
		}
		if !found || ti.Age > bestAge || (ti.Age == bestAge && t > best) {
			best, bestAge, found = t, ti.Age, true
		}
	}
	return best, found
}

func rotate(cycle []lock.TxnID, start lock.TxnID) []lock.TxnID {
	for i, t := range cycle {
		if t == start {
			return append(append([]lock.TxnID(nil), cycle[i:]...), cycle[:i]...)
		}
	}
	return cycle
}

// findCycle returns one cycle among the nodes not removed, or nil. It runs a
// depth-first search in sorted node order, so its answer is deterministic.
func findCycle(g map[lock.TxnID][]lock.TxnID, removed map[lock.TxnID]bool) []lock.TxnID {
	nodes := make([]lock.TxnID, 0, len(g))
	for n := range g {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i] < nodes[j] })
	const (
		white = iota
		grey
		black
	)
	color := map[lock.TxnID]int{}
	var stack []lock.TxnID
	var found []lock.TxnID
	var visit func(n lock.TxnID) bool
	visit = func(n lock.TxnID) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, m := range g[n] {
			if removed[m] {
				continue
			}
			switch color[m] {
			case grey:
				for i := len(stack) - 1; i >= 0; i-- {
					if stack[i] == m {
						found = append([]lock.TxnID(nil), stack[i:]...)
						return true
					}
				}
			case white:
				if visit(m) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	for _, n := range nodes {
		if !removed[n] && color[n] == white {
			if visit(n) {
				return found
			}
		}
	}
	return nil
}
