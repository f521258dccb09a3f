package torture

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func testSchedule(seed uint64) ScheduleConfig {
	return ScheduleConfig{Seed: seed, Faults: []string{"kill", "pause", "partition", "pause-leader"},
		Duration: 10 * time.Minute, Hold: 6 * time.Second, Recovery: 8 * time.Second}
}

// TestScheduleSameSeed: the same seed gives the same schedule, and the
// same choices inside each fault; another seed gives another schedule.
func TestScheduleSameSeed(t *testing.T) {
	a, b := PlanSchedule(testSchedule(42)), PlanSchedule(testSchedule(42))
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 planned two different schedules:\n%v\n%v", a, b)
	}
	for i := range a {
		ra, rb := a[i].Rand(), b[i].Rand()
		if fa, fb := fmt.Sprint(ra.Perm(5), netemParams(ra)), fmt.Sprint(rb.Perm(5), netemParams(rb)); fa != fb {
			t.Fatalf("step %d: the fault's rng differs between plans: %s vs %s", i, fa, fb)
		}
	}
	if c := PlanSchedule(testSchedule(43)); reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 planned the same schedule")
	}
}

// TestScheduleShape: steps use only the given faults, do not overlap, fit
// in the duration with their recovery window, hold within [Hold/2,
// 3*Hold/2] (a pause at least MinPause), and use every fault over a long
// run.
func TestScheduleShape(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		cfg := testSchedule(seed)
		steps := PlanSchedule(cfg)
		used := map[string]bool{}
		var prevEnd time.Duration
		for i, s := range steps {
			used[s.Fault] = true
			if !slices.Contains(cfg.Faults, s.Fault) {
				t.Fatalf("seed %d step %d: fault %q not asked for", seed, i, s.Fault)
			}
			if s.At < prevEnd {
				t.Fatalf("seed %d step %d starts at %v, before the previous recovery ends at %v", seed, i, s.At, prevEnd)
			}
			lo, hi := cfg.Hold/2, cfg.Hold*3/2
			lo, hi = max(lo, MinHold(s.Fault)), max(hi, MinHold(s.Fault))
			if s.Hold < lo || s.Hold > hi {
				t.Fatalf("seed %d step %d: %s held %v, outside [%v, %v]", seed, i, s.Fault, s.Hold, lo, hi)
			}
			if s.Recovery < cfg.Recovery/2 || s.Recovery > cfg.Recovery*3/2 {
				t.Fatalf("seed %d step %d: recovery %v outside [%v, %v]", seed, i, s.Recovery, cfg.Recovery/2, cfg.Recovery*3/2)
			}
			prevEnd = s.At + s.Hold + s.Recovery
		}
		if prevEnd > cfg.Duration {
			t.Fatalf("seed %d: the last step ends at %v, after the run's %v", seed, prevEnd, cfg.Duration)
		}
		if len(used) != len(cfg.Faults) {
			t.Fatalf("seed %d: %d steps used only %v", seed, len(steps), used)
		}
	}
	if MinPause <= ElectionTimeout {
		t.Fatalf("MinPause %v must exceed the election timeout %v", MinPause, ElectionTimeout)
	}
	if s := PlanSchedule(ScheduleConfig{Seed: 1, Duration: time.Minute, Hold: time.Second, Recovery: time.Second}); s != nil {
		t.Fatalf("no faults: planned %v", s)
	}
	if s := PlanSchedule(ScheduleConfig{Seed: 1, Faults: []string{"kill"}, Duration: 5 * time.Second, Hold: 10 * time.Second, Recovery: time.Second}); s != nil {
		t.Fatalf("a hold longer than the run: planned %v", s)
	}
}

// reachable returns the nodes that i can talk to, itself included.
func reachable(blocked [][]bool, i int) []int {
	var out []int
	for j := range blocked {
		if !blocked[i][j] {
			out = append(out, j)
		}
	}
	return out
}

