package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb/internal/torture"
)

const tortureLong = `Torture runs a Jepsen-style test: it starts a cluster of real "vowdb start"
processes (this binary), drives a workload against it through the Go client
while it injects faults on a seeded schedule, then heals everything and
checks the recorded history.

Each node runs in a network namespace of its own, on a private bridge, so
the network between nodes can be cut and degraded; that needs root
(CAP_NET_ADMIN). With --loopback every node runs on 127.0.0.1 instead, no
root needed, and the partition, partition-leader and netem faults are
skipped.

Faults (--faults, comma-separated), one at a time: on, held for about
--hold, healed, then about --recovery of quiet before the next (or, with
--every, one starting every --every):

  kill              SIGKILL a random node; restart it at heal
  pause             SIGSTOP a random node (at least 2.5s, over twice the 1s
                    election timeout); SIGCONT at heal
  partition         iptables rules in the namespaces: isolate one node,
                    split n/2 from the rest, a bridge (two halves sharing
                    one node) or a majorities ring (each node sees a
                    different majority)
  netem             delay with jitter, loss, duplication and reordering on
                    one node's link (tc netem)
  lose-unsynced     SIGKILL one or more nodes (sometimes all), which lose
                    every byte they had not fsynced; restart them at heal.
                    The nodes run with "vowdb start --unsafe-lose-unsynced",
                    and then every kill loses unsynced data.
  kill-leader       SIGKILL a node that leads ranges right now: the one
                    leading the most ranges, or the leader of a range drawn
                    at random (even odds); restart it at heal
  pause-leader      SIGSTOP such a node (at least 2.5s); SIGCONT at heal
  partition-leader  isolate the leader of a coordinator range: the meta
                    range (range 1: range index, liveness, deadlock
                    detector) or a data range holding transaction records
                    (even odds)
  power-loss        SIGKILL every node at the same moment, each losing every
                    byte it had not fsynced (--unsafe-lose-unsynced, as for
                    lose-unsynced); restart them all together at heal

The leader faults find the leaders with "vowdb range ls" and "vowdb node
ls" right before they start; faults.log names the ranges the victim led.
With --lose-unsynced every node runs with --unsafe-lose-unsynced whatever
the faults, so that every kill (kill, kill-leader) loses unsynced bytes.

A fault this machine cannot inject (no root, no netem in the kernel, a
binary without --unsafe-lose-unsynced) is reported as skipped, never as
passed. The same --seed gives the same schedule and the same choices of
nodes and partitions.

Workloads (--workload), each at about --rate operations per second from
--clients clients:
  register  get, put and compare-and-swap on a few keys, each written value
            unique: simple invariants, then linearizability per key
            (porcupine; ambiguous operations may or may not have happened)
  bank      transfers between accounts on three ranges, each writing a
            ledger entry in the same transaction, plus full-table reads:
            every read's total exact, no negative balance, every
            acknowledged transfer in the ledger exactly once, final balances
            equal to the ledger replayed
  append    transactions of appends and reads on list-valued keys over
            three ranges, checked for G0, G1a, G1b, G1c, G-single and G2
            cycles (and their realtime variants) by an Elle-style checker
  set       unique inserts, each into two ranges in one transaction: none
            lost, none unexpected, none half-inserted

After --duration the tool heals every fault, restarts every stopped node,
waits until the cluster is ready, reads back every key, audits the cluster
(every node answers /readyz, every range has a leader) and checks the
history. It prints a summary: the faults with their times, the operations
by outcome, the slowest recovery after a heal, and the checks.

Output directory (--out, default a new temporary directory):
  history.jsonl  one operation per line: process, type (ok, fail, info),
                 invoke and complete (ns since the start), f, key, value...
  faults.log     every fault and process event, on the same clock
  summary.txt    the summary
  nodes/         each node's data directory and log

Exit status: 0 if every check passed, 1 if one failed or the test could not
run, 130 if interrupted (every process is stopped and the network removed
first).`

// tortureFlags are the flags of vowdb torture.
type tortureFlags struct {
	workload string
	faults   []string
	nodes    int
	duration time.Duration
	seed     uint64
	out      string
	loopback bool
	hold     time.Duration
	recovery time.Duration
	every    time.Duration
	unsynced bool
	clients  int
	rate     float64
}

