package check

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized history tests (0: from the clock)")

func testSeed(t testing.TB) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	return seed
}

// genConfig shapes a generated list-append history.
type genConfig struct {
	txns          int
	processes     int
	activeKeys    int // keys in use at a time
	appendsPerKey int // a key is replaced by a fresh one after this many appends
	maxMops       int
	failPct       int // percent of transactions that fail
	infoPct       int // percent that end info; half of these take effect
	// serial gives every transaction its own time slot, so that realtime
	// order is the serial order; otherwise about processes transactions
	// overlap, each taking effect at one instant inside its interval.
	serial bool
}

// genListAppend runs random transactions one at a time against a model of
// lists and records the history a correct database could give: strictly
// serializable, in the order the model ran them. It ends with one
// transaction that reads every key, after everything else.
func genListAppend(rng *rand.Rand, cfg genConfig) []Op {
	state := map[string][]int{}
	active := make([]string, cfg.activeKeys)
	for i := range active {
		active[i] = fmt.Sprintf("k%d", i)
	}
	allKeys := slices.Clone(active)
	appends := map[string]int{}
	next := 1
	width := int64(5*cfg.processes - 1)
	history := make([]Op, 0, cfg.txns+1)
	type touched struct {
		key  string
		list []int
	}
	var local []touched
	for i := 0; i < cfg.txns; i++ {
		op := Op{Process: i % cfg.processes, Type: OK}
		switch r := rng.IntN(100); {
		case r < cfg.failPct:
			op.Type = Fail
		case r < cfg.failPct+cfg.infoPct:
			op.Type = Info
		}
		applied := op.Type == OK || (op.Type == Info && rng.IntN(2) == 0)
		local = local[:0]
		op.Txn = make([]Mop, 1+rng.IntN(cfg.maxMops))
		for j := range op.Txn {
			k := active[rng.IntN(len(active))]
			ti := slices.IndexFunc(local, func(t touched) bool { return t.key == k })
			if ti < 0 {
				local = append(local, touched{k, state[k]})
				ti = len(local) - 1
			}
			if rng.IntN(2) == 0 {
				op.Txn[j] = Append(k, next)
				local[ti].list = append(slices.Clip(local[ti].list), next)
				next++
			} else {
				op.Txn[j] = Mop{F: FR, Key: k}
				if op.Type == OK {
					op.Txn[j].List = slices.Clone(local[ti].list)
				}
			}
		}
		if applied {
			for _, t := range local {
				state[t.key] = t.list
				appends[t.key] = len(t.list)
				if len(t.list) >= cfg.appendsPerKey {
					if ai := slices.Index(active, t.key); ai >= 0 {
						active[ai] = fmt.Sprintf("k%d", len(allKeys))
						allKeys = append(allKeys, active[ai])
					}
				}
			}
		}
		// The transaction takes effect at 10*i. A process runs every
		// processes-th transaction, so intervals of up to 5*processes
		// either side overlap those of the other processes only.
		at := 10 * int64(i)
		if cfg.serial {
			op.Invoke, op.Complete = at-4, at+4
		} else {
			op.Invoke = at - 1 - rng.Int64N(width)
			op.Complete = at + 1 + rng.Int64N(width)
		}
		if op.Type == Info && rng.IntN(2) == 0 {
			op.Complete = 0 // never recorded
		}
		history = append(history, op)
	}
	end := 10 * int64(cfg.txns+cfg.processes)
	final := Op{Process: cfg.processes, Type: OK, Invoke: end, Complete: end + 10}
	for _, k := range allKeys {
		final.Txn = append(final.Txn, Read(k, slices.Clone(state[k])...))
	}
	return append(history, final)
}

// mutation changes one read of a generated history so that no serial
// order in realtime explains it, or reports false if it does not apply to
// that read.
type mutation struct {
	name  string
	apply func(rng *rand.Rand, h []Op, op, mop int) bool
}

// writerOf returns the op and micro-op that appended v to key.
func writerOf(h []Op, key string, v int) (int, int) {
	for i, op := range h {
		for j, m := range op.Txn {
			if m.F == FAppend && m.Key == key && m.Value == v {
				return i, j
			}
		}
	}
	return -1, -1
}

var mutations = []mutation{
	{"garbage", func(rng *rand.Rand, h []Op, op, mop int) bool {
		m := &h[op].Txn[mop]
		m.List = append(slices.Clone(m.List), -1)
		return true
	}},
	{"duplicate", func(rng *rand.Rand, h []Op, op, mop int) bool {
		m := &h[op].Txn[mop]
		if len(m.List) == 0 {
			return false
		}
		m.List = append(slices.Clone(m.List), m.List[rng.IntN(len(m.List))])
		return true
	}},
	{"swap", func(rng *rand.Rand, h []Op, op, mop int) bool {
		m := &h[op].Txn[mop]
		if len(m.List) < 2 {
			return false
		}
		l := slices.Clone(m.List)
		i := rng.IntN(len(l) - 1)
		l[i], l[i+1] = l[i+1], l[i]
		m.List = l
		return true
	}},
	// stale: drop the tail of the read from an element some earlier ok
	// transaction appended (the reader's own appends make it internal).
	{"stale", func(rng *rand.Rand, h []Op, op, mop int) bool {
		m := &h[op].Txn[mop]
		if len(m.List) == 0 {
			return false
		}
		cut := rng.IntN(len(m.List))
		w, _ := writerOf(h, m.Key, m.List[cut])
		if w != op && h[w].Type != OK {
			return false // an info append may take effect after the read
		}
		m.List = slices.Clone(m.List[:cut])
		return true
	}},
	// future: extend the read with elements appended after it, by later
	// transactions or later in its own.
	{"future", func(rng *rand.Rand, h []Op, op, mop int) bool {
		m := &h[op].Txn[mop]
		full := h[len(h)-1].Txn[slices.IndexFunc(h[len(h)-1].Txn, func(f Mop) bool { return f.Key == m.Key })].List
		if len(full) == len(m.List) {
			return false
		}
		m.List = slices.Clone(full[:len(m.List)+1+rng.IntN(len(full)-len(m.List))])
		return true
	}},
}

