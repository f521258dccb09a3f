package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/storage"
)

// Config configures every replica of a node.
type Config struct {
	NodeID         uint64
	ElectionTicks  int
	HeartbeatTicks int
	// LogKeepEntries: once more than twice this many entries sit in the log
	// after the truncated index, the log is truncated to keep this many
	// entries behind the applied index. Followers further behind catch up by
	// snapshot.
	LogKeepEntries uint64
	// LogMaxBytes: once the entries behind the applied index exceed this
	// many bytes, the log is truncated to the applied index whatever
	// LogKeepEntries says, so the in-memory log stays bounded with large
	// values. 0 means 64 MiB.
	LogMaxBytes uint64
	// ProposalTimeoutTicks: a proposal that has not applied after this many
	// ticks is answered as ambiguous (it may still apply later).
	ProposalTimeoutTicks int
	// ExternalElections: elections start only when the driver calls
	// Campaign, never from ticks, and CheckQuorum is off (a leader steps
	// down only on hearing a higher term). It is for the deterministic
	// simulator (package sim): etcd raft draws its randomized election
	// timeouts from crypto/rand, so the simulator keeps election timers
	// itself, seeded. ReadIndex stays safe (it confirms leadership with a
	// heartbeat quorum, never by lease).
	ExternalElections bool
	// Incarnation must differ on every start of the node (the scheduler
	// keeps a durable boot counter). Proposal ids and ReadIndex contexts
	// start at Incarnation<<32, so an entry or a read answer issued before
	// a restart can never be matched to a request made after it (with a
	// counter restarting at zero, a replayed old entry would answer a new
	// proposal with the old command's result).
	Incarnation uint64
	Logger      *slog.Logger
	Metrics     *metrics.Node
}

// ErrAmbiguous means a proposal was accepted by Raft but its outcome is
// unknown: it may or may not apply.
var ErrAmbiguous = errors.New("replica: outcome of proposal unknown")

// Proposal is a command waiting for its entry to apply on this node.
type Proposal struct {
	Cmd *vowdbpb.Command
	// Done receives exactly one Result, unless OnDone is set.
	Done chan Result
	// OnDone, if set, is called instead, once, on the scheduler goroutine;
	// it must not block.
	OnDone func(Result)
	age    int
}

// NewProposal returns a proposal for cmd answered on Done.
func NewProposal(cmd *vowdbpb.Command) *Proposal {
	return &Proposal{Cmd: cmd, Done: make(chan Result, 1)}
}

// Finish answers the proposal.
func (p *Proposal) Finish(res Result) {
	if p.OnDone != nil {
		p.OnDone(res)
		return
	}
	p.Done <- res
}

// Read is a linearizable read waiting for ReadIndex.
type Read struct {
	// Done receives nil when the local state may be read, or an error;
	// unless OnDone is set.
	Done chan error
	// OnDone, if set, is called instead, once, on the scheduler goroutine;
	// it must not block.
	OnDone func(error)
}

// NewRead returns a Read answered on Done.
func NewRead() *Read { return &Read{Done: make(chan error, 1)} }

// Finish answers the read.
func (rd *Read) Finish(err error) {
	if rd.OnDone != nil {
		rd.OnDone(err)
		return
	}
	rd.Done <- err
}

// Status is the part of a replica's state published for other goroutines.
type Status struct {
	Desc     *vowdbpb.RangeDescriptor
	LeaderID uint64
	Term     uint64
	Commit   uint64
	Applied  uint64
}

