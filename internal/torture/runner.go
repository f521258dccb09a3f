package torture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Config configures Run.
type Config struct {
	// Binary is the vowdb binary the nodes run.
	Binary string
	// Out is the output directory (created if missing): history.jsonl,
	// faults.log, summary.txt and nodes/ (data and logs).
	Out string
	// Nodes is the cluster size.
	Nodes int
	// Loopback runs every node on 127.0.0.1 instead of in network
	// namespaces (no root needed; partition and netem are skipped).
	Loopback bool
	// Workload drives the clients; WorkloadName names it in the summary.
	Workload     Workload
	WorkloadName string
	// Faults are the names of the faults to inject (see FaultNames).
	Faults []string
	// Duration is how long the workload runs under faults.
	Duration time.Duration
	// Hold, Recovery and Every shape the schedule (see ScheduleConfig).
	Hold, Recovery, Every time.Duration
	// LoseUnsynced starts every node with LoseUnsyncedFlag, so that every
	// SIGKILL (kill, kill-leader) loses the node's unsynced bytes. Run
	// fails if the binary does not know the flag.
	LoseUnsynced bool
	// Seed makes the schedule and the faults' choices.
	Seed uint64
	// Checkers judge history.jsonl after the workload's own Check.
	Checkers []Checker
	// Progress, if set, gets every faults.log line as it is written.
	Progress io.Writer
}

// Timeouts of the end of a run.
const (
	readyTimeout = time.Minute      // the healed cluster is ready
	finalTimeout = time.Minute      // the workload's final reads
	auditTimeout = 30 * time.Second // the audit settles
)

// FaultEvent is one fault the runner injected.
type FaultEvent struct {
	Step        int
	Fault       string
	Description string
	// Start and Heal are on the run's clock (Recorder.Now); Heal is 0 if
	// the fault was never healed on its own (the run was interrupted).
	Start, Heal time.Duration
	// Err is the error of Start or Heal, if any.
	Err string
	// Recovery is the time from the heal to the first acknowledged
	// operation; Recovered is false if none came before the next fault or
	// the end of the workload (then Recovery is that whole window).
	Recovery  time.Duration
	Recovered bool
	// Outage is the longest stretch without an acknowledged operation
	// while the fault was on: what the fault cost the clients.
	Outage time.Duration
}

// SkippedFault is a requested fault the machine cannot inject.
type SkippedFault struct {
	Name, Reason string
}

// CheckResult is the verdict of one check of the run.
type CheckResult struct {
	Name   string
	OK     bool
	Report string
}

// Report is the outcome of a run.
type Report struct {
	Config      Config
	Network     string
	Elapsed     time.Duration
	Faults      []FaultEvent
	Skipped     []SkippedFault
	Ops         OpStats
	Interrupted bool
	// LongestGap is the longest stretch of the workload without an
	// acknowledged operation, starting at LongestGapAt.
	LongestGap, LongestGapAt time.Duration
	Checks                   []CheckResult
}

// Passed reports whether the run completed and every check passed.
func (r *Report) Passed() bool { return !r.Interrupted && len(r.Checks) > 0 && r.FailedChecks() == 0 }

// FailedChecks counts the checks that failed.
func (r *Report) FailedChecks() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK {
			n++
		}
	}
	return n
}

func (r *Report) check(name string, err error, okReport string) {
	if err != nil {
		r.Checks = append(r.Checks, CheckResult{Name: name, Report: err.Error()})
		return
	}
	r.Checks = append(r.Checks, CheckResult{Name: name, OK: true, Report: okReport})
}

// runner is the state of one Run.
type runner struct {
	cfg Config
	rep *Report
	rec *Recorder
	// workStop is when the workload was stopped (0 if it never ran): the
	// final reads and the audit come after it and are not the workload.
	workStop time.Duration
	logMu    sync.Mutex
	faultsF  *os.File
}

// logf writes a line to faults.log (and Progress), stamped with the run's
// clock.
func (r *runner) logf(format string, args ...any) {
	line := fmt.Sprintf("%9.3fs  ", r.rec.Now().Seconds()) + fmt.Sprintf(format, args...) + "\n"
	r.logMu.Lock()
	defer r.logMu.Unlock()
	_, _ = io.WriteString(r.faultsF, line)
	if r.cfg.Progress != nil {
		_, _ = io.WriteString(r.cfg.Progress, line)
	}
}

