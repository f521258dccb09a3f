package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

// TestProcessCrashRestart runs a real three-process cluster from the built
// binary and checks that acknowledged writes survive a SIGKILL of the node
// that leads the data:
//
//  1. build vowdb, start three `vowdb start` processes that --join each
//     other, `vowdb init` one of them (a second init must fail and change
//     nothing), wait until `vowdb range ls -w json` shows every range with
//     three voters and a leader;
//  2. run a workload with the Go client: each key is written by one worker
//     with increasing values; the last acknowledged value per key is kept,
//     and a write that fails ambiguously adds its value as a candidate;
//  3. SIGKILL the process that leads the user range, keep writing (the two
//     others must keep acknowledging), restart it with the same arguments
//     and data directory, keep writing;
//  4. stop the workload, wait for full replication, and check that every key
//     reads back one of its candidates, through the client and through
//     `vowdb kv scan -w json` against the restarted node;
//  5. SIGTERM one node: it must drain and exit 0.
//
// Every process is killed by PID when the test ends, whatever happens.
func TestProcessCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a 3-process cluster; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("uses POSIX signals")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	dir := t.TempDir()
	bin := buildBinary(ctx, t, dir)
	c := startProcessCluster(ctx, t, bin, dir, 3)

	// Init once; a second init is refused and changes nothing.
	res := c.cli(ctx, "init", "--endpoints", c.procs[0].addr, "--timeout", "10s")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "cluster initialized: ") {
		t.Fatalf("init: %s", res)
	}
	clusterID := strings.TrimSpace(strings.TrimPrefix(res.stdout, "cluster initialized: "))
	res = c.cli(ctx, "init", "--endpoints", c.procs[0].addr, "--timeout", "10s")
	if res.code != exitError || !strings.Contains(res.stderr, "already initialized") || !strings.Contains(res.stderr, clusterID) {
		t.Fatalf("second init: want exit 1 and \"already initialized\" with the cluster id %s, got %s", clusterID, res)
	}
	c.waitReplicated(ctx, 30*time.Second)

	// A few CLI round trips before the workload.
	if res := c.cli(ctx, "kv", "put", "cli/key", "v 1"); res.code != 0 || res.stdout != "OK\n" {
		t.Fatalf("kv put: %s", res)
	}
	if res := c.cli(ctx, "kv", "get", "cli/key", "-w", "json"); res.code != 0 || !strings.Contains(res.stdout, `"value": "v 1"`) {
		t.Fatalf("kv get: %s", res)
	}
	if res := c.cli(ctx, "kv", "get", "cli/absent"); res.code != exitNotFound {
		t.Fatalf("kv get of an absent key: want exit %d, got %s", exitNotFound, res)
	}
	if res := c.cli(ctx, "kv", "cas", "cli/key", "wrong", "v 2"); res.code != 0 || res.stdout != "swapped: false\n" {
		t.Fatalf("kv cas (no swap): %s", res)
	}

	db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: c.addrs(), RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	victim := c.leaderProcess(ctx, db)
	t.Logf("victim: process %d (%s), leader of the user range", victim, c.procs[victim].addr)

	w := startWorkload(ctx, t, db, 16, 4)
	phase := func(name string, d time.Duration) {
		before := w.acks.Load()
		select {
		case <-time.After(d):
		case <-ctx.Done():
			t.Fatalf("%s: %v", name, ctx.Err())
		}
		after := w.acks.Load()
		t.Logf("%s: %d writes acknowledged in %v", name, after-before, d)
		if after == before {
			w.stop()
			t.Fatalf("%s: no write was acknowledged in %v", name, d)
		}
	}
	phase("all nodes up", 1500*time.Millisecond)
	c.procs[victim].kill(t)
	phase("victim killed", 2500*time.Millisecond)
	c.procs[victim].start(ctx, t)
	phase("victim restarted", 2500*time.Millisecond)
	w.stop()
	t.Logf("workload: %d acknowledged, %d ambiguous, %d failed", w.acks.Load(), w.ambiguous.Load(), w.failed.Load())

	c.waitReplicated(ctx, 30*time.Second)
	got := w.verify(ctx, t, db)

	// The restarted node serves the same data through the CLI.
	res = c.cli(ctx, "kv", "scan", "w/", "w0", "-w", "json", "--endpoints", c.procs[victim].addr)
	if res.code != 0 {
		t.Fatalf("kv scan: %s", res)
	}
	var scanned []kvJSON
	if err := json.Unmarshal([]byte(res.stdout), &scanned); err != nil {
		t.Fatalf("kv scan output: %v\n%s", err, res.stdout)
	}
	fromScan := map[string]string{}
	for _, kv := range scanned {
		if kv.Key == nil || kv.Value == nil {
			t.Fatalf("kv scan: binary key or value in %s", res.stdout)
		}
		fromScan[*kv.Key] = *kv.Value
	}
	for k, v := range got {
		if fromScan[k] != v {
			t.Errorf("key %s: client read %q, kv scan printed %q", k, v, fromScan[k])
		}
	}
	if len(fromScan) != len(got) {
		t.Errorf("kv scan printed %d keys, the client read %d", len(fromScan), len(got))
	}

	// A graceful stop hands leaderships over and exits 0.
	p := c.procs[victim]
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.exitCode != 0 {
			t.Errorf("after SIGTERM the node exited with %d, want 0", p.exitCode)
		}
		t.Logf("SIGTERM: node exited 0 in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(stopTimeout + 5*time.Second):
		t.Errorf("node still running %v after SIGTERM", stopTimeout+5*time.Second)
	}
}