// Replica is one range's replica on this node. See the package doc.
type Replica struct {
	RangeID uint64
	cfg     Config
	eng     *storage.Engine
	metrics *metrics.Node
	rn      *raft.RawNode
	storage *raftStorage

	desc       *vowdbpb.RangeDescriptor // nil until initialized
	confState  raftpb.ConfState
	applied    uint64 // Invariant: applied <= commit, and durable once the apply batch commits.
	truncIndex uint64
	lastIndex  uint64 // last index written to the Pebble log
	logBytes   uint64 // approximate bytes of the entries after truncIndex
	isLeader   bool
	leaderID   uint64
	term       uint64

	nextProposalID uint64
	proposals      map[uint64]*Proposal
	queuedProps    []*Proposal // proposed this round, stepped together by FlushProposals
	queuedReads    []*Read
	nextReadCtx    uint64
	readsByCtx     map[uint64][]*Read
	readsAtIndex   []indexedReads
	pendingResults []pendingResult

	// txns lets apply skip reads of txn state that does not exist.
	txns txnIndex

	status atomic.Pointer[Status]
	// checksums are the newest results of ComputeChecksum commands
	// (checksum.go), published for readers.
	checksums atomic.Pointer[[]IndexedChecksum]
}

type indexedReads struct {
	index uint64
	reads []*Read
}

type pendingResult struct {
	p   *Proposal
	res Result
}

// Open loads replica rangeID from eng, or creates an uninitialized one if
// nothing is stored for it.
func Open(eng *storage.Engine, rangeID uint64, cfg Config) (*Replica, error) {
	st, err := loadState(eng, rangeID)
	if err != nil {
		return nil, err
	}
	r := &Replica{
		RangeID:        rangeID,
		cfg:            cfg,
		eng:            eng,
		metrics:        cfg.Metrics,
		proposals:      map[uint64]*Proposal{},
		readsByCtx:     map[uint64][]*Read{},
		nextProposalID: cfg.Incarnation << 32,
		nextReadCtx:    cfg.Incarnation << 32,
	}
	ms := raft.NewMemoryStorage()
	r.storage = &raftStorage{MemoryStorage: ms, r: r}
	if st.desc != nil {
		r.desc = st.desc
		r.confState = st.cs
		r.applied = st.applied
		r.truncIndex = st.trunc.Index
		snap := raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: st.trunc.Index, Term: st.trunc.Term, ConfState: st.cs}}
		if err := ms.ApplySnapshot(snap); err != nil {
			return nil, fmt.Errorf("replica %d: restore log: %w", rangeID, err)
		}
		if err := ms.Append(st.entries); err != nil {
			return nil, fmt.Errorf("replica %d: restore log: %w", rangeID, err)
		}
		r.lastIndex, _ = ms.LastIndex()
		for i := range st.entries {
			r.logBytes += uint64(len(st.entries[i].Data)) + 32
		}
	}
	if !raft.IsEmptyHardState(st.hs) {
		if err := ms.SetHardState(st.hs); err != nil {
			return nil, err
		}
	}
	rc := &raft.Config{
		ID:                        cfg.NodeID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   r.storage,
		Applied:                   r.applied,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  8 << 20,
		MaxUncommittedEntriesSize: 64 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    raftLogger{cfg.Logger.With("range", rangeID)},
		StepDownOnRemoval:         true,
		// Proposals are made only on the leader and tracked there; a
		// follower must drop, not forward, a stray proposal.
		DisableProposalForwarding: true,
	}
	if cfg.ExternalElections {
		rc.ElectionTick = 1 << 24
		rc.CheckQuorum = false
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("replica %d: %w", rangeID, err)
	}
	r.rn = rn
	r.publish()
	return r, nil
}

// LiveTxnRecords returns the range's txn records that are not ended, from
// memory, without reading the records every finished transaction leaves
// behind; ok is false when the replica cannot tell without a scan
// (TxnRecords). Scheduler goroutine only.
func (r *Replica) LiveTxnRecords() (recs []*vowdbpb.TxnRecord, ok bool, err error) {
	return r.txns.liveRecords(r.RangeID)
}

// Initialized reports whether the replica has a descriptor.
func (r *Replica) Initialized() bool { return r.desc != nil }

// Desc returns the current descriptor (scheduler goroutine only).
func (r *Replica) Desc() *vowdbpb.RangeDescriptor { return r.desc }

