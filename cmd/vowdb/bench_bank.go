package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

// benchBankOptions are the flags of `vowdb bench bank`.
type benchBankOptions struct {
	endpoints   []string
	embedded    bool
	accounts    int
	balance     int64
	concurrency int
	clients     int
	duration    time.Duration
	timeout     time.Duration
	pids        []int
	quiet       bool
	cpuProfile  string
	replicas    int
}

const benchBankLong = `bench bank runs a closed-loop bank-transfer workload against a cluster: each
of --concurrency workers runs one transfer transaction, waits for its
outcome, and starts the next, for --duration.

Setup: the accounts bank/00000000 ... (--accounts of them, --balance each) are
split into three ranges at the first account of the second and the last
third (existing range boundaries are kept) and loaded, overwriting any
earlier balances. The run starts once each of the three ranges has
--replicas voters and no learners (a new range is replicated in the
background), so what is measured is the replicated commit; it fails if that
takes more than a minute. --replicas defaults to 3, or the number of live
nodes if fewer; --replicas 0 skips the wait.

A transfer picks two of the three ranges, an account in each, and an amount
of 1-100, and runs one db.Transact call with a single attempt: it reads both
balances (the two Gets in parallel), writes both new balances (the two Puts
in parallel) and commits, which takes two-phase commit across the two
ranges. An aborted transfer is counted with its reason and not retried: the
worker goes on with a new random transfer, as PostgreSQL's 2PC peer
benchmark (shared/peers/pg2pc) does.

It prints one line per second (txn/s, p50 and p99 of that second, aborts,
errors) and a summary: committed transfers per second; p50/p95/p99/max of a
committed transfer (Begin to committed); the commit phase alone (Commit
call to its answer) overall and by coordinating node; the abort rate by
reason; the commit paths; and the average durable (replicated) writes and
round trips on the commit path, from the commit receipts. Last, it reads
every account in one transaction and checks that the total is unchanged;
the command fails if it is not. With -w json the summary is one JSON
document on stdout (per-second lines go to stderr).

CPU: as bench kv: this process's CPU, and with --pids the CPU of those
processes, per committed transfer. --embedded starts a 3-node cluster inside
this process instead of using --endpoints.`