// Run runs one torture test: it creates the network, starts the cluster,
// runs the workload while it injects faults on a seeded schedule, heals
// everything, checks the cluster and the history, and stops every process
// it started (by PID) and removes the network, also on error or when ctx
// is cancelled.
//
// Run returns an error only when the test could not run (no network, a
// cluster that does not start, an interruption); a run whose checks fail
// returns a Report with Passed false. The Report is non-nil whenever the
// run got as far as starting the workload.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg.Nodes < 1 || cfg.Duration <= 0 || cfg.Workload == nil || cfg.Binary == "" || cfg.Out == "" {
		return nil, errors.New("torture: Config needs Binary, Out, Nodes >= 1, Duration > 0 and a Workload")
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, rep: &Report{Config: cfg}}
	if r.rec, err = NewRecorder(filepath.Join(cfg.Out, "history.jsonl")); err != nil {
		return nil, err
	}
	defer r.rec.Close()
	if r.faultsF, err = os.Create(filepath.Join(cfg.Out, "faults.log")); err != nil {
		return nil, err
	}
	defer r.faultsF.Close()

	var net Network
	if cfg.Loopback {
		net, err = NewLoopback(cfg.Nodes)
	} else {
		net, err = NewNet(cfg.Nodes)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := net.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			r.logf("network removed")
		}
	}()
	r.rep.Network = net.Describe()
	r.logf("network: %s", r.rep.Network)
	if nt, ok := net.(*Net); ok && len(nt.Stale) > 0 {
		r.logf("warning: namespaces left by earlier runs that were killed (remove with ip netns del): %s", strings.Join(nt.Stale, " "))
	}

	c, err := NewCluster(ClusterConfig{Binary: cfg.Binary, Dir: cfg.Out, Net: net, Logf: r.logf})
	if err != nil {
		return nil, err
	}
	faults, err := r.probeFaults(ctx, c, net)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := c.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		r.logf("every node stopped")
	}()
	r.logf("starting %d nodes (%s)", cfg.Nodes, cfg.Binary)
	if err := c.Start(ctx); err != nil {
		return nil, fmt.Errorf("torture: start the cluster: %w", err)
	}
	r.logf("cluster ready; workload %s starts", cfg.WorkloadName)

	start := time.Now()
	r.runPhase(ctx, c, faults)
	if ctx.Err() != nil {
		r.rep.Interrupted = true
		_ = r.healAll(c, net)
		_ = r.rec.Close()
		r.rep.Ops = r.rec.Stats()
		err = fmt.Errorf("torture: interrupted: %w", ctx.Err())
	} else {
		r.endPhase(ctx, c, net)
	}
	r.rep.Elapsed = time.Since(start)
	if f, ferr := os.Create(filepath.Join(cfg.Out, "summary.txt")); ferr == nil {
		r.rep.WriteSummary(f)
		_ = f.Close()
	}
	return r.rep, err
}

// probeFaults builds the requested faults and keeps those the machine can
// inject; the others are reported as skipped. Faults that need node flags
// get them.
func (r *runner) probeFaults(ctx context.Context, c *Cluster, net Network) (map[string]Fault, error) {
	faults := map[string]Fault{}
	for _, name := range r.cfg.Faults {
		if _, dup := faults[name]; dup {
			continue
		}
		f, err := NewFault(name, c, net, r.cfg.Binary)
		if err != nil {
			return nil, err
		}
		if p, ok := f.(Prober); ok {
			if err := p.Probe(ctx); err != nil {
				r.rep.Skipped = append(r.rep.Skipped, SkippedFault{Name: name, Reason: err.Error()})
				r.logf("fault %s skipped: %v", name, err)
				continue
			}
		}
		if nf, ok := f.(nodeFlagger); ok {
			addNodeFlags(c, nf.nodeFlags())
		}
		faults[name] = f
	}
	if r.cfg.LoseUnsynced {
		if err := probeLoseUnsynced(ctx, r.cfg.Binary); err != nil {
			return nil, fmt.Errorf("torture: every node to lose unsynced bytes: %w", err)
		}
		addNodeFlags(c, []string{LoseUnsyncedFlag})
	}
	return faults, nil
}

