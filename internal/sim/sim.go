package sim

import (
	"bytes"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/check"
	"github.com/vowdb/vowdb/internal/replica"
)

// Config describes one simulated run.
type Config struct {
	Seed uint64
	// Nodes and Ranges: nodes in the cluster (3 or more) and user ranges,
	// each replicated on 3 nodes. Zero picks 3 and 3.
	Nodes, Ranges int
	// Workload is "bank" or "append" ("" picks by seed).
	Workload string
	// Clients run concurrently; zero picks 4.
	Clients int
	// Ticks is how long the clients run with faults on; zero picks 300.
	Ticks int
	// Faults turns on network faults, partitions and crashes.
	Faults bool
	// Splits lets faults include range splits (up to maxSplits a run).
	Splits bool
	// PipelineRecords is each tenure's txnhost.Config.PipelineRecords
	// (0: 1, the server's default).
	PipelineRecords int
	// PrepareAnchor is txnhost.GatewayConfig.PrepareAnchor: the classic
	// commit, with the anchor prepared and a decision record of its own
	// (false: the anchor commits with the decision, the server's default).
	PrepareAnchor bool
	// KeepAlive has clients send keep-alives to their ranges every
	// keepAliveTicks while a transaction is open, and ranges abort an
	// ACTIVE transaction silent for idleTicks (vowdb start
	// --txn-idle-timeout); false: neither, as before they existed.
	KeepAlive bool
	// Bug deliberately breaks the system, to prove the checks catch it:
	// "no-locks" grants every lock at once (strict 2PL off).
	Bug string
	// Trace, if set, receives every event of the run, one per line.
	Trace io.Writer
}

func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Ranges == 0 {
		c.Ranges = 3
	}
	if c.Clients == 0 {
		c.Clients = 4
	}
	if c.Ticks == 0 {
		c.Ticks = 300
	}
	if c.Workload == "" {
		if c.Seed%2 == 0 {
			c.Workload = "bank"
		} else {
			c.Workload = "append"
		}
	}
}

// Report is what a run did and found.
type Report struct {
	Seed     uint64
	Workload string
	// Trace is the FNV-64a hash of the event trace; Events its length.
	Trace  uint64
	Events int
	Ticks  int64
	// Transactions by client outcome.
	Committed, Failed, Ambiguous int
	Crashes, Partitions          int
	// Paths counts how often each protocol path ran (see world.saw), so
	// tests can check that the seeds exercise what they are meant to.
	Paths map[string]int
	// Failure is empty when every check passed.
	Failure string
	// Last holds the last events, for a failure's report.
	Last []string
}

func (r *Report) String() string {
	s := fmt.Sprintf("seed %d %s: %d ticks, %d events (trace %016x), txns %d ok / %d fail / %d info, %d crashes, %d partitions",
		r.Seed, r.Workload, r.Ticks, r.Events, r.Trace, r.Committed, r.Failed, r.Ambiguous, r.Crashes, r.Partitions)
	if r.Failure != "" {
		s += "\nFAILED: " + r.Failure + "\nlast events:\n  " + strings.Join(r.Last, "\n  ")
	}
	return s
}

// Timing, in ticks.
const (
	electionTicks  = 10 // a follower campaigns after 10..19 ticks without its leader
	heartbeatTicks = 2
	proposalTicks  = 40 // a proposal not applied by then is ambiguous
	inquireTicks   = 10
	resendTicks    = 5
	voteTimeout    = 40
	decideTimeout  = 40
	lockTimeout    = 30
	maxTxnTicks    = 200 // an ACTIVE txn older than this is aborted by its ranges
	keepAliveTicks = 10  // Config.KeepAlive: a client's keep-alive period
	idleTicks      = 40  // Config.KeepAlive: a range aborts an ACTIVE txn silent this long
	requestTimeout = 60  // a client gives up on a request
	detectorPeriod = 5
	restorePeriod  = 20
	// Finished txn state older than retentionTicks is collected every
	// collectPeriod ticks (as vowdb start --txn-retention): attempts are
	// begin ticks, and ranges refuse operations of attempts older than half
	// the retention, as the server does.
	retentionTicks  = 250
	collectPeriod   = 25
	settleTicks     = 3000
	maxFinishedTxns = 10000
	lastEvents      = 60
	maxSplits       = 2
)

// world is the whole simulated cluster. Everything runs on the caller's
// goroutine.
type world struct {
	cfg       Config
	rng       *rand.Rand
	now       int64
	nodes     []*node // nodes[i].id == i+1
	ranges    []rangeInfo
	net       network
	clients   []*client
	wl        workload
	hist      *[]check.Op
	healed    bool
	stop      bool // clients start nothing new
	tenureGen uint64
	local     []func() // run at the start of the next tick
	splits    int      // splits started
	nextRange uint64   // the id the next split's right range gets
	txnSeq    uint64

	trace  hash.Hash64
	events int
	last   []string
	rep    *Report
	failed string
}

