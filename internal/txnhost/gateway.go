package txnhost

import (
	"slices"
	"sync"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// GatewayHost is what a Gateway needs from its node (the package doc's
// rule applies: no call back before returning).
type GatewayHost interface {
	NodeID() uint64
	// Send delivers protocol messages, best effort.
	Send(msgs []txn.Message)
	// ProposeAt proposes a txn record command (decision CAS, END) at the
	// leader of the range holding anchorKey, wherever it is; done gets the
	// record's state after the command applied, or an error when the
	// outcome is unknown.
	ProposeAt(anchor txn.RangeID, anchorKey []byte, cmd *vowdbpb.Command, done func(vowdbpb.TxnState, error))
	// DecisionUnknown is told when a decision's compare-and-set failed
	// with an unknown outcome.
	DecisionUnknown(r txn.DecisionRecord, err error)
	// Background runs fn off the caller's path (the server: on a new
	// goroutine, so that a tick loop never waits for it; the simulator: at
	// once).
	Background(fn func())
}

// GatewayConfig configures a Gateway's coordinator (txn.CoordinatorConfig).
type GatewayConfig struct {
	ResendTicks        int
	VoteTimeoutTicks   int
	DecideTimeoutTicks int
	// PrepareAnchor turns txn.CoordinatorConfig.AnchorDecides off: the
	// anchor range is prepared like every other participant and the
	// decision is a record of its own (one more Raft entry per commit).
	PrepareAnchor bool
}

// Gateway drives the coordinator of the txns this node is the gateway of:
// it starts commits, proposes the decision by compare-and-set and the END
// at the anchor range, routes messages and hands results to the callers.
type Gateway struct {
	host GatewayHost
	cfg  GatewayConfig

	mu      sync.Mutex
	c       *txn.Coordinator
	waiting map[attemptKey]func(txn.Result)
	running map[lock.TxnID]*Committing
	fired   deferred
	// ends are END records waiting for the next Tick (or for a full batch),
	// so that the ends of many txns share Raft rounds.
	ends []txn.EndRecord
}

// maxPendingEnds flushes the END records before the next Tick once this
// many wait.
const maxPendingEnds = 64

type attemptKey struct {
	id      lock.TxnID
	attempt uint64
}

// Committing is a txn being committed here, as `vowdb txn ls` shows it.
type Committing struct {
	Txn     lock.TxnID
	Attempt uint64
	Ranges  []uint64
	Since   time.Time
}

// NewGateway returns a gateway for node (0 until the node knows its id;
// SetNode replaces it then).
func NewGateway(h GatewayHost, node uint64, cfg GatewayConfig) (*Gateway, error) {
	g := &Gateway{host: h, cfg: cfg, waiting: map[attemptKey]func(txn.Result){}, running: map[lock.TxnID]*Committing{}}
	if err := g.SetNode(node); err != nil {
		return nil, err
	}
	return g, nil
}

// SetNode gives the coordinator its node id.
func (g *Gateway) SetNode(node uint64) error {
	if node == 0 {
		node = 1 // placeholder until the node joins; nothing commits before
	}
	c, err := txn.NewCoordinator(txn.CoordinatorConfig{Node: txn.NodeID(node), ResendTicks: g.cfg.ResendTicks,
		VoteTimeoutTicks: g.cfg.VoteTimeoutTicks, DecideTimeoutTicks: g.cfg.DecideTimeoutTicks,
		AnchorDecides: !g.cfg.PrepareAnchor})
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.c = c
	g.mu.Unlock()
	return nil
}

// unlock releases mu, then carries out what was produced meanwhile.
func (g *Gateway) unlock() { g.fired.unlock(&g.mu) }

// Commit starts committing req; result is called once with its outcome
// (not at all if the gateway is dropped, e.g. on a crash). An error means
// req was refused (invalid, or that attempt is already committing here).
func (g *Gateway) Commit(now time.Time, req txn.CommitRequest, result func(txn.Result)) error {
	failpoint.Hit(failpoint.TxnBeforePrepare)
	g.mu.Lock()
	defer g.unlock()
	if err := g.c.Commit(req); err != nil {
		return err
	}
	g.waiting[attemptKey{req.Txn, req.Attempt}] = result
	info := &Committing{Txn: req.Txn, Attempt: req.Attempt, Since: now}
	for _, p := range req.Participants {
		info.Ranges = append(info.Ranges, uint64(p.Range))
	}
	g.running[req.Txn] = info
	g.pumpLocked()
	return nil
}

// Forget drops the caller waiting for attempt's result (it gave up); the
// commit itself goes on.
func (g *Gateway) Forget(id lock.TxnID, attempt uint64) {
	g.mu.Lock()
	delete(g.waiting, attemptKey{id, attempt})
	g.mu.Unlock()
}

// Step hands a protocol message (a vote, an ack) to the coordinator.
func (g *Gateway) Step(m txn.Message) error {
	g.mu.Lock()
	defer g.unlock()
	if err := g.c.Step(m); err != nil {
		return err
	}
	g.pumpLocked()
	return nil
}

// Tick drives resends and timeouts, and proposes the END records that
// waited since the last tick.
func (g *Gateway) Tick() {
	g.mu.Lock()
	defer g.unlock()
	g.c.Tick()
	g.pumpLocked()
	g.flushEndsLocked()
}

func (g *Gateway) flushEndsLocked() {
	if len(g.ends) == 0 {
		return
	}
	ends := g.ends
	g.ends = nil
	g.fired.add(func() { g.host.Background(func() { g.end(ends) }) })
}

// Restore hands decided, un-ended txn records to the coordinator, which
// resends their decision until every participant acknowledged (rule 6).
func (g *Gateway) Restore(recs []txn.DecisionRecord) {
	g.mu.Lock()
	defer g.unlock()
	g.c.Restore(recs)
	g.pumpLocked()
}

// Has reports whether the coordinator still runs attempt of id.
func (g *Gateway) Has(id lock.TxnID, attempt uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.c.Has(id, attempt)
}

// Committing lists the txns being committed here.
func (g *Gateway) Committing() []Committing {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Committing, 0, len(g.running))
	for _, id := range sortedIDs(g.running) {
		out = append(out, *g.running[id])
	}
	return out
}

