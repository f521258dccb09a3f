package torture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts of the cluster's process control.
const (
	serveTimeout = 30 * time.Second // a started node answers /livez
	exitTimeout  = 10 * time.Second // a killed node is reaped
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL: the
	// node's own shutdown takes up to 10 s of leadership hand-off.
	stopGrace = 15 * time.Second
)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	// Binary is the vowdb binary. Nodes run `Binary start`; init and the
	// audit run it as a client.
	Binary string
	// Dir holds nodes/<name>/ (data) and nodes/<name>.log (stdout and
	// stderr of every run of the node).
	Dir string
	// Net places the nodes.
	Net Network
	// Args are extra `vowdb start` flags for every node.
	Args []string
	// Logf, if set, is told of every process event: start, signal, exit.
	Logf func(format string, args ...any)
}

// Cluster runs one `vowdb start` process per host and controls them by PID.
// Its methods are safe for concurrent use.
type Cluster struct {
	cfg   ClusterConfig
	nodes []*node
	hc    *http.Client
}

type node struct {
	host Host
	args []string
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	paused  bool
	killing bool // the current process is being killed or stopped by us
	// unexpected describes exits nobody asked for.
	unexpected []string
}

// NewCluster prepares a cluster; Start starts it.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	hosts := cfg.Net.Hosts()
	var join []string
	for _, h := range hosts {
		join = append(join, h.Addr())
	}
	nodesDir := filepath.Join(cfg.Dir, "nodes")
	if err := os.MkdirAll(nodesDir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, hc: &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	for _, h := range hosts {
		args := []string{"start",
			"--data-dir", filepath.Join(nodesDir, h.Name),
			"--listen-addr", h.Addr(),
			"--advertise-addr", h.Addr(),
			"--http-addr", h.HTTPAddr(),
			"--join", strings.Join(join, ","),
			"--log-format", "text",
		}
		c.nodes = append(c.nodes, &node{host: h, args: append(args, cfg.Args...), log: filepath.Join(nodesDir, h.Name+".log")})
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.nodes) }

// Name is node i's name.
func (c *Cluster) Name(i int) string { return c.nodes[i].host.Name }

// Endpoints are the nodes' gRPC addresses.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, n := range c.nodes {
		eps = append(eps, n.host.Addr())
	}
	return eps
}

// Start starts every node, initializes the cluster through the first one
// and waits until it is ready (see WaitReady).
func (c *Cluster) Start(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { errs[i] = c.Restart(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		res := c.CLI(ctx, "init", "--endpoints", c.nodes[0].host.Addr(), "--timeout", "10s")
		if last = res.err(); last == nil {
			c.logf("%s", strings.TrimSpace(res.Stdout))
			break
		}
		if strings.Contains(res.Stderr, "already initialized") || !sleepCtx(ctx, time.Second) {
			break
		}
	}
	if last != nil {
		return last
	}
	return c.WaitReady(ctx, time.Minute)
}

// cleanEnv is the runner's environment without VOWDB_* variables, so that
// an operator's settings do not reach the nodes and client commands.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VOWDB_") {
			env = append(env, kv)
		}
	}
	return env
}