// Status returns the published state; safe from any goroutine.
func (r *Replica) Status() *Status { return r.status.Load() }

// IsLeader reports leadership (scheduler goroutine only).
func (r *Replica) IsLeader() bool { return r.isLeader }

// RaftStatus returns the full Raft status (scheduler goroutine only).
func (r *Replica) RaftStatus() raft.Status { return r.rn.Status() }

func (r *Replica) publish() {
	r.status.Store(&Status{Desc: r.desc, LeaderID: r.leaderID, Term: r.term, Commit: r.rn.BasicStatus().Commit, Applied: r.applied})
}

// Tick advances the Raft clock by one tick and ages proposals.
func (r *Replica) Tick() {
	r.rn.Tick()
	for id, p := range r.proposals {
		p.age++
		if p.age > r.cfg.ProposalTimeoutTicks {
			p.Finish(Result{Err: ErrAmbiguous})
			delete(r.proposals, id)
		}
	}
}

// Step hands a Raft message from a peer to the RawNode.
func (r *Replica) Step(m raftpb.Message) error { return r.rn.Step(m) }

// Propose queues p if this replica is the leader, to be handed to Raft by
// FlushProposals together with every other proposal of the round (one
// append, one message per follower); otherwise it answers p with
// ErrNotLeader at once.
func (r *Replica) Propose(p *Proposal) {
	if !r.isLeader {
		p.Finish(Result{Err: ErrNotLeader})
		return
	}
	r.queuedProps = append(r.queuedProps, p)
}

// FlushProposals steps the queued proposals into Raft as one MsgProp.
func (r *Replica) FlushProposals() {
	if len(r.queuedProps) == 0 {
		return
	}
	props := r.queuedProps
	r.queuedProps = nil
	ents := make([]raftpb.Entry, 0, len(props))
	kept := props[:0]
	for _, p := range props {
		r.nextProposalID++
		p.Cmd.ProposalId = r.nextProposalID
		p.Cmd.ProposerNodeId = r.cfg.NodeID
		data, err := proto.Marshal(p.Cmd)
		if err != nil {
			p.Finish(Result{Err: err})
			continue
		}
		ents = append(ents, raftpb.Entry{Data: data})
		kept = append(kept, p)
	}
	if len(ents) == 0 {
		return
	}
	err := r.rn.Step(raftpb.Message{Type: raftpb.MsgProp, From: r.cfg.NodeID, Entries: ents})
	if err != nil || !r.isLeader {
		r.metrics.ProposalsDropped.Add(float64(len(kept)))
		for _, p := range kept {
			p.Finish(Result{Err: ErrProposalDropped})
		}
		return
	}
	r.metrics.Proposals.Add(float64(len(kept)))
	for _, p := range kept {
		r.proposals[p.Cmd.ProposalId] = p
	}
}

// ProposeConfChange proposes a membership change (leader only). The result
// is observed through the descriptor, not through a waiter.
func (r *Replica) ProposeConfChange(cc raftpb.ConfChangeV2) error {
	if !r.isLeader {
		return ErrNotLeader
	}
	return r.rn.ProposeConfChange(cc)
}

// TransferLeader asks Raft to hand leadership to node to.
func (r *Replica) TransferLeader(to uint64) { r.rn.TransferLeader(to) }

// ReportUnreachable and ReportSnapshot relay transport feedback to Raft.
func (r *Replica) ReportUnreachable(to uint64) { r.rn.ReportUnreachable(to) }

// ReportSnapshot tells Raft whether a snapshot reached the follower.
func (r *Replica) ReportSnapshot(to uint64, ok bool) {
	st := raft.SnapshotFinish
	if !ok {
		st = raft.SnapshotFailure
	}
	r.rn.ReportSnapshot(to, st)
}

// QueueRead queues a linearizable read; FlushReads issues one ReadIndex for
// every read queued since the last flush.
func (r *Replica) QueueRead(rd *Read) { r.queuedReads = append(r.queuedReads, rd) }

