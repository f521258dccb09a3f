package check

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Register checks that a history of single-key get, put and cas ops is
// linearizable, each key on its own (porcupine partitions), within timeout
// (0: no limit).
//
// Fail ops did not happen and are dropped; so are info gets, which tell
// nothing. An info put or cas may take effect at any time after its Invoke,
// or never: porcupine sees it with an infinite Complete and a model step
// that allows both outcomes. A search that runs out of time is a failure
// (AnomalyUnknown), never a pass.
//
// The returned Linearization draws the history and the linearization found
// (or the longest partial ones) as HTML, for a person to study a failure.
func Register(history []Op, timeout time.Duration) (Result, *Linearization) {
	rep := newReporter()
	var ops []porcupine.Operation
	byKey := map[string][]int{} // key -> indexes into ops
	clients := map[int]int{}    // process -> dense porcupine client id
	for i, op := range history {
		switch op.F {
		case FGet, FPut, FCAS:
		default:
			rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): not a register get, put or cas", i, op), i)
			continue
		}
		rep.stats["ops-"+string(op.Type)]++
		ret := op.Complete
		switch op.Type {
		case OK:
			if op.Complete < op.Invoke {
				rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s) completed at %d before it was invoked at %d", i, op, op.Complete, op.Invoke), i)
				continue
			}
		case Info:
			if op.F == FGet {
				continue
			}
			ret = math.MaxInt64
		default:
			continue
		}
		c, ok := clients[op.Process]
		if !ok {
			c = len(clients)
			clients[op.Process] = c
		}
		byKey[op.Key] = append(byKey[op.Key], len(ops))
		ops = append(ops, porcupine.Operation{
			ClientId: c,
			Input:    regInput{index: i, key: op.Key, f: op.F, value: op.Value, expected: op.Expected},
			Call:     op.Invoke,
			Output:   regOutput{unknown: op.Type == Info, found: op.Found, value: op.Value},
			Return:   ret,
		})
	}
	keys := sortedKeys(byKey)
	rep.stats["keys"] = len(keys)
	rep.stats["checked"] = len(ops)

	model := registerModel(keys, byKey)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	timedOut := res == porcupine.Unknown || (timeout > 0 && time.Since(start) >= timeout)
	if res != porcupine.Ok {
		// Partition p holds the ops of keys[p]; it is linearizable iff
		// one of its partial linearizations covers all of it.
		partials := info.PartialLinearizationsOperations()
		var unfinished []string
		for p, key := range keys {
			n := len(byKey[key])
			longest := longestPartial(partials[p])
			if len(longest) == n {
				continue
			}
			if res == porcupine.Unknown {
				unfinished = append(unfinished, key)
				continue
			}
			rep.stats["nonlinearizable-keys"]++
			expl, involved := explainNonlinearizable(key, n, longest, ops, byKey[key])
			if timedOut {
				expl += " (the search also timed out, so this key may merely be unfinished)"
			}
			rep.add(AnomalyNonlinearizable, expl, involved...)
		}
		if timedOut {
			expl := fmt.Sprintf("the linearizability search of %d ops timed out after %s", len(ops), timeout)
			if len(unfinished) > 0 {
				expl += "; unfinished keys: " + strings.Join(unfinished, ", ")
			}
			rep.add(AnomalyUnknown, expl)
		}
	}
	return rep.result(), &Linearization{model: model, info: info}
}

// Linearization is porcupine's record of a register check.
type Linearization struct {
	model porcupine.Model
	info  porcupine.LinearizationInfo
}

// WriteHTML writes porcupine's visualization of the history, one partition
// per key, with the linearization found or the longest partial ones, as a
// self-contained HTML page.
func (l *Linearization) WriteHTML(w io.Writer) error {
	return porcupine.Visualize(l.model, l.info, w)
}

// Model returns the register model, for callers that call
// porcupine.Visualize themselves (to add annotations first, say).
func (l *Linearization) Model() porcupine.Model { return l.model }

// Info returns porcupine's record of the check, for porcupine.Visualize;
// annotations added to it show in WriteHTML's output too.
func (l *Linearization) Info() *porcupine.LinearizationInfo { return &l.info }

// regInput is an op as the register model sees it.
type regInput struct {
	index           int // in the history
	key, f          string
	value, expected int
}

// regOutput is what the client saw. unknown marks an info op.
type regOutput struct {
	unknown bool
	found   bool
	value   int
}

// regState is one register: absent, or holding value.
type regState struct {
	present bool
	value   int
}

func (s regState) String() string {
	if !s.present {
		return "absent"
	}
	return fmt.Sprint(s.value)
}

// regStep returns the states the register may be in after in/out from s.
func regStep(s regState, in regInput, out regOutput) []any {
	switch in.f {
	case FGet:
		if out.found == s.present && (!s.present || out.value == s.value) {
			return []any{s}
		}
		return nil
	case FPut:
		next := regState{present: true, value: in.value}
		if out.unknown {
			return []any{s, next}
		}
		return []any{next}
	case FCAS:
		match := s.present && s.value == in.expected
		if out.unknown {
			if match {
				return []any{s, regState{present: true, value: in.value}}
			}
			return []any{s}
		}
		if out.found != match {
			return nil
		}
		if match {
			return []any{regState{present: true, value: in.value}}
		}
		return []any{s}
	}
	return nil
}