func newBenchBankCmd() *cobra.Command {
	o := benchBankOptions{}
	cmd := &cobra.Command{
		Use:   "bank",
		Short: "Run cross-range bank transfers and report txn/s, latency, aborts and commit cost",
		Long:  benchBankLong,
		Example: `  vowdb bench bank --endpoints 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 --concurrency 16 --duration 10s
  vowdb bench bank --embedded --accounts 3000 --duration 5s
  vowdb bench bank --endpoints 127.0.0.1:7401 --pids $(pgrep -d, -f 'vowdb start') -w json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.embedded && cmd.Flags().Changed("endpoints") {
				return benchBankUsage("--embedded starts its own cluster; do not combine it with --endpoints")
			}
			format := "table"
			if f := cmd.Flag("write-out"); f != nil {
				format = f.Value.String()
			}
			return runBenchBank(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, format == "json")
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.endpoints, "endpoints", []string{"127.0.0.1:7401"}, "gRPC addresses of some cluster nodes, comma-separated")
	f.BoolVar(&o.embedded, "embedded", false, "start a 3-node cluster in this process (temporary directory) and measure it")
	f.IntVar(&o.accounts, "accounts", 30000, "number of accounts, spread over 3 ranges (at least 3)")
	f.Int64Var(&o.balance, "balance", 1000000, "opening balance of every account")
	f.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers, each with one transfer in flight")
	f.IntVar(&o.clients, "clients", 8, "client handles (each with its own connections) shared by the workers")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	f.DurationVar(&o.timeout, "op-timeout", 10*time.Second, "bound on one transfer (it is also the transaction's timeout)")
	f.IntSliceVar(&o.pids, "pids", nil, "PIDs of server processes whose CPU time to measure, comma-separated")
	f.BoolVar(&o.quiet, "quiet", false, "do not print the per-second lines")
	f.IntVar(&o.replicas, "replicas", -1, "wait until every bench range has this many voters (and no learners) before measuring; -1: 3, or the number of live nodes if fewer; 0 does not wait")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the clients) during the measured run to this file (go tool pprof)")
	return cmd
}

func benchBankUsage(format string, args ...any) error {
	return fmt.Errorf("bench bank: "+format, args...)
}

// The bank's keys: bank/%08d, a prefix of their own so the bank can share a
// cluster with the demo's or other data.
const (
	benchBankPrefix = "bank/"
	benchBankEnd    = "bank0"
)

func benchBankKey(i int) []byte { return fmt.Appendf(nil, "%s%08d", benchBankPrefix, i) }

// benchBankRanges returns the first account of each of the three ranges.
func benchBankRanges(n int) [3]int { return [3]int{0, n / 3, 2 * n / 3} }

// errBankInsufficient ends a transfer whose payer has too little money.
var errBankInsufficient = errors.New("insufficient funds")

func runBenchBank(ctx context.Context, stdout, stderr io.Writer, o benchBankOptions, asJSON bool) error {
	switch {
	case o.accounts < 3:
		return benchBankUsage("--accounts must be at least 3")
	case o.balance < 100:
		return benchBankUsage("--balance must be at least 100")
	case o.concurrency < 1:
		return benchBankUsage("--concurrency must be at least 1")
	case o.clients < 1:
		return benchBankUsage("--clients must be at least 1")
	case o.duration <= 0:
		return benchBankUsage("--duration must be positive")
	case o.timeout <= 0:
		return benchBankUsage("--op-timeout must be positive")
	case o.replicas < -1:
		return benchBankUsage("--replicas must be -1 (automatic), 0 (do not wait) or a number of voters")
	}
	progress := stdout
	if asJSON {
		progress = stderr
	}
	if o.quiet {
		progress = io.Discard
	}

	endpoints := cleanBenchList(o.endpoints)
	if o.embedded {
		eps, stop, err := benchEmbedded(ctx, progress)
		if err != nil {
			return err
		}
		defer stop()
		endpoints = eps
	}
	if len(endpoints) == 0 {
		return benchBankUsage("--endpoints is empty")
	}
	nc := min(o.clients, o.concurrency)
	dbs := make([]*vowdb.DB, nc)
	for i := range dbs {
		db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: endpoints, RequestTimeout: o.timeout})
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer db.Close()
		dbs[i] = db
	}

	// Setup: ranges and balances.
	first := benchBankRanges(o.accounts)
	setupStart := time.Now()
	if err := benchBankSplit(ctx, dbs[0], first); err != nil {
		return err
	}
	if err := benchBankLoad(ctx, dbs, o, first); err != nil {
		return err
	}
	voters, err := benchWaitReplicated(ctx, dbs[0], benchBankKey(0), benchBankKey(o.accounts), o.replicas, time.Minute)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench bank: %d accounts of %d in 3 ranges (from %s, %s, %s), set up in %.1fs\n", o.accounts, o.balance,
		benchBankKey(first[0]), benchBankKey(first[1]), benchBankKey(first[2]), time.Since(setupStart).Seconds())

	w := &benchBankWorkload{o: o, first: first}
	// Warm up every handle with one transfer: route lookups and
	// connections happen here, not in the first measured second.
	for i, db := range dbs {
		rng := rand.New(rand.NewPCG(uint64(i), 99))
		var err error
		for try := 0; try < 5; try++ {
			wctx, cancel := context.WithTimeout(ctx, o.timeout)
			_, err = w.transfer(wctx, db, rng)
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("bench: warm-up transfer: %w", err)
		}
	}
	fmt.Fprintf(progress, "bench bank: op=transfer concurrency=%d clients=%d accounts=%d duration=%s endpoints=%s\n",
		o.concurrency, nc, o.accounts, o.duration, strings.Join(endpoints, ","))

	rec := newBenchBankRecorder()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile() // on an early return; a no-op after the one below
	}
	cpu0, err := benchReadCPU(o.pids)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(o.duration)
	var wg sync.WaitGroup
	for i := 0; i < o.concurrency; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			db := dbs[i%nc]
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for runCtx.Err() == nil && time.Now().Before(deadline) {
				opCtx, opCancel := context.WithTimeout(runCtx, o.timeout)
				r, err := w.transfer(opCtx, db, rng)
				opCancel()
				if runCtx.Err() != nil && err != nil {
					return // interrupted: not the cluster's error
				}
				rec.record(r, err)
			}
		}(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	last := start
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			cancel()
			<-done
			break loop
		case now := <-ticker.C:
			s := rec.interval()
			el := now.Sub(last)
			last = now
			fmt.Fprintf(progress, "%6.1fs  txn/s=%-6.0f p50=%-9s p99=%-9s aborts=%d errors=%d\n", now.Sub(start).Seconds(),
				float64(s.ops)/el.Seconds(), benchMS(s.p50), benchMS(s.p99), s.aborts, s.errors)
		}
	}
	elapsed := time.Since(start)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile() // the measured run only, not the check below
	}
	cpu1, err := benchReadCPU(o.pids)
	if err != nil {
		return err
	}
	sum := rec.summary(o, nc, elapsed, cpu0, cpu1)
	sum.Voters = voters
	if ctx.Err() == nil {
		sum.Check = checkBenchBank(ctx, dbs[0], o)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		sum.print(stdout)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case sum.Transfers == 0:
		return fmt.Errorf("bench: no transfer committed (%d aborts, %d errors)", sum.Aborts, sum.Errors)
	case !sum.Check.OK:
		return fmt.Errorf("bench: the balances add up to %d, not %d: %s", sum.Check.Total, sum.Check.Want, sum.Check.Error)
	}
	return nil
}

// benchBankSplit splits the keyspace at the first account of the second and
// third ranges, unless a range already starts there.
func benchBankSplit(ctx context.Context, db *vowdb.DB, first [3]int) error {
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	ranges, err := db.Ranges(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("bench: list ranges: %w", err)
	}
	for _, i := range first[1:] {
		k := benchBankKey(i)
		exists := false
		for _, r := range ranges {
			exists = exists || (!r.Meta && string(r.StartKey) == string(k))
		}
		if exists {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, _, err := db.Split(sctx, k)
		cancel()
		if err != nil {
			return fmt.Errorf("bench: split at %q: %w", k, err)
		}
	}
	return nil
}

// benchBankLoad writes every account's opening balance, in transactions of
// up to 500 accounts of one range each (so each commits in one phase).
func benchBankLoad(ctx context.Context, dbs []*vowdb.DB, o benchBankOptions, first [3]int) error {
	type chunk struct{ from, to int }
	var chunks []chunk
	for r := 0; r < 3; r++ {
		end := o.accounts
		if r < 2 {
			end = first[r+1]
		}
		for i := first[r]; i < end; i += 500 {
			chunks = append(chunks, chunk{i, min(i+500, end)})
		}
	}
	value := []byte(strconv.FormatInt(o.balance, 10))
	var next atomic.Int64
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			db := dbs[g%len(dbs)]
			for {
				i := int(next.Add(1) - 1)
				if i >= len(chunks) || ctx.Err() != nil {
					return
				}
				c := chunks[i]
				lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				err := db.Transact(lctx, func(ctx context.Context, tx *vowdb.Txn) error {
					for a := c.from; a < c.to; a++ {
						if err := tx.Put(ctx, benchBankKey(a), value); err != nil {
							return err
						}
					}
					return nil
				})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("bench: load accounts %d-%d: %w", c.from, c.to-1, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type benchBankWorkload struct {
	o     benchBankOptions
	first [3]int
}

// benchBankResult is one transfer as the worker saw it.
type benchBankResult struct {
	took, commit time.Duration // whole transfer; commit phase (fn returned to Transact returned)
	receipt      *vowdb.Receipt
	skipped      bool
}

// pick chooses a transfer: two distinct ranges, an account in each.
func (w *benchBankWorkload) pick(rng *rand.Rand) (from, to int, amount int64) {
	ra := rng.IntN(3)
	rb := (ra + 1 + rng.IntN(2)) % 3
	acct := func(r int) int {
		end := w.o.accounts
		if r < 2 {
			end = w.first[r+1]
		}
		return w.first[r] + rng.IntN(end-w.first[r])
	}
	return acct(ra), acct(rb), 1 + rng.Int64N(100)
}

func benchBankBalance(ctx context.Context, tx *vowdb.Txn, key []byte) (int64, error) {
	v, err := tx.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s holds %q, not a balance", key, v)
	}
	return n, nil
}

// transfer runs one transfer with a single attempt.
func (w *benchBankWorkload) transfer(ctx context.Context, db *vowdb.DB, rng *rand.Rand) (benchBankResult, error) {
	from, to, amount := w.pick(rng)
	fk, tk := benchBankKey(from), benchBankKey(to)
	var res benchBankResult
	var tx *vowdb.Txn
	var fnDone time.Time
	start := time.Now()
	err := db.Transact(ctx, func(ctx context.Context, t *vowdb.Txn) error {
		tx = t
		// The two ranges are independent: read them in parallel, then
		// write them in parallel.
		var tb int64
		var errTo error
		ch := make(chan struct{})
		go func() { tb, errTo = benchBankBalance(ctx, t, tk); close(ch) }()
		fb, err := benchBankBalance(ctx, t, fk)
		<-ch
		if err = errors.Join(err, errTo); err != nil {
			return benchBankFirstErr(err)
		}
		if fb < amount {
			return errBankInsufficient
		}
		ch = make(chan struct{})
		go func() { errTo = t.Put(ctx, tk, strconv.AppendInt(nil, tb+amount, 10)); close(ch) }()
		err = t.Put(ctx, fk, strconv.AppendInt(nil, fb-amount, 10))
		<-ch
		if err = errors.Join(err, errTo); err != nil {
			return benchBankFirstErr(err)
		}
		fnDone = time.Now()
		return nil
	}, vowdb.WithMaxAttempts(1), vowdb.WithTimeout(w.o.timeout))
	res.took = time.Since(start)
	if errors.Is(err, errBankInsufficient) {
		res.skipped = true
		return res, nil
	}
	if err == nil {
		res.commit = time.Since(fnDone)
		res.receipt = tx.Receipt()
	}
	return res, err
}

// benchBankFirstErr picks the error to report from a failed pair of
// parallel operations: an abort if there is one (its reason is what the
// abort statistics count), else the first.
func benchBankFirstErr(err error) error {
	var ab *vowdb.AbortError
	if errors.As(err, &ab) {
		return ab
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		return j.Unwrap()[0]
	}
	return err
}

// benchAbortName names an abort reason for the report ("lock-wait
// timeout" becomes "lock-wait_timeout").
func benchAbortName(r vowdb.AbortReason) string {
	n := r.String()
	if n == "" {
		n = "reason-" + strconv.Itoa(int(r))
	}
	return strings.ReplaceAll(n, " ", "_")
}

// benchBankRecorder collects the transfers' outcomes.
type benchBankRecorder struct {
	mu                          sync.Mutex
	total, window, commit       *hdrhistogram.Histogram
	byGateway                   map[uint64]*hdrhistogram.Histogram
	aborts                      map[string]int64
	errs                        map[string]int64
	paths                       map[string]int64
	nAborts, nErrs, skipped     int64
	winAborts, winErrs          int64
	durableWrites, roundTrips   int64
	receipts, receiptLockWaitUs int64
}

func newBenchBankRecorder() *benchBankRecorder {
	return &benchBankRecorder{total: newBenchHist(), window: newBenchHist(), commit: newBenchHist(),
		byGateway: map[uint64]*hdrhistogram.Histogram{}, aborts: map[string]int64{}, errs: map[string]int64{}, paths: map[string]int64{}}
}

func (r *benchBankRecorder) record(res benchBankResult, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ab *vowdb.AbortError
	switch {
	case errors.As(err, &ab):
		r.aborts[benchAbortName(ab.Reason)]++
		r.nAborts++
		r.winAborts++
	case err != nil:
		r.errs[benchErrKind(err)]++
		r.nErrs++
		r.winErrs++
	case res.skipped:
		r.skipped++
	default:
		us := max(res.took.Microseconds(), 1)
		_ = r.total.RecordValue(us)
		_ = r.window.RecordValue(us)
		cus := max(res.commit.Microseconds(), 1)
		_ = r.commit.RecordValue(cus)
		if rc := res.receipt; rc != nil {
			r.paths[rc.Path]++
			r.receipts++
			r.durableWrites += int64(rc.DurableWrites)
			r.roundTrips += int64(rc.RoundTrips)
			r.receiptLockWaitUs += rc.LockWait.Microseconds()
			h := r.byGateway[rc.Gateway]
			if h == nil {
				h = newBenchHist()
				r.byGateway[rc.Gateway] = h
			}
			_ = h.RecordValue(cus)
		}
	}
}

type benchBankWindow struct {
	ops, aborts, errors int64
	p50, p99            time.Duration
}

func (r *benchBankRecorder) interval() benchBankWindow {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := benchBankWindow{ops: r.window.TotalCount(), aborts: r.winAborts, errors: r.winErrs,
		p50: time.Duration(r.window.ValueAtQuantile(50)) * time.Microsecond,
		p99: time.Duration(r.window.ValueAtQuantile(99)) * time.Microsecond}
	r.window.Reset()
	r.winAborts, r.winErrs = 0, 0
	return w
}

// benchBankSummary is the result of one run (the JSON form of -w json).
type benchBankSummary struct {
	Op          string `json:"op"`
	Accounts    int    `json:"accounts"`
	Concurrency int    `json:"concurrency"`
	Clients     int    `json:"clients"`
	// Voters is how many voters every bench range had when the run began
	// (0: the run did not wait, --replicas 0).
	Voters     int     `json:"voters"`
	ElapsedSec float64 `json:"elapsed_s"`
	// Transfers counts committed transfers; Attempts every transfer tried
	// (committed, aborted, failed, or skipped for insufficient funds).
	Transfers int64   `json:"transfers"`
	Attempts  int64   `json:"attempts"`
	TxnPerSec float64 `json:"txn_per_s"`
	// Latency of a committed transfer, from Begin to the commit's answer.
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P95Ms float64 `json:"p95_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// The commit phase alone: from the end of the transaction's reads and
	// writes to the commit's answer; overall and by coordinating node id.
	CommitP50Ms          float64            `json:"commit_p50_ms"`
	CommitP99Ms          float64            `json:"commit_p99_ms"`
	CommitP50MsByGateway map[string]float64 `json:"commit_p50_ms_by_gateway"`
	Aborts               int64              `json:"aborts"`
	AbortRate            float64            `json:"abort_rate"` // aborts / attempts
	AbortsBy             map[string]int64   `json:"aborts_by_reason"`
	Skipped              int64              `json:"skipped"`
	Errors               int64              `json:"errors"` // failed without an abort: unavailable, timeout, ambiguous, ...
	ErrorsBy             map[string]int64   `json:"errors_by_kind"`
	Paths                map[string]int64   `json:"commit_paths"`
	// Averages over the committed transfers' receipts.
	AvgDurableWrites float64        `json:"avg_durable_writes"`
	AvgRoundTrips    float64        `json:"avg_round_trips"`
	AvgLockWaitMs    float64        `json:"avg_lock_wait_ms"`
	CPU              benchCPUReport `json:"cpu"`
	Check            benchBankCheck `json:"check"`
}

// benchBankCheck is the final conservation check.
type benchBankCheck struct {
	Accounts int    `json:"accounts"`
	Total    int64  `json:"total"`
	Want     int64  `json:"want"`
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
}

func (r *benchBankRecorder) summary(o benchBankOptions, nc int, el time.Duration, c0, c1 benchCPU) benchBankSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.total
	q := func(h *hdrhistogram.Histogram, p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e3 }
	s := benchBankSummary{Op: "transfer", Accounts: o.accounts, Concurrency: o.concurrency, Clients: nc, ElapsedSec: el.Seconds(),
		Transfers: h.TotalCount(), Aborts: r.nAborts, Skipped: r.skipped, Errors: r.nErrs,
		AbortsBy: map[string]int64{}, ErrorsBy: map[string]int64{}, Paths: map[string]int64{}, CommitP50MsByGateway: map[string]float64{}}
	s.Attempts = s.Transfers + s.Aborts + s.Errors + s.Skipped
	for k, v := range r.aborts {
		s.AbortsBy[k] = v
	}
	for k, v := range r.errs {
		s.ErrorsBy[k] = v
	}
	for k, v := range r.paths {
		s.Paths[k] = v
	}
	if s.Attempts > 0 {
		s.AbortRate = float64(s.Aborts) / float64(s.Attempts)
	}
	if s.Transfers > 0 {
		s.TxnPerSec = float64(s.Transfers) / el.Seconds()
		s.P50Ms, s.P90Ms, s.P95Ms, s.P99Ms, s.MaxMs = q(h, 50), q(h, 90), q(h, 95), q(h, 99), float64(h.Max())/1e3
		s.CommitP50Ms, s.CommitP99Ms = q(r.commit, 50), q(r.commit, 99)
	}
	for g, gh := range r.byGateway {
		s.CommitP50MsByGateway[fmt.Sprintf("node%d", g)] = q(gh, 50)
	}
	if r.receipts > 0 {
		n := float64(r.receipts)
		s.AvgDurableWrites = float64(r.durableWrites) / n
		s.AvgRoundTrips = float64(r.roundTrips) / n
		s.AvgLockWaitMs = float64(r.receiptLockWaitUs) / n / 1e3
	}
	s.CPU = benchCPUOf(o.pids, s.Transfers, c0, c1)
	return s
}

