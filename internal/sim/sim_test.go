package sim

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// configFor varies the cluster with the seed: 3 or 5 nodes, 2 to 4 ranges,
// transaction records one batch at a time or pipelined, the anchor
// committing with the decision or (a quarter of the seeds) prepared like
// the others, client keep-alives and idle aborts (half of the seeds), bank
// or list-append, always with faults.
func configFor(seed uint64) Config {
	c := Config{Seed: seed, Faults: true, Splits: true, Nodes: 3, Ranges: 3}
	if seed%3 == 0 {
		c.Nodes = 5
	}
	c.Ranges = 2 + int(seed/3%3)
	c.PipelineRecords = 1 + 3*int(seed/9%2) // one batch at a time, or pipelined
	c.PrepareAnchor = seed%4 == 3
	c.KeepAlive = seed/4%2 == 1
	return c
}

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// runSeeds runs seeds from first on every core until n ran or budget is
// spent, failing the test with each failed seed's report.
func runSeeds(t *testing.T, first uint64, n int, budget time.Duration) (ran int64) {
	var next atomic.Uint64
	next.Store(first)
	var count atomic.Int64
	deadline := time.Now().Add(budget)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				seed := next.Add(1) - 1
				if seed >= first+uint64(n) {
					return
				}
				rep := Run(configFor(seed))
				count.Add(1)
				if rep.Failure != "" {
					mu.Lock()
					t.Errorf("%v\nreplay: VOWDB_SIM_SEED=%d go test -run TestReplay -v ./internal/sim", rep, seed)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return count.Load()
}

// TestSimulationSeeds is CI's budget: 1,000 seeds (fewer under -race),
// bounded by VOWDB_SIM_BUDGET seconds (default 240); the count run is
// printed. VOWDB_SIM_SEEDS and VOWDB_SIM_FIRST change the range.
func TestSimulationSeeds(t *testing.T) {
	n := envInt("VOWDB_SIM_SEEDS", 1000)
	if raceBuild && os.Getenv("VOWDB_SIM_SEEDS") == "" {
		n = 40
	}
	first := uint64(envInt("VOWDB_SIM_FIRST", 1))
	budget := time.Duration(envInt("VOWDB_SIM_BUDGET", 240)) * time.Second
	start := time.Now()
	ran := runSeeds(t, first, n, budget)
	el := time.Since(start)
	msg := fmt.Sprintf("simulation: %d of %d seeds (from %d) in %v, %.0f seeds/minute on %d cores",
		ran, n, first, el.Round(time.Millisecond), float64(ran)/el.Minutes(), runtime.GOMAXPROCS(0))
	t.Log(msg)
	fmt.Println(msg)
}

// TestSimulationSoak runs seeds for VOWDB_SIM_DURATION (e.g. 10m; `make
// simulate DURATION=10m`), from a time-based first seed unless
// VOWDB_SIM_FIRST is set. It is skipped when the duration is not set.
func TestSimulationSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("VOWDB_SIM_DURATION"))
	if err != nil || d <= 0 {
		t.Skip("set VOWDB_SIM_DURATION (e.g. 10m) to soak")
	}
	first := uint64(envInt("VOWDB_SIM_FIRST", int(time.Now().UnixNano()%1e9)))
	start := time.Now()
	ran := runSeeds(t, first, 1<<40, d)
	el := time.Since(start)
	fmt.Printf("simulation soak: %d seeds from %d in %v, %.0f seeds/minute on %d cores\n",
		ran, first, el.Round(time.Second), float64(ran)/el.Minutes(), runtime.GOMAXPROCS(0))
}

// TestRegressionSeeds re-runs every seed that ever failed.
func TestRegressionSeeds(t *testing.T) {
	f, err := os.Open("testdata/regressions.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		seed, err := strconv.ParseUint(strings.Fields(line)[0], 10, 64)
		if err != nil {
			t.Fatalf("regressions.txt: %q: %v", line, err)
		}
		n++
		// Both commit paths: a seed found with one may matter to the other.
		flipped := configFor(seed)
		flipped.PrepareAnchor = !flipped.PrepareAnchor
		for _, cfg := range []Config{configFor(seed), flipped, {Seed: seed, Faults: true},
			{Seed: seed, Faults: true, PrepareAnchor: true}} {
			if rep := Run(cfg); rep.Failure != "" {
				t.Errorf("%v", rep)
			}
		}
	}
	if n == 0 {
		t.Fatal("no regression seeds")
	}
}