// addNodeFlags adds flags to every node's `vowdb start` arguments, each
// once.
func addNodeFlags(c *Cluster, flags []string) {
	for _, n := range c.nodes {
		for _, fl := range flags {
			if !slices.Contains(n.args, fl) {
				n.args = append(n.args, fl)
			}
		}
	}
}

// runPhase runs the workload for cfg.Duration while it injects the
// scheduled faults, then stops the workload with the last fault healed.
func (r *runner) runPhase(ctx context.Context, c *Cluster, faults map[string]Fault) {
	var names []string
	for _, name := range FaultNames {
		if faults[name] != nil {
			names = append(names, name)
		}
	}
	steps := PlanSchedule(ScheduleConfig{Seed: r.cfg.Seed, Faults: names, Duration: r.cfg.Duration,
		Hold: r.cfg.Hold, Recovery: r.cfg.Recovery, Every: r.cfg.Every})
	r.logf("schedule (seed %d): %d faults planned over %v from %v", r.cfg.Seed, len(steps), r.cfg.Duration, names)

	wctx, stopWorkload := context.WithCancel(ctx)
	defer stopWorkload()
	wdone := make(chan error, 1)
	base := r.rec.Now()
	go func() { wdone <- r.cfg.Workload.Run(wctx, c.Endpoints(), r.rec) }()
	end := base + r.cfg.Duration
	until := func(t time.Duration) bool { return sleepCtx(ctx, t-r.rec.Now()) }

	var quietUntil time.Duration // the previous fault's recovery window
	for i, s := range steps {
		// Slow restarts may have pushed the schedule back: a fault that no
		// longer fits before the end is not started.
		at := max(base+s.At, quietUntil)
		if at+s.Hold >= end || !until(at) {
			break
		}
		if p, err := c.Placement(ctx); err == nil {
			r.logf("%s", p)
		}
		f := faults[s.Fault]
		if p, ok := f.(preparer); ok {
			if err := p.prepare(ctx); err != nil {
				// Nothing was injected, so nothing is held or healed; the
				// failure fails the run's fault check.
				ev := FaultEvent{Step: i + 1, Fault: s.Fault, Start: r.rec.Now(), Err: "start: " + err.Error()}
				ev.Heal = ev.Start
				r.logf("fault %d %s: START FAILED: %v", ev.Step, s.Fault, err)
				r.rep.Faults = append(r.rep.Faults, ev)
				quietUntil = ev.Heal + s.Recovery
				continue
			}
		}
		ev := FaultEvent{Step: i + 1, Fault: s.Fault, Start: r.rec.Now()}
		desc, err := f.Start(ctx, s.Rand())
		ev.Description = desc
		if err != nil {
			ev.Err = "start: " + err.Error()
			r.logf("fault %d %s: %s: START FAILED: %v", ev.Step, s.Fault, desc, err)
		} else {
			r.logf("fault %d %s on: %s (hold %v)", ev.Step, s.Fault, desc, s.Hold.Round(time.Millisecond))
		}
		until(ev.Start + s.Hold)
		if err := f.Heal(); err != nil {
			ev.Err = strings.TrimPrefix(ev.Err+"; heal: "+err.Error(), "; ")
			r.logf("fault %d %s: HEAL FAILED: %v", ev.Step, s.Fault, err)
		} else {
			r.logf("fault %d %s healed", ev.Step, s.Fault)
		}
		ev.Heal = r.rec.Now()
		r.rep.Faults = append(r.rep.Faults, ev)
		quietUntil = ev.Heal + s.Recovery
		if ctx.Err() != nil {
			break
		}
	}
	until(end)
	stopWorkload()
	if err := <-wdone; err != nil {
		r.rep.check("workload ran", err, "")
	}
	r.workStop = r.rec.Now()
	r.logf("workload stopped")
}

