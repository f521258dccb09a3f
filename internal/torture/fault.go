package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault is one kind of failure the runner injects and later heals. Start
// and Heal alternate: the runner never starts a fault twice without a Heal
// in between, and runs one fault at a time.
type Fault interface {
	// Name is the fault's name on the command line: kill, pause, ...
	Name() string
	// Start injects the fault, making its random choices (which node,
	// which partition) with rng only, and describes what it did.
	Start(ctx context.Context, rng *rand.Rand) (description string, err error)
	// Heal undoes what the last Start did.
	Heal() error
}

// Prober is implemented by faults that a machine may not be able to inject.
// Probe returns why not; the runner then reports the fault as skipped.
type Prober interface {
	Probe(ctx context.Context) error
}

// nodeFlagger is implemented by faults that need every node started with
// extra `vowdb start` flags.
type nodeFlagger interface {
	nodeFlags() []string
}

// preparer is implemented by faults that look at the cluster before they
// start (which node leads which range). The runner calls prepare right
// before Start, so that the time it takes does not eat into the hold.
type preparer interface {
	prepare(ctx context.Context) error
}

// FaultNames lists the faults NewFault knows, in the order the summary
// shows them.
var FaultNames = []string{"kill", "pause", "partition", "netem", "lose-unsynced",
	"kill-leader", "pause-leader", "partition-leader", "power-loss"}

// ElectionTimeout is the nodes' Raft election timeout with the server's
// default timing (10 ticks of 100 ms), which the runner does not change.
const ElectionTimeout = time.Second

// MinPause is the shortest pause: long enough for the rest of the cluster
// to elect new leaders while the paused node still thinks it leads.
const MinPause = 2*ElectionTimeout + 500*time.Millisecond

// MinHold is the shortest hold of fault name: MinPause for the faults that
// pause a node, 0 for the others.
func MinHold(name string) time.Duration {
	switch name {
	case "pause", "pause-leader":
		return MinPause
	}
	return 0
}

// LoseUnsyncedFlag is the hidden `vowdb start` flag that makes a node keep
// unsynced file data in memory (storage.LoseUnsyncedFS), so a SIGKILL
// loses it.
const LoseUnsyncedFlag = "--unsafe-lose-unsynced"

// NewFault returns the fault called name, acting on c and net.
func NewFault(name string, c *Cluster, net Network, binary string) (Fault, error) {
	nt, _ := net.(*Net)
	switch name {
	case "kill":
		return &killFault{c: c}, nil
	case "pause":
		return &pauseFault{c: c}, nil
	case "partition":
		return &partitionFault{c: c, net: nt}, nil
	case "netem":
		return &netemFault{c: c, net: nt}, nil
	case "lose-unsynced":
		return &loseUnsyncedFault{c: c, binary: binary}, nil
	case "kill-leader":
		return &leaderFault{name: name, c: c, view: leaderView{c: c}}, nil
	case "pause-leader":
		return &leaderFault{name: name, pause: true, c: c, view: leaderView{c: c}}, nil
	case "partition-leader":
		return &partitionLeaderFault{c: c, net: nt, view: leaderView{c: c}}, nil
	case "power-loss":
		return &powerLossFault{c: c, binary: binary}, nil
	}
	return nil, fmt.Errorf("torture: unknown fault %q (want %s)", name, strings.Join(FaultNames, ", "))
}

// restart restarts the nodes in victims that are not running.
func restart(c *Cluster, victims []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), serveTimeout+5*time.Second)
	defer cancel()
	var errs []error
	for _, i := range victims {
		if !c.Running(i) {
			errs = append(errs, c.Restart(ctx, i))
		}
	}
	return errors.Join(errs...)
}

