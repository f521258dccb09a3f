// Package deadlock is the global deadlock detector: a pure structure that
// unions the waits-for edges reported by every node's lock tables, finds
// cycles, and picks one victim per cycle (the youngest transaction that is
// not prepared: a prepared transaction has voted YES and must never be
// aborted by anyone but its coordinator's decision).
//
// The detector runs on a designated node (the meta range leader); nodes
// report their edges periodically with Report, replacing what they reported
// before, and the driver calls Detect after each period.
//
// # Components
//
//	node 1 edges ─┐
//	node 2 edges ─┼─▶ union graph ──▶ strongly connected components ──▶ one victim per cycle,
//	node 3 edges ─┘                                                   repeated until acyclic
package deadlock