// healAll undoes every fault whatever state the run ended in: network rules
// and qdiscs removed, paused nodes continued, stopped nodes restarted.
func (r *runner) healAll(c *Cluster, net Network) error {
	var errs []error
	if nt, ok := net.(*Net); ok {
		if nt.ProbePartition() == nil {
			errs = append(errs, nt.Unblock())
		}
		for i := range nt.Hosts() {
			_ = nt.ClearNetem(i) // fails when there is none
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*serveTimeout)
	defer cancel()
	for i := 0; i < c.N(); i++ {
		if c.Paused(i) {
			errs = append(errs, c.Resume(i))
		}
		if !c.Running(i) {
			errs = append(errs, c.Restart(ctx, i))
		}
	}
	return errors.Join(errs...)
}

// endPhase heals everything, waits for the cluster, runs the final reads,
// the audit and every check.
func (r *runner) endPhase(ctx context.Context, c *Cluster, net Network) {
	rep := r.rep
	var faultErrs []string
	for _, ev := range rep.Faults {
		if ev.Err != "" {
			faultErrs = append(faultErrs, fmt.Sprintf("fault %d %s: %s", ev.Step, ev.Fault, ev.Err))
		}
	}
	if err := r.healAll(c, net); err != nil {
		faultErrs = append(faultErrs, "final heal: "+err.Error())
	}
	r.logf("everything healed; every node running")
	var faultErr error
	if len(faultErrs) > 0 {
		faultErr = errors.New(strings.Join(faultErrs, "\n"))
	}
	rep.check("faults injected and healed", faultErr, fmt.Sprintf("%d faults, every start and heal succeeded", len(rep.Faults)))

	readyErr := c.WaitReady(ctx, readyTimeout)
	rep.check("cluster ready after the final heal", readyErr, "every node answers /readyz, every range has a leader")
	r.logf("cluster ready: %v", errOrOK(readyErr))

	fctx, cancel := context.WithTimeout(ctx, finalTimeout)
	finalErr := r.cfg.Workload.Final(fctx, c.Endpoints())
	cancel()
	rep.check("final reads", finalErr, "every final read succeeded")
	r.logf("final reads: %v", errOrOK(finalErr))

	audit, auditErr := c.Audit(ctx, auditTimeout)
	rep.check("orphan audit", auditErr, audit)
	r.logf("orphan audit: %v", errOrOK(auditErr))
	if p, err := c.Placement(ctx); err == nil {
		r.logf("%s", p)
	}

	var exitErr error
	if ex := c.UnexpectedExits(); len(ex) > 0 {
		exitErr = fmt.Errorf("%d unexpected exits (see nodes/*.log):\n%s", len(ex), strings.Join(ex, "\n"))
	}
	rep.check("no node exited unless killed", exitErr, "every exit was a fault's SIGKILL")

	_ = r.rec.Close()
	rep.Ops = r.rec.Stats()
	r.recoveries()
	ok, report := r.cfg.Workload.Check()
	rep.Checks = append(rep.Checks, CheckResult{Name: "workload " + r.cfg.WorkloadName, OK: ok, Report: report})
	for _, ck := range r.cfg.Checkers {
		ok, report, err := ck.Check(ctx, filepath.Join(r.cfg.Out, "history.jsonl"))
		if err != nil {
			ok, report = false, "could not run: "+err.Error()
		}
		rep.Checks = append(rep.Checks, CheckResult{Name: ck.Name(), OK: ok, Report: report})
	}
	for _, ck := range rep.Checks {
		r.logf("check %s: %s", ck.Name, map[bool]string{true: "PASS", false: "FAIL"}[ck.OK])
	}
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// recoveries fills each fault's recovery time and the longest stretch
// without an acknowledged operation.
func (r *runner) recoveries() {
	rep := r.rep
	var workEnd time.Duration
	if n := len(rep.Ops.acks); n > 0 {
		workEnd = rep.Ops.acks[n-1]
	}
	if r.workStop > 0 {
		workEnd = r.workStop // not the final reads, which wait for the audit
	}
	for i := range rep.Faults {
		ev := &rep.Faults[i]
		ev.Outage, _ = rep.Ops.LongestGap(ev.Start, ev.Heal)
		window := workEnd
		if i+1 < len(rep.Faults) {
			window = rep.Faults[i+1].Start
		}
		if ack, ok := rep.Ops.FirstAckAfter(ev.Heal); ok && ack <= max(window, ev.Heal) {
			ev.Recovery, ev.Recovered = ack-ev.Heal, true
		} else {
			ev.Recovery = max(window-ev.Heal, 0)
		}
	}
	if len(rep.Ops.acks) > 0 {
		rep.LongestGap, rep.LongestGapAt = rep.Ops.LongestGap(rep.Ops.acks[0], workEnd)
	}
}

// WriteSummary prints the report as tables.
func (r *Report) WriteSummary(w io.Writer) {
	cfg := r.Config
	fmt.Fprintf(w, "vowdb torture: workload %s, %d nodes, faults %s, seed %d, duration %v (took %v)\n",
		cfg.WorkloadName, cfg.Nodes, strings.Join(cfg.Faults, ","), cfg.Seed, cfg.Duration, r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "network: %s\n", r.Network)
	sched := fmt.Sprintf("hold about %v, recovery about %v", cfg.Hold, cfg.Recovery)
	if cfg.Every > 0 {
		sched = fmt.Sprintf("a fault every %v, hold about %v", cfg.Every, cfg.Hold)
	}
	if cfg.LoseUnsynced {
		sched += "; every node loses its unsynced bytes when killed"
	}
	fmt.Fprintf(w, "schedule: %s\n", sched)
	fmt.Fprintf(w, "output:  %s (history.jsonl, faults.log, summary.txt, nodes/)\n", cfg.Out)
	if r.Interrupted {
		fmt.Fprintln(w, "\nINTERRUPTED: the run did not finish; no final checks ran.")
	}

	fmt.Fprintf(w, "\nFaults injected: %d (times from the start of the run)\n", len(r.Faults))
	if len(r.Faults) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tFAULT\tON\tHEALED\tNO ACK FOR\tRECOVERY\tWHAT")
		for _, ev := range r.Faults {
			rec := ev.Recovery.Round(time.Millisecond).String()
			if !ev.Recovered {
				rec = "none in " + rec
			}
			what := ev.Description
			if ev.Err != "" {
				what += " [ERROR " + ev.Err + "]"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%.1fs\t%.1fs\t%s\t%s\t%s\n", ev.Step, ev.Fault, ev.Start.Seconds(), ev.Heal.Seconds(),
				ev.Outage.Round(time.Millisecond), rec, what)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "  NO ACK FOR: longest stretch without an acknowledged op while the fault was on.")
		fmt.Fprintln(w, "  RECOVERY: from the heal to the first acknowledged op after it.")
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "\nFaults skipped: %d (not injected, not passed)\n", len(r.Skipped))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range r.Skipped {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Reason)
		}
		_ = tw.Flush()
	}

	o := r.Ops
	fmt.Fprintf(w, "\nOperations: %d attempted, %d acknowledged (ok), %d failed (fail), %d unknown (info)\n",
		o.Attempted(), o.OK, o.Fail, o.Info)
	var slowest *FaultEvent
	for i := range r.Faults {
		ev := &r.Faults[i]
		if slowest == nil || (!ev.Recovered && slowest.Recovered) ||
			(ev.Recovered == slowest.Recovered && ev.Recovery > slowest.Recovery) {
			slowest = ev
		}
	}
	if slowest != nil {
		if slowest.Recovered {
			fmt.Fprintf(w, "Slowest recovery after a heal: %v (fault %d, %s): heal to first acknowledged op\n",
				slowest.Recovery.Round(time.Millisecond), slowest.Step, slowest.Fault)
		} else {
			fmt.Fprintf(w, "Slowest recovery after a heal: no acknowledged op in the %v after fault %d (%s) healed\n",
				slowest.Recovery.Round(time.Millisecond), slowest.Step, slowest.Fault)
		}
	}
	if r.LongestGap > 0 {
		fmt.Fprintf(w, "Longest stretch without an acknowledged op: %v, from %.1fs\n", r.LongestGap.Round(time.Millisecond), r.LongestGapAt.Seconds())
	}

	fmt.Fprintf(w, "\nChecks: %d passed, %d failed\n", len(r.Checks)-r.FailedChecks(), r.FailedChecks())
	for _, c := range r.Checks {
		verdict := "PASS"
		if !c.OK {
			verdict = "FAIL"
		}
		lines := strings.Split(strings.TrimRight(c.Report, "\n"), "\n")
		fmt.Fprintf(w, "  %s  %s: %s\n", verdict, c.Name, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "        %s\n", strings.TrimLeft(l, " "))
		}
	}
	result := "PASS"
	if !r.Passed() {
		result = "FAIL"
	}
	fmt.Fprintf(w, "\nResult: %s\n", result)
}
