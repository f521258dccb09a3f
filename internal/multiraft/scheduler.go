package multiraft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/clock"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
)

// ErrRangeNotFound means this node has no initialized replica of the range.
var ErrRangeNotFound = errors.New("multiraft: range not found on this node")

// ErrStopped means the scheduler has stopped.
var ErrStopped = errors.New("multiraft: stopped")

// Sender hands Raft messages to the transport. Send must not block; the
// transport drops what it cannot deliver and Raft retransmits.
type Sender interface {
	Send(toNode uint64, msgs []*vowdbpb.RaftMessage)
}

// Config configures a Scheduler.
type Config struct {
	NodeID       uint64
	TickInterval time.Duration
	// Clock drives Raft ticks; nil means the wall clock.
	Clock   clock.Clock
	Replica replica.Config
	Logger  *slog.Logger
	Metrics *metrics.Node
}

// Scheduler drives all replicas of a node. See the package doc.
type Scheduler struct {
	cfg    Config
	eng    *storage.Engine
	sender Sender
	log    *slog.Logger
	m      *metrics.Node

	mu struct {
		sync.Mutex
		proposals []rangeProposal
		reads     []rangeRead
		msgs      []*vowdbpb.RaftMessage
		snapAcks  []snapAck
		unreach   []uint64
		funcs     []func()
	}
	wake chan struct{}

	// replicas is owned by the loop goroutine; order is the same replicas
	// sorted by range id, the order in which every loop pass visits them
	// (so a pass is deterministic for a simulator that drives Round).
	replicas map[uint64]*replica.Replica
	order    []*replica.Replica
	// published is a copy of the replica list for other goroutines.
	published atomic.Pointer[[]*replica.Replica]

	stop chan struct{}
	done chan struct{}
}

type rangeProposal struct {
	rangeID uint64
	p       *replica.Proposal
}

type rangeRead struct {
	rangeID uint64
	r       *replica.Read
}

type snapAck struct {
	rangeID, to uint64
	ok          bool
}

// New loads every replica stored in eng. Call Start to run the loop.
func New(cfg Config, eng *storage.Engine, sender Sender) (*Scheduler, error) {
	s := &Scheduler{cfg: cfg, eng: eng, sender: sender, log: cfg.Logger, m: cfg.Metrics,
		wake: make(chan struct{}, 1), replicas: map[uint64]*replica.Replica{},
		stop: make(chan struct{}), done: make(chan struct{})}
	boot, err := bumpBootCount(eng)
	if err != nil {
		return nil, err
	}
	s.cfg.Replica.Incarnation = boot
	ids, err := storedRangeIDs(eng)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := s.openStored(id); err != nil {
			return nil, err
		}
	}
	s.publish()
	return s, nil
}

// bumpBootCount increments the node's durable boot counter and returns the
// new value, synced before any replica opens.
func bumpBootCount(eng *storage.Engine) (uint64, error) {
	var n uint64
	v, err := eng.Get(keys.BootCountKey)
	switch {
	case err == nil && len(v) == 8:
		n = binary.BigEndian.Uint64(v)
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return 0, err
	}
	n++
	b := eng.NewBatch()
	if err := b.Set(keys.BootCountKey, binary.BigEndian.AppendUint64(nil, n), nil); err != nil {
		_ = b.Close()
		return 0, err
	}
	return n, eng.Commit(b, true)
}