// Restart starts node i (it must not be running) and waits until it
// serves /livez. Its output is appended to its log file.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	if n.runningLocked() {
		n.mu.Unlock()
		return fmt.Errorf("torture: %s is already running", n.host.Name)
	}
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	fmt.Fprintf(f, "=== %s torture: start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(n.args, " "))
	cmd := c.cfg.Net.Command(i, c.cfg.Binary, n.args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = nodeProcAttr()
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		_ = f.Close()
		return fmt.Errorf("torture: start %s: %w", n.host.Name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused, n.killing = cmd, done, false, false
	pid := cmd.Process.Pid
	n.mu.Unlock()
	c.logf("%s started, pid %d", n.host.Name, pid)
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		n.mu.Lock()
		if !n.killing {
			msg := fmt.Sprintf("%s (pid %d) exited on its own at %s: %v", n.host.Name, pid, time.Now().Format(time.TimeOnly), err)
			n.unexpected = append(n.unexpected, msg)
			c.logf("%s", msg)
		}
		n.mu.Unlock()
		close(done)
	}()
	return c.waitServing(ctx, n, done, pid)
}

// waitServing waits until the node answers /livez, and checks that the
// process the runner holds is the vowdb binary itself (so signals reach it).
func (c *Cluster) waitServing(ctx context.Context, n *node, done chan struct{}, pid int) error {
	deadline := time.Now().Add(serveTimeout)
	for {
		resp, err := c.hc.Get("http://" + n.host.HTTPAddr() + "/livez")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c.checkExe(n, pid)
			}
		}
		select {
		case <-done:
			return fmt.Errorf("torture: %s exited before serving; last lines of %s:\n%s", n.host.Name, n.log, tail(n.log, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("torture: %s not serving /livez after %v: %v", n.host.Name, serveTimeout, err)
		}
	}
}

func (c *Cluster) checkExe(n *node, pid int) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	got, err1 := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	want, err2 := os.Stat(c.cfg.Binary)
	if err1 != nil || err2 != nil {
		return nil // cannot tell; not a reason to fail the run
	}
	if !os.SameFile(got, want) {
		return fmt.Errorf("torture: %s: process %d is not %s (does `ip netns exec` fork instead of exec?); signals would miss the node", n.host.Name, pid, c.cfg.Binary)
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (n *node) runningLocked() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Running reports whether node i's process is alive (paused counts).
func (c *Cluster) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

// PID is node i's current process id, 0 if it is not running.
func (c *Cluster) PID(i int) int {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return 0
	}
	return n.cmd.Process.Pid
}

// signal sends sig to node i's process (by PID) if it is running.
func (c *Cluster) signal(i int, sig syscall.Signal, killing bool) (pid int, done chan struct{}, err error) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return 0, nil, fmt.Errorf("torture: %s is not running", n.host.Name)
	}
	pid = n.cmd.Process.Pid
	if killing {
		n.killing = true
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return pid, n.done, fmt.Errorf("torture: %s %s (pid %d): %w", sigName(sig), n.host.Name, pid, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	c.logf("%s %s (pid %d)", sigName(sig), n.host.Name, pid)
	return pid, n.done, nil
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	case syscall.SIGCONT:
		return "SIGCONT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// Kill sends SIGKILL to node i and waits until it has exited.
func (c *Cluster) Kill(i int) (pid int, err error) {
	pids, err := c.KillAll([]int{i})
	return pids[0], err
}

// KillAll sends SIGKILL to every node in is before it waits for any, so
// that they die together (a power loss), then waits until all have exited.
func (c *Cluster) KillAll(is []int) (pids []int, err error) {
	var errs []error
	dones := make([]chan struct{}, len(is))
	for k, i := range is {
		pid, done, err := c.signal(i, syscall.SIGKILL, true)
		pids, dones[k] = append(pids, pid), done
		errs = append(errs, err)
	}
	deadline := time.After(exitTimeout)
	for k, done := range dones {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-deadline:
			errs = append(errs, fmt.Errorf("torture: %s (pid %d) still running %v after SIGKILL", c.Name(is[k]), pids[k], exitTimeout))
		}
	}
	return pids, errors.Join(errs...)
}

// Pause stops node i with SIGSTOP.
func (c *Cluster) Pause(i int) (pid int, err error) {
	pid, _, err = c.signal(i, syscall.SIGSTOP, false)
	return pid, err
}

// Resume continues node i with SIGCONT.
func (c *Cluster) Resume(i int) error {
	_, _, err := c.signal(i, syscall.SIGCONT, false)
	return err
}

// Paused reports whether node i is stopped by Pause.
func (c *Cluster) Paused(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused && n.runningLocked()
}

// UnexpectedExits describes every exit of a node that neither Kill nor
// Stop caused: a crash.
func (c *Cluster) UnexpectedExits() []string {
	var out []string
	for _, n := range c.nodes {
		n.mu.Lock()
		out = append(out, n.unexpected...)
		n.mu.Unlock()
	}
	return out
}

// Stop stops every running node: SIGCONT if paused, SIGTERM, and SIGKILL
// if it has not exited stopGrace later. It returns once every process has
// exited, or reports those that did not.
func (c *Cluster) Stop() error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		wg.Go(func() {
			if c.Paused(i) {
				_ = c.Resume(i)
			}
			pid, done, err := c.signal(i, syscall.SIGTERM, true)
			if err != nil {
				if done == nil {
					return // exited meanwhile
				}
			}
			select {
			case <-done:
				return
			case <-time.After(stopGrace):
			}
			c.logf("%s (pid %d) still running %v after SIGTERM", c.Name(i), pid, stopGrace)
			if _, err := c.Kill(i); err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// CLIResult is the outcome of one run of the binary as a client.
type CLIResult struct {
	Args           []string
	Code           int
	Stdout, Stderr string
	Err            error // the command could not run at all
}

func (r CLIResult) err() error {
	if r.Err == nil && r.Code == 0 {
		return nil
	}
	return fmt.Errorf("vowdb %s: exit %d: %v %s", strings.Join(r.Args, " "), r.Code, r.Err, strings.TrimSpace(r.Stderr))
}

// CLI runs the binary as a client from the runner's namespace.
func (c *Cluster) CLI(ctx context.Context, args ...string) CLIResult {
	return runCLI(ctx, c.cfg.Binary, args...)
}

// runCLI runs binary with args (bounded to 30 s) and collects its output.
func runCLI(ctx context.Context, binary string, args ...string) CLIResult {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := CLIResult{Args: args, Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		res.Err = err
	}
	return res
}

// ready reports whether node i answers /readyz with 200.
func (c *Cluster) ready(i int) error {
	resp, err := c.hc.Get("http://" + c.nodes[i].host.HTTPAddr() + "/readyz")
	if err != nil {
		return fmt.Errorf("%s /readyz: %w", c.Name(i), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("%s /readyz: %d %s", c.Name(i), resp.StatusCode, strings.TrimSpace(b.String()))
	}
	return nil
}

// rangeInfo is the part of `vowdb range ls -w json` the runner reads.
type rangeInfo struct {
	ID     uint64   `json:"id"`
	Voters []uint64 `json:"voters"`
	Leader uint64   `json:"leader"`
}

// leaders checks with `vowdb range ls` that every range has a leader, and
// returns how many ranges there are.
func (c *Cluster) leaders(ctx context.Context) (int, error) {
	res := c.CLI(ctx, "range", "ls", "-w", "json", "--timeout", "5s", "--endpoints", strings.Join(c.Endpoints(), ","))
	if err := res.err(); err != nil {
		return 0, err
	}
	var ranges []rangeInfo
	if err := json.Unmarshal([]byte(res.Stdout), &ranges); err != nil {
		return 0, fmt.Errorf("vowdb range ls: %v: %s", err, res.Stdout)
	}
	var leaderless []string
	for _, r := range ranges {
		if r.Leader == 0 {
			leaderless = append(leaderless, "r"+strconv.FormatUint(r.ID, 10))
		}
	}
	if len(ranges) == 0 {
		return 0, errors.New("vowdb range ls: no ranges")
	}
	if len(leaderless) > 0 {
		return len(ranges), fmt.Errorf("ranges without a leader: %s", strings.Join(leaderless, ", "))
	}
	return len(ranges), nil
}

// nodeInfo is the part of `vowdb node ls -w json` the runner reads.
type nodeInfo struct {
	Address  string `json:"address"`
	Replicas int    `json:"replicas"`
	Leaders  int    `json:"leaders"`
}

// Placement describes how many replicas and leaderships each node holds
// ("n1 6/6" is 6 replicas, 6 leaders), from `vowdb node ls`: a fault on a
// node that holds nothing disturbs nobody, so faults.log shows it before
// each fault.
func (c *Cluster) Placement(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res := c.CLI(ctx, "node", "ls", "-w", "json", "--timeout", "3s", "--endpoints", strings.Join(c.Endpoints(), ","))
	if err := res.err(); err != nil {
		return "", err
	}
	var nodes []nodeInfo
	if err := json.Unmarshal([]byte(res.Stdout), &nodes); err != nil {
		return "", fmt.Errorf("vowdb node ls: %v: %s", err, res.Stdout)
	}
	byAddr := map[string]nodeInfo{}
	for _, n := range nodes {
		byAddr[n.Address] = n
	}
	var parts []string
	for _, n := range c.nodes {
		info, ok := byAddr[n.host.Addr()]
		if !ok {
			parts = append(parts, n.host.Name+" ?")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", n.host.Name, info.Replicas, info.Leaders))
	}
	return "replicas/leaders: " + strings.Join(parts, ", "), nil
}

// check is one round of the readiness test: every node answers /readyz
// (all: every node must be running) and every range has a leader.
func (c *Cluster) check(ctx context.Context, all bool) (int, error) {
	for i := range c.nodes {
		if !c.Running(i) {
			if all {
				return 0, fmt.Errorf("%s is not running", c.Name(i))
			}
			continue
		}
		if err := c.ready(i); err != nil {
			return 0, err
		}
	}
	return c.leaders(ctx)
}

// WaitReady waits up to timeout until every running node answers /readyz
// and `vowdb range ls` shows a leader for every range.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	_, err := c.poll(ctx, timeout, false)
	return err
}

// Audit is the post-run audit: every node is running and answers /readyz,
// and every range has a leader (retried up to timeout while the cluster
// settles); then no lock is held or awaited and no transaction is in
// flight, and the replicas of every range agree (see audit.go for the
// checks and their settle times). It returns a description of what it
// checked, or an error naming everything left behind.
func (c *Cluster) Audit(ctx context.Context, timeout time.Duration) (string, error) {
	n, err := c.poll(ctx, timeout, true)
	if err != nil {
		return "", err
	}
	done := []string{fmt.Sprintf("%d nodes answer /readyz; vowdb range ls shows a leader for each of %d ranges", len(c.nodes), n)}
	a := c.auditor()
	var errs []error
	for _, step := range []func(context.Context) (string, error){a.settled, a.consistent} {
		s, err := step(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			done = append(done, s)
		}
	}
	if len(errs) > 0 {
		return "", errors.Join(errs...)
	}
	return strings.Join(done, "\n"), nil
}

func (c *Cluster) poll(ctx context.Context, timeout time.Duration, all bool) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := c.check(ctx, all)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not ready after %v: %w", timeout, err)
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
}

// sleepCtx sleeps for d or until ctx is done; it reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