// buildBinary compiles this package into dir.
func buildBinary(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "vowdb")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePorts reserves n loopback ports by listening on port 0, then frees
// them for the processes. Another program could take one in between; that
// would show as a failure to start.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lis []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range lis {
		_ = l.Close()
	}
	return ports
}

// proc is one `vowdb start` process. Its output goes to a log file that is
// printed when the test fails.
type proc struct {
	bin, log   string
	args       []string
	addr, http string

	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	exitCode int           // valid once done is closed
}

// childEnv is the test's environment without VOWDB_* variables, so that a
// developer's settings do not leak into the processes.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) start(ctx context.Context, t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		_ = f.Close()
		close(done)
	}(p.cmd, p.done)

	// Serving once /livez answers.
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get("http://" + p.http + "/livez")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited with %d before serving (log: %s)", p.addr, p.exitCode, p.log)
		case <-ctx.Done():
			t.Fatalf("%s not serving: %v", p.addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not serving after 15s: %v", p.addr, err)
		}
	}
}

// kill sends SIGKILL by PID and waits for the exit; a no-op if the process
// is not running.
func (p *proc) kill(t *testing.T) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("process %d did not exit 10s after SIGKILL", p.cmd.Process.Pid)
	}
}

type processCluster struct {
	t     *testing.T
	bin   string
	procs []*proc
}

func startProcessCluster(ctx context.Context, t *testing.T, bin, dir string, n int) *processCluster {
	ports := freePorts(t, 2*n)
	c := &processCluster{t: t, bin: bin}
	var join []string
	for i := 0; i < n; i++ {
		join = append(join, fmt.Sprintf("127.0.0.1:%d", ports[2*i]))
	}
	for i := 0; i < n; i++ {
		p := &proc{bin: bin, log: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
			addr: join[i], http: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		p.args = []string{"start",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--listen-addr", p.addr,
			"--http-addr", p.http,
			"--join", strings.Join(join, ","),
			"--replication-factor", "3",
			"--log-format", "text",
			"--tick-interval", "20ms",
			"--heartbeat-interval", "100ms",
			"--replicate-interval", "100ms",
			"--request-timeout", "2s",
		}
		c.procs = append(c.procs, p)
	}
	// Cleanups run last-in first-out: kill every process, then show the
	// logs of a failed test.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range c.procs {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("--- last lines of %s:\n%s", p.log, strings.Join(lines, "\n"))
		}
	})
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.kill(t)
		}
	})
	for _, p := range c.procs {
		p.start(ctx, t)
	}
	return c
}

func (c *processCluster) addrs() []string {
	var out []string
	for _, p := range c.procs {
		out = append(out, p.addr)
	}
	return out
}