// storedRangeIDs lists ranges that have a descriptor or hard state on disk.
func storedRangeIDs(eng *storage.Engine) ([]uint64, error) {
	seen := map[uint64]bool{}
	var ids []uint64
	err := eng.Scan([]byte{'r'}, []byte{'s'}, func(k, _ []byte) bool {
		if len(k) < 10 {
			return true
		}
		if k[9] != keys.SuffixDescriptor && k[9] != keys.SuffixHardState {
			return true
		}
		id := uint64(0)
		for _, c := range k[1:9] {
			id = id<<8 | uint64(c)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
		return true
	})
	return ids, err
}

// Round runs one pass of the loop on the caller's goroutine (tick: also
// tick every replica) and reports a storage failure instead of stopping
// the node. It is for a driver that runs the loop itself, such as the
// deterministic simulator (package sim); never call it on a Started
// scheduler. A pass visits replicas in range order and sends to nodes in
// node order, so the same inputs give the same outputs.
func (s *Scheduler) Round(tick bool) error { return s.round(tick) }

// Start runs the loop until Stop.
func (s *Scheduler) Start() { go s.run() }

// Stop stops the loop and waits for it; queued requests are answered with
// ErrStopped or ErrAmbiguous by their timeouts.
func (s *Scheduler) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Propose queues p for rangeID.
func (s *Scheduler) Propose(rangeID uint64, p *replica.Proposal) {
	s.mu.Lock()
	s.mu.proposals = append(s.mu.proposals, rangeProposal{rangeID, p})
	s.mu.Unlock()
	s.signal()
}

// Read queues a linearizable read for rangeID.
func (s *Scheduler) Read(rangeID uint64, r *replica.Read) {
	s.mu.Lock()
	s.mu.reads = append(s.mu.reads, rangeRead{rangeID, r})
	s.mu.Unlock()
	s.signal()
}

// Deliver queues Raft messages received from a peer.
func (s *Scheduler) Deliver(msgs []*vowdbpb.RaftMessage) {
	s.mu.Lock()
	s.mu.msgs = append(s.mu.msgs, msgs...)
	s.mu.Unlock()
	s.signal()
}

// ReportSnapshot relays whether a snapshot reached node to.
func (s *Scheduler) ReportSnapshot(rangeID, to uint64, ok bool) {
	s.mu.Lock()
	s.mu.snapAcks = append(s.mu.snapAcks, snapAck{rangeID, to, ok})
	s.mu.Unlock()
	s.signal()
}

// ReportUnreachable tells every group that node to could not be reached.
func (s *Scheduler) ReportUnreachable(to uint64) {
	s.mu.Lock()
	s.mu.unreach = append(s.mu.unreach, to)
	s.mu.Unlock()
	s.signal()
}

// Do runs fn on the loop goroutine, where replicas may be touched, and waits.
// Either fn runs to completion before Do returns, or (ctx ended or the loop
// stopped before fn started) it never runs, so fn may write to variables the
// caller reads after Do returns nil.
func (s *Scheduler) Do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	var claimed atomic.Bool // set by whoever decides fn's fate first
	s.mu.Lock()
	s.mu.funcs = append(s.mu.funcs, func() {
		if claimed.CompareAndSwap(false, true) {
			fn()
			close(done)
		}
	})
	s.mu.Unlock()
	s.signal()
	var stop error
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		stop = ctx.Err()
	case <-s.done:
		stop = ErrStopped
	}
	if claimed.CompareAndSwap(false, true) {
		return stop // fn will never run
	}
	<-done // fn is running: wait for it
	return nil
}

// Replica returns the loop-owned replica (loop goroutine only, i.e. in Do).
func (s *Scheduler) Replica(id uint64) *replica.Replica { return s.replicas[id] }

// Replicas returns all replicas (safe from any goroutine; use only their
// Status from outside the loop).
func (s *Scheduler) Replicas() []*replica.Replica {
	if p := s.published.Load(); p != nil {
		return *p
	}
	return nil
}

// ReplicaForKey returns the initialized user range replica holding key, if
// any. Safe from any goroutine.
func (s *Scheduler) ReplicaForKey(key []byte) *replica.Replica {
	for _, r := range s.Replicas() {
		d := r.Status().Desc
		if d != nil && !d.IsMeta && keys.Contains(d.StartKey, d.EndKey, key) {
			return r
		}
	}
	return nil
}