// benchKVList prints a map as "k=v k=v" in key order.
func benchKVList[V any](m map[string]V, format string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + fmt.Sprintf(format, m[k])
	}
	return strings.Join(parts, " ")
}

func (s benchBankSummary) print(w io.Writer) {
	fmt.Fprintf(w, "vowdb op=transfer accounts=%d voters=%d conc=%d clients=%d transfers=%d aborts=%d errors=%d  txn/s=%.0f p50=%.2fms p95=%.2fms p99=%.2fms max=%.2fms cpu=%.0f%%\n",
		s.Accounts, s.Voters, s.Concurrency, s.Clients, s.Transfers, s.Aborts, s.Errors, s.TxnPerSec, s.P50Ms, s.P95Ms, s.P99Ms, s.MaxMs, s.CPU.MachinePercent)
	line := fmt.Sprintf("aborts: %.2f%% of %d attempts", 100*s.AbortRate, s.Attempts)
	if s.Aborts > 0 {
		line += " (" + benchKVList(s.AbortsBy, "%d") + ")"
	}
	if s.Skipped > 0 {
		line += fmt.Sprintf("; %d skipped for insufficient funds", s.Skipped)
	}
	fmt.Fprintln(w, line)
	if s.Errors > 0 {
		fmt.Fprintf(w, "errors: %s\n", benchKVList(s.ErrorsBy, "%d"))
	}
	fmt.Fprintf(w, "commit: paths %s; per commit %.2f durable writes, %.2f round trips (receipts); commit phase p50=%.2fms p99=%.2fms; by gateway p50 %s; lock wait %.2fms/txn\n",
		benchKVList(s.Paths, "%d"), s.AvgDurableWrites, s.AvgRoundTrips, s.CommitP50Ms, s.CommitP99Ms,
		benchKVList(s.CommitP50MsByGateway, "%.2fms"), s.AvgLockWaitMs)
	fmt.Fprintln(w, s.CPU.line())
	c := s.Check
	if c.Error != "" {
		fmt.Fprintf(w, "check: FAILED: %s\n", c.Error)
	} else {
		fmt.Fprintf(w, "check: %d accounts, total %d (want %d) ok=%v\n", c.Accounts, c.Total, c.Want, c.OK)
	}
}