type rangeInfo struct {
	id         uint64
	gen        uint64 // the descriptor's generation
	start, end []byte
	replicas   []uint64
}

// Run runs one simulation and reports what it found.
func Run(cfg Config) (rep *Report) {
	cfg.defaults()
	w := &world{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), trace: fnv.New64a(),
		rep: &Report{Seed: cfg.Seed, Workload: cfg.Workload, Paths: map[string]int{}}}
	defer func() {
		if p := recover(); p != nil {
			w.fail("panic: %v", p)
		}
		for _, n := range w.nodes {
			n.close()
		}
		w.rep.Trace, w.rep.Events, w.rep.Ticks, w.rep.Failure, w.rep.Last = w.trace.Sum64(), w.events, w.now, w.failed, w.last
		rep = w.rep
	}()
	if err := w.setup(); err != nil {
		w.fail("setup: %v", err)
		return
	}
	for w.now < int64(cfg.Ticks) && w.failed == "" {
		w.step()
	}
	if w.failed != "" {
		return
	}
	w.heal()
	w.stop = true
	settled := false
	for i := 0; i < settleTicks && w.failed == ""; i++ {
		w.step()
		if i%10 == 0 && w.quiet() {
			settled = true
			break
		}
	}
	if w.failed != "" {
		return
	}
	if !settled {
		w.fail("the healed cluster did not settle in %d ticks: %s", settleTicks, w.unsettled())
		return
	}
	w.audit()
	return
}

// event adds one line to the trace.
func (w *world) event(format string, args ...any) {
	s := fmt.Sprintf("%d ", w.now) + fmt.Sprintf(format, args...)
	w.trace.Write([]byte(s))
	w.trace.Write([]byte{'\n'})
	w.events++
	w.last = append(w.last, s)
	if len(w.last) > lastEvents {
		w.last = w.last[1:]
	}
	if w.cfg.Trace != nil {
		fmt.Fprintln(w.cfg.Trace, s)
	}
}

// saw counts one run of a protocol path.
func (w *world) saw(path string) { w.rep.Paths[path]++ }

func (w *world) fail(format string, args ...any) {
	if w.failed == "" {
		w.failed = fmt.Sprintf(format, args...)
		w.event("FAIL %s", w.failed)
	}
}

// step runs one tick.
func (w *world) step() {
	w.now++
	if w.cfg.Faults && !w.healed {
		w.injectFaults()
	}
	local := w.local
	w.local = nil
	for _, fn := range local {
		fn()
	}
	w.net.deliver(w)
	for _, n := range w.nodes {
		if n.up {
			n.tick()
		}
	}
	if w.splits > 0 {
		w.refreshRanges()
	}
	if w.now%detectorPeriod == 0 {
		w.detectDeadlocks()
	}
	for _, c := range w.clients {
		c.step()
	}
}

// later runs fn at the start of the next tick.
func (w *world) later(fn func()) { w.local = append(w.local, fn) }

// injectFaults draws this tick's faults.
func (w *world) injectFaults() {
	down := 0
	for _, n := range w.nodes {
		if !n.up {
			down++
		}
	}
	maxDown := (len(w.nodes) - 1) / 2
	switch r := w.rng.IntN(1000); {
	case r < 10 && down < maxDown:
		n := w.nodes[w.rng.IntN(len(w.nodes))]
		if n.up {
			w.rep.Crashes++
			n.crash()
		}
	case r < 40:
		n := w.nodes[w.rng.IntN(len(w.nodes))]
		if !n.up && w.now-n.downAt > 20 {
			n.restart()
		}
	case r < 47 && len(w.net.cut) == 0:
		w.rep.Partitions++
		w.partition()
	case r < 60 && len(w.net.cut) > 0:
		w.net.cut = nil
		w.event("partition healed")
	case r >= 995 && w.cfg.Splits && w.splits < maxSplits:
		w.split()
	}
}

// split splits the range holding a random hot key at that key, through
// the range's leader (as `vowdb range split` does): the left side keeps
// its id, the right side gets a fresh one. Transactions still ACTIVE on
// the range are aborted (their tenure ends with the span), prepared ones
// continue through their records, which the split divides.
func (w *world) split() {
	hot := w.wl.keys()
	key := []byte(hot[w.rng.IntN(len(hot))])
	ri := w.rangeFor(key)
	n := w.leaderOf(ri.id)
	if bytes.Equal(ri.start, key) || n == nil {
		return
	}
	if w.nextRange == 0 {
		w.nextRange = uint64(2 + w.cfg.Ranges)
	}
	id := w.nextRange
	w.nextRange++
	w.splits++
	w.event("split range %d at %q into range %d, through node %d", ri.id, key, id, n.id)
	cmd := &vowdbpb.Command{Op: &vowdbpb.Command_Split{Split: &vowdbpb.SplitOp{SplitKey: key, NewRangeId: id}}}
	n.propose(ri.id, cmd, func(res replica.Result) {
		w.event("split of range %d at %q: %v", ri.id, key, res.Err)
		if res.Err == nil && res.Right != nil {
			w.saw("split")
		}
	})
}

