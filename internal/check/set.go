package check

import (
	"fmt"
	"slices"
)

// Set checks a grow-only set history of adds and reads.
//
// The final read is the last ok read invoked after every ok add completed;
// without one the history cannot be judged (no-final-read). It must hold
// every element whose add was acknowledged (else lost). No ok read may hold
// an element that no op added, or whose adds all failed (unexpected), or an
// element twice (duplicate). An element added only by info ops may or may
// not be present.
//
// Stats: acknowledged, indeterminate and failed count distinct elements by
// the best outcome of their adds; present is the size of the final read and
// recovered how many indeterminate elements it holds.
func Set(history []Op) Result {
	rep := newReporter()
	// Best outcome of each element's adds: OK beats Info beats Fail.
	outcome := map[int]OpType{}
	addedBy := map[int]int{} // element -> first op adding it
	var lastAdd int64
	anyAdd := false
	for i, op := range history {
		switch op.F {
		case FAdd:
			e := op.Element
			if _, ok := addedBy[e]; !ok {
				addedBy[e] = i
			}
			if rank(op.Type) > rank(outcome[e]) {
				outcome[e] = op.Type
			}
			if op.Type == OK && (!anyAdd || op.Complete > lastAdd) {
				lastAdd, anyAdd = op.Complete, true
			}
		case FRead:
		default:
			rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): not a set add or read", i, op), i)
		}
	}
	for _, e := range sortedKeys(outcome) {
		switch outcome[e] {
		case OK:
			rep.stats["acknowledged"]++
		case Info:
			rep.stats["indeterminate"]++
		case Fail:
			rep.stats["failed"]++
		}
	}

	final := -1
	reported := map[int]bool{}
	for i, op := range history {
		if op.F != FRead || op.Type != OK {
			continue
		}
		rep.stats["reads"]++
		if (!anyAdd || op.Invoke > lastAdd) && (final < 0 || op.Invoke >= history[final].Invoke) {
			final = i
		}
		sorted := slices.Clone(op.Elements)
		slices.Sort(sorted)
		for j, e := range sorted {
			if j > 0 && sorted[j-1] == e && (j < 2 || sorted[j-2] != e) {
				rep.add(AnomalyDuplicate, fmt.Sprintf("op %d (%s) holds %d more than once", i, op, e), i)
			}
			if reported[e] {
				continue
			}
			switch outcome[e] {
			case OK, Info:
				continue
			case Fail:
				rep.add(AnomalyUnexpected, fmt.Sprintf("op %d (%s) holds %d, but every add of it failed (first: op %d)", i, op, e, addedBy[e]), i, addedBy[e])
			default:
				rep.add(AnomalyUnexpected, fmt.Sprintf("op %d (%s) holds %d, which no op added", i, op, e), i)
			}
			reported[e] = true
		}
	}
	if final < 0 {
		rep.add(AnomalyNoFinalRead, "no ok read was invoked after the last acknowledged add completed")
		return rep.result()
	}
	present := map[int]bool{}
	for _, e := range history[final].Elements {
		present[e] = true
	}
	rep.stats["present"] = len(present)
	for _, e := range sortedKeys(outcome) {
		switch outcome[e] {
		case OK:
			if !present[e] {
				rep.add(AnomalyLost, fmt.Sprintf("element %d was acknowledged (op %d) but is missing from the final read (op %d)", e, addedBy[e], final), addedBy[e], final)
			}
		case Info:
			if present[e] {
				rep.stats["recovered"]++
			}
		}
	}
	return rep.result()
}

// rank orders outcomes by how much they say an op happened.
func rank(t OpType) int {
	switch t {
	case OK:
		return 3
	case Info:
		return 2
	case Fail:
		return 1
	}
	return 0
}