// cliResult is the outcome of one CLI run.
type cliResult struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("vowdb %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// cli runs the binary as a client; --endpoints defaults to every node.
func (c *processCluster) cli(ctx context.Context, args ...string) cliResult {
	c.t.Helper()
	full := append([]string(nil), args...)
	if !containsArg(args, "--endpoints") && args[0] != "init" {
		full = append(full, "--endpoints", strings.Join(c.addrs(), ","))
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = childEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{args: full, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		c.t.Fatalf("vowdb %s: %v", strings.Join(full, " "), err)
	}
	return res
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a || strings.HasPrefix(x, a+"=") {
			return true
		}
	}
	return false
}

// waitReplicated polls `vowdb range ls -w json` until every range has three
// voters, no learners and a leader.
func (c *processCluster) waitReplicated(ctx context.Context, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last cliResult
	for time.Now().Before(deadline) && ctx.Err() == nil {
		last = c.cli(ctx, "range", "ls", "-w", "json", "--timeout", "3s")
		if last.code == 0 {
			var ranges []rangeJSON
			if err := json.Unmarshal([]byte(last.stdout), &ranges); err != nil {
				c.t.Fatalf("range ls output: %v\n%s", err, last.stdout)
			}
			ok := len(ranges) >= 2 // the meta range and at least one user range
			for _, r := range ranges {
				if len(r.Voters) != 3 || len(r.Learners) != 0 || r.Leader == 0 {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("ranges not fully replicated after %v; last: %s", d, last)
}

// leaderProcess returns the index of the process that leads the range of
// the workload's keys.
func (c *processCluster) leaderProcess(ctx context.Context, db *vowdb.DB) int {
	c.t.Helper()
	ranges, err := db.Ranges(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	nodes, err := db.Nodes(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var leader uint64
	for _, r := range ranges {
		if !r.Meta && string(r.StartKey) <= "w/" && (len(r.EndKey) == 0 || string(r.EndKey) > "w/") {
			leader = r.Leader
		}
	}
	for _, n := range nodes {
		if n.ID != leader {
			continue
		}
		for i, p := range c.procs {
			if p.addr == n.Address {
				return i
			}
		}
	}
	c.t.Fatalf("no process leads the workload's range (leader %d, nodes %+v)", leader, nodes)
	return -1
}

// keyHistory is what the workload knows about one key. Only the key's
// worker touches it until the workload stops.
type keyHistory struct {
	key string
	n   int // last value number written
	// candidates are the values the key may hold now: the last acknowledged
	// one, plus every value written ambiguously since. absentOK: the key may
	// still be absent (nothing was acknowledged yet).
	candidates map[string]bool
	absentOK   bool
}

func (h *keyHistory) allows(v string, found bool) bool {
	if !found {
		return h.absentOK
	}
	return h.candidates[v]
}

func (h *keyHistory) describe() string {
	var vs []string
	for v := range h.candidates {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	if h.absentOK {
		vs = append([]string{"<absent>"}, vs...)
	}
	return strings.Join(vs, " | ")
}

type workload struct {
	keys                    []*keyHistory
	wg                      sync.WaitGroup
	halt                    atomic.Bool
	acks, ambiguous, failed atomic.Int64
	unclassifiedMu          sync.Mutex
	unclassified            []string
	stopOnce                sync.Once
}

// startWorkload writes nkeys keys from workers goroutines; worker w owns the
// keys i with i%workers == w, so each key sees one write at a time.
func startWorkload(ctx context.Context, t *testing.T, db *vowdb.DB, nkeys, workers int) *workload {
	w := &workload{}
	for i := 0; i < nkeys; i++ {
		w.keys = append(w.keys, &keyHistory{key: fmt.Sprintf("w/%02d", i), candidates: map[string]bool{}, absentOK: true})
	}
	for id := 0; id < workers; id++ {
		var mine []*keyHistory
		for i, h := range w.keys {
			if i%workers == id {
				mine = append(mine, h)
			}
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for !w.halt.Load() && ctx.Err() == nil {
				for _, h := range mine {
					if w.halt.Load() {
						return
					}
					w.write(ctx, db, h)
				}
			}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *workload) write(ctx context.Context, db *vowdb.DB, h *keyHistory) {
	h.n++
	v := fmt.Sprintf("v%06d", h.n)
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := db.Put(octx, []byte(h.key), []byte(v))
	cancel()
	switch {
	case err == nil:
		h.candidates = map[string]bool{v: true}
		h.absentOK = false
		w.acks.Add(1)
	case errors.Is(err, vowdb.ErrUnavailable), errors.Is(err, vowdb.ErrInvalidArgument):
		// The client promises nothing was applied.
		w.failed.Add(1)
	default:
		// ErrAmbiguousCommit, or an error the client did not classify:
		// the write may have been applied, now or later (before the next
		// acknowledged write of the key).
		h.candidates[v] = true
		w.ambiguous.Add(1)
		if !errors.Is(err, vowdb.ErrAmbiguousCommit) {
			w.unclassifiedMu.Lock()
			w.unclassified = append(w.unclassified, err.Error())
			w.unclassifiedMu.Unlock()
		}
	}
}

func (w *workload) stop() {
	w.stopOnce.Do(func() {
		w.halt.Store(true)
		w.wg.Wait()
	})
}

// verify reads every key (retrying while the cluster is unavailable) and
// checks it against its candidates. It returns the values read.
func (w *workload) verify(ctx context.Context, t *testing.T, db *vowdb.DB) map[string]string {
	t.Helper()
	w.unclassifiedMu.Lock()
	for _, e := range w.unclassified {
		t.Logf("write error not classified by the client (treated as ambiguous): %s", e)
	}
	w.unclassifiedMu.Unlock()
	got := map[string]string{}
	for _, h := range w.keys {
		var v []byte
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			v, err = db.Get(rctx, []byte(h.key))
			cancel()
			if !errors.Is(err, vowdb.ErrUnavailable) {
				break
			}
		}
		found := err == nil
		if err != nil && !errors.Is(err, vowdb.ErrNotFound) {
			t.Errorf("read %s: %v", h.key, err)
			continue
		}
		if found {
			got[h.key] = string(v)
		}
		if !h.allows(string(v), found) {
			shown := "<absent>"
			if found {
				shown = string(v)
			}
			t.Errorf("key %s holds %s; the acknowledged history allows only %s", h.key, shown, h.describe())
		}
	}
	return got
}