func newTortureCmd() *cobra.Command {
	f := &tortureFlags{}
	cmd := &cobra.Command{
		Use:   "torture",
		Short: "Run a fault-injection test against a local cluster",
		Long:  tortureLong,
		Example: `  sudo vowdb torture --faults kill,pause,partition,netem,lose-unsynced --nodes 5 --duration 10m
  vowdb torture --loopback --faults kill,pause --nodes 3 --duration 1m --seed 7 --out /tmp/t7
  sudo vowdb torture --workload set --faults power-loss --every 60s --hold 5s --nodes 5 --duration 10m`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runTorture(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.workload, "workload", "register", "workload: "+strings.Join(torture.WorkloadNames, ", "))
	fs.StringSliceVar(&f.faults, "faults", torture.FaultNames, "faults to inject, comma-separated: "+strings.Join(torture.FaultNames, ", "))
	fs.IntVar(&f.nodes, "nodes", 5, "cluster size")
	fs.DurationVar(&f.duration, "duration", 10*time.Minute, "how long the workload runs under faults")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the schedule and the clients (0: a random one, printed)")
	fs.StringVar(&f.out, "out", "", "output directory (default: a new temporary directory)")
	fs.BoolVar(&f.loopback, "loopback", false, "run every node on 127.0.0.1: no root needed; partition, partition-leader and netem are skipped")
	fs.DurationVar(&f.hold, "hold", 6*time.Second, "mean time a fault is held (each drawn from [hold/2, 3*hold/2])")
	fs.DurationVar(&f.recovery, "recovery", 8*time.Second, "mean quiet time after each heal (drawn like --hold)")
	fs.DurationVar(&f.every, "every", 0, "fixed cadence: a fault starts at every, 2*every, ..., held about --hold (cut to leave 1s of quiet); --recovery is then unused (0: drawn recovery windows)")
	fs.BoolVar(&f.unsynced, "lose-unsynced", false, "start every node with --unsafe-lose-unsynced, so that every kill loses the node's unsynced bytes")
	fs.IntVar(&f.clients, "clients", 10, "concurrent clients")
	fs.Float64Var(&f.rate, "rate", 200, "offered load, operations per second over all clients (negative: unthrottled)")
	return cmd
}

func runTorture(cmd *cobra.Command, f *tortureFlags) error {
	faults := cleanList(f.faults)
	for _, name := range faults {
		if !slices.Contains(torture.FaultNames, name) {
			return usageErrorf("--faults: unknown fault %q (want %s)", name, strings.Join(torture.FaultNames, ", "))
		}
	}
	switch {
	case f.nodes < 1:
		return usageErrorf("--nodes must be at least 1, not %d", f.nodes)
	case f.duration <= 0:
		return usageErrorf("--duration must be positive")
	case f.hold <= 0 || f.recovery <= 0:
		return usageErrorf("--hold and --recovery must be positive")
	case f.every < 0 || (f.every > 0 && f.every <= torture.MinQuiet):
		return usageErrorf("--every must be 0 (drawn recovery windows) or longer than %v, not %v", torture.MinQuiet, f.every)
	case f.clients < 1:
		return usageErrorf("--clients must be at least 1")
	case f.rate == 0:
		return usageErrorf("--rate must not be 0")
	}
	if !f.loopback && os.Geteuid() != 0 {
		return torture.ErrNeedRoot
	}
	seed := f.seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	w, err := torture.NewWorkload(f.workload, torture.WorkloadOptions{Seed: seed, Clients: f.clients, Rate: f.rate})
	if err != nil {
		return &usageError{err}
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("torture: find this binary: %w", err)
	}
	out := f.out
	if out == "" {
		if out, err = os.MkdirTemp("", "vowdb-torture-"); err != nil {
			return err
		}
	}
	stderr := cmd.ErrOrStderr()
	fmt.Fprintf(stderr, "vowdb torture: seed %d, output in %s\n", seed, out)
	rep, err := torture.Run(cmd.Context(), torture.Config{
		Binary: bin, Out: out, Nodes: f.nodes, Loopback: f.loopback,
		Workload: w, WorkloadName: f.workload, Faults: faults,
		Duration: f.duration, Hold: f.hold, Recovery: f.recovery, Every: f.every,
		LoseUnsynced: f.unsynced, Seed: seed,
		Progress: stderr,
	})
	if rep != nil {
		fmt.Fprintln(cmd.OutOrStdout())
		rep.WriteSummary(cmd.OutOrStdout())
	}
	if err != nil {
		return err
	}
	if !rep.Passed() {
		return fmt.Errorf("torture: %d of %d checks failed (rerun with --seed %d; details in %s)", rep.FailedChecks(), len(rep.Checks), seed, out)
	}
	return nil
}
