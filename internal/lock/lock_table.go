package lock

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/RaduBerinde/btreemap"
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
//
// Held locks are indexed so that the cost of a request does not grow with
// the number of locks held on the range: point locks by key (and their keys
// in order), the others (scan spans, usually few) in a list, and every lock
// by its transaction. A request for a point checks the holders of its key
// and the span locks; a request for a span checks the point locks on keys
// inside it and the span locks.
type Table struct {
	points map[string][]heldLock                // point locks by key
	keys   *btreemap.BTreeMap[string, struct{}] // the keys of points, in order
	spans  []heldLock                           // non-point locks, in the order granted
	byTxn  map[TxnID][]heldLock                 // every lock of each txn, in the order granted
	nHeld  int
	seq    uint64 // grant order, for AllHeld
	queue  []Lock // waiting requests, oldest first
}

type heldLock struct {
	Lock
	seq uint64
}

// isPoint reports whether s is the span of a single key (Point).
func (s Span) isPoint() bool {
	return len(s.End) == len(s.Start)+1 && s.End[len(s.Start)] == 0 && bytes.HasPrefix(s.End, s.Start)
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
		t.grant(req)
		return true, nil
	}
	t.queue = append(t.queue, req)
	return false, blockers
}

func (t *Table) grant(l Lock) {
	if t.points == nil {
		t.points, t.byTxn = map[string][]heldLock{}, map[TxnID][]heldLock{}
		t.keys = btreemap.New[string, struct{}](16, strings.Compare)
	}
	t.seq++
	h := heldLock{l, t.seq}
	if l.Span.isPoint() {
		k := string(l.Span.Start)
		if len(t.points[k]) == 0 {
			t.keys.ReplaceOrInsert(k, struct{}{})
		}
		t.points[k] = append(t.points[k], h)
	} else {
		t.spans = append(t.spans, h)
	}
	t.byTxn[l.Txn] = append(t.byTxn[l.Txn], h)
	t.nHeld++
}

// heldCovers reports whether req's txn already holds a lock at least as
// strong over req's span.
func (t *Table) heldCovers(req Lock) bool {
	found := false
	t.eachOwn(req, func(h heldLock) bool {
		found = h.Mode >= req.Mode && h.Span.covers(req.Span)
		return !found
	})
	return found
}

func (t *Table) holdsOverlap(req Lock) bool {
	found := false
	t.eachOwn(req, func(h heldLock) bool {
		found = h.Span.overlaps(req.Span)
		return !found
	})
	return found
}

// eachOwn calls fn, until it returns false, for req's txn's held locks
// that may overlap req: for a point, those on its key and the txn's span
// locks (so a transaction holding many locks pays nothing for them); for a
// span, all of them.
func (t *Table) eachOwn(req Lock, fn func(heldLock) bool) {
	if !req.Span.isPoint() {
		for _, h := range t.byTxn[req.Txn] {
			if !fn(h) {
				return
			}
		}
		return
	}
	for _, h := range t.points[string(req.Span.Start)] {
		if h.Txn == req.Txn && !fn(h) {
			return
		}
	}
	for _, h := range t.spans {
		if h.Txn == req.Txn && !fn(h) {
			return
		}
	}
}