func describeRegOp(in regInput, out regOutput) string {
	var s string
	switch in.f {
	case FGet:
		if out.found {
			s = fmt.Sprintf("get(%s) = %d", in.key, out.value)
		} else {
			s = fmt.Sprintf("get(%s) = absent", in.key)
		}
	case FPut:
		s = fmt.Sprintf("put(%s, %d)", in.key, in.value)
	case FCAS:
		s = fmt.Sprintf("cas(%s, %d->%d)", in.key, in.expected, in.value)
		if !out.unknown && !out.found {
			s += " not swapped"
		}
	}
	if out.unknown {
		s += " ?"
	}
	return fmt.Sprintf("%s (op %d)", s, in.index)
}

// registerModel is a register per key; partitions come out in the order of
// keys, so partition p is keys[p].
func registerModel(keys []string, byKey map[string][]int) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				part := make([]porcupine.Operation, 0, len(byKey[k]))
				for _, j := range byKey[k] {
					part = append(part, h[j])
				}
				out = append(out, part)
			}
			return out
		},
		Init: func() []any { return []any{regState{}} },
		Step: func(s, in, out any) []any {
			return regStep(s.(regState), in.(regInput), out.(regOutput))
		},
		Hash: func(s any) uint64 {
			st := s.(regState)
			if !st.present {
				return 0x9e3779b97f4a7c15
			}
			return uint64(st.value) * 0xbf58476d1ce4e5b9
		},
		DescribeOperation: func(in, out any) string {
			return describeRegOp(in.(regInput), out.(regOutput))
		},
		DescribeState: func(s any) string { return s.(regState).String() },
	}
	return nm.ToModel()
}

// longestPartial picks the longest partial linearization, breaking ties by
// the op indexes so that the choice does not depend on map order.
func longestPartial(partials [][]porcupine.Operation) []porcupine.Operation {
	var best []porcupine.Operation
	for _, p := range partials {
		if len(p) > len(best) || (len(p) == len(best) && comparePartial(p, best) < 0) {
			best = p
		}
	}
	return best
}

func comparePartial(a, b []porcupine.Operation) int {
	return slices.CompareFunc(a, b, func(x, y porcupine.Operation) int {
		return x.Input.(regInput).index - y.Input.(regInput).index
	})
}

// explainNonlinearizable describes why a key's ops have no linearization:
// the longest order porcupine found, the states the register may be in
// after it, and the op it could not place: of the ops left out, the one
// that returned first.
func explainNonlinearizable(key string, n int, longest []porcupine.Operation, ops []porcupine.Operation, keyOps []int) (string, []int) {
	in := make(map[int]bool, len(longest))
	states := []regState{{}}
	var order []string
	for _, op := range longest {
		ri, ro := op.Input.(regInput), op.Output.(regOutput)
		in[ri.index] = true
		order = append(order, describeRegOp(ri, ro))
		var next []regState
		for _, s := range states {
			for _, t := range regStep(s, ri, ro) {
				if !slices.Contains(next, t.(regState)) {
					next = append(next, t.(regState))
				}
			}
		}
		states = next
	}
	var stuck *porcupine.Operation
	for _, j := range keyOps {
		op := &ops[j]
		if in[op.Input.(regInput).index] {
			continue
		}
		if stuck == nil || op.Return < stuck.Return ||
			(op.Return == stuck.Return && op.Input.(regInput).index < stuck.Input.(regInput).index) {
			stuck = op
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "key %s: no linearization of its %d ops; ", key, n)
	if len(order) > 8 {
		fmt.Fprintf(&b, "the longest linearizable prefix has %d ops, ending ... %s", len(order), strings.Join(order[len(order)-8:], ", "))
	} else {
		fmt.Fprintf(&b, "the longest linearizable prefix is [%s]", strings.Join(order, ", "))
	}
	desc := make([]string, len(states))
	for i, s := range states {
		desc[i] = s.String()
	}
	fmt.Fprintf(&b, ", leaving %s = {%s}", key, strings.Join(desc, ", "))
	involved := []int{}
	if stuck != nil {
		ri := stuck.Input.(regInput)
		ret := "never"
		if stuck.Return != math.MaxInt64 {
			ret = fmt.Sprint(stuck.Return)
		}
		fmt.Fprintf(&b, "; then %s, invoked at %d and completed at %s, cannot take effect in any order of the ops around it",
			describeRegOp(ri, stuck.Output.(regOutput)), stuck.Call, ret)
		involved = append(involved, ri.index)
	}
	if len(longest) > 0 {
		involved = append(involved, longest[len(longest)-1].Input.(regInput).index)
	}
	return b.String(), involved
}