// FlushReads issues the queued reads as one ReadIndex request.
func (r *Replica) FlushReads() {
	if len(r.queuedReads) == 0 {
		return
	}
	reads := r.queuedReads
	r.queuedReads = nil
	if !r.isLeader {
		for _, rd := range reads {
			rd.Finish(ErrNotLeader)
		}
		return
	}
	r.nextReadCtx++
	r.readsByCtx[r.nextReadCtx] = reads
	r.metrics.ReadIndexes.Inc()
	r.rn.ReadIndex(u64(r.nextReadCtx))
}

// HasReady reports whether the RawNode has work.
func (r *Replica) HasReady() bool { return r.rn.HasReady() }

// Ready returns the RawNode's Ready and writes what it asks to persist into
// b (the scheduler's shared batch, synced once for many ranges).
func (r *Replica) Ready(b *pebble.Batch) (raft.Ready, error) {
	rd := r.rn.Ready()
	id := r.RangeID
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := r.persistSnapshot(b, rd.Snapshot); err != nil {
			return rd, err
		}
	}
	if n := len(rd.Entries); n > 0 {
		for i := range rd.Entries {
			if err := setGogo(b, keys.RaftLogKey(id, rd.Entries[i].Index), &rd.Entries[i]); err != nil {
				return rd, err
			}
		}
		last := rd.Entries[n-1].Index
		if last < r.lastIndex {
			// The new entries replaced a conflicting suffix: drop what lies beyond.
			if err := b.DeleteRange(keys.RaftLogKey(id, last+1), keys.PrefixEnd(keys.RaftLogPrefix(id)), nil); err != nil {
				return rd, err
			}
		}
		r.lastIndex = last
		for i := range rd.Entries {
			r.logBytes += uint64(len(rd.Entries[i].Data)) + 32
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := setGogo(b, keys.RangeLocalKey(id, keys.SuffixHardState), &rd.HardState); err != nil {
			return rd, err
		}
	}
	return rd, nil
}

func (r *Replica) persistSnapshot(b *pebble.Batch, snap raftpb.Snapshot) error {
	var data vowdbpb.SnapshotData
	if err := proto.Unmarshal(snap.Data, &data); err != nil {
		return fmt.Errorf("replica %d: snapshot: %w", r.RangeID, err)
	}
	id := r.RangeID
	start, end := spanOf(data.Desc)
	if err := b.DeleteRange(start, end, nil); err != nil {
		return err
	}
	for _, suffix := range keys.ReplicatedTxnSuffixes {
		p := keys.RangeLocalKey(id, suffix)
		if err := b.DeleteRange(p, keys.PrefixEnd(p), nil); err != nil {
			return err
		}
	}
	for _, kv := range data.Kvs {
		if err := b.Set(kv.Key, kv.Value, nil); err != nil {
			return err
		}
	}
	if err := setProtoW(b, keys.RangeLocalKey(id, keys.SuffixDescriptor), data.Desc); err != nil {
		return err
	}
	cs := snap.Metadata.ConfState
	if err := setGogo(b, keys.RangeLocalKey(id, keys.SuffixConfState), &cs); err != nil {
		return err
	}
	if err := setProtoW(b, keys.RangeLocalKey(id, keys.SuffixTruncated), &vowdbpb.RaftTruncatedState{Index: snap.Metadata.Index, Term: snap.Metadata.Term}); err != nil {
		return err
	}
	if err := b.Set(keys.RangeLocalKey(id, keys.SuffixApplied), u64(snap.Metadata.Index), nil); err != nil {
		return err
	}
	if err := b.DeleteRange(keys.RaftLogPrefix(id), keys.PrefixEnd(keys.RaftLogPrefix(id)), nil); err != nil {
		return err
	}
	r.txns.reset()
	r.desc = data.Desc
	r.confState = cs
	r.applied = snap.Metadata.Index
	r.truncIndex = snap.Metadata.Index
	r.lastIndex = snap.Metadata.Index
	r.logBytes = 0
	r.metrics.SnapshotsApplied.Inc()
	return nil
}

