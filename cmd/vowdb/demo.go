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
	"sort"
	"strings"
	"sync"
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
	accounts int
	workers  int
	verbose  bool
}

func newDemoCmd() *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local multi-node cluster in this process and watch a bank survive a node failure",
		Long: `demo starts a local cluster inside this one process (real gRPC on 127.0.0.1,
one Pebble store per node) and runs a bank on it:

  - --accounts accounts (acct/000 ...) with the same opening balance, split
    into three ranges whose leaders are spread over the nodes;
  - --workers clients moving money between random accounts on different
    ranges, each transfer one transaction (db.Transact): read both
    balances, skip if the payer has too little, write both, and write a
    ledger entry ledger/<txn id> = "from,to,amount" in the same transaction;
  - one client reading every account in one transaction and checking that
    the total is exact.

Midway it kills the node leading one of the account ranges, keeps the bank
running for --down-time, restarts the node and stops the workload. Then it
audits: the total is conserved, no balance is negative, every transfer that
was acknowledged has its ledger entry, no transfer reported as failed has
one, and replaying the ledger from the opening balances gives exactly the
final balances (so no commit was lost or applied twice). Transfers whose
outcome the client could not learn (ambiguous) may or may not be there; the
audit asks the cluster what became of them (TxnStatus) and counts them.

Each transfer is one db.Transact call with a single attempt, so every abort
is counted with its reason (deadlock, lock-wait timeout, participant lost
state, ...); the worker then goes on with a new random transfer.

It prints PASS or FAIL and exits non-zero on FAIL. Afterwards the cluster
keeps serving until Ctrl-C (or for --duration), so you can point other
vowdb commands at the printed endpoints.`,
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
	f.IntVar(&o.accounts, "accounts", 30, "number of bank accounts (acct/000 ...), 3 to 1000")
	f.IntVar(&o.workers, "workers", 8, "concurrent clients making transfers (one more reads every account)")
	f.BoolVar(&o.verbose, "verbose", false, "print the nodes' logs to stderr")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, o demoOptions) (err error) {
	if o.nodes < 3 {
		return fmt.Errorf("demo: --nodes must be at least 3 (got %d)", o.nodes)
	}
	if o.accounts < 3 || o.accounts > 1000 {
		return fmt.Errorf("demo: --accounts must be between 3 and 1000 (got %d)", o.accounts)
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

	// 2. Ranges: three for the accounts, their leaders on different nodes.
	splits := demoAccountSplits(o.accounts)
	p.step("Splitting the accounts into 3 ranges at %q and %q and spreading their leaders over the nodes", splits[0], splits[1])
	for _, k := range splits {
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
	firstKeys := append([]string{demoAcct(0)}, splits...)
	spread, err := spreadDemoLeaders(ctx, c, db, firstKeys)
	if err != nil {
		return err
	}
	ranges, err := demoRanges(ctx, db)
	if err != nil {
		return err
	}
	p.ranges(ranges)
	if !spread {
		p.line("(the account ranges' leaders are not on 3 different nodes this time; the demo goes on)")
	}

	// 3. Accounts.
	bank := newDemoBank(db, o.accounts, o.workers, splits)
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	receipt, err := bank.open(octx)
	cancel()
	if err != nil {
		return fmt.Errorf("demo: open the accounts: %w", err)
	}
	p.step("Opened %d accounts (%s ... %s) with %d each, total %d, in one transaction (%s across %d ranges)",
		o.accounts, demoAcct(0), demoAcct(o.accounts-1), demoBalance, o.accounts*demoBalance, receipt.Path, len(receipt.Ranges))

	// 4. Workload.
	p.step("Running the bank: %d clients transferring 1-%d between accounts on different ranges, 1 client reading every account in one transaction",
		o.workers, demoMaxAmount)
	bank.start(ctx)
	defer bank.stop()
	if !demoSleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	p.line("in 2s: %s", bank.snapshot().String())

	// 5. Kill the leader of the middle account range.
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	victimRange := demoRangeFor(ranges, splits[0])
	if victimRange == nil || victimRange.Leader == 0 {
		return fmt.Errorf("demo: no leader known for the range of %q", splits[0])
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
	p.line("the bank keeps running; each line counts the transactions of one second")
	before := bank.snapshot()
	prev := before
	killedAt := time.Now()
	c.Kill(victim)
	for t := 1; time.Since(killedAt) < o.down; t++ {
		if !demoSleep(ctx, time.Until(killedAt.Add(time.Duration(t)*time.Second))) {
			return ctx.Err()
		}
		cur := bank.snapshot()
		p.line("+%ds  %s", t, cur.sub(prev).String())
		prev = cur
	}
	down := bank.snapshot().sub(before)
	downFor := time.Since(killedAt)
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	if r := demoRangeFor(ranges, splits[0]); r != nil {
		p.line("range %d now has leader: node %d", r.ID, r.Leader)
	}
	p.line("while node %d was down (%.1fs): %s", victimID, downFor.Seconds(), down.String())

	// 6. Restart and catch up.
	p.step("Restarting node %d and waiting for it to catch up", victimID)
	if err := c.Restart(victim); err != nil {
		return fmt.Errorf("demo: restart node %d: %w", victimID, err)
	}
	restartedAt := time.Now()
	if !demoSleep(ctx, 2*time.Second) {
		return ctx.Err()
	}
	bank.stop()
	p.line("workload stopped: %s in total", bank.snapshot().String())
	if err := waitDemoCaughtUp(ctx, c, db, victimID, c.Nodes[victim].Addr()); err != nil {
		return err
	}
	p.line("node %d is back and up to date on every range it holds (%.1fs after restart)", victimID, time.Since(restartedAt).Seconds())
	ranges, err = demoRanges(ctx, db)
	if err != nil {
		return err
	}
	p.ranges(ranges)

	// 7. Audit.
	p.step("Auditing: resolving ambiguous transfers, then reading every account and the whole ledger in one transaction")
	res := bank.audit(ctx)
	cn := res.counts
	p.line("transfers: %d committed%s, %d aborted, %d ambiguous, %d failed without effect, %d skipped (insufficient funds)",
		cn.committed, demoPaths(res.paths), cn.abortTotal(), cn.ambiguous, cn.failed, cn.skipped)
	p.line("aborts by reason: %s", cn.abortsString())
	p.line("transfer latency (committed): p50 %s  p99 %s", benchMS(res.p50), benchMS(res.p99))
	p.line("full-table reads: %d exact, %d failed, %d wrong", cn.readsOK, cn.readsFailed, cn.readsBad)
	p.line("ledger: %d entries; final total %d (opening total %d)", res.ledger, res.total, res.want)
	for _, msg := range res.problems {
		p.line("PROBLEM: %s", msg)
	}
	fmt.Fprintln(out)
	if res.ok() {
		fmt.Fprintf(out, "PASS: all %d acknowledged transfers are in the ledger; replaying its %d entries from the opening balances gives every final balance; total %d conserved, no negative balance; all %d full-table reads exact\n",
			res.acked, res.ledger, res.total, cn.readsOK)
	} else {
		fmt.Fprintf(out, "FAIL: %d of %d acknowledged transfers missing from the ledger; %d ledger entries not allowed; %d balances differ from the replay; total %d (opening %d); %d negative balances; %d full-table reads wrong\n",
			res.acked-res.ackedSeen, res.acked, res.badLedger, res.badReplay, res.total, res.want, res.negative, cn.readsBad)
	}
	fmt.Fprintf(out, "      %d ambiguous transfers (outcome unknown to the client): TxnStatus says %d committed, %d aborted, %d unknown; %d in the ledger, %d not; either outcome is allowed\n",
		res.ambiguous, res.ambCommitted, res.ambAborted, res.ambUnknown, res.ambApplied, res.ambNotApplied)
	matched := "every full-table read was exact"
	if down.readsBad > 0 {
		matched = fmt.Sprintf("%d full-table reads saw a wrong total", down.readsBad)
	}
	fmt.Fprintf(out, "      while node %d was down: %d transfers committed and %d full-table reads succeeded (%s); %d transfers aborted, %d failed without effect, %d ambiguous\n",
		victimID, down.committed, down.readsOK, matched, down.abortTotal(), down.failed, down.ambiguous)
	if !res.ok() {
		return errors.New("demo: audit failed")
	}

	// 8. Serve.
	if o.duration == 0 {
		return nil
	}
	_ = db.Close() // an idle client is not needed while serving
	eps := joinComma(c.Endpoints())
	p.step("The cluster keeps serving")
	p.line("endpoints: %s", eps)
	p.line("try:  vowdb kv scan --endpoints %s %s %s", eps, demoAcctPrefix, demoAcctEnd)
	p.line("      vowdb range ls --endpoints %s", eps)
	p.line("      vowdb bench bank --endpoints %s --duration 5s", eps)
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

// demoPaths prints the commit paths of the committed transfers, as
// " (2PC 123)".
func demoPaths(paths map[string]int64) string {
	if len(paths) == 0 {
		return ""
	}
	names := make([]string, 0, len(paths))
	for k := range paths {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %d", k, paths[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// spreadDemoLeaders tries to put the leaders of the ranges holding keys on
// different nodes. Splits leave every new range led by its parent's leader,
// and a node can only hand all its leaderships away at once (Drain), so this
// shuffles: every node leading one of these ranges hands its leaderships to
// a peer at the same moment, each to the most up-to-date one (a random one
// when they are equally up to date, as in an idle cluster). A range given
// away by one node may land on another that is giving its own away, so after
// a few rounds the leaders are usually spread. It reports whether they are.
func spreadDemoLeaders(ctx context.Context, c *testcluster.Cluster, db *vowdb.DB, keys []string) (bool, error) {
	want := min(len(keys), len(c.Endpoints()))
	deadline := time.Now().Add(15 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		ranges, err := demoRanges(ctx, db)
		if err != nil {
			return false, err
		}
		leaders := map[uint64]bool{}
		known := true
		for _, k := range keys {
			r := demoRangeFor(ranges, k)
			if r == nil || r.Leader == 0 {
				known = false
				break
			}
			leaders[r.Leader] = true
		}
		if !known {
			if !demoSleep(ctx, 100*time.Millisecond) {
				return false, ctx.Err()
			}
			continue
		}
		if len(leaders) >= want {
			return true, nil
		}
		if round >= 20 {
			break
		}
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			if n == nil || !leaders[n.NodeID()] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A deadline shorter than Drain's retry period: one hand-off
				// of every leadership, then return.
				dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				n.Drain(dctx)
				cancel()
			}()
		}
		wg.Wait()
		if !demoSleep(ctx, 300*time.Millisecond) {
			return false, ctx.Err()
		}
	}
	return false, nil
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
