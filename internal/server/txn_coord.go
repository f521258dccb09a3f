package server

import (
	"context"
	"sync"
	"time"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnwire"
)

// coordDriver runs the node's 2PC coordinator (package txn): it starts
// commits for clients, proposes the coordinator's records on the anchor
// ranges (the decision by compare-and-set, the end), routes its messages
// and hands results back to the waiting clients.
type coordDriver struct {
	l *txnLayer

	mu      sync.Mutex
	c       *txn.Coordinator
	waiting map[waitKey]chan txn.Result
	running map[lock.TxnID]*coordInfo
}

type waitKey struct {
	id      lock.TxnID
	attempt uint64
}

// coordInfo is what `vowdb txn ls` shows of a txn being committed here.
type coordInfo struct {
	attempt uint64
	ranges  []uint64
	since   time.Time
}

func newCoordDriver(l *txnLayer) *coordDriver {
	c, err := txn.NewCoordinator(txn.CoordinatorConfig{Node: 1, ResendTicks: resendTicks,
		VoteTimeoutTicks: voteTimeoutTicks, DecideTimeoutTicks: voteTimeoutTicks})
	if err != nil {
		panic(err)
	}
	return &coordDriver{l: l, c: c, waiting: map[waitKey]chan txn.Result{}, running: map[lock.TxnID]*coordInfo{}}
}

// setNode gives the coordinator its node id once the node has one.
func (d *coordDriver) setNode(id uint64) {
	c, err := txn.NewCoordinator(txn.CoordinatorConfig{Node: txn.NodeID(id), ResendTicks: resendTicks,
		VoteTimeoutTicks: voteTimeoutTicks, DecideTimeoutTicks: voteTimeoutTicks})
	if err != nil {
		panic(err)
	}
	d.mu.Lock()
	d.c = c
	d.mu.Unlock()
}

func (d *coordDriver) has(id lock.TxnID, attempt uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c.Has(id, attempt)
}

// commit runs req through the coordinator and waits for its result.
func (d *coordDriver) commit(ctx context.Context, req txn.CommitRequest) (txn.Result, error) {
	k := waitKey{req.Txn, req.Attempt}
	ch := make(chan txn.Result, 1)
	d.mu.Lock()
	if err := d.c.Commit(req); err != nil {
		d.mu.Unlock()
		return txn.Result{}, err
	}
	d.waiting[k] = ch
	info := &coordInfo{attempt: req.Attempt, since: time.Now()}
	for _, p := range req.Participants {
		info.ranges = append(info.ranges, uint64(p.Range))
	}
	d.running[req.Txn] = info
	d.pumpLocked()
	d.mu.Unlock()
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		d.mu.Lock()
		delete(d.waiting, k)
		d.mu.Unlock()
		return txn.Result{Txn: req.Txn, Attempt: req.Attempt, Outcome: txn.OutcomeAmbiguous}, nil
	}
}

func (d *coordDriver) step(m txn.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.c.Step(m); err == nil {
		d.pumpLocked()
	}
}

func (d *coordDriver) tick() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.Tick()
	d.pumpLocked()
}

func (d *coordDriver) restore(recs []txn.DecisionRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.Restore(recs)
	d.pumpLocked()
}

func (d *coordDriver) pumpLocked() {
	for d.c.HasReady() {
		rd := d.c.Ready()
		for _, res := range rd.Results {
			k := waitKey{res.Txn, res.Attempt}
			if ch := d.waiting[k]; ch != nil {
				delete(d.waiting, k)
				ch <- res
			}
		}
		if len(rd.Messages) > 0 {
			msgs := append([]txn.Message(nil), rd.Messages...)
			go func() {
				for _, m := range msgs {
					if m.Type == txn.MsgCommit {
						failpoint.Hit(failpoint.TxnBeforeCommitSend)
						break
					}
				}
				d.l.send(msgs)
			}()
		}
		var ends []txn.EndRecord
		for _, r := range rd.Records {
			switch r := r.(type) {
			case txn.DecisionRecord:
				go d.cas(r)
			case txn.EndRecord:
				ends = append(ends, r)
			}
		}
		// End records are proposed in the background: forgetting a txn
		// before its record is marked ended is safe (the record is decided,
		// so a late inquirer's CAS finds the decision), and a failed end is
		// redone by the anchor's recovery.
		if len(ends) > 0 {
			go d.end(ends)
		}
		d.advanceLocked(rd)
	}
}

func (d *coordDriver) advanceLocked(rd txn.Ready) {
	d.c.Advance(rd)
	for id, info := range d.running {
		if !d.c.Has(id, info.attempt) {
			delete(d.running, id)
		}
	}
}

// cas proposes the decision as a compare-and-set on the txn record and
// reports who won. Any error leaves the result unknown (never retried:
// package txn explains why).
func (d *coordDriver) cas(r txn.DecisionRecord) {
	ctx, cancel := context.WithTimeout(d.l.n.ctx, d.l.n.cfg.RequestTimeout)
	defer cancel()
	cmd := txnwire.DecisionCommand(r, d.l.n.nodeID())
	recorded := txn.DecisionPending
	if r.Decision == txn.DecisionCommitted {
		failpoint.Hit(failpoint.TxnBeforeDecision)
	}
	if resp, err := d.l.proposeAt(ctx, r.AnchorKey, cmd); err == nil {
		recorded = txnwire.StateDecision(resp.State)
		if r.Decision == txn.DecisionCommitted {
			failpoint.Hit(failpoint.TxnAfterDecision)
		}
	} else {
		d.l.n.log.Warn("txn decision outcome unknown", "txn", r.Txn, "attempt", r.Attempt, "err", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.CASResult(r.Txn, r.Attempt, recorded)
	d.pumpLocked()
}

// end marks the records of ends ended.
func (d *coordDriver) end(ends []txn.EndRecord) {
	failpoint.Hit(failpoint.TxnBeforeEnd)
	ctx, cancel := context.WithTimeout(d.l.n.ctx, d.l.n.cfg.RequestTimeout)
	defer cancel()
	for _, e := range ends {
		cmd := txnwire.EndCommand(e)
		if _, err := d.l.proposeAt(ctx, e.AnchorKey, cmd); err != nil {
			// The record stays un-ended; the anchor's recovery finishes it.
			d.l.n.log.Debug("txn end not recorded", "txn", e.Txn, "err", err)
		}
	}
}

// infos lists the txns being committed here.
func (d *coordDriver) infos() []*vowdbpb.TxnInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*vowdbpb.TxnInfo
	for id, info := range d.running {
		out = append(out, &vowdbpb.TxnInfo{TxnId: uint64(id), Attempt: info.attempt, CoordinatorNodeId: d.l.n.nodeID(),
			State: "COMMITTING", ParticipantRangeIds: info.ranges, AgeMicros: time.Since(info.since).Microseconds(),
			NodeId: d.l.n.nodeID()})
	}
	return out
}