// ReplicaByID returns the replica of rangeID, if any. Safe from any goroutine.
func (s *Scheduler) ReplicaByID(id uint64) *replica.Replica {
	for _, r := range s.Replicas() {
		if r.RangeID == id {
			return r
		}
	}
	return nil
}

func (s *Scheduler) publish() {
	list := make([]*replica.Replica, 0, len(s.replicas))
	for _, r := range s.replicas {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].RangeID < list[j].RangeID })
	s.order = list
	s.published.Store(&list)
	s.m.Ranges.Set(float64(len(list)))
}

// Bootstrap writes the initial state of the given ranges (a new cluster) and
// opens their replicas. Loop goroutine or before Start only.
func (s *Scheduler) Bootstrap(descs ...*vowdbpb.RangeDescriptor) error {
	b := s.eng.NewBatch()
	for _, d := range descs {
		if err := replica.WriteInitialState(s.eng, b, d); err != nil {
			return err
		}
	}
	if err := s.eng.Commit(b, true); err != nil {
		return err
	}
	for _, d := range descs {
		if err := s.openStored(d.RangeId); err != nil {
			return err
		}
	}
	s.publish()
	return nil
}

// openStored opens the replica of range id from the engine. A range whose
// only voter is this node (a cluster just initialized, or a one-node
// cluster restarting) elects itself at once: waiting out an election
// timeout would leave the first requests unanswered for a second or two.
// The simulator runs its own election timers, so it is left to them.
func (s *Scheduler) openStored(id uint64) error {
	r, err := replica.Open(s.eng, id, s.cfg.Replica)
	if err != nil {
		return err
	}
	s.replicas[id] = r
	if r.SoleVoter() && !s.cfg.Replica.ExternalElections {
		r.Campaign()
		s.signal() // the loop's next round completes the election
	}
	return nil
}

func (s *Scheduler) run() {
	defer close(s.done)
	clk := s.cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	t := clk.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		tick := false
		select {
		case <-s.stop:
			return
		case <-t.C():
			tick = true
		case <-s.wake:
		}
		if err := s.round(tick); err != nil {
			// A storage failure leaves the node's durable state unknown:
			// fail-stop rather than risk acknowledging what is not durable.
			panic(fmt.Sprintf("multiraft: node %d: %v", s.cfg.NodeID, err))
		}
	}
}

// round runs one pass of the loop; see the package doc.
func (s *Scheduler) round(tick bool) error {
	s.mu.Lock()
	props, reads, msgs, acks, unreach, funcs := s.mu.proposals, s.mu.reads, s.mu.msgs, s.mu.snapAcks, s.mu.unreach, s.mu.funcs
	s.mu.proposals, s.mu.reads, s.mu.msgs, s.mu.snapAcks, s.mu.unreach, s.mu.funcs = nil, nil, nil, nil, nil, nil
	s.mu.Unlock()

	for _, fn := range funcs {
		fn()
	}
	for _, m := range msgs {
		s.step(m)
	}
	for _, a := range acks {
		if r := s.replicas[a.rangeID]; r != nil {
			r.ReportSnapshot(a.to, a.ok)
		}
	}
	for _, to := range unreach {
		for _, r := range s.order {
			r.ReportUnreachable(to)
		}
	}
	for _, rp := range props {
		r := s.replicas[rp.rangeID]
		if r == nil || !r.Initialized() {
			rp.p.Finish(replica.Result{Err: ErrRangeNotFound})
			continue
		}
		r.Propose(rp.p)
	}
	for _, rr := range reads {
		r := s.replicas[rr.rangeID]
		if r == nil || !r.Initialized() {
			rr.r.Finish(ErrRangeNotFound)
			continue
		}
		r.QueueRead(rr.r)
	}
	leaders := 0
	for _, r := range s.order {
		r.FlushProposals()
		r.FlushReads()
		if tick {
			r.Tick()
		}
		if r.IsLeader() {
			leaders++
		}
	}
	s.m.Leaders.Set(float64(leaders))
	for i := 0; i < 4; i++ {
		more, err := s.processReady()
		if err != nil || !more {
			return err
		}
	}
	s.signal()
	return nil
}

