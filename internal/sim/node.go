package sim

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/vowdb/vowdb/api/vowdbpb"

	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/txnhost"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// errTimeout answers a proposal or read that did not finish in time.
var errTimeout = errors.New("sim: no answer in time")

// node is one simulated vowdb node: its disk survives a crash (minus every
// unsynced byte), everything else is rebuilt by restart.
type node struct {
	w      *world
	id     uint64
	up     bool
	epoch  int // incarnation, bumped by every crash
	downAt int64
	fs     *vfs.MemFS
	eng    *storage.Engine
	sched  *multiraft.Scheduler

	// In-memory state of this incarnation.
	electionDue map[uint64]int64 // range → tick at which this replica campaigns
	props       []*pendingProp
	reads       []*pendingRead
	tenures     map[uint64]*txnhost.Tenure
	building    map[uint64]bool
	gw          *txnhost.Gateway
	restorer    txnhost.Restorer
	lastLeader  map[uint64]uint64 // range → leader last seen, for the trace
}

type pendingProp struct {
	p        *replica.Proposal
	deadline int64
	cb       func(replica.Result)
}

type pendingRead struct {
	r        *replica.Read
	deadline int64
	cb       func(error)
}

func (w *world) newNode(id uint64) *node {
	return &node{w: w, id: id, fs: vfs.NewCrashableMem()}
}

// open starts a new incarnation on the node's disk.
func (n *node) open() error {
	eng, err := storage.Open(storage.Options{Dir: "/data", FS: n.fs, CacheBytes: 1 << 20})
	if err != nil {
		return err
	}
	cfg := multiraft.Config{NodeID: n.id, Logger: quietLog, Metrics: metrics.New(),
		Replica: replica.Config{NodeID: n.id, ElectionTicks: electionTicks, HeartbeatTicks: heartbeatTicks,
			LogKeepEntries: 8, ProposalTimeoutTicks: proposalTicks, ExternalElections: true,
			Logger: quietLog, Metrics: metrics.New()}}
	sched, err := multiraft.New(cfg, eng, raftSender{w: n.w, from: n})
	if err != nil {
		_ = eng.Close()
		return err
	}
	n.eng, n.sched, n.up = eng, sched, true
	n.electionDue = map[uint64]int64{}
	n.props, n.reads = nil, nil
	n.tenures, n.building = map[uint64]*txnhost.Tenure{}, map[uint64]bool{}
	n.restorer = txnhost.Restorer{}
	n.lastLeader = map[uint64]uint64{}
	n.gw, err = txnhost.NewGateway(nodeHost{n}, n.id, txnhost.GatewayConfig{ResendTicks: resendTicks,
		VoteTimeoutTicks: voteTimeout, DecideTimeoutTicks: decideTimeout, PrepareAnchor: n.w.cfg.PrepareAnchor})
	return err
}

// bootstrap writes the initial ranges (first incarnation only).
func (n *node) bootstrap(descs []*vowdbpb.RangeDescriptor) error {
	var mine []*vowdbpb.RangeDescriptor
	for _, d := range descs {
		for _, r := range d.Replicas {
			if r.NodeId == n.id {
				mine = append(mine, d)
			}
		}
	}
	return n.sched.Bootstrap(mine...)
}

// crash stops the node: its disk keeps only what was synced.
func (n *node) crash() {
	n.w.saw("crash")
	n.w.event("crash node %d", n.id)
	crashed := n.fs.CrashClone(vfs.CrashCloneCfg{})
	n.close()
	n.fs = crashed
	n.up = false
	n.epoch++
	n.downAt = n.w.now
}

func (n *node) close() {
	if n.eng != nil {
		_ = n.eng.Close()
	}
	n.eng, n.sched, n.gw = nil, nil, nil
	n.tenures, n.props, n.reads = nil, nil, nil
}

func (n *node) restart() {
	n.w.event("restart node %d", n.id)
	if err := n.open(); err != nil {
		n.w.fail("restart node %d: %v", n.id, err)
	}
}

// status is the published state of this node's replica of rangeID.
func (n *node) status(rangeID uint64) *replica.Status {
	if !n.up {
		return nil
	}
	r := n.sched.ReplicaByID(rangeID)
	if r == nil {
		return nil
	}
	return r.Status()
}

func (n *node) heardLeader(rangeID uint64) {
	n.electionDue[rangeID] = n.w.now + electionTicks + int64(n.w.rng.IntN(electionTicks))
}

// tick runs one tick of the node: elections, the scheduler, finished
// proposals and reads, and the transaction roles.
func (n *node) tick() {
	w := n.w
	for _, r := range n.sched.Replicas() {
		st := r.Status()
		if st.Desc == nil {
			continue
		}
		if due, ok := n.electionDue[r.RangeID]; !ok {
			n.heardLeader(r.RangeID)
		} else if st.LeaderID != n.id && w.now >= due {
			w.event("node %d campaigns for range %d (term %d)", n.id, r.RangeID, st.Term)
			r.Campaign()
			n.heardLeader(r.RangeID)
		}
	}
	n.round(true)
	for i := 0; i < 3 && n.up && n.poll(); i++ {
		n.round(false)
	}
	if !n.up {
		return
	}
	for _, r := range n.sched.Replicas() {
		st := r.Status()
		if n.lastLeader[r.RangeID] != st.LeaderID && st.LeaderID == n.id {
			w.event("node %d leads range %d in term %d", n.id, r.RangeID, st.Term)
		}
		n.lastLeader[r.RangeID] = st.LeaderID
	}
	n.txnTick()
}

func (n *node) round(tick bool) {
	if err := n.sched.Round(tick); err != nil {
		n.w.fail("node %d: scheduler: %v", n.id, err)
		n.up = false
	}
}

// poll runs the callbacks of finished (or timed-out) proposals and reads,
// in the order they were made. It reports whether any ran.
func (n *node) poll() bool {
	ran := false
	for len(n.props) > 0 || len(n.reads) > 0 {
		progressed := false
		props := n.props
		n.props = nil
		for i, p := range props {
			if !n.up {
				return ran
			}
			select {
			case res := <-p.p.Done:
				p.cb(res)
				progressed = true
			default:
				if n.w.now >= p.deadline {
					p.cb(replica.Result{Err: errTimeout})
					progressed = true
				} else {
					n.props = append(n.props, props[i])
				}
			}
		}
		reads := n.reads
		n.reads = nil
		for i, r := range reads {
			if !n.up {
				return ran
			}
			select {
			case err := <-r.r.Done:
				r.cb(err)
				progressed = true
			default:
				if n.w.now >= r.deadline {
					r.cb(errTimeout)
					progressed = true
				} else {
					n.reads = append(n.reads, reads[i])
				}
			}
		}
		if !progressed {
			break
		}
		ran = true
	}
	return ran
}

// propose proposes cmd on rangeID and calls cb with its result.
func (n *node) propose(rangeID uint64, cmd *vowdbpb.Command, cb func(replica.Result)) {
	p := replica.NewProposal(cmd)
	n.props = append(n.props, &pendingProp{p: p, deadline: n.w.now + requestTimeout, cb: cb})
	n.sched.Propose(rangeID, p)
}

// readIndex runs a ReadIndex round on rangeID and calls cb once the node
// has applied everything committed before it (or with an error).
func (n *node) readIndex(rangeID uint64, cb func(error)) {
	r := replica.NewRead()
	n.reads = append(n.reads, &pendingRead{r: r, deadline: n.w.now + requestTimeout, cb: cb})
	n.sched.Read(rangeID, r)
}

func (n *node) String() string { return fmt.Sprintf("n%d", n.id) }