// TestPlanPartition checks the geometry of every kind of partition over
// every cluster size it applies to, for many node orders.
func TestPlanPartition(t *testing.T) {
	for n := 2; n <= 9; n++ {
		for _, kind := range partitionKinds(n) {
			for seed := uint64(0); seed < 20; seed++ {
				perm := Step{Seed: seed}.Rand().Perm(n)
				blocked, desc := planPartition(kind, perm, nodeName)
				fail := func(format string, args ...any) {
					t.Helper()
					t.Fatalf("%d nodes, %s: %s", n, desc, fmt.Sprintf(format, args...))
				}
				cut := 0
				for i := 0; i < n; i++ {
					if blocked[i][i] {
						fail("%s cut off from itself", nodeName(i))
					}
					for j := 0; j < n; j++ {
						if blocked[i][j] != blocked[j][i] {
							fail("asymmetric between %s and %s", nodeName(i), nodeName(j))
						}
						if blocked[i][j] {
							cut++
						}
					}
				}
				if cut == 0 {
					fail("cuts nothing")
				}
				majority := n/2 + 1
				switch kind {
				case partIsolate:
					if len(reachable(blocked, perm[0])) != 1 || len(reachable(blocked, perm[1])) != n-1 {
						fail("%s should reach only itself, the others each other", nodeName(perm[0]))
					}
				case partHalves:
					small, big := len(reachable(blocked, perm[0])), len(reachable(blocked, perm[n-1]))
					if small != n/2 || big != n-n/2 {
						fail("halves of %d and %d, want %d and %d", small, big, n/2, n-n/2)
					}
				case partBridge:
					if len(reachable(blocked, perm[0])) != n {
						fail("the bridge %s does not reach everyone", nodeName(perm[0]))
					}
					for _, i := range perm[1:] {
						if r := len(reachable(blocked, i)); r == n || r < 2 {
							fail("%s reaches %d nodes: not one side plus the bridge", nodeName(i), r)
						}
					}
				case partRing:
					seen := map[string]bool{}
					for i := 0; i < n; i++ {
						r := reachable(blocked, i)
						if len(r) < majority || len(r) == n {
							fail("%s reaches %d nodes, want a majority (%d) but not all", nodeName(i), len(r), majority)
						}
						if seen[fmt.Sprint(r)] {
							fail("two nodes see the same majority %v", r)
						}
						seen[fmt.Sprint(r)] = true
					}
				}
			}
		}
	}
	if k := partitionKinds(1); k != nil {
		t.Fatalf("1 node: kinds %v", k)
	}
}

// TestScheduleEvery: with a fixed cadence the faults start exactly at
// Every, 2*Every, ... each with a whole period before the end of the run;
// holds are drawn around Hold but leave MinQuiet before the next start,
// and a pause still lasts MinPause; the same seed gives the same schedule.
func TestScheduleEvery(t *testing.T) {
	for _, tc := range []struct {
		every, hold time.Duration
		faults      []string
		want        int
	}{
		{60 * time.Second, 5 * time.Second, []string{"power-loss"}, 9},
		{5 * time.Second, time.Second, []string{"kill"}, 119},
		{5 * time.Second, 6 * time.Second, []string{"kill", "pause-leader"}, 119}, // holds cut to 4s
		{3 * time.Second, time.Second, []string{"pause"}, 199},                    // MinPause over MinQuiet
	} {
		for seed := uint64(1); seed <= 10; seed++ {
			cfg := ScheduleConfig{Seed: seed, Faults: tc.faults, Duration: 10 * time.Minute,
				Hold: tc.hold, Recovery: time.Hour, Every: tc.every}
			steps := PlanSchedule(cfg)
			if len(steps) != tc.want {
				t.Fatalf("every %v over %v: %d steps, want %d", tc.every, cfg.Duration, len(steps), tc.want)
			}
			if !reflect.DeepEqual(steps, PlanSchedule(cfg)) {
				t.Fatalf("every %v seed %d: two different schedules", tc.every, seed)
			}
			for i, s := range steps {
				if want := time.Duration(i+1) * tc.every; s.At != want {
					t.Fatalf("every %v: step %d at %v, want %v", tc.every, i, s.At, want)
				}
				if s.At+tc.every > cfg.Duration {
					t.Fatalf("every %v: step %d at %v has no whole period before %v", tc.every, i, s.At, cfg.Duration)
				}
				lo, hi := tc.hold/2, min(tc.hold*3/2, tc.every-MinQuiet)
				lo, hi = min(lo, hi), max(hi, MinHold(s.Fault))
				lo = max(lo, MinHold(s.Fault))
				if s.Hold < lo || s.Hold > hi {
					t.Fatalf("every %v seed %d step %d: %s held %v, outside [%v, %v]", tc.every, seed, i, s.Fault, s.Hold, lo, hi)
				}
				if s.Recovery != MinQuiet {
					t.Fatalf("every %v: step %d recovery %v, want MinQuiet", tc.every, i, s.Recovery)
				}
			}
		}
	}
	if MinHold("pause-leader") != MinPause || MinHold("pause") != MinPause || MinHold("kill-leader") != 0 || MinHold("power-loss") != 0 {
		t.Fatal("MinHold: only the pausing faults have a minimum")
	}
}