func (s *Scheduler) step(m *vowdbpb.RaftMessage) {
	var msg raftpb.Message
	if err := msg.Unmarshal(m.Msg); err != nil {
		s.log.Warn("dropping malformed raft message", "range", m.RangeId, "err", err)
		return
	}
	if msg.To != s.cfg.NodeID {
		return
	}
	s.m.RaftMsgsRecv.Inc()
	r := s.replicas[m.RangeId]
	if msg.Type == raftpb.MsgSnap {
		d, err := replica.SnapshotDesc(*msg.Snapshot)
		if err != nil {
			s.log.Warn("dropping malformed snapshot", "range", m.RangeId, "err", err)
			return
		}
		if other := s.overlapping(d); other != nil {
			// Another local replica still covers part of this span (for
			// example the left-hand side of a split that has not applied
			// here yet). Installing the snapshot now could let that replica
			// overwrite newer data; the leader will retry.
			s.log.Debug("refusing overlapping snapshot", "range", m.RangeId, "overlaps", other.RangeID)
			return
		}
	}
	if r == nil {
		var err error
		r, err = replica.Open(s.eng, m.RangeId, s.cfg.Replica)
		if err != nil {
			s.log.Error("cannot create replica", "range", m.RangeId, "err", err)
			return
		}
		s.replicas[m.RangeId] = r
		s.publish()
	}
	if err := r.Step(msg); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		s.log.Debug("raft step", "range", m.RangeId, "err", err)
	}
}

func (s *Scheduler) overlapping(d *vowdbpb.RangeDescriptor) *replica.Replica {
	for id, r := range s.replicas {
		od := r.Desc()
		if id == d.RangeId || od == nil || od.IsMeta || d.IsMeta {
			continue
		}
		if spansOverlap(od.StartKey, od.EndKey, d.StartKey, d.EndKey) {
			return r
		}
	}
	return nil
}

func spansOverlap(a0, a1, b0, b1 []byte) bool {
	aBeforeB := len(a1) > 0 && string(a1) <= string(b0)
	bBeforeA := len(b1) > 0 && string(b1) <= string(a0)
	return !aBeforeB && !bBeforeA
}

type rangeMsg struct {
	rangeID uint64
	msg     *raftpb.Message
}

// splitMessages sorts a round's messages into those a leader may send before
// its log write is durable (appends, heartbeats, snapshots) and the rest.
func splitMessages(ready []readyReplica) (early, late []rangeMsg) {
	for i := range ready {
		msgs := ready[i].rd.Messages
		for j := range msgs {
			m := rangeMsg{ready[i].r.RangeID, &msgs[j]}
			switch msgs[j].Type {
			case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap:
				early = append(early, m)
			default:
				late = append(late, m)
			}
		}
	}
	return early, late
}

// send marshals msgs and hands them to the transport, one batch per node.
func (s *Scheduler) send(msgs []rangeMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	out := map[uint64][]*vowdbpb.RaftMessage{}
	for _, m := range msgs {
		data, err := m.msg.Marshal()
		if err != nil {
			return err
		}
		out[m.msg.To] = append(out[m.msg.To], &vowdbpb.RaftMessage{RangeId: m.rangeID, Msg: data, Snapshot: m.msg.Type == raftpb.MsgSnap})
	}
	tos := make([]uint64, 0, len(out))
	for to := range out {
		tos = append(tos, to)
	}
	slices.Sort(tos)
	for _, to := range tos {
		batch := out[to]
		s.m.RaftMsgsSent.Add(float64(len(batch)))
		s.sender.Send(to, batch)
	}
	return nil
}

type readyReplica struct {
	r  *replica.Replica
	rd raft.Ready
}