// pumpLocked carries out the coordinator's Ready: results to the waiting
// callers, messages out, the decision as a compare-and-set, END records in
// the background. The sends and proposals run once mu is released.
func (g *Gateway) pumpLocked() {
	for g.c.HasReady() {
		rd := g.c.Ready()
		for _, res := range rd.Results {
			k := attemptKey{res.Txn, res.Attempt}
			if cb := g.waiting[k]; cb != nil {
				delete(g.waiting, k)
				g.fired.add(func() { cb(res) })
			}
		}
		if len(rd.Messages) > 0 {
			msgs := append([]txn.Message(nil), rd.Messages...)
			decides := slices.ContainsFunc(msgs, func(m txn.Message) bool {
				return m.Type == txn.MsgOnePhaseCommit && m.Coordinator != 0
			})
			g.fired.add(func() {
				if decides {
					// Every other participant voted YES; the decision (the
					// anchor's commit) is not proposed yet.
					failpoint.Hit(failpoint.TxnBeforeDecision)
				}
				for _, m := range msgs {
					if m.Type == txn.MsgCommit {
						failpoint.Hit(failpoint.TxnBeforeCommitSend)
						break
					}
				}
				g.host.Send(msgs)
			})
		}
		for _, r := range rd.Records {
			switch r := r.(type) {
			case txn.DecisionRecord:
				g.fired.add(func() { g.cas(r) })
			case txn.EndRecord:
				g.ends = append(g.ends, r)
			}
		}
		// End records are proposed in the background, batched until the
		// next tick: forgetting a txn before its record is marked ended is
		// safe (the record is decided, so a late inquirer's CAS finds the
		// decision), and an end that is lost (a crash, a failed proposal) is
		// redone by the anchor's recovery.
		if len(g.ends) >= maxPendingEnds {
			g.flushEndsLocked()
		}
		g.c.Advance(rd)
	}
	// A txn may end with no output (the last ACK of an abort without a
	// record), so this runs after every step, not only after a Ready.
	for id, info := range g.running {
		if !g.c.Has(id, info.Attempt) {
			delete(g.running, id)
		}
	}
}

// cas proposes the decision as a compare-and-set on the txn record and
// reports who won. Any error leaves the result unknown (never retried:
// package txn explains why).
func (g *Gateway) cas(r txn.DecisionRecord) {
	if r.Decision == txn.DecisionCommitted {
		failpoint.Hit(failpoint.TxnBeforeDecision)
	}
	g.host.ProposeAt(r.Anchor, r.AnchorKey, txnwire.DecisionCommand(r, g.host.NodeID()), func(st vowdbpb.TxnState, err error) {
		recorded := txn.DecisionPending
		if err == nil {
			recorded = txnwire.StateDecision(st)
			if r.Decision == txn.DecisionCommitted {
				failpoint.Hit(failpoint.TxnAfterDecision)
			}
		} else {
			g.host.DecisionUnknown(r, err)
		}
		g.mu.Lock()
		defer g.unlock()
		g.c.CASResult(r.Txn, r.Attempt, recorded)
		g.pumpLocked()
	})
}

// end marks the records of ends ended, all proposed at once so that those
// on one range share a Raft round. A failure leaves the record un-ended;
// the anchor's recovery finishes it.
func (g *Gateway) end(ends []txn.EndRecord) {
	failpoint.Hit(failpoint.TxnBeforeEnd)
	// One entry per anchor range: its leader is found by the first END's
	// anchor key. An END whose record a split moved elsewhere is skipped
	// there and redone by recovery.
	byAnchor := map[txn.RangeID][]txn.EndRecord{}
	var order []txn.RangeID
	for _, e := range ends {
		if _, ok := byAnchor[e.Anchor]; !ok {
			order = append(order, e.Anchor)
		}
		byAnchor[e.Anchor] = append(byAnchor[e.Anchor], e)
	}
	for _, a := range order {
		es := byAnchor[a]
		cmd := txnwire.EndCommand(es[0])
		if len(es) > 1 {
			cmd = txnwire.EndsCommand(es)
		}
		g.host.ProposeAt(a, es[0].AnchorKey, cmd, func(vowdbpb.TxnState, error) {})
	}
}