// restartTogether restarts the nodes in victims that are not running all at
// once, as when the power comes back, and waits until each serves.
func restartTogether(c *Cluster, victims []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), serveTimeout+5*time.Second)
	defer cancel()
	errs := make([]error, len(victims))
	var wg sync.WaitGroup
	for k, i := range victims {
		if !c.Running(i) {
			wg.Go(func() { errs[k] = c.Restart(ctx, i) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// killFault SIGKILLs one node and restarts it at Heal.
type killFault struct {
	c      *Cluster
	victim []int
}

func (f *killFault) Name() string { return "kill" }

func (f *killFault) Start(_ context.Context, rng *rand.Rand) (string, error) {
	i := rng.IntN(f.c.N())
	f.victim = []int{i}
	pid, err := f.c.Kill(i)
	return fmt.Sprintf("SIGKILL %s (pid %d)", f.c.Name(i), pid), err
}

func (f *killFault) Heal() error {
	err := restart(f.c, f.victim)
	f.victim = nil
	return err
}

// pauseFault SIGSTOPs one node (held at least MinPause) and SIGCONTs it at
// Heal.
type pauseFault struct {
	c      *Cluster
	victim int
	active bool
}

func (f *pauseFault) Name() string { return "pause" }

func (f *pauseFault) Start(_ context.Context, rng *rand.Rand) (string, error) {
	i := rng.IntN(f.c.N())
	pid, err := f.c.Pause(i)
	f.victim, f.active = i, err == nil
	return fmt.Sprintf("SIGSTOP %s (pid %d)", f.c.Name(i), pid), err
}

func (f *pauseFault) Heal() error {
	if !f.active {
		return nil
	}
	f.active = false
	return f.c.Resume(f.victim)
}

// Partition kinds.
const (
	partIsolate = "isolate"         // one node alone
	partHalves  = "halves"          // n/2 nodes and the rest
	partBridge  = "bridge"          // two halves that share one node
	partRing    = "majorities-ring" // each node sees a majority, no two the same
)

// partitionKinds are the kinds that make sense for n nodes.
func partitionKinds(n int) []string {
	switch {
	case n < 2:
		return nil
	case n < 3:
		return []string{partIsolate}
	case n < 4:
		return []string{partIsolate, partBridge}
	}
	return []string{partIsolate, partHalves, partBridge, partRing}
}

// planPartition returns which pairs of nodes are cut off from each other
// (symmetric) for a partition of kind over the nodes in the order perm,
// and a description naming the nodes.
func planPartition(kind string, perm []int, names func(int) string) (blocked [][]bool, desc string) {
	n := len(perm)
	blocked = make([][]bool, n)
	for i := range blocked {
		blocked[i] = make([]bool, n)
	}
	group := func(idx []int) string {
		var s []string
		for _, i := range idx {
			s = append(s, names(i))
		}
		slices.Sort(s)
		return "{" + strings.Join(s, " ") + "}"
	}
	// split cuts every node of a off from every node of b.
	split := func(a, b []int) {
		for _, i := range a {
			for _, j := range b {
				blocked[i][j], blocked[j][i] = true, true
			}
		}
	}
	switch kind {
	case partIsolate:
		split(perm[:1], perm[1:])
		desc = fmt.Sprintf("isolate %s from %s", names(perm[0]), group(perm[1:]))
	case partHalves:
		k := n / 2 // the smaller half: a minority, or no majority anywhere when n is even
		split(perm[:k], perm[k:])
		desc = fmt.Sprintf("halves %s | %s", group(perm[:k]), group(perm[k:]))
	case partBridge:
		// perm[0] is the bridge; the others are split in two.
		bridge, rest := perm[0], perm[1:]
		a, b := rest[:len(rest)/2], rest[len(rest)/2:]
		split(a, b)
		desc = fmt.Sprintf("bridge %s | %s | %s, %s reaches both sides", group(a), names(bridge), group(b), names(bridge))
	case partRing:
		// Around the ring perm, each node reaches the d nearest nodes on
		// each side: 2d+1 >= a majority, and no two nodes see the same
		// set of nodes.
		d := (n/2 + 1) / 2 // ceil((majority-1)/2) with majority = n/2+1
		for x := 0; x < n; x++ {
			for y := 0; y < n; y++ {
				dist := (x - y + n) % n
				dist = min(dist, n-dist)
				if dist > d {
					blocked[perm[x]][perm[y]] = true
				}
			}
		}
		var ring []string
		for _, i := range perm {
			ring = append(ring, names(i))
		}
		desc = fmt.Sprintf("majorities-ring %s (each node reaches %d neighbours on each side)", strings.Join(ring, "-"), d)
	default:
		panic("torture: unknown partition kind " + kind)
	}
	return blocked, desc
}

// partitionFault cuts the network with iptables rules in the nodes'
// namespaces: one node isolated, a minority from a majority, a bridge, or a
// majorities ring, chosen by the rng.
type partitionFault struct {
	c   *Cluster
	net *Net
}

func (f *partitionFault) Name() string { return "partition" }

func (f *partitionFault) Probe(context.Context) error {
	if f.net == nil {
		return errors.New("loopback mode: the nodes share one network stack")
	}
	if len(partitionKinds(f.c.N())) == 0 {
		return errors.New("needs at least 2 nodes")
	}
	return f.net.ProbePartition()
}

func (f *partitionFault) Start(_ context.Context, rng *rand.Rand) (string, error) {
	kinds := partitionKinds(f.c.N())
	kind := kinds[rng.IntN(len(kinds))]
	blocked, desc := planPartition(kind, rng.Perm(f.c.N()), f.c.Name)
	return desc, f.net.Block(blocked)
}

func (f *partitionFault) Heal() error { return f.net.Unblock() }

// netemFault degrades one node's link with netem: delay with jitter,
// loss, duplication and reordering, drawn by the rng.
type netemFault struct {
	c      *Cluster
	net    *Net
	victim int
	active bool
}

func (f *netemFault) Name() string { return "netem" }

func (f *netemFault) Probe(context.Context) error {
	if f.net == nil {
		return errors.New("loopback mode: the nodes share one network stack")
	}
	return f.net.ProbeNetem()
}

// netemParams draws netem parameters: 20-200 ms delay with up to 25%
// jitter, up to 10% loss, 5% duplication and 25% reordering.
func netemParams(rng *rand.Rand) []string {
	delay := 20 + rng.IntN(181)
	return []string{
		"delay", fmt.Sprintf("%dms", delay), fmt.Sprintf("%dms", rng.IntN(delay/4+1)),
		"loss", fmt.Sprintf("%d%%", rng.IntN(11)),
		"duplicate", fmt.Sprintf("%d%%", rng.IntN(6)),
		"reorder", fmt.Sprintf("%d%%", rng.IntN(26)),
	}
}

func (f *netemFault) Start(_ context.Context, rng *rand.Rand) (string, error) {
	i := rng.IntN(f.c.N())
	params := netemParams(rng)
	err := f.net.Netem(i, params)
	f.victim, f.active = i, err == nil
	return fmt.Sprintf("netem on %s: %s", f.c.Name(i), strings.Join(params, " ")), err
}

func (f *netemFault) Heal() error {
	if !f.active {
		return nil
	}
	f.active = false
	return f.net.ClearNetem(f.victim)
}

// loseUnsyncedFault SIGKILLs one or more nodes at once (all of them, at
// times: a power loss), each losing every byte it had not fsynced, and
// restarts them at Heal. It needs the nodes started with LoseUnsyncedFlag;
// with it, every kill (also the kill fault's) loses unsynced data.
type loseUnsyncedFault struct {
	c       *Cluster
	binary  string
	victims []int
}

func (f *loseUnsyncedFault) Name() string { return "lose-unsynced" }

func (f *loseUnsyncedFault) nodeFlags() []string { return []string{LoseUnsyncedFlag} }

func (f *loseUnsyncedFault) Probe(ctx context.Context) error { return probeLoseUnsynced(ctx, f.binary) }

// probeLoseUnsynced asks binary whether it knows LoseUnsyncedFlag: with the
// flag and an empty --data-dir, `vowdb start` fails its flag check before
// starting anything; without it, cobra reports an unknown flag.
func probeLoseUnsynced(ctx context.Context, binary string) error {
	res := runCLI(ctx, binary, "start", LoseUnsyncedFlag, "--data-dir=", "--listen-addr=")
	if res.Err != nil {
		return res.Err
	}
	if strings.Contains(res.Stderr, "unknown flag") {
		return fmt.Errorf("%s has no %s flag (vowdb start must wire storage.NewLoseUnsyncedFS)", binary, LoseUnsyncedFlag)
	}
	if res.Code == 0 {
		return fmt.Errorf("%s start %s with an empty --data-dir unexpectedly succeeded", binary, LoseUnsyncedFlag)
	}
	return nil
}

func (f *loseUnsyncedFault) Start(_ context.Context, rng *rand.Rand) (string, error) {
	n := f.c.N()
	f.victims = rng.Perm(n)[:1+rng.IntN(n)]
	slices.Sort(f.victims)
	pids, err := f.c.KillAll(f.victims)
	var names []string
	for k, i := range f.victims {
		names = append(names, fmt.Sprintf("%s (pid %d)", f.c.Name(i), pids[k]))
	}
	what := "SIGKILL " + strings.Join(names, ", ")
	if len(f.victims) == n {
		what += ": every node"
	}
	return what + " at once; unsynced writes lost", err
}

func (f *loseUnsyncedFault) Heal() error {
	err := restart(f.c, f.victims)
	f.victims = nil
	return err
}

// leaderFault SIGKILLs (kill-leader) or SIGSTOPs (pause-leader, held at
// least MinPause) a node that leads ranges right now: with even odds the
// node leading the most ranges or the leader of a range drawn at random
// (pickLeaderVictim). At Heal it restarts or continues the node.
type leaderFault struct {
	name    string
	pause   bool
	c       *Cluster
	view    leaderView
	leaders []rangeLeader // found by prepare, used by the next Start
	victim  int
	active  bool
}

func (f *leaderFault) Name() string { return f.name }

func (f *leaderFault) prepare(ctx context.Context) (err error) {
	f.leaders, err = f.view.wait(ctx, anyLeader)
	return err
}

func (f *leaderFault) Start(ctx context.Context, rng *rand.Rand) (string, error) {
	ls := f.leaders
	f.leaders = nil
	if ls == nil {
		var err error
		if ls, err = f.view.wait(ctx, anyLeader); err != nil {
			return "no leader found", err
		}
	}
	i, why, err := pickLeaderVictim(rng, ls, f.c.N(), f.c.Name)
	if err != nil {
		return "no leader found", err
	}
	f.victim = i
	if f.pause {
		pid, err := f.c.Pause(i)
		f.active = err == nil
		return fmt.Sprintf("SIGSTOP %s (pid %d), which %s", f.c.Name(i), pid, why), err
	}
	f.active = true
	pid, err := f.c.Kill(i)
	return fmt.Sprintf("SIGKILL %s (pid %d), which %s", f.c.Name(i), pid, why), err
}

func (f *leaderFault) Heal() error {
	if !f.active {
		return nil
	}
	f.active = false
	if f.pause {
		return f.c.Resume(f.victim)
	}
	return restart(f.c, []int{f.victim})
}

// partitionLeaderFault isolates, with iptables rules like partition's
// isolate kind, the leader of a coordinator range: the meta range (range
// 1, which also runs the deadlock detector) or a data range holding
// transaction records (pickCoordinatorLeader).
type partitionLeaderFault struct {
	c       *Cluster
	net     *Net
	view    leaderView
	leaders []rangeLeader
}

func (f *partitionLeaderFault) Name() string { return "partition-leader" }

func (f *partitionLeaderFault) Probe(context.Context) error {
	if f.net == nil {
		return errors.New("loopback mode: the nodes share one network stack")
	}
	if f.c.N() < 2 {
		return errors.New("needs at least 2 nodes")
	}
	return f.net.ProbePartition()
}

func (f *partitionLeaderFault) prepare(ctx context.Context) (err error) {
	f.leaders, err = f.view.wait(ctx, anyLeader)
	return err
}

// isolateFirst orders the nodes for planPartition's isolate kind: node
// first, then the others.
func isolateFirst(node, n int) []int {
	perm := []int{node}
	for i := 0; i < n; i++ {
		if i != node {
			perm = append(perm, i)
		}
	}
	return perm
}

func (f *partitionLeaderFault) Start(ctx context.Context, rng *rand.Rand) (string, error) {
	ls := f.leaders
	f.leaders = nil
	if ls == nil {
		var err error
		if ls, err = f.view.wait(ctx, anyLeader); err != nil {
			return "no leader found", err
		}
	}
	i, why, err := pickCoordinatorLeader(rng, ls, f.c.Name)
	if err != nil {
		return "no leader found", err
	}
	blocked, desc := planPartition(partIsolate, isolateFirst(i, f.c.N()), f.c.Name)
	return fmt.Sprintf("%s; %s is the %s", desc, f.c.Name(i), why), f.net.Block(blocked)
}

func (f *partitionLeaderFault) Heal() error { return f.net.Unblock() }

// powerLossFault is a whole-cluster power loss: it SIGKILLs every node at
// the same moment, each losing every byte it had not fsynced (the nodes run
// with LoseUnsyncedFlag), and at Heal restarts them all together.
type powerLossFault struct {
	c      *Cluster
	binary string
	down   []int
}

func (f *powerLossFault) Name() string { return "power-loss" }

func (f *powerLossFault) nodeFlags() []string { return []string{LoseUnsyncedFlag} }

func (f *powerLossFault) Probe(ctx context.Context) error { return probeLoseUnsynced(ctx, f.binary) }

func (f *powerLossFault) Start(context.Context, *rand.Rand) (string, error) {
	f.down = nil
	for i := 0; i < f.c.N(); i++ {
		f.down = append(f.down, i)
	}
	pids, err := f.c.KillAll(f.down)
	var names []string
	for k, i := range f.down {
		names = append(names, fmt.Sprintf("%s (pid %d)", f.c.Name(i), pids[k]))
	}
	return "power loss: SIGKILL every node at once, " + strings.Join(names, ", ") + "; unsynced writes lost", err
}

func (f *powerLossFault) Heal() error {
	err := restartTogether(f.c, f.down)
	f.down = nil
	return err
}