// processReady persists, sends and applies the Ready of every group that
// has one. It reports whether some group has more work.
func (s *Scheduler) processReady() (bool, error) {
	var ready []readyReplica
	b := s.eng.NewBatch()
	mustSync := false
	for _, r := range s.order {
		if !r.HasReady() {
			continue
		}
		rd, err := r.Ready(b)
		if err != nil {
			return false, err
		}
		// etcd raft's MustSync covers entries, term and vote, not a
		// snapshot: the follower acknowledges the snapshot's index as soon
		// as this round's messages go out, so a crash must not lose it
		// (a leader would then send a commit index beyond the log, and
		// raft panics).
		mustSync = mustSync || rd.MustSync || !raft.IsEmptySnap(rd.Snapshot)
		ready = append(ready, readyReplica{r, rd})
	}
	if len(ready) == 0 {
		_ = b.Close()
		return false, nil
	}
	// 2a. A leader's appends and heartbeats may leave before its own log
	// write is durable (Raft thesis 10.2.1): the leader's entries of this
	// round cannot count toward a commit until a later round steps the
	// followers' acks, and this loop starts no later round before this
	// round's synced write completes. Everything else (votes, append
	// acks) waits for the write, as the Raft contract requires.
	early, late := splitMessages(ready)
	if err := s.send(early); err != nil {
		return false, err
	}
	// 2b. one synced write for every group.
	failpoint.Hit(failpoint.BeforePersist)
	if b.Count() > 0 {
		start := time.Now()
		if err := s.eng.Commit(b, mustSync); err != nil {
			return false, fmt.Errorf("persist raft state: %w", err)
		}
		if mustSync {
			s.m.FsyncSeconds.Observe(time.Since(start).Seconds())
		}
		s.m.ReadyBatchGroups.Observe(float64(len(ready)))
	} else {
		_ = b.Close()
	}
	failpoint.Hit(failpoint.AfterPersist)
	// 3. mirror into memory, then send what had to wait for the write.
	for i := range ready {
		ready[i].r.AfterPersist(&ready[i].rd)
	}
	if err := s.send(late); err != nil {
		return false, err
	}
	failpoint.Hit(failpoint.AfterSend)
	// 4. apply.
	start := time.Now()
	ab := s.eng.DB().NewIndexedBatch()
	var splits []replica.SplitEvent
	for i := range ready {
		sp, err := ready[i].r.Apply(&ready[i].rd, ab)
		if err != nil {
			_ = ab.Close()
			return false, fmt.Errorf("apply range %d: %w", ready[i].r.RangeID, err)
		}
		splits = append(splits, sp...)
	}
	if ab.Count() > 0 {
		if err := s.eng.Commit(ab, false); err != nil {
			return false, fmt.Errorf("commit apply batch: %w", err)
		}
		s.m.ApplySeconds.Observe(time.Since(start).Seconds())
	} else {
		_ = ab.Close()
	}
	failpoint.Hit(failpoint.AfterApply)
	// 5. answer, advance, open split ranges.
	for i := range ready {
		ready[i].r.Finish(ready[i].rd)
	}
	for _, sp := range splits {
		r, err := replica.Open(s.eng, sp.Right.RangeId, s.cfg.Replica)
		if err != nil {
			return false, fmt.Errorf("open split range %d: %w", sp.Right.RangeId, err)
		}
		s.replicas[sp.Right.RangeId] = r
		s.log.Info("range split", "left", sp.Left.RangeId, "right", sp.Right.RangeId, "split_key", fmt.Sprintf("%q", sp.Right.StartKey))
		// Campaign at once where this node led the left side, so the new
		// range has a leader without waiting for an election timeout.
		if left := s.replicas[sp.Left.RangeId]; left != nil && left.IsLeader() {
			r.Campaign()
		}
	}
	if len(splits) > 0 {
		s.publish()
	}
	for _, r := range s.order {
		if r.HasReady() {
			return true, nil
		}
	}
	return false, nil
}