// checkBenchBank reads every account in one transaction and checks the
// total.
func checkBenchBank(ctx context.Context, db *vowdb.DB, o benchBankOptions) benchBankCheck {
	c := benchBankCheck{Want: int64(o.accounts) * o.balance}
	var kvs []vowdb.KeyValue
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := db.Transact(cctx, func(ctx context.Context, tx *vowdb.Txn) error {
		var err error
		kvs, err = tx.Scan(ctx, []byte(benchBankPrefix), []byte(benchBankEnd), 0)
		return err
	}, vowdb.WithLockTimeout(20*time.Second))
	if err != nil {
		c.Error = fmt.Sprintf("cannot read the accounts: %v", err)
		return c
	}
	c.Accounts = len(kvs)
	for _, kv := range kvs {
		v, err := strconv.ParseInt(string(kv.Value), 10, 64)
		if err != nil {
			c.Error = fmt.Sprintf("%s holds %q, not a balance", kv.Key, kv.Value)
			return c
		}
		if v < 0 {
			c.Error = fmt.Sprintf("%s has a negative balance %d", kv.Key, v)
			return c
		}
		c.Total += v
	}
	c.OK = c.Total == c.Want && c.Accounts == o.accounts
	if !c.OK {
		c.Error = fmt.Sprintf("%d accounts totalling %d, want %d totalling %d", c.Accounts, c.Total, o.accounts, c.Want)
	}
	return c
}
