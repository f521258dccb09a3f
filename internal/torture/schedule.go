package torture

import (
	"math/rand/v2"
	"time"
)

// ScheduleConfig describes a fault schedule.
type ScheduleConfig struct {
	// Seed makes the schedule: the same seed gives the same schedule.
	Seed uint64
	// Faults are the names of the faults to draw from (those available).
	Faults []string
	// Duration is the length of the run. Every step fits in it with its
	// hold and its recovery window, so every fault is held in full and the
	// cluster gets a quiet window after each heal.
	Duration time.Duration
	// Hold is the mean time a fault stays on: each is held for a time
	// drawn uniformly from [Hold/2, 3*Hold/2] (a pause at least MinPause).
	Hold time.Duration
	// Recovery is the mean quiet time after each heal, and before the first
	// fault: drawn uniformly from [Recovery/2, 3*Recovery/2].
	Recovery time.Duration
	// Every, if positive, is a fixed cadence instead of drawn recovery
	// windows: a fault starts at Every, 2*Every, ... from the start of the
	// run, each with a whole period before the end of the run. Holds are
	// drawn as above but cut to leave MinQuiet before the next start
	// (never below the fault's MinHold). Recovery is not used.
	Every time.Duration
}

// MinQuiet is the shortest quiet time after a heal with a fixed cadence
// (ScheduleConfig.Every): if a heal (a restart) runs late, the next fault
// starts MinQuiet after it rather than on its tick.
const MinQuiet = ElectionTimeout

// Step is one fault of a schedule: on at At (from the start of the run),
// held for Hold, healed, then at least Recovery of quiet before the next
// (with a fixed cadence, Recovery is MinQuiet and the quiet lasts until the
// next step's At).
type Step struct {
	Fault    string
	At       time.Duration
	Hold     time.Duration
	Recovery time.Duration
	// Seed seeds the fault's own choices (Fault.Start's rng), so which
	// node or partition it picks does not depend on timing.
	Seed uint64
}

// Rand returns the rng a fault's Start gets for this step.
func (s Step) Rand() *rand.Rand { return rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15)) }

// PlanSchedule draws the schedule of a run from cfg.Seed.
func PlanSchedule(cfg ScheduleConfig) []Step {
	if len(cfg.Faults) == 0 || cfg.Duration <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x70727475))
	around := func(mean time.Duration) time.Duration {
		if mean <= 0 {
			return 0
		}
		return mean/2 + time.Duration(rng.Int64N(int64(mean)+1))
	}
	var steps []Step
	if cfg.Every > 0 {
		for at := cfg.Every; at+cfg.Every <= cfg.Duration; at += cfg.Every {
			s := Step{Fault: cfg.Faults[rng.IntN(len(cfg.Faults))], At: at, Hold: around(cfg.Hold), Recovery: MinQuiet}
			s.Hold = max(min(s.Hold, cfg.Every-MinQuiet), MinHold(s.Fault))
			s.Seed = rng.Uint64()
			steps = append(steps, s)
		}
		return steps
	}
	for t := around(cfg.Recovery); ; {
		s := Step{Fault: cfg.Faults[rng.IntN(len(cfg.Faults))], At: t, Hold: around(cfg.Hold)}
		s.Hold = max(s.Hold, MinHold(s.Fault))
		s.Recovery = around(cfg.Recovery)
		s.Seed = rng.Uint64()
		t += s.Hold + s.Recovery
		if t > cfg.Duration {
			return steps
		}
		steps = append(steps, s)
	}
}