// SnapshotDesc decodes the descriptor carried by a snapshot message, so the
// scheduler can refuse a snapshot that overlaps another local replica.
func SnapshotDesc(snap raftpb.Snapshot) (*vowdbpb.RangeDescriptor, error) {
	var data vowdbpb.SnapshotData
	if err := proto.Unmarshal(snap.Data, &data); err != nil {
		return nil, err
	}
	return data.Desc, nil
}

// AfterPersist mirrors the persisted Ready into the MemoryStorage and
// tracks leadership and read states. The caller sends rd.Messages.
func (r *Replica) AfterPersist(rd *raft.Ready) {
	ms := r.storage.MemoryStorage
	if !raft.IsEmptySnap(rd.Snapshot) {
		snap := rd.Snapshot
		snap.Data = nil
		if err := ms.ApplySnapshot(snap); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
			panic(fmt.Sprintf("replica %d: apply snapshot to memory: %v", r.RangeID, err))
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		_ = ms.SetHardState(rd.HardState)
		r.term = rd.HardState.Term
	}
	if len(rd.Entries) > 0 {
		if err := ms.Append(rd.Entries); err != nil {
			panic(fmt.Sprintf("replica %d: append to memory: %v", r.RangeID, err))
		}
	}
	if rd.SoftState != nil {
		wasLeader := r.isLeader
		if rd.SoftState.Lead != r.leaderID {
			r.metrics.LeaderChanges.Inc()
		}
		r.leaderID = rd.SoftState.Lead
		r.isLeader = rd.SoftState.RaftState == raft.StateLeader
		if wasLeader && !r.isLeader {
			r.failReads(ErrNotLeader)
			// Proposals still waiting may yet commit under the new leader
			// (and then apply here and succeed); give them two election
			// timeouts, then answer them as ambiguous rather than making
			// clients wait for the full request timeout.
			floor := r.cfg.ProposalTimeoutTicks - 2*r.cfg.ElectionTicks
			for _, p := range r.proposals {
				p.age = max(p.age, floor)
			}
		}
	}
	for _, rs := range rd.ReadStates {
		ctx := binary.BigEndian.Uint64(rs.RequestCtx)
		if reads, ok := r.readsByCtx[ctx]; ok {
			delete(r.readsByCtx, ctx)
			r.readsAtIndex = append(r.readsAtIndex, indexedReads{index: rs.Index, reads: reads})
		}
	}
}

func (r *Replica) failReads(err error) {
	for ctx, reads := range r.readsByCtx {
		for _, rd := range reads {
			rd.Finish(err)
		}
		delete(r.readsByCtx, ctx)
	}
	for _, ir := range r.readsAtIndex {
		for _, rd := range ir.reads {
			rd.Finish(err)
		}
	}
	r.readsAtIndex = nil
}

// SplitEvent reports that applying a split created a new range whose initial
// state is in the apply batch; the scheduler opens its replica after commit.
type SplitEvent struct {
	Left, Right *vowdbpb.RangeDescriptor
}

