// Package check holds the histories that vowdb's fault-injection tool
// (vowdb torture) records and the checkers that judge them: bank totals and
// ledgers, a grow-only set, linearizable registers and serializable
// list-append transactions.
//
// Everything here is pure: a checker takes a history (a slice of Op) and
// returns a Result. It reads no clock, does no I/O, and gives the same
// answer for the same history, so a failing history written to disk
// (WriteJSONL) can be checked again later (ReadJSONL) with the same verdict.
// The one exception is Register, which bounds porcupine's search with a
// timeout; a search that runs out of time is reported as a failure.
//
// # Histories
//
// An Op is one client operation: which client (Process) ran it, when it was
// invoked and when it completed (int64 nanoseconds on one clock), what it
// asked for and what it got back. Its Type says what the client learned:
//
//	ok    the operation definitely took effect, and its results are valid
//	fail  the operation definitely did not take effect
//	info  unknown: it may take effect, at any time after Invoke, or never
//
// An info op's Complete is when the client stopped waiting (0 if it never
// recorded one); checkers treat it as +infinity, because the operation may
// still take effect later. A fail op carries no information about the state
// of the database and is treated as if it never ran, apart from the checks
// that nothing it wrote is ever seen.
//
// Each workload uses its own part of Op:
//
//	register     F get | put | cas on Key; Value, Expected, Found
//	bank         F transfer (From, To, Amount, ID) | read (Balances)
//	set          F add (Element) | read (Elements)
//	list-append  Txn: micro-ops append (Key, Value) and r (Key, List)
//
// A history is written as JSON lines, one op per line (history.jsonl).
//
// # Results
//
// Every checker returns a Result: Valid is true iff no anomaly was found;
// Anomalies names each anomaly with a type ("G1c", "lost",
// "negative-balance", ...) and a human-readable explanation; Stats counts
// what was checked, and how many anomalies of each type were found (at most
// MaxListed of each type are listed in Anomalies).
//
// # Checkers
//
// Bank checks every ok read of a set of accounts: each account present once,
// no other, no negative balance, and the balances sum to the total.
// LedgerCheck checks a transfer ledger read back at the end of a run: every
// acknowledged transfer is in it exactly once, no transfer that failed is in
// it, and replaying it from the initial balances gives the final balances.
//
// Set checks a grow-only set: the final read (an ok read invoked after every
// ok add completed) holds every acknowledged element ("lost" otherwise), and
// no read holds an element that was never added, or whose adds all failed
// ("unexpected"). An element whose add is info may or may not be present.
//
// Register checks that single-key get, put and compare-and-swap are
// linearizable, one key at a time, with porcupine. Info writes may or may
// not have happened; info reads tell nothing and are dropped.
//
// ListAppend checks transactions of appends to and reads of list-valued keys
// for serializability, after Adya's dependency graphs as Elle applies them to
// list-append histories. Because a list records the order of every append
// to it, the longest read of a key gives that key's version order. From it
// come three kinds of edge between transactions:
//
//	ww  T1 appended an element and T2 appended the next one to the same key
//	wr  T2 read a list whose last element T1 appended
//	rw  T1 read a list and T2 appended the element that came next
//
// and, with ListAppendOptions.Realtime, a fourth:
//
//	rt  T1 completed before T2 was invoked
//
// A cycle in the graph is a transaction that must come both before and after
// another: no serial order explains the history. Cycles are named by the
// edges they need:
//
//	G0        ww edges only (dirty write)
//	G1c       ww and wr edges, at least one wr (circular information flow)
//	G-single  exactly one rw edge (read skew, lost update)
//	G2        two or more rw edges (write skew)
//
// and a cycle that needs an rt edge adds "-realtime" ("G-single-realtime"):
// a violation of strict serializability only. Cycles are found by computing
// the strongly connected components (Tarjan) of the graph restricted to each
// set of edge kinds, then searching each component breadth-first for a short
// witness, which the explanation prints as
//
//	T1 -ww(x)-> T2 -rw(y)-> T1
//
// followed by each transaction and the elements behind each edge. Besides
// cycles, ListAppend reports anomalies visible in single reads: G1a (a read
// saw an element appended only by a fail transaction), G1b (a read's last
// element was not the last its writer appended to the key), garbage (an
// element nobody appended), duplicate-elements (an element twice in one
// read), incompatible-order (a read that is not a prefix of the key's
// longest read) and internal (a transaction's read that does not show its
// own earlier appends and reads of the key). Elements must be unique per
// key: a history that appends one twice is malformed.
package check
