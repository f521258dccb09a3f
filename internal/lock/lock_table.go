package lock

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
)

// TxnID identifies a transaction.
type TxnID uint64

// Mode is a lock mode.
type Mode int

// Lock modes.
const (
	S Mode = iota + 1 // shared: reads and scans
	X                 // exclusive: writes
)

func (m Mode) String() string {
	switch m {
	case S:
		return "S"
	case X:
		return "X"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Span is the key span [Start, End). An empty End means +infinity.
type Span struct {
	Start, End []byte
}

// Point returns the span of a single key.
func Point(k []byte) Span {
	return Span{Start: k, End: append(append([]byte(nil), k...), 0)}
}

func (s Span) overlaps(o Span) bool {
	sBefore := len(s.End) > 0 && bytes.Compare(s.End, o.Start) <= 0
	oBefore := len(o.End) > 0 && bytes.Compare(o.End, s.Start) <= 0
	return !sBefore && !oBefore
}

// covers reports whether s contains all of o.
func (s Span) covers(o Span) bool {
	if bytes.Compare(s.Start, o.Start) > 0 {
		return false
	}
	if len(s.End) == 0 {
		return true
	}
	return len(o.End) > 0 && bytes.Compare(o.End, s.End) <= 0
}

func (s Span) String() string {
	if len(s.End) == len(s.Start)+1 && bytes.HasPrefix(s.End, s.Start) && s.End[len(s.End)-1] == 0 {
		return fmt.Sprintf("%q", s.Start)
	}
	return fmt.Sprintf("[%q, %q)", s.Start, s.End)
}

// Lock is a granted lock or a waiting request.
type Lock struct {
	Txn  TxnID
	Span Span
	Mode Mode
}

func (l Lock) conflicts(o Lock) bool {
	return l.Txn != o.Txn && (l.Mode == X || o.Mode == X) && l.Span.overlaps(o.Span)
}

// Table is the lock table of one range. It is not safe for concurrent use.
type Table struct {
	held  []Lock
	queue []Lock // waiting requests, oldest first
}

// Acquire asks for a lock. It returns true if the lock is granted now; if
// not, the request waits in the queue and is granted later by ReleaseAll.
// blockers lists the transactions it waits for (holders first).
func (t *Table) Acquire(txn TxnID, span Span, mode Mode) (granted bool, blockers []TxnID) {
	req := Lock{Txn: txn, Span: span, Mode: mode}
	if t.heldCovers(req) {
		return true, nil
	}
	blockers = t.blockersOf(req, len(t.queue))
	if len(blockers) == 0 {
		t.held = append(t.held, req)
		return true, nil
	}
	t.queue = append(t.queue, req)
	return false, blockers
}

// heldCovers reports whether req's txn already holds a lock at least as
// strong over req's span.
func (t *Table) heldCovers(req Lock) bool {
	for _, h := range t.held {
		if h.Txn == req.Txn && h.Mode >= req.Mode && h.Span.covers(req.Span) {
			return true
		}
	}
	return false
}

// blockersOf returns the transactions that hold locks conflicting with req,
// or wait ahead of position pos with requests conflicting with it. A
// transaction upgrading a lock it already holds on an overlapping span does
// not queue behind other waiters: they wait for its lock anyway, so making
// it wait for them would be a certain deadlock.
func (t *Table) blockersOf(req Lock, pos int) []TxnID {
	if t.holdsOverlap(req) {
		pos = 0
	}
	var out []TxnID // a few at most: a linear check beats a map
	for _, h := range t.held {
		if h.conflicts(req) && !slices.Contains(out, h.Txn) {
			out = append(out, h.Txn)
		}
	}
	for _, w := range t.queue[:pos] {
		if w.conflicts(req) && !slices.Contains(out, w.Txn) {
			out = append(out, w.Txn)
		}
	}
	return out
}

// ReleaseAll drops every lock and waiting request of txn (commit, abort, or
// a deadlock victim) and returns the waiting requests granted as a result,
// in queue order.
func (t *Table) ReleaseAll(txn TxnID) []Lock {
	held := t.held[:0]
	for _, h := range t.held {
		if h.Txn != txn {
			held = append(held, h)
		}
	}
	t.held = held
	queue := t.queue[:0]
	for _, w := range t.queue {
		if w.Txn != txn {
			queue = append(queue, w)
		}
	}
	t.queue = queue
	return t.grantWaiters()
}

// grantWaiters grants, in queue order, every waiter no longer blocked.
func (t *Table) grantWaiters() []Lock {
	var granted []Lock
	for i := 0; i < len(t.queue); {
		w := t.queue[i]
		if t.heldCovers(w) || len(t.blockersOf(w, i)) == 0 {
			if !t.heldCovers(w) {
				t.held = append(t.held, w)
			}
			t.queue = append(t.queue[:i], t.queue[i+1:]...)
			granted = append(granted, w)
			continue
		}
		i++
	}
	return granted
}

func (t *Table) holdsOverlap(req Lock) bool {
	for _, h := range t.held {
		if h.Txn == req.Txn && h.Span.overlaps(req.Span) {
			return true
		}
	}
	return false
}

// Edge is one waits-for edge: Waiter waits for Holder.
type Edge struct {
	Waiter, Holder TxnID
}

// WaitsFor returns the current waits-for edges, sorted.
func (t *Table) WaitsFor() []Edge {
	seen := map[Edge]bool{}
	var out []Edge
	for i, w := range t.queue {
		for _, b := range t.blockersOf(w, i) {
			e := Edge{Waiter: w.Txn, Holder: b}
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Waiter != out[j].Waiter {
			return out[i].Waiter < out[j].Waiter
		}
		return out[i].Holder < out[j].Holder
	})
	return out
}

// Held returns the locks held by txn.
func (t *Table) Held(txn TxnID) []Lock {
	var out []Lock
	for _, h := range t.held {
		if h.Txn == txn {
			out = append(out, h)
		}
	}
	return out
}

// AllHeld returns a copy of every granted lock, in the order granted.
func (t *Table) AllHeld() []Lock { return append([]Lock(nil), t.held...) }

// Waiting reports whether txn has a waiting request.
func (t *Table) Waiting(txn TxnID) bool {
	for _, w := range t.queue {
		if w.Txn == txn {
			return true
		}
	}
	return false
}

// Len returns the number of held locks and waiting requests.
func (t *Table) Len() (held, waiting int) { return len(t.held), len(t.queue) }
