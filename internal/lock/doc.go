// Package lock is the strict two-phase-locking lock table of one range: the
// pure data structure that decides which transaction may read or write which
// keys, who waits for whom, and in what order waiters are granted.
//
// It does no I/O and keeps no clock: the range's leader owns one Table, calls
// it from one goroutine, and turns its answers into replies and waits.
//
// # Model
//
// A lock is held by a transaction on a span [Start, End) in mode S (shared,
// for reads and scans) or X (exclusive, for writes). A point lock on key k is
// the span [k, k+"\x00"). Two locks conflict when their spans overlap, they
// belong to different transactions, and at least one is X. Scans take S locks
// on the whole scanned span, so a writer cannot insert a phantom into it.
//
// Requests that cannot be granted wait in one FIFO queue per table. A request
// is granted when it conflicts with no lock held by another transaction and
// with no earlier waiting request of another transaction (so a stream of
// readers cannot starve a writer). A transaction that already holds a lock
// covering a request (same or stronger mode) is granted at once.
//
// WaitsFor returns the waits-for edges (waiter -> holder or earlier waiter)
// that the deadlock detector unions across ranges.
//
// # Components
//
//	Acquire(txn, span, mode) ──▶ granted? ── yes ─▶ held locks
//	                                 └─ no ──▶ queue[] (FIFO) ── ReleaseAll(txn) ─▶ grants in queue order
//
// Held locks are indexed three ways: point locks by key (a map, and their
// keys in a B-tree), span locks in a list, and every lock by its
// transaction. A point request (a Get, a Put) looks only at its key's
// holders and at the span locks, so its cost does not grow with the number
// of locks held on the range, not even with those of its own transaction (a
// transaction near the size limit holds hundreds of thousands). A span
// request (a scan) looks at the point locks on keys inside its span, found
// in order in the B-tree, and at the span locks. The answers are exactly
// those of a table that scans every held lock (TestAgainstOracle runs one
// beside it). Waiting requests are a FIFO list: a new request compares
// itself with every waiter ahead of it, and a release re-checks each waiter
// against the holders first, so a waiter behind a held lock costs no walk of
// the queue (a release on a key a thousand transactions wait for is O(1,000),
// not O(1,000²)).
package lock
