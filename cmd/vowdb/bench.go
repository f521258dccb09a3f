package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/testcluster"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a cluster's throughput and latency",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBenchKVCmd(), newBenchBankCmd())
	return cmd
}

// benchKVOptions are the flags of `vowdb bench kv`.
type benchKVOptions struct {
	endpoints   []string
	embedded    bool
	concurrency int
	clients     int
	duration    time.Duration
	valueSize   int
	readPercent int
	keys        int
	load        bool
	timeout     time.Duration
	pids        []int
	quiet       bool
	replicas    int
}

const benchKVLong = `bench kv runs a closed-loop key-value workload against a cluster: each of
--concurrency workers sends one request, waits for the answer, and sends the
next, for --duration.

Keys are 8 bytes ("%08d" of a number drawn uniformly from [0, --keys)) and
values are --value-size bytes: the shape of etcd's own benchmark, so results
compare with an etcd cluster measured the same way. --read-percent of the
operations are linearizable Gets (a missing key is a successful read), the
rest are Puts.

--load writes every key from 0 to --keys-1 exactly once instead, in order
(useful to fill a store before measuring it, or to measure its size); it ends
when all keys are written or --duration (if given) elapses.

The run starts once every user range has --replicas voters and no learners
(a new cluster replicates its first range in the background), so what is
measured is the replicated write; it fails if that takes more than a minute.
--replicas defaults to 3, or the number of live nodes if fewer; --replicas 0
skips the wait.

It prints one line per second (ops/s, p50 and p99 of that second, errors)
and a summary: total ops, ops/s, p50/p95/p99/max latency, errors by kind.
With -w json the summary is one JSON document on stdout (per-second lines go
to stderr).

CPU: the summary reports the CPU time this process used and, with
--pids, the CPU time of those processes (read from /proc/PID/stat before and
after the run) and CPU-microseconds per operation. Give the node processes'
PIDs to see what the servers spend per operation. --embedded starts a
3-node cluster inside this process instead of using --endpoints; then the
process CPU includes the cluster's.`

