package lock

import "slices"

// naiveTable is the lock table as the simplest correct code: every held
// lock in one list, scanned by every request. TestAgainstOracle checks
// Table against it answer for answer.
type naiveTable struct {
	held  []Lock
	queue []Lock
}

func (t *naiveTable) Acquire(txn TxnID, span Span, mode Mode) (bool, []TxnID) {
	req := Lock{Txn: txn, Span: span, Mode: mode}
	if t.heldCovers(req) {
		return true, nil
	}
	blockers := t.blockersOf(req, len(t.queue))
	if len(blockers) == 0 {
		t.held = append(t.held, req)
		return true, nil
	}
	t.queue = append(t.queue, req)
	return false, blockers
}

func (t *naiveTable) heldCovers(req Lock) bool {
	for _, h := range t.held {
		if h.Txn == req.Txn && h.Mode >= req.Mode && h.Span.covers(req.Span) {
			return true
		}
	}
	return false
}

func (t *naiveTable) blockersOf(req Lock, pos int) []TxnID {
	for _, h := range t.held {
		if h.Txn == req.Txn && h.Span.overlaps(req.Span) {
			pos = 0
		}
	}
	var out []TxnID
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

func (t *naiveTable) ReleaseAll(txn TxnID) []Lock {
	t.held = slices.DeleteFunc(t.held, func(h Lock) bool { return h.Txn == txn })
	t.queue = slices.DeleteFunc(t.queue, func(w Lock) bool { return w.Txn == txn })
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

func (t *naiveTable) WaitsFor() []Edge { return waitsFor(t.queue, t.blockersOf) }