// refreshRanges updates the ranges with the newest descriptor of each
// range known so far or held by a live node (the simulator's global
// knowledge of routing, standing in for the meta range). A range is never
// forgotten: the nodes that applied a split may all be down while another
// still holds the older, wider descriptor.
func (w *world) refreshRanges() {
	newest := map[uint64]*vowdbpb.RangeDescriptor{}
	for _, ri := range w.ranges {
		d := &vowdbpb.RangeDescriptor{RangeId: ri.id, Generation: ri.gen, StartKey: ri.start, EndKey: ri.end}
		for _, id := range ri.replicas {
			d.Replicas = append(d.Replicas, &vowdbpb.ReplicaDescriptor{NodeId: id})
		}
		newest[ri.id] = d
	}
	for _, n := range w.nodes {
		if !n.up {
			continue
		}
		for _, r := range n.sched.Replicas() {
			d := r.Status().Desc
			if d == nil || d.IsMeta {
				continue
			}
			if old := newest[d.RangeId]; old == nil || d.Generation > old.Generation {
				newest[d.RangeId] = d
			}
		}
	}
	var out []rangeInfo
	for _, d := range newest {
		ri := rangeInfo{id: d.RangeId, gen: d.Generation, start: d.StartKey, end: d.EndKey}
		for _, r := range d.Replicas {
			ri.replicas = append(ri.replicas, r.NodeId)
		}
		out = append(out, ri)
	}
	slices.SortFunc(out, func(a, b rangeInfo) int { return bytes.Compare(a.start, b.start) })
	for i := range out {
		// Tiles the keyspace once every split seen anywhere is seen with
		// both sides; until then keep the old view.
		if (i == 0 && len(out[i].start) != 0) || (i > 0 && !bytes.Equal(out[i-1].end, out[i].start)) {
			return
		}
	}
	if len(out[len(out)-1].end) != 0 {
		return
	}
	w.ranges = out
}

// partition cuts a minority of nodes off from the rest.
func (w *world) partition() {
	perm := w.rng.Perm(len(w.nodes))
	k := 1 + w.rng.IntN((len(w.nodes)-1)/2)
	side := map[uint64]bool{}
	var names []string
	for _, i := range perm[:k] {
		side[uint64(i+1)] = true
		names = append(names, fmt.Sprint(i+1))
	}
	w.net.cut = map[[2]uint64]bool{}
	for a := 1; a <= len(w.nodes); a++ {
		for b := 1; b <= len(w.nodes); b++ {
			if side[uint64(a)] != side[uint64(b)] {
				w.net.cut[[2]uint64{uint64(a), uint64(b)}] = true
			}
		}
	}
	w.event("partition: nodes %s cut off", strings.Join(names, ","))
}

// heal ends every fault: partitions, message loss, and crashed nodes.
func (w *world) heal() {
	w.healed = true
	w.net.cut = nil
	for _, n := range w.nodes {
		if !n.up {
			n.restart()
		}
	}
	w.event("healed")
}

// quiet reports whether the healed cluster has nothing left in flight.
func (w *world) quiet() bool { return w.unsettled() == "" }

// unsettled says what is still in flight, or "".
func (w *world) unsettled() string {
	for _, c := range w.clients {
		if c.busy() {
			return fmt.Sprintf("client %d still running a transaction", c.id)
		}
	}
	for _, ri := range w.ranges {
		leader := w.leaderOf(ri.id)
		if leader == nil {
			return fmt.Sprintf("range %d has no leader", ri.id)
		}
		if s := leader.rangeLeftovers(ri.id); s != "" {
			return s
		}
		if s := w.replicasBehind(ri); s != "" {
			return s
		}
	}
	return ""
}

// leaderOf returns the live node that leads rangeID with a current tenure,
// or nil.
func (w *world) leaderOf(rangeID uint64) *node {
	var best *node
	var bestTerm uint64
	for _, n := range w.nodes {
		if !n.up {
			continue
		}
		st := n.status(rangeID)
		if st != nil && st.LeaderID == n.id && st.Term >= bestTerm {
			best, bestTerm = n, st.Term
		}
	}
	return best
}

// rangeFor returns the range holding key.
func (w *world) rangeFor(key []byte) rangeInfo {
	for _, ri := range w.ranges {
		if string(key) >= string(ri.start) && (len(ri.end) == 0 || string(key) < string(ri.end)) {
			return ri
		}
	}
	panic(fmt.Sprintf("sim: no range holds %q", key))
}

func (w *world) rangeByID(id uint64) rangeInfo {
	for _, ri := range w.ranges {
		if ri.id == id {
			return ri
		}
	}
	panic(fmt.Sprintf("sim: no range %d", id))
}
