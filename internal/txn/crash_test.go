package txn

import (
	"fmt"
	"testing"

	"github.com/vowdb/vowdb/internal/lock"
)

// crashScenarios are small workloads run to completion in a fault-free
// network; want is each txn's client outcome without faults.
var crashScenarios = []struct {
	name string
	txns [][]spec
	want []string
}{
	{"2PC three writers", [][]spec{{{1, true}, {2, true}, {3, true}}}, []string{"committed 2PC"}},
	{"2PC with a reader", [][]spec{{{1, true}, {2, true}, {3, false}}}, []string{"committed 2PC"}},
	{"1PC with a reader", [][]spec{{{1, true}, {2, false}}}, []string{"committed 1PC"}},
	{"1PC lone writer", [][]spec{{{2, true}}}, []string{"committed 1PC"}},
	{"two txns sharing a range", [][]spec{{{1, true}, {2, true}}, {{2, true}, {3, true}}},
		[]string{"committed 2PC", "committed 2PC"}},
}

// run plays scenario txns in a new world with hook, settles, heals and
// checks; it returns the world and how many fault points it passed.
func runScenario(t *testing.T, name string, cfg CoordinatorConfig, txns [][]spec, hook func(string) action) (*world, int) {
	w := newWorld(t, name, 3, nil)
	w.coordCfg = cfg
	w.coord = must(NewCoordinator(cfg))
	points := 0
	w.hook = func(p string) action {
		points++
		if hook == nil {
			return proceed
		}
		return hook(p)
	}
	for i, specs := range txns {
		w.begin(lock.TxnID(i+1), specs)
	}
	w.settle()
	w.heal()
	return w, points
}

// TestCrashAtEveryPoint crashes, in turn, the node at every fault point of
// each scenario — before and after every durable write, before every send —
// and restarts it from its durable state only; a second pass instead loses
// just the message at each send point. Every run must keep the world's
// invariants (I1–I5) and settle with all prepared ranges applying the
// decision.
//
// Ref: DESIGN.md rules 1, 2, 4, 6 and docs/design/2pc.md "Crash at each step".
func TestCrashAtEveryPoint(t *testing.T) {
	for _, sc := range crashScenarios {
		for _, anchorDecides := range []bool{false, true} {
			cfg := simCoordCfg
			cfg.AnchorDecides = anchorDecides
			name := sc.name
			if anchorDecides {
				name += ", anchor decides"
			}
			t.Run(name, func(t *testing.T) { crashEveryPoint(t, sc.name, cfg, sc.txns, sc.want) })
		}
	}
}

// crashEveryPoint runs one scenario with cfg, first without faults (its
// results must be wants), then once per fault point with a crash there and
// once per send point with that message lost.
func crashEveryPoint(t *testing.T, name string, cfg CoordinatorConfig, txns [][]spec, wants []string) {
	w, total := runScenario(t, name+" (no faults)", cfg, txns, nil)
	for i, want := range wants {
		info := w.txns[recordKey{lock.TxnID(i + 1), 1}]
		if info.result == nil || fmt.Sprintf("%v %v", info.result.Outcome, info.result.Path) != want {
			w.fatalf("t%d: result %v, want %s", i+1, info.result, want)
		}
	}
	for k := 0; k < total; k++ {
		for _, a := range []action{crash, drop} {
			var hit string
			n := 0
			hook := func(p string) action {
				n++
				if n-1 != k {
					return proceed
				}
				hit = p
				if a == drop && !isSend(p) {
					return proceed
				}
				return a
			}
			runScenario(t, fmt.Sprintf("%s, %v at point %d (see the trace)", name, a, k), cfg, txns, hook)
			if hit == "" {
				t.Fatalf("point %d of %d not reached", k, total)
			}
		}
	}
	t.Logf("%d fault points", total)
}

func isSend(point string) bool {
	var node, verb string
	fmt.Sscan(point, &node, &verb)
	return verb == "send"
}