func newBenchKVCmd() *cobra.Command {
	o := benchKVOptions{}
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Run a put/get workload and report throughput, latency and CPU per operation",
		Long:  benchKVLong,
		Example: `  vowdb bench kv --endpoints 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 --concurrency 64 --duration 10s
  vowdb bench kv --embedded --read-percent 50
  vowdb bench kv --endpoints 127.0.0.1:7401 --pids $(pgrep -d, -f 'vowdb start') -w json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.load && !cmd.Flags().Changed("duration") {
				o.duration = 0
			}
			if o.embedded && cmd.Flags().Changed("endpoints") {
				return benchUsage("--embedded starts its own cluster; do not combine it with --endpoints")
			}
			format := "table"
			if f := cmd.Flag("write-out"); f != nil {
				format = f.Value.String()
			}
			return runBenchKV(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, format == "json")
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.endpoints, "endpoints", []string{"127.0.0.1:7401"}, "gRPC addresses of some cluster nodes, comma-separated")
	f.BoolVar(&o.embedded, "embedded", false, "start a 3-node cluster in this process (temporary directory) and measure it")
	f.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers, each with one request in flight")
	f.IntVar(&o.clients, "clients", 8, "client handles (each with its own connections) shared by the workers")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (with --load: an optional limit)")
	f.IntVar(&o.valueSize, "value-size", 256, "value size in bytes")
	f.IntVar(&o.readPercent, "read-percent", 0, "percentage of operations that are Gets (0-100)")
	f.IntVar(&o.keys, "keys", 100000, "key space: keys are numbers in [0, keys) printed as %08d")
	f.BoolVar(&o.load, "load", false, "write each key of [0, keys) once, in order, then stop")
	f.DurationVar(&o.timeout, "op-timeout", 5*time.Second, "bound on one operation")
	f.IntSliceVar(&o.pids, "pids", nil, "PIDs of server processes whose CPU time to measure, comma-separated")
	f.BoolVar(&o.quiet, "quiet", false, "do not print the per-second lines")
	f.IntVar(&o.replicas, "replicas", -1, "wait until every user range has this many voters (and no learners) before measuring; -1: 3, or the number of live nodes if fewer; 0 does not wait")
	return cmd
}

// benchUsage reports a bad flag value or combination.
func benchUsage(format string, args ...any) error { return fmt.Errorf("bench kv: "+format, args...) }

// benchKey formats key number i as the peer benchmark does: "%08d".
func benchKey(buf []byte, i int) []byte { return fmt.Appendf(buf[:0], "%08d", i) }

func runBenchKV(ctx context.Context, stdout, stderr io.Writer, o benchKVOptions, asJSON bool) error {
	switch {
	case o.concurrency < 1:
		return benchUsage("--concurrency must be at least 1")
	case o.clients < 1:
		return benchUsage("--clients must be at least 1")
	case o.duration < 0 || (!o.load && o.duration == 0):
		return benchUsage("--duration must be positive")
	case o.valueSize < 0:
		return benchUsage("--value-size must not be negative")
	case o.readPercent < 0 || o.readPercent > 100:
		return benchUsage("--read-percent must be between 0 and 100")
	case o.keys < 1:
		return benchUsage("--keys must be at least 1")
	case o.load && o.readPercent > 0:
		return benchUsage("--load only writes; drop --read-percent")
	case o.timeout <= 0:
		return benchUsage("--op-timeout must be positive")
	case o.replicas < -1:
		return benchUsage("--replicas must be -1 (automatic), 0 (do not wait) or a number of voters")
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
		return benchUsage("--endpoints is empty")
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
	if _, err := benchWaitReplicated(ctx, dbs[0], nil, nil, o.replicas, time.Minute); err != nil {
		return err
	}
	// Warm up every handle: route lookups and connections happen here, not
	// in the first measured second.
	for _, db := range dbs {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := db.Put(wctx, []byte("warmup"), []byte("x"))
		cancel()
		if err != nil {
			return fmt.Errorf("bench: warm-up put: %w", err)
		}
	}

	op := "put"
	switch {
	case o.load:
		op = "load"
	case o.readPercent == 100:
		op = "get"
	case o.readPercent > 0:
		op = fmt.Sprintf("mix-r%d", o.readPercent)
	}
	fmt.Fprintf(progress, "bench kv: op=%s concurrency=%d clients=%d keys=%d value-size=%d duration=%s endpoints=%s\n",
		op, o.concurrency, nc, o.keys, o.valueSize, benchDur(o.duration), strings.Join(endpoints, ","))

	rec := newBenchRecorder()
	value := make([]byte, o.valueSize)
	for i := range value {
		value[i] = 'v'
	}
	var next atomic.Int64 // --load: next key to write

	cpu0, err := benchReadCPU(o.pids)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var deadline time.Time
	if o.duration > 0 {
		deadline = start.Add(o.duration)
	}
	var wg sync.WaitGroup
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			db := dbs[w%nc]
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			var kb []byte
			for runCtx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
				var k int
				if o.load {
					k = int(next.Add(1) - 1)
					if k >= o.keys {
						return
					}
				} else {
					k = rng.IntN(o.keys)
				}
				kb = benchKey(kb, k)
				read := o.readPercent > 0 && rng.IntN(100) < o.readPercent
				opCtx, opCancel := context.WithTimeout(runCtx, o.timeout)
				t := time.Now()
				var err error
				if read {
					_, err = db.Get(opCtx, kb)
					if errors.Is(err, vowdb.ErrNotFound) {
						err = nil
					}
				} else {
					err = db.Put(opCtx, kb, value)
				}
				d := time.Since(t)
				opCancel()
				if runCtx.Err() != nil && err != nil {
					return // interrupted: not the cluster's error
				}
				rec.record(d, err)
			}
		}(w)
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
			fmt.Fprintf(progress, "%6.1fs  ops/s=%-7.0f p50=%-9s p99=%-9s errors=%d\n", now.Sub(start).Seconds(),
				float64(s.ops)/el.Seconds(), benchMS(s.p50), benchMS(s.p99), s.errors)
		}
	}
	elapsed := time.Since(start)
	cpu1, err := benchReadCPU(o.pids)
	if err != nil {
		return err
	}
	sum := rec.summary(op, o, nc, elapsed, cpu0, cpu1)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		sum.print(stdout)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sum.Ops == 0 {
		return fmt.Errorf("bench: no operation succeeded (%d errors)", sum.Errors)
	}
	return nil
}

// benchEmbedded starts a 3-node cluster in this process, in a temporary
// directory, for --embedded; stop stops it and removes the directory.
func benchEmbedded(ctx context.Context, progress io.Writer) (endpoints []string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "vowdb-bench-")
	if err != nil {
		return nil, nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	c, err := testcluster.Start(sctx, testcluster.Options{Nodes: 3, Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	cancel()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("bench: start embedded cluster: %w", err)
	}
	endpoints = c.Endpoints()
	fmt.Fprintf(progress, "embedded 3-node cluster in %s: %s\n", dir, strings.Join(endpoints, ","))
	return endpoints, func() { c.Stop(); os.RemoveAll(dir) }, nil
}

func cleanBenchList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func benchDur(d time.Duration) string {
	if d == 0 {
		return "until done"
	}
	return d.String()
}

// benchMS prints a latency in milliseconds.
func benchMS(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

// benchRecorder collects latencies and errors from the workers.
type benchRecorder struct {
	mu       sync.Mutex
	total    *hdrhistogram.Histogram
	window   *hdrhistogram.Histogram
	errs     map[string]int64
	winErrs  int64
	totalErr int64
}

// Latencies are recorded in microseconds, from 1 µs to 1 minute, with 3
// significant digits.
func newBenchHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

func newBenchRecorder() *benchRecorder {
	return &benchRecorder{total: newBenchHist(), window: newBenchHist(), errs: map[string]int64{}}
}

func (r *benchRecorder) record(d time.Duration, err error) {
	us := max(d.Microseconds(), 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs[benchErrKind(err)]++
		r.winErrs++
		r.totalErr++
		return
	}
	_ = r.total.RecordValue(us)
	_ = r.window.RecordValue(us)
}

type benchWindow struct {
	ops      int64
	p50, p99 time.Duration
	errors   int64
}

// interval returns the last window's numbers and starts a new window.
func (r *benchRecorder) interval() benchWindow {
	r.mu.Lock()
	w := benchWindow{ops: r.window.TotalCount(), errors: r.winErrs,
		p50: time.Duration(r.window.ValueAtQuantile(50)) * time.Microsecond,
		p99: time.Duration(r.window.ValueAtQuantile(99)) * time.Microsecond}
	r.window.Reset()
	r.winErrs = 0
	r.mu.Unlock()
	return w
}

// benchErrKind names the class of a failed operation.
func benchErrKind(err error) string {
	switch {
	case errors.Is(err, vowdb.ErrAmbiguousCommit):
		return "ambiguous"
	case errors.Is(err, vowdb.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, vowdb.ErrInvalidArgument):
		return "invalid"
	case errors.Is(err, vowdb.ErrNotInitialized):
		return "not_initialized"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, vowdb.ErrClosed):
		return "closed"
	}
	return "other"
}

// benchSummary is the result of one run (the JSON form of -w json).
type benchSummary struct {
	Op          string           `json:"op"`
	Concurrency int              `json:"concurrency"`
	Clients     int              `json:"clients"`
	Keys        int              `json:"keys"`
	ValueSize   int              `json:"value_size"`
	ReadPercent int              `json:"read_percent"`
	ElapsedSec  float64          `json:"elapsed_s"`
	Ops         int64            `json:"ops"`
	OpsPerSec   float64          `json:"ops_per_s"`
	P50Ms       float64          `json:"p50_ms"`
	P90Ms       float64          `json:"p90_ms"`
	P95Ms       float64          `json:"p95_ms"`
	P99Ms       float64          `json:"p99_ms"`
	MaxMs       float64          `json:"max_ms"`
	Errors      int64            `json:"errors"`
	ErrorsBy    map[string]int64 `json:"errors_by_kind"`
	CPU         benchCPUReport   `json:"cpu"`
}

type benchCPUReport struct {
	// Machine is the busy share of all CPUs during the run, from /proc/stat
	// (every process on the machine, 100 = all CPUs busy).
	MachinePercent float64 `json:"machine_percent"`
	// Self is this process's user+system CPU time.
	SelfSec      float64 `json:"self_s"`
	SelfUsPerOp  float64 `json:"self_us_per_op"`
	PIDs         []int   `json:"pids,omitempty"`
	PIDsSec      float64 `json:"pids_s,omitempty"`
	PIDsUsPerOp  float64 `json:"pids_us_per_op,omitempty"`
	TotalUsPerOp float64 `json:"total_us_per_op"` // self + pids
	// PIDsRSSKiB is each PID's resident set size (VmRSS) after the run.
	PIDsRSSKiB []int64 `json:"pids_rss_kib,omitempty"`
}

func (r *benchRecorder) summary(op string, o benchKVOptions, nc int, el time.Duration, c0, c1 benchCPU) benchSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.total
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e3 }
	s := benchSummary{Op: op, Concurrency: o.concurrency, Clients: nc, Keys: o.keys, ValueSize: o.valueSize, ReadPercent: o.readPercent,
		ElapsedSec: el.Seconds(), Ops: h.TotalCount(), Errors: r.totalErr, ErrorsBy: map[string]int64{}}
	for k, v := range r.errs {
		s.ErrorsBy[k] = v
	}
	if s.Ops > 0 {
		s.OpsPerSec = float64(s.Ops) / el.Seconds()
		s.P50Ms, s.P90Ms, s.P95Ms, s.P99Ms, s.MaxMs = q(50), q(90), q(95), q(99), float64(h.Max())/1e3
	}
	s.CPU = benchCPUOf(o.pids, s.Ops, c0, c1)
	return s
}

// benchCPUOf turns the readings before and after a run of ops operations
// into the CPU report.
func benchCPUOf(pids []int, ops int64, c0, c1 benchCPU) benchCPUReport {
	n := float64(max(ops, 1))
	var cpu benchCPUReport
	if t := c1.machineTotal - c0.machineTotal; t > 0 {
		cpu.MachinePercent = 100 * float64(c1.machineBusy-c0.machineBusy) / float64(t)
	}
	cpu.SelfSec = (c1.self - c0.self).Seconds()
	cpu.SelfUsPerOp = cpu.SelfSec * 1e6 / n
	cpu.TotalUsPerOp = cpu.SelfUsPerOp
	if len(pids) > 0 {
		cpu.PIDs = pids
		for i := range pids {
			cpu.PIDsSec += (c1.pids[i] - c0.pids[i]).Seconds()
		}
		cpu.PIDsUsPerOp = cpu.PIDsSec * 1e6 / n
		cpu.TotalUsPerOp += cpu.PIDsUsPerOp
		cpu.PIDsRSSKiB = c1.rss
	}
	return cpu
}

func (s benchSummary) print(w io.Writer) {
	fmt.Fprintf(w, "vowdb op=%s conc=%d clients=%d ops=%d errors=%d  ops/s=%.0f p50=%.2fms p95=%.2fms p99=%.2fms max=%.2fms cpu=%.0f%%\n",
		s.Op, s.Concurrency, s.Clients, s.Ops, s.Errors, s.OpsPerSec, s.P50Ms, s.P95Ms, s.P99Ms, s.MaxMs, s.CPU.MachinePercent)
	if s.Errors > 0 {
		kinds := make([]string, 0, len(s.ErrorsBy))
		for k := range s.ErrorsBy {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s=%d", k, s.ErrorsBy[k])
		}
		fmt.Fprintf(w, "errors: %s\n", strings.Join(parts, " "))
	}
	fmt.Fprintln(w, s.CPU.line())
}

// line prints the CPU report as the summary's "cpu:" line.
func (c benchCPUReport) line() string {
	line := fmt.Sprintf("cpu: bench process %.2fs (%.0f µs/op)", c.SelfSec, c.SelfUsPerOp)
	if len(c.PIDs) > 0 {
		pids := make([]string, len(c.PIDs))
		for i, p := range c.PIDs {
			pids[i] = fmt.Sprint(p)
		}
		line += fmt.Sprintf("; pids %s %.2fs (%.0f µs/op); total %.0f µs/op", strings.Join(pids, ","), c.PIDsSec, c.PIDsUsPerOp, c.TotalUsPerOp)
		rss := make([]string, len(c.PIDsRSSKiB))
		for i, r := range c.PIDsRSSKiB {
			rss[i] = fmt.Sprintf("%.1f", float64(r)/1024)
		}
		line += fmt.Sprintf("; rss MiB %s", strings.Join(rss, ","))
	}
	return line
}

// benchWaitReplicated waits until every range overlapping [start, end) (nil
// end: no upper bound) has want voters and no learners, so that a benchmark measures replicated
// commits rather than a range still being replicated. want 0 returns at once;
// want -1 means 3, or the number of live nodes if fewer (the default
// replication factor). It returns the number of voters waited for.
func benchWaitReplicated(ctx context.Context, db *vowdb.DB, start, end []byte, want int, limit time.Duration) (int, error) {
	if want == 0 {
		return 0, nil
	}
	deadline := time.Now().Add(limit)
	if want < 0 {
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nodes, err := db.Nodes(nctx)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("bench: list nodes: %w", err)
		}
		want = 0
		for _, n := range nodes {
			if n.Live {
				want++
			}
		}
		want = max(1, min(3, want))
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ranges, err := db.Ranges(rctx)
		cancel()
		short := ""
		for _, r := range ranges {
			if r.Meta || (len(r.EndKey) > 0 && string(r.EndKey) <= string(start)) || (end != nil && string(r.StartKey) >= string(end)) {
				continue
			}
			if len(r.Voters) < want || len(r.Learners) > 0 {
				short = fmt.Sprintf("range %d has %d voters and %d learners", r.ID, len(r.Voters), len(r.Learners))
				break
			}
		}
		if err == nil && short == "" {
			return want, nil
		}
		if err != nil {
			short = err.Error()
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("bench: ranges not replicated %d ways after %s (%s); see vowdb range ls, or pass --replicas", want, limit, short)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