// Apply applies rd's committed entries into the indexed batch b. Results for
// local proposals are held until Finish, after b is committed.
func (r *Replica) Apply(rd *raft.Ready, b *pebble.Batch) ([]SplitEvent, error) {
	var splits []SplitEvent
	last := r.applied
	if len(rd.CommittedEntries) > 0 && r.desc != nil && r.txns.needsBuild() {
		if err := r.txns.build(b, r.RangeID); err != nil {
			return nil, err
		}
	}
	for _, e := range rd.CommittedEntries {
		if e.Index <= r.applied {
			continue
		}
		last = e.Index
		switch e.Type {
		case raftpb.EntryNormal:
			if len(e.Data) == 0 {
				continue
			}
			var cmd vowdbpb.Command
			if err := proto.Unmarshal(e.Data, &cmd); err != nil {
				return nil, fmt.Errorf("replica %d: entry %d: %w", r.RangeID, e.Index, err)
			}
			res, err := applyCommand(b, r.desc, &r.txns, &cmd)
			if err != nil {
				return nil, err
			}
			if res.Checksum != nil {
				res.Index = e.Index
				r.rememberChecksum(e.Index, res.Checksum)
			}
			if res.Right != nil {
				if err := WriteInitialState(r.eng, b, res.Right); err != nil {
					return nil, err
				}
				r.desc = res.Left
				splits = append(splits, SplitEvent{Left: res.Left, Right: res.Right})
			}
			if cmd.ProposerNodeId == r.cfg.NodeID {
				if p, ok := r.proposals[cmd.ProposalId]; ok {
					delete(r.proposals, cmd.ProposalId)
					r.pendingResults = append(r.pendingResults, pendingResult{p: p, res: res})
				}
			}
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeI
			if e.Type == raftpb.EntryConfChange {
				var c raftpb.ConfChange
				if err := c.Unmarshal(e.Data); err != nil {
					return nil, err
				}
				cc = c
			} else {
				var c raftpb.ConfChangeV2
				if err := c.Unmarshal(e.Data); err != nil {
					return nil, err
				}
				cc = c
			}
			cs := r.rn.ApplyConfChange(cc)
			r.confState = *cs
			r.desc = descWithConfChange(r.desc, cc.AsV2())
			if err := setGogo(b, keys.RangeLocalKey(r.RangeID, keys.SuffixConfState), cs); err != nil {
				return nil, err
			}
			if err := setProtoW(b, keys.RangeLocalKey(r.RangeID, keys.SuffixDescriptor), r.desc); err != nil {
				return nil, err
			}
		}
	}
	if last > r.applied {
		r.applied = last
		if err := b.Set(keys.RangeLocalKey(r.RangeID, keys.SuffixApplied), u64(last), nil); err != nil {
			return nil, err
		}
		if err := r.maybeTruncate(b); err != nil {
			return nil, err
		}
	}
	return splits, nil
}

// maybeTruncate truncates the log behind the applied index once it is long.
func (r *Replica) maybeTruncate(b *pebble.Batch) error {
	keep := r.cfg.LogKeepEntries
	maxBytes := r.cfg.LogMaxBytes
	if maxBytes == 0 {
		maxBytes = 64 << 20
	}
	var to uint64
	switch {
	case r.logBytes > maxBytes:
		to = r.applied
	case keep > 0 && r.applied >= r.truncIndex+2*keep:
		to = r.applied - keep
	default:
		return nil
	}
	term, err := r.storage.MemoryStorage.Term(to)
	if err != nil {
		return nil // already compacted, e.g. by a snapshot
	}
	if err := b.DeleteRange(keys.RaftLogPrefix(r.RangeID), keys.RaftLogKey(r.RangeID, to+1), nil); err != nil {
		return err
	}
	if err := setProtoW(b, keys.RangeLocalKey(r.RangeID, keys.SuffixTruncated), &vowdbpb.RaftTruncatedState{Index: to, Term: term}); err != nil {
		return err
	}
	r.truncIndex = to
	r.logBytes = r.bytesAfter(to)
	return nil
}

// LogSize returns how many entries and (approximately) bytes the Raft log
// holds after its truncated index (scheduler goroutine only).
func (r *Replica) LogSize() (entries, bytes uint64) {
	return r.lastIndex - r.truncIndex, r.logBytes
}

// bytesAfter sums the sizes of the log entries after index i.
func (r *Replica) bytesAfter(i uint64) uint64 {
	last, _ := r.storage.MemoryStorage.LastIndex()
	if last <= i {
		return 0
	}
	ents, err := r.storage.MemoryStorage.Entries(i+1, last+1, ^uint64(0))
	if err != nil {
		return 0
	}
	var n uint64
	for i := range ents {
		n += uint64(len(ents[i].Data)) + 32
	}
	return n
}