// eachOverlapping calls fn for every held lock whose span overlaps span,
// until fn returns false.
func (t *Table) eachOverlapping(span Span, fn func(heldLock) bool) {
	if span.isPoint() {
		for _, h := range t.points[string(span.Start)] {
			if !fn(h) {
				return
			}
		}
	} else if t.keys != nil {
		// A point [k, k+"\x00") overlaps [Start, End) exactly when
		// Start <= k < End: k+"\x00" is the key right after k.
		hi := btreemap.Max[string]()
		if len(span.End) > 0 {
			hi = btreemap.LT(string(span.End))
		}
		for k := range t.keys.Ascend(btreemap.GE(string(span.Start)), hi) {
			for _, h := range t.points[k] {
				if !fn(h) {
					return
				}
			}
		}
	}
	for _, h := range t.spans {
		if h.Span.overlaps(span) && !fn(h) {
			return
		}
	}
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
	// Holders come first, each at the grant order of its first
	// conflicting lock; then earlier waiters, in queue order.
	type holder struct {
		txn TxnID
		seq uint64
	}
	var hs []holder // a few at most: a linear check beats a map
	t.eachOverlapping(req.Span, func(h heldLock) bool {
		if !h.conflicts(req) {
			return true
		}
		for i := range hs {
			if hs[i].txn == h.Txn {
				hs[i].seq = min(hs[i].seq, h.seq)
				return true
			}
		}
		hs = append(hs, holder{h.Txn, h.seq})
		return true
	})
	slices.SortFunc(hs, func(a, b holder) int { return cmp.Compare(a.seq, b.seq) })
	var out []TxnID
	for _, h := range hs {
		out = append(out, h.txn)
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
	for _, h := range t.byTxn[txn] {
		if h.Span.isPoint() {
			k := string(h.Span.Start)
			hs := slices.DeleteFunc(t.points[k], func(o heldLock) bool { return o.Txn == txn })
			if len(hs) == 0 {
				delete(t.points, k)
				t.keys.Delete(k)
			} else {
				t.points[k] = hs
			}
		}
		t.nHeld--
	}
	if len(t.byTxn[txn]) > 0 {
		t.spans = slices.DeleteFunc(t.spans, func(o heldLock) bool { return o.Txn == txn })
		delete(t.byTxn, txn)
	}
	t.queue = slices.DeleteFunc(t.queue, func(w Lock) bool { return w.Txn == txn })
	return t.grantWaiters()
}

// blocked reports whether req, waiting at position pos, has a blocker
// (blockersOf is not empty), looking at the holders before the waiters
// ahead: a waiter behind a held lock costs no walk of the queue, so a
// release on a key many wait for costs O(waiters), not O(waiters²).
func (t *Table) blocked(req Lock, pos int) bool {
	held := false
	t.eachOverlapping(req.Span, func(h heldLock) bool {
		held = h.conflicts(req)
		return !held
	})
	if held {
		return true
	}
	if t.holdsOverlap(req) {
		return false // an upgrader does not queue behind waiters
	}
	for _, w := range t.queue[:pos] {
		if w.conflicts(req) {
			return true
		}
	}
	return false
}

// grantWaiters grants, in queue order, every waiter no longer blocked.
func (t *Table) grantWaiters() []Lock {
	var granted []Lock
	for i := 0; i < len(t.queue); {
		w := t.queue[i]
		if t.heldCovers(w) || !t.blocked(w, i) {
			if !t.heldCovers(w) {
				t.grant(w)
			}
			t.queue = append(t.queue[:i], t.queue[i+1:]...)
			granted = append(granted, w)
			continue
		}
		i++
	}
	return granted
}

// Edge is one waits-for edge: Waiter waits for Holder.
type Edge struct {
	Waiter, Holder TxnID
}

// WaitsFor returns the current waits-for edges, sorted.
func (t *Table) WaitsFor() []Edge { return waitsFor(t.queue, t.blockersOf) }

// waitsFor returns the sorted edges from each waiter in queue to the
// transactions blockersOf names for it.
func waitsFor(queue []Lock, blockersOf func(req Lock, pos int) []TxnID) []Edge {
	seen := map[Edge]bool{}
	var out []Edge
	for i, w := range queue {
		for _, b := range blockersOf(w, i) {
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

// Held returns the locks held by txn, in the order granted.
func (t *Table) Held(txn TxnID) []Lock {
	var out []Lock
	for _, h := range t.byTxn[txn] {
		out = append(out, h.Lock)
	}
	return out
}

// AllHeld returns a copy of every granted lock, in the order granted.
func (t *Table) AllHeld() []Lock {
	all := make([]heldLock, 0, t.nHeld)
	for _, hs := range t.byTxn {
		all = append(all, hs...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	out := make([]Lock, len(all))
	for i, h := range all {
		out[i] = h.Lock
	}
	return out
}

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
func (t *Table) Len() (held, waiting int) { return t.nHeld, len(t.queue) }