// TestListAppendSerialExecutions: histories of serial executions are
// valid, strictly serializable and serializable; changing one read (not the
// final one) must be flagged.
func TestListAppendSerialExecutions(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	tried := map[string]int{}
	for round := 0; round < 400; round++ {
		cfg := genConfig{
			txns: 10 + rng.IntN(60), processes: 1 + rng.IntN(4), activeKeys: 1 + rng.IntN(4),
			appendsPerKey: 2 + rng.IntN(8), maxMops: 1 + rng.IntN(5), failPct: rng.IntN(15), infoPct: rng.IntN(15),
			serial: true,
		}
		h := genListAppend(rng, cfg)
		for _, realtime := range []bool{false, true} {
			if res := ListAppend(h, ListAppendOptions{Realtime: realtime}); !res.Valid {
				t.Fatalf("round %d: serial history invalid (realtime %v):\n%s\n%s", round, realtime, explain(res), dump(h))
			}
		}
		var reads [][2]int
		for i, op := range h[:len(h)-1] {
			for j, m := range op.Txn {
				if op.Type == OK && m.F == FR {
					reads = append(reads, [2]int{i, j})
				}
			}
		}
		if len(reads) == 0 {
			continue
		}
		r := reads[rng.IntN(len(reads))]
		mu := mutations[rng.IntN(len(mutations))]
		mutated := slices.Clone(h)
		mutated[r[0]].Txn = slices.Clone(h[r[0]].Txn)
		if !mu.apply(rng, mutated, r[0], r[1]) {
			continue
		}
		tried[mu.name]++
		if res := ListAppend(mutated, ListAppendOptions{Realtime: true}); res.Valid {
			t.Fatalf("round %d: %s mutation of op %d micro-op %d not flagged\nbefore: %s\nafter:  %s\n%s",
				round, mu.name, r[0], r[1], h[r[0]], mutated[r[0]], dump(mutated))
		}
	}
	for _, mu := range mutations {
		if tried[mu.name] == 0 {
			t.Errorf("mutation %s never tried", mu.name)
		}
	}
	t.Logf("mutations tried: %v", tried)
}

// TestListAppendConcurrentExecutions: histories with overlapping
// transactions, each taking effect inside its interval, are valid.
func TestListAppendConcurrentExecutions(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	for round := 0; round < 200; round++ {
		cfg := genConfig{
			txns: 10 + rng.IntN(200), processes: 1 + rng.IntN(8), activeKeys: 1 + rng.IntN(6),
			appendsPerKey: 2 + rng.IntN(20), maxMops: 1 + rng.IntN(6), failPct: rng.IntN(15), infoPct: rng.IntN(15),
		}
		h := genListAppend(rng, cfg)
		if res := ListAppend(h, ListAppendOptions{Realtime: true}); !res.Valid {
			t.Fatalf("round %d: history invalid:\n%s\n%s", round, explain(res), dump(h))
		}
	}
}

func dump(h []Op) string {
	var b strings.Builder
	for i, op := range h {
		fmt.Fprintf(&b, "%3d [%d,%d] %s\n", i, op.Invoke, op.Complete, op)
	}
	return b.String()
}

// config50k is the size the checker is built for: 50,000 transactions of
// up to 4 micro-ops over 10 keys at a time, 8 clients.
var config50k = genConfig{
	txns: 50_000, processes: 8, activeKeys: 10, appendsPerKey: 200, maxMops: 4,
	failPct: 3, infoPct: 3,
}

func TestListAppend50k(t *testing.T) {
	h := genListAppend(rand.New(rand.NewPCG(50_000, 1)), config50k)
	start := time.Now()
	res := ListAppend(h, ListAppendOptions{Realtime: true})
	t.Logf("%d transactions checked in %s: %v", len(h), time.Since(start), res.Stats)
	if !res.Valid {
		t.Fatalf("valid history rejected:\n%s", explain(res))
	}
}

func BenchmarkListAppend50k(b *testing.B) {
	h := genListAppend(rand.New(rand.NewPCG(50_000, 1)), config50k)
	for _, realtime := range []bool{false, true} {
		b.Run(fmt.Sprintf("realtime=%v", realtime), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res := ListAppend(h, ListAppendOptions{Realtime: realtime}); !res.Valid {
					b.Fatal(explain(res))
				}
			}
		})
	}
}