// Finish runs after the apply batch is committed: it compacts the
// MemoryStorage, answers proposals and reads, publishes status and advances
// the RawNode.
func (r *Replica) Finish(rd raft.Ready) {
	if first, _ := r.storage.MemoryStorage.FirstIndex(); r.truncIndex >= first {
		if err := r.storage.MemoryStorage.Compact(r.truncIndex); err != nil && !errors.Is(err, raft.ErrCompacted) {
			panic(fmt.Sprintf("replica %d: compact: %v", r.RangeID, err))
		}
	}
	for _, pr := range r.pendingResults {
		pr.p.Finish(pr.res)
	}
	r.pendingResults = r.pendingResults[:0]
	n := 0
	for _, ir := range r.readsAtIndex {
		if ir.index <= r.applied {
			for _, rd := range ir.reads {
				rd.Finish(nil)
			}
			continue
		}
		r.readsAtIndex[n] = ir
		n++
	}
	r.readsAtIndex = r.readsAtIndex[:n]
	r.rn.Advance(rd)
	r.publish()
}

// descWithConfChange returns desc with the membership change applied.
func descWithConfChange(desc *vowdbpb.RangeDescriptor, cc raftpb.ConfChangeV2) *vowdbpb.RangeDescriptor {
	d := proto.Clone(desc).(*vowdbpb.RangeDescriptor)
	for _, ch := range cc.Changes {
		idx := -1
		for i, rd := range d.Replicas {
			if rd.NodeId == ch.NodeID {
				idx = i
			}
		}
		switch ch.Type {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			learner := ch.Type == raftpb.ConfChangeAddLearnerNode
			if idx >= 0 {
				d.Replicas[idx].Learner = learner
			} else {
				d.Replicas = append(d.Replicas, &vowdbpb.ReplicaDescriptor{NodeId: ch.NodeID, Learner: learner})
			}
		case raftpb.ConfChangeRemoveNode:
			if idx >= 0 {
				d.Replicas = append(d.Replicas[:idx], d.Replicas[idx+1:]...)
			}
		}
	}
	d.Generation++
	return d
}

type raftLogger struct{ l *slog.Logger }

func (l raftLogger) Debug(v ...interface{})                   {}
func (l raftLogger) Debugf(format string, v ...interface{})   {}
func (l raftLogger) Info(v ...interface{})                    {}
func (l raftLogger) Infof(format string, v ...interface{})    { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l raftLogger) Error(v ...interface{})                   { l.l.Error(fmt.Sprint(v...)) }
func (l raftLogger) Errorf(format string, v ...interface{})   { l.l.Error(fmt.Sprintf(format, v...)) }
func (l raftLogger) Warning(v ...interface{})                 { l.l.Warn(fmt.Sprint(v...)) }
func (l raftLogger) Warningf(format string, v ...interface{}) { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l raftLogger) Fatal(v ...interface{})                   { panic(fmt.Sprint(v...)) }
func (l raftLogger) Fatalf(format string, v ...interface{})   { panic(fmt.Sprintf(format, v...)) }
func (l raftLogger) Panic(v ...interface{})                   { panic(fmt.Sprint(v...)) }
func (l raftLogger) Panicf(format string, v ...interface{})   { panic(fmt.Sprintf(format, v...)) }

// Campaign starts an election (used for the right-hand side of a split on
// the node that led the left side, and for a range whose only voter is this
// node).
func (r *Replica) Campaign() { _ = r.rn.Campaign() }

// SoleVoter reports whether this replica is the only voter of its range, so
// that it can elect itself without waiting for an election timeout.
func (r *Replica) SoleVoter() bool {
	cs := r.confState
	return len(cs.Voters) == 1 && cs.Voters[0] == r.cfg.NodeID && len(cs.VotersOutgoing) == 0
}
