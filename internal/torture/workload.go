package torture

import (
	"context"
	"fmt"
)

// Workload is what clients do to the cluster during a run, and how their
// history is judged.
//
// The runner calls Run once, while it injects faults; Run returns when ctx
// is done (nil) or when the workload cannot run at all (an error). After
// the run every fault is healed, every node restarted and the cluster ready;
// then the runner calls Final (the final reads; an error fails the run) and
// Check.
type Workload interface {
	// Run drives clients against endpoints until ctx is done, recording
	// every operation to rec.
	Run(ctx context.Context, endpoints []string, rec *Recorder) error
	// Final reads back what the workload needs to judge the run, on the
	// healed cluster, recording those reads too.
	Final(ctx context.Context, endpoints []string) error
	// Check judges the recorded history: ok, and a report for the summary
	// (its first line is the verdict in brief).
	Check() (ok bool, report string)
}

// Checker judges the history file of a finished run (history.jsonl). The
// checkers of internal/check plug in here: each reads the file
// (check.ReadJSONL) and runs one check over it.
type Checker interface {
	// Name names the check in the summary.
	Name() string
	// Check judges the history at historyPath. An error means the check
	// could not run, which fails the run too.
	Check(ctx context.Context, historyPath string) (ok bool, report string, err error)
}

// WorkloadOptions are the knobs shared by the built-in workloads.
type WorkloadOptions struct {
	// Seed seeds the clients' choices.
	Seed uint64
	// Clients is the number of concurrent clients (default 10).
	Clients int
	// Rate is the total offered load in operations per second (default
	// 200; negative: as fast as the clients go).
	Rate float64
}

// WorkloadNames lists the built-in workloads.
var WorkloadNames = []string{"register", "bank", "append", "set"}

// NewWorkload returns the built-in workload called name.
func NewWorkload(name string, opts WorkloadOptions) (Workload, error) {
	switch name {
	case "register":
		return NewRegister(opts), nil
	case "bank":
		return NewBank(opts), nil
	case "append":
		return NewAppend(opts), nil
	case "set":
		return NewSet(opts), nil
	}
	return nil, fmt.Errorf("torture: unknown workload %q (want one of %v)", name, WorkloadNames)
}
