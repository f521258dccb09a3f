package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/testcluster"
)

// demoOptions are the flags of `vowdb demo`.
type demoOptions struct {
	nodes    int
	dir      string
	duration time.Duration // how long to keep serving after the audit; <0: until Ctrl-C
	down     time.Duration // how long the workload runs while a node is down
	keys     int
	workers  int
	verbose  bool
}

func newDemoCmd() *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local multi-node cluster in this process and watch it survive a node failure",
		Long: `demo starts a local cluster inside this one process (real gRPC on 127.0.0.1,
one Pebble store per node), splits the keyspace into ranges, runs a small
read/write workload, kills the node leading one range, shows that reads and
writes continue, restarts the node, and checks that every acknowledged write
is still there with its last acknowledged value.

Afterwards the cluster keeps serving until Ctrl-C (or for --duration), so you
can point other vowdb commands at the printed endpoints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("duration") {
				o.duration = -1
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.nodes, "nodes", 3, "number of nodes (at least 3, so a majority survives one failure)")
	f.StringVar(&o.dir, "dir", "", "directory for the nodes' data, kept at exit (default: a temporary directory, removed at exit)")
	f.DurationVar(&o.duration, "duration", 0, "keep serving this long after the audit, then exit (0: exit right after the audit; default: until Ctrl-C)")
	f.DurationVar(&o.down, "down-time", 5*time.Second, "how long the workload runs while the killed node is down")
	f.IntVar(&o.keys, "keys", 900, "number of keys the workload writes (user/000 ...)")
	f.IntVar(&o.workers, "workers", 8, "concurrent workload clients")
	f.BoolVar(&o.verbose, "verbose", false, "print the nodes' logs to stderr")
	return cmd
}

// demoSplitKeys split the demo keyspace into user ranges.
var demoSplitKeys = []string{"user/3", "user/6"}

func runDemo(ctx context.Context, out io.Writer, o demoOptions) (err error) {
	if o.nodes < 3 {
		return fmt.Errorf("demo: --nodes must be at least 3 (got %d)", o.nodes)
	}
	if o.keys < 1 || o.keys > 1000 {
		return fmt.Errorf("demo: --keys must be between 1 and 1000 (got %d)", o.keys)
	}
	if o.workers < 1 {
		return fmt.Errorf("demo: --workers must be at least 1")
	}
	p := &demoPrinter{w: out}

	dir := o.dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "vowdb-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for i := 1; i <= o.nodes; i++ {
			if _, err := os.Stat(demoNodeDir(dir, i)); err == nil {
				return fmt.Errorf("demo: %s already holds node data (from an earlier demo?); give an empty or new --dir", demoNodeDir(dir, i))
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	// 1. Cluster.
	p.step("Starting a %d-node cluster in this process", o.nodes)
	p.line("data directory: %s%s", dir, map[bool]string{true: " (removed at exit)", false: " (kept)"}[o.dir == ""])
	c, err := startDemoCluster(ctx, p, testcluster.Options{Nodes: o.nodes, Dir: dir, HTTP: true, Logger: logger})
	if err != nil {
		return err
	}
	defer c.Stop()
	for _, n := range c.Nodes {
		p.line("node %d  gRPC %s   http://%s/metrics   http://%s/readyz", n.NodeID(), n.Addr(), n.HTTPAddr(), n.HTTPAddr())
	}
	db, err := c.Client(ctx)
	if err != nil {
		return fmt.Errorf("demo: connect: %w", err)
	}
	defer db.Close()

	// 2. Ranges.
	p.step("Splitting the keyspace at %q and %q", demoSplitKeys[0], demoSplitKeys[1])
	for _, k := range demoSplitKeys {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, _, err := db.Split(sctx, []byte(k))
		cancel()
		if err != nil {
			return fmt.Errorf("demo: split at %q: %w", k, err)
		}
	}
	if err := waitDemoReplicated(ctx, c); err != nil {
		return err
	}
	ranges, err := demoRanges(ctx, db)
	if err != nil {
		return err
	}
	p.ranges(ranges)

	// 3. Workload.
	wl := newDemoWorkload(db, o.keys, o.workers)
	p.step("Running a workload: %d clients writing and reading %d keys (user/000 ... user/%03d) across the ranges", o.workers, o.keys, o.keys-1)
	wl.start(ctx)
	defer wl.stop()
	if !demoSleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	before := wl.snapshot()
	p.line("in 2s: %s", before.String())

	// 4. Kill the leader of the middle range.
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	victimRange := demoRangeFor(ranges, "user/4")
	if victimRange == nil || victimRange.Leader == 0 {
		return fmt.Errorf("demo: no leader known for the range of %q", "user/4")
	}
	victim := -1
	for i, n := range c.Nodes {
		if n != nil && n.NodeID() == victimRange.Leader {
			victim = i
		}
	}
	if victim < 0 {
		return fmt.Errorf("demo: leader node %d of range %d not found", victimRange.Leader, victimRange.ID)
	}
	victimID := victimRange.Leader
	led := 0
	for _, r := range ranges {
		if r.Leader == victimID {
			led++
		}
	}
	p.step("Killing node %d, the leader of range %d %s (it leads %d of %d ranges)", victimID, victimRange.ID, demoSpan(*victimRange), led, len(ranges))
	p.line("the workload keeps running; each line counts the operations of one second")
	before = wl.snapshot()
	prev := before
	killedAt := time.Now()
	wl.phase.Store(demoPhaseDown)
	c.Kill(victim)
	for t := 1; time.Since(killedAt) < o.down; t++ {
		if !demoSleep(ctx, time.Until(killedAt.Add(time.Duration(t)*time.Second))) {
			return ctx.Err()
		}
		cur := wl.snapshot()
		p.line("+%ds  %s", t, cur.sub(prev).String())
		prev = cur
	}
	down := wl.snapshot().sub(before)
	downFor := time.Since(killedAt)
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	if r := demoRangeFor(ranges, "user/4"); r != nil {
		p.line("range %d now has leader: node %d", r.ID, r.Leader)
	}
	p.line("while node %d was down (%.1fs): %s", victimID, downFor.Seconds(), down.String())

	// 5. Restart and catch up.
	p.step("Restarting node %d and waiting for it to catch up", victimID)
	if err := c.Restart(victim); err != nil {
		return fmt.Errorf("demo: restart node %d: %w", victimID, err)
	}
	restartedAt := time.Now()
	wl.phase.Store(demoPhaseAfter)
	if !demoSleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	wl.stop()
	p.line("workload stopped: %s in total", wl.snapshot().String())
	if err := waitDemoCaughtUp(ctx, c, db, victimID, c.Nodes[victim].Addr()); err != nil {
		return err
	}
	p.line("node %d is back and up to date on every range it holds (%.1fs after restart)", victimID, time.Since(restartedAt).Seconds())
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	p.ranges(ranges)

	// 6. Audit.
	p.step("Auditing: reading back every key")
	res := wl.audit(ctx)
	for _, msg := range res.problems {
		p.line("PROBLEM: %s", msg)
	}
	fmt.Fprintln(out)
	if res.ok() {
		fmt.Fprintf(out, "PASS: all %d acknowledged writes (on %d keys) read back with their last acknowledged value\n", res.acked, res.keysWithAck)
	} else {
		fmt.Fprintf(out, "FAIL: %d of %d keys do not hold an allowed value; %d reads during the run returned an impossible value\n", res.badKeys, o.keys, res.badReads)
	}
	fmt.Fprintf(out, "      %d ambiguous writes (outcome unknown to the client): %d applied, %d not applied, %d overwritten later; either outcome is allowed\n",
		res.ambiguous, res.ambApplied, res.ambNotApplied, res.ambOverwritten)
	matched := "every read matched the acknowledged writes"
	if down.readsBad > 0 {
		matched = fmt.Sprintf("%d reads returned a wrong value", down.readsBad)
	}
	fmt.Fprintf(out, "      while node %d was down: %d writes and %d reads succeeded (%s); %d writes and %d reads failed without effect\n",
		victimID, down.writesOK, down.readsOK, matched, down.writesFailed, down.readsFailed)
	if !res.ok() {
		return errors.New("demo: audit failed")
	}

	// 7. Serve.
	if o.duration == 0 {
		return nil
	}
	_ = db.Close() // an idle client is not needed while serving
	eps := joinComma(c.Endpoints())
	p.step("The cluster keeps serving")
	p.line("endpoints: %s", eps)
	p.line("try:  vowdb kv get --endpoints %s user/042", eps)
	p.line("      vowdb range ls --endpoints %s", eps)
	p.line("      vowdb bench kv --endpoints %s --duration 5s", eps)
	if o.duration > 0 {
		p.line("stopping in %s (or press Ctrl-C)", o.duration)
		demoSleep(ctx, o.duration)
	} else {
		p.line("press Ctrl-C to stop")
		<-ctx.Done()
	}
	fmt.Fprintln(out, "stopping the cluster")
	return nil
}

func demoNodeDir(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("n%d", i)) }

// startDemoCluster starts the cluster, trying again from empty node
// directories if the first attempt fails: a cluster that was initialized a
// moment ago can briefly refuse a new client while its first range elects a
// leader.
func startDemoCluster(ctx context.Context, p *demoPrinter, opts testcluster.Options) (*testcluster.Cluster, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var c *testcluster.Cluster
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		c, err = testcluster.Start(sctx, opts)
		cancel()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p.line("starting the cluster failed (%v); trying again", err)
		for i := 1; i <= opts.Nodes; i++ {
			_ = os.RemoveAll(demoNodeDir(opts.Dir, i))
		}
	}
	return nil, fmt.Errorf("demo: start cluster: %w", err)
}

func joinComma(s []string) string {
	out := ""
	for i, e := range s {
		if i > 0 {
			out += ","
		}
		out += e
	}
	return out
}

// demoSleep sleeps d unless ctx ends first; it reports whether it slept.
func demoSleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func demoRanges(ctx context.Context, db *vowdb.DB) ([]vowdb.RangeInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rs, err := db.Ranges(rctx)
	if err != nil {
		return nil, fmt.Errorf("demo: list ranges: %w", err)
	}
	return rs, nil
}

func demoRangeFor(ranges []vowdb.RangeInfo, key string) *vowdb.RangeInfo {
	for i, r := range ranges {
		if r.Meta {
			continue
		}
		if string(r.StartKey) <= key && (len(r.EndKey) == 0 || key < string(r.EndKey)) {
			return &ranges[i]
		}
	}
	return nil
}

func demoSpan(r vowdb.RangeInfo) string {
	if r.Meta {
		return "<meta>"
	}
	return "[" + demoBound(r.StartKey, "<min>") + ", " + demoBound(r.EndKey, "<max>") + ")"
}

// demoBound prints a range bound as range ls does: the key's text, or open
// for an empty bound.
func demoBound(b []byte, open string) string {
	if len(b) == 0 {
		return open
	}
	return string(b)
}

// waitDemoReplicated waits until every range has its full set of voters.
func waitDemoReplicated(ctx context.Context, c *testcluster.Cluster) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.WaitReplicated(wctx); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// waitDemoCaughtUp waits until every range is fully replicated with a leader
// and node id (at addr) has applied everything its leaders have applied.
func waitDemoCaughtUp(ctx context.Context, c *testcluster.Cluster, db *vowdb.DB, id uint64, addr string) error {
	if err := waitDemoReplicated(ctx, c); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		lagging, err := demoLagging(wctx, db, id, addr)
		if err == nil && len(lagging) == 0 {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "lagging: " + fmt.Sprint(lagging)
		}
		if !demoSleep(wctx, 100*time.Millisecond) {
			return fmt.Errorf("demo: node %d did not catch up: %s", id, last)
		}
	}
}

// demoLagging lists the ranges on which node id has applied less than the
// range's leader.
func demoLagging(ctx context.Context, db *vowdb.DB, id uint64, addr string) ([]uint64, error) {
	ranges, err := db.Ranges(ctx)
	if err != nil {
		return nil, err
	}
	local, err := demoLocalApplied(ctx, addr)
	if err != nil {
		return nil, err
	}
	var lagging []uint64
	for _, r := range ranges {
		has := false
		for _, v := range r.Voters {
			has = has || v == id
		}
		if !has {
			continue
		}
		if r.Leader == 0 || r.Applied == 0 || local[r.ID] < r.Applied {
			lagging = append(lagging, r.ID)
		}
	}
	return lagging, nil
}