// TestSameSeedSameTrace: a seed replays event for event, and another seed
// does not.
func TestSameSeedSameTrace(t *testing.T) {
	exercised := 0
	for seed := uint64(1); seed <= 6; seed++ {
		a, b := Run(configFor(seed)), Run(configFor(seed))
		if a.Failure != "" {
			t.Fatalf("%v", a)
		}
		if a.Trace != b.Trace || a.Events != b.Events || a.Ticks != b.Ticks {
			t.Fatalf("seed %d ran twice: trace %016x (%d events, %d ticks) then %016x (%d events, %d ticks)",
				seed, a.Trace, a.Events, a.Ticks, b.Trace, b.Events, b.Ticks)
		}
		if a.Crashes > 0 && a.Partitions > 0 && a.Committed > 0 {
			exercised++
		}
		if c := Run(configFor(seed + 100)); c.Trace == a.Trace {
			t.Fatalf("seeds %d and %d gave the same trace", seed, seed+100)
		}
	}
	if exercised < 3 {
		t.Errorf("only %d of 6 seeds had crashes, partitions and commits", exercised)
	}
}

// TestSimulationCatchesBrokenLocking proves the checks can fail: with
// strict 2PL switched off (every lock granted at once) every seed must
// find an anomaly, in bank reads or the list-append history and final
// state.
func TestSimulationCatchesBrokenLocking(t *testing.T) {
	found := 0
	for seed := uint64(1); seed <= 12; seed++ {
		cfg := configFor(seed)
		cfg.Bug = "no-locks"
		if rep := Run(cfg); rep.Failure != "" {
			found++
		} else {
			t.Logf("seed %d (%s) with locking off found nothing: %v", seed, rep.Workload, rep)
		}
	}
	if found < 10 {
		t.Errorf("with locking off only %d of 12 seeds found an anomaly", found)
	}
}

// TestReplay runs VOWDB_SIM_SEED with its trace on stdout.
func TestReplay(t *testing.T) {
	seed, err := strconv.ParseUint(os.Getenv("VOWDB_SIM_SEED"), 10, 64)
	if err != nil {
		t.Skip("set VOWDB_SIM_SEED to replay a seed")
	}
	cfg := configFor(seed)
	cfg.Trace = os.Stdout
	rep := Run(cfg)
	t.Logf("%v", rep)
	if rep.Failure != "" {
		t.Fail()
	}
}

// TestSimulationCoversTheProtocol: a modest budget of seeds runs every
// path the simulator is there to exercise — crashes and snapshots, the
// three commit paths, inquiry, cooperative termination, presumed abort,
// recovery of decided records, tenures rebuilt with prepared txns, the
// deadlock detector and ENDs batched per anchor range — so a change that quietly stops a path from running
// fails here rather than going unnoticed.
func TestSimulationCoversTheProtocol(t *testing.T) {
	total := map[string]int{}
	for seed := uint64(1); seed <= 150; seed++ {
		for k, v := range Run(configFor(seed)).Paths {
			total[k] += v
		}
	}
	for _, p := range []string{"crash", "snapshot", "committed 2PC", "committed 1PC", "committed read-only",
		"inquire", "inquire-peer (cooperative termination)", "presumed abort", "restore of decided records",
		"tenure rebuilt with prepared txns", "global deadlock victim", "range abort: lock wait timeout",
		"range abort: deadline", "range abort: rollback", "range abort: idle", "split",
		"ENDs batched in one entry", "finished txn state collected"} {
		if total[p] == 0 {
			t.Errorf("no seed ran %q", p)
		}
	}
	t.Logf("paths over 150 seeds: %v", total)
}
