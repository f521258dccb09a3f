package server

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/deadlock"
	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/multiraft"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
	"github.com/vowdb/vowdb/internal/transport"
	"github.com/vowdb/vowdb/internal/txn"
	"github.com/vowdb/vowdb/internal/txnhost"
)

// txnLayer is a node's share of cross-range transactions: the participant
// tenures of the ranges it leads and the gateway of the txns it coordinates
// (package txnhost, hosted by txn_host.go), the deadlock detector when it
// leads the meta range, and the routing of protocol messages between them.
type txnLayer struct {
	n  *Node
	gw *txnhost.Gateway

	mu       sync.Mutex
	ranges   map[uint64]*txnhost.Tenure
	building map[uint64]bool
	descs    map[uint64]*vowdbpb.RangeDescriptor
	leaders  map[uint64]uint64 // leader hints that came with descs
	descAt   time.Time

	buildMu sync.Mutex
	gen     atomic.Uint64
	plainID atomic.Uint64
	// reportedEdges is set when the last waits-for report had edges.
	reportedEdges atomic.Bool

	det struct {
		sync.Mutex
		d        deadlock.Detector
		info     map[lock.TxnID]deadlock.TxnInfo
		reported map[uint64]time.Time
		history  []*vowdbpb.Deadlock
	}
	restoreMu  sync.Mutex  // serializes restore scans
	collecting atomic.Bool // a collection of finished txn state is running
	restorer   txnhost.Restorer
}

// Transaction timing. A tick drives the participants' inquiry timers and
// the coordinator's resends and timeouts.
const (
	txnTick          = 50 * time.Millisecond
	inquireTicks     = 10  // 500 ms of silence before a PREPARED txn asks its record
	resendTicks      = 4   // 200 ms between resends of unanswered phase messages
	voteTimeoutTicks = 100 // 5 s for phase 1
	deadlockPeriod   = 200 * time.Millisecond
	restorePeriod    = 2 * time.Second
	maxDeadlockLog   = 100
	maxFinishedTxns  = 100000
)

func newTxnLayer(n *Node) *txnLayer {
	l := &txnLayer{n: n, ranges: map[uint64]*txnhost.Tenure{}, building: map[uint64]bool{},
		descs: map[uint64]*vowdbpb.RangeDescriptor{}, leaders: map[uint64]uint64{}}
	l.det.info = map[lock.TxnID]deadlock.TxnInfo{}
	l.det.reported = map[uint64]time.Time{}
	gw, err := txnhost.NewGateway(gatewayHost{l}, 0, txnhost.GatewayConfig{ResendTicks: resendTicks,
		VoteTimeoutTicks: voteTimeoutTicks, DecideTimeoutTicks: voteTimeoutTicks, PrepareAnchor: l.n.cfg.TxnPrepareAnchor})
	if err != nil {
		panic(err) // the configuration above is valid
	}
	l.gw = gw
	return l
}

func (l *txnLayer) dropRange(tr *txnhost.Tenure) {
	l.mu.Lock()
	if l.ranges[tr.Range()] == tr {
		delete(l.ranges, tr.Range())
	}
	l.mu.Unlock()
}

// rangeFor returns the current tenure of the local leader r, building one
// from the durable prepare records if there is none.
func (l *txnLayer) rangeFor(ctx context.Context, sched *multiraft.Scheduler, r *replica.Replica) (*txnhost.Tenure, error) {
	st := r.Status()
	l.mu.Lock()
	tr := l.ranges[r.RangeID]
	l.mu.Unlock()
	if tr != nil && tr.Current(st) {
		return tr, nil
	}
	return l.build(ctx, sched, r)
}

func (l *txnLayer) build(ctx context.Context, sched *multiraft.Scheduler, r *replica.Replica) (*txnhost.Tenure, error) {
	l.buildMu.Lock()
	defer l.buildMu.Unlock()
	st := r.Status()
	l.mu.Lock()
	old := l.ranges[r.RangeID]
	l.mu.Unlock()
	if old != nil && old.Current(st) {
		return old, nil
	}
	if st.Desc == nil || st.Desc.IsMeta {
		return nil, transport.Invalid("range %d holds no user keys", r.RangeID)
	}
	if st.LeaderID != l.n.nodeID() {
		return nil, l.n.notLeader(st)
	}
	// A barrier entry proposed in this term applies only after every entry
	// before it in the log, so the prepare records read below are complete
	// (rule 6): also those an earlier tenure of the same raft term proposed
	// and gave up waiting for, which a ReadIndex read could miss because
	// they may still be uncommitted when it returns.
	barrier := replica.NewProposal(&vowdbpb.Command{})
	sched.Propose(r.RangeID, barrier)
	ctx, cancel := context.WithTimeout(ctx, l.n.cfg.RequestTimeout)
	defer cancel()
	select {
	case res := <-barrier.Done:
		if res.Err != nil {
			return nil, l.n.replicaErr(r, res.Err)
		}
	case <-ctx.Done():
		return nil, l.n.replicaErr(r, ctx.Err())
	}
	st2 := r.Status()
	if st2.Term != st.Term || st2.LeaderID != l.n.nodeID() {
		return nil, l.n.notLeader(st2)
	}
	recs, err := replica.PrepareRecords(l.n.eng, r.RangeID)
	if err != nil {
		return nil, err
	}
	prepared := txnhost.PreparedFromRecords(r.RangeID, recs)
	tenure := st.Term<<16 | (l.gen.Add(1) & 0xffff)
	tr, err := txnhost.NewTenure(tenureHost{l}, txnhost.Config{Range: r.RangeID, RaftTerm: st.Term, Tenure: tenure,
		Start: st2.Desc.StartKey, End: st2.Desc.EndKey, Prepared: prepared, InquireTicks: inquireTicks,
		MaxFinished: maxFinishedTxns, MaxTxnBytes: l.n.cfg.MaxTxnBytes, IdleTimeout: l.n.cfg.TxnIdleTimeout, PipelineRecords: l.n.cfg.TxnPipelineRecords})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.ranges[r.RangeID] = tr
	l.mu.Unlock()
	if old != nil {
		old.Kill("replaced by a new tenure")
	}
	if len(prepared) > 0 {
		l.n.log.Info("txn tenure rebuilt prepared transactions", "range", r.RangeID, "prepared", len(prepared))
	}
	return tr, nil
}

func (l *txnLayer) tenures() []*txnhost.Tenure {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*txnhost.Tenure, 0, len(l.ranges))
	for _, tr := range l.ranges {
		out = append(out, tr)
	}
	return out
}

// abortStatus is the error a client gets for an aborted transaction.
func abortStatus(ab *vowdbpb.TxnAbort, format string, args ...any) error {
	return transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_TXN_ABORTED, Abort: ab}, format, args...)
}

// op runs one transactional operation on this node, the leader of its key.
func (l *txnLayer) op(ctx context.Context, req *vowdbpb.TxnOpRequest) (*vowdbpb.TxnOpResponse, error) {
	a, err := l.admitOp(ctx, req)
	if err != nil {
		return nil, err
	}
	return l.granted(ctx, a, req, a.await(ctx, lock.TxnID(req.TxnId)))
}

// startOp is op for a caller that must not block (the Batch stream's
// receiving goroutine): done is called exactly once with the answer,
// before startOp returns when the lock is granted at once (or the
// operation is refused), which is the common case and costs no goroutine;
// else from a goroutine that waits for the lock.
func (l *txnLayer) startOp(ctx context.Context, req *vowdbpb.TxnOpRequest, done func(*vowdbpb.TxnOpResponse, error)) {
	a, err := l.admitOp(ctx, req)
	if err != nil {
		done(nil, err)
		return
	}
	select {
	case g := <-a.grant: // granted (or refused) at once
		done(l.granted(ctx, a, req, g))
		return
	default:
	}
	go func() { done(l.granted(ctx, a, req, a.await(ctx, lock.TxnID(req.TxnId)))) }()
}

// checkAttempt refuses a transaction id or attempt a client may not send:
// id 0, ids with the plain-operation bit, attempt 0.
func checkAttempt(id, attempt uint64) error {
	if id == 0 || lock.TxnID(id)&plainTxnBit != 0 || attempt == 0 {
		return transport.Invalid("txn id %d / attempt %d out of range (1..2^63-1, attempt > 0)", id, attempt)
	}
	return nil
}

// admittedOp is an operation that asked its range for its lock.
type admittedOp struct {
	tr      *txnhost.Tenure
	span    lock.Span
	timeout time.Duration // the lock-wait timeout
	grant   chan opGrant  // receives the end of the wait
}

// await waits for the end of the lock wait: the grant, the lock-wait
// timeout or ctx, whichever comes first (then the wait is given up).
func (a *admittedOp) await(ctx context.Context, id lock.TxnID) opGrant {
	timer := time.NewTimer(a.timeout)
	defer timer.Stop()
	select {
	case g := <-a.grant:
		return g
	case <-timer.C:
	case <-ctx.Done():
	}
	a.tr.GiveUp(time.Now(), id)
	return <-a.grant
}

// admitOp checks req and asks its range's tenure for its lock.
func (l *txnLayer) admitOp(ctx context.Context, req *vowdbpb.TxnOpRequest) (*admittedOp, error) {
	n := l.n
	id := lock.TxnID(req.TxnId)
	if err := checkAttempt(req.TxnId, req.Attempt); err != nil {
		return nil, err
	}
	// The attempt is the client's begin time; the ranges collect finished
	// state by it. One that looks older than half the retention (a client
	// clock far behind this node's) could have its state collected while
	// it runs: refused up front, with the reason.
	if age := time.Since(time.Unix(0, int64(req.Attempt))); age > n.cfg.TxnRetention/2 {
		return nil, transport.Invalid("transaction %d began %v ago by this node's clock, more than half the txn retention (%v): check the client's clock", id, age.Round(time.Second), n.cfg.TxnRetention)
	}
	val := req.Value
	if req.Kind != vowdbpb.TxnOpRequest_PUT {
		val = nil
	}
	if err := n.checkKV(req.Key, val); err != nil {
		return nil, err
	}
	if req.Kind == vowdbpb.TxnOpRequest_SCAN && len(req.EndKey) > 0 && string(req.EndKey) <= string(req.Key) {
		return nil, transport.Invalid("scan end key %q is not after start key %q", req.EndKey, req.Key)
	}
	sched, r, err := n.leaderFor(req.Key)
	if err != nil {
		return nil, err
	}
	tr, err := l.rangeFor(ctx, sched, r)
	if err != nil {
		return nil, err
	}
	span, mode := lock.Point(req.Key), lock.S
	var w *txn.Write
	switch req.Kind {
	case vowdbpb.TxnOpRequest_PUT:
		mode, w = lock.X, &txn.Write{Key: req.Key, Value: req.Value}
	case vowdbpb.TxnOpRequest_DELETE:
		mode, w = lock.X, &txn.Write{Key: req.Key, Delete: true}
	case vowdbpb.TxnOpRequest_SCAN:
		end := req.EndKey
		if _, trEnd := tr.Span(); len(trEnd) > 0 && (len(end) == 0 || bytes.Compare(trEnd, end) < 0) {
			end = trEnd
		}
		span = lock.Span{Start: req.Key, End: end}
	}
	if req.DeadlineUnixMs > 0 && time.Now().UnixMilli() > req.DeadlineUnixMs {
		return nil, abortStatus(&vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_DEADLINE}, "transaction %d ran past its deadline", id)
	}

	timeout := time.Duration(req.LockTimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = n.cfg.LockTimeout
	}
	deadline := time.Now().Add(n.cfg.MaxTxnDuration)
	if req.DeadlineUnixMs > 0 && time.UnixMilli(req.DeadlineUnixMs).Before(deadline) {
		deadline = time.UnixMilli(req.DeadlineUnixMs)
	}
	if err := ctx.Err(); err != nil {
		// The client gave up before this request was served (it waited in
		// a queue, or this node was paused): taking a lock now would leave
		// it to a transaction nobody is running.
		return nil, status.FromContextError(err).Err()
	}
	ch := make(chan opGrant, 1)
	err = tr.Do(time.Now(), txnhost.Op{Txn: id, Attempt: req.Attempt, Span: span, Mode: mode, Write: w,
		Age: uint64(req.BeginUnixNanos), Gateway: req.GatewayNodeId, Deadline: deadline, LockTimeout: timeout},
		func(waited time.Duration, ab *vowdbpb.TxnAbort) { ch <- opGrant{waited, ab} })
	if err != nil {
		var ref *txnhost.Refusal
		if !errors.As(err, &ref) {
			return nil, err
		}
		switch {
		case ref.Vowed:
			return nil, transport.Invalid("%s", ref.Msg)
		case ref.Limit:
			return nil, transport.Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_TXN_LIMIT, Abort: ref.Abort}, "%s", ref.Msg)
		default:
			return nil, abortStatus(ref.Abort, "%s", ref.Msg)
		}
	}
	return &admittedOp{tr: tr, span: span, timeout: timeout, grant: ch}, nil
}

// opGrant is the end of an operation's wait for its lock.
type opGrant struct {
	waited time.Duration
	ab     *vowdbpb.TxnAbort
}

// granted finishes an operation whose wait for its lock ended with g.
func (l *txnLayer) granted(ctx context.Context, a *admittedOp, req *vowdbpb.TxnOpRequest, g opGrant) (*vowdbpb.TxnOpResponse, error) {
	tr := a.tr
	if g.ab != nil {
		return nil, abortStatus(g.ab, "%s", txnhost.DescribeAbort(g.ab))
	}
	failpoint.Hit(failpoint.TxnOpGranted)
	resp := &vowdbpb.TxnOpResponse{RangeId: tr.Range(), Term: tr.Number(), LockWaitMicros: g.waited.Microseconds()}
	_, resp.RangeEnd = tr.Span()
	if req.Kind == vowdbpb.TxnOpRequest_GET || req.Kind == vowdbpb.TxnOpRequest_SCAN {
		if err := l.readUnderLock(ctx, tr, req, a.span, resp); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		// The client gave up while the lock was granted: it will not hear
		// of this operation, so it fails the attempt, and its rollback may
		// not get here (this node was cut off or paused). Roll back the
		// attempt's state on this range now, so its locks are not kept
		// until the deadline; a prepared attempt is never touched.
		tr.Rollback(lock.TxnID(req.TxnId), req.Attempt)
		return nil, status.FromContextError(err).Err()
	}
	return resp, nil
}

// readUnderLock serves a read with its S lock held, from the leader's
// applied state, then checks that the tenure (and so the lock) survived.
//
// No ReadIndex round is needed: within a tenure every write to a key goes
// through this leader's lock table and its lock is released only after the
// write applied here, and everything committed before the tenure applied
// before it was built (the barrier). A leader deposed without knowing it
// may serve a stale value, but such a read can never commit: a writing
// participant's prepare record cannot commit in its tenure's term once
// another leader exists (and the tenure ends if the term moved when it
// applies), and a READ-ONLY vote is sent only after a ReadIndex round
// confirms the term (rules 8, 9). So the confirmation happens once, at
// the vote, instead of once per read.
func (l *txnLayer) readUnderLock(ctx context.Context, tr *txnhost.Tenure, req *vowdbpb.TxnOpRequest, span lock.Span, resp *vowdbpb.TxnOpResponse) error {
	n := l.n
	if req.Kind == vowdbpb.TxnOpRequest_GET {
		v, err := n.eng.Get(keys.UserKey(req.Key))
		switch {
		case err == nil:
			resp.Found, resp.Value = true, v
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
	} else {
		limit := req.Limit
		if limit <= 0 || limit > maxScanLimit {
			limit = maxScanLimit
		}
		start, stop := keys.UserSpan(span.Start, span.End)
		err := n.eng.Scan(start, stop, func(k, v []byte) bool {
			uk, _ := keys.DecodeUserKey(k)
			resp.Kvs = append(resp.Kvs, &vowdbpb.KeyValue{Key: append([]byte(nil), uk...), Value: append([]byte(nil), v...)})
			return int64(len(resp.Kvs)) < limit
		})
		if err != nil {
			return err
		}
	}
	if st := (tenureHost{l}).Status(tr.Range()); tr.Dead() || st == nil || st.Term != tr.RaftTerm() {
		return abortStatus(&vowdbpb.TxnAbort{Reason: vowdbpb.TxnAbort_STATE_LOST, RangeId: tr.Range()},
			"range %d lost its leader during the read", tr.Range())
	}
	return nil
}

// plainLock takes a lock for a non-transactional operation on the range
// of r, so that it never reads or overwrites around a transaction's locks,
// and calls cb with the release function (to call once the operation
// applied) or an error. cb runs at once when the lock is free, else on
// another goroutine when it is granted.
func (l *txnLayer) plainLock(ctx context.Context, sched *multiraft.Scheduler, r *replica.Replica, span lock.Span, mode lock.Mode, cb func(release func(), err error)) {
	l.plainLockTry(ctx, sched, r, span, mode, 3, cb)
}

func (l *txnLayer) plainLockTry(ctx context.Context, sched *multiraft.Scheduler, r *replica.Replica, span lock.Span, mode lock.Mode, tries int, cb func(release func(), err error)) {
	tr, err := l.rangeFor(ctx, sched, r)
	if err != nil {
		cb(nil, err)
		return
	}
	id := plainTxnBit | lock.TxnID(l.plainID.Add(1))
	release := func() { tr.Release(id) }
	fail := func(ab *vowdbpb.TxnAbort) {
		if ab.Reason == vowdbpb.TxnAbort_STATE_LOST && tries > 1 {
			// The tenure ended (split, leader change): its locks are gone,
			// so ask the next one.
			l.plainLockTry(ctx, sched, r, span, mode, tries-1, cb)
			return
		}
		// Nothing was proposed: the client may retry (TXN_ABORTED detail,
		// which the client maps to ErrUnavailable for plain operations).
		cb(nil, abortStatus(ab, "key %q is locked by transaction %d: %s; nothing was written", span.Start, ab.ConflictingTxnId, ab.Reason))
	}
	timeout := l.n.cfg.RequestTimeout
	waiting := make(chan struct{})
	var once sync.Once
	tr.Lock(time.Now(), id, span, mode, timeout, func(_ time.Duration, ab *vowdbpb.TxnAbort) {
		once.Do(func() { close(waiting) })
		if ab != nil {
			fail(ab)
			return
		}
		cb(release, nil)
	})
	select {
	case <-waiting:
		return
	default:
	}
	// Still waiting: give up at the timeout or when the caller does.
	go func() {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-waiting:
		case <-t.C:
			tr.GiveUp(time.Now(), id)
		case <-ctx.Done():
			tr.GiveUp(time.Now(), id)
		}
	}()
}

// loop drives ticks, tenure upkeep, deadlock reports and recovery.
func (l *txnLayer) loop() {
	t := time.NewTicker(txnTick)
	defer t.Stop()
	var lastReport, lastBuild, lastRestore time.Time
	lastCollect := time.Now() // the first collection waits one interval: at start-up this node leads nothing yet
	for {
		select {
		case <-l.n.ctx.Done():
			return
		case now := <-t.C:
			for _, tr := range l.tenures() {
				tr.Tick(now)
			}
			l.gw.Tick()
			if now.Sub(lastBuild) >= 500*time.Millisecond {
				lastBuild = now
				l.buildMissing()
			}
			if now.Sub(lastReport) >= deadlockPeriod {
				lastReport = now
				go l.reportWaits()
			}
			if now.Sub(lastRestore) >= restorePeriod {
				lastRestore = now
				go l.restore()
			}
			if now.Sub(lastCollect) >= l.n.cfg.TxnCollectInterval {
				lastCollect = now
				go l.collect(now)
			}
		}
	}
}

// buildMissing starts a tenure on every range this node leads, so that
// prepared transactions are recovered after a leader change even when no
// client touches the range (rule 6).
func (l *txnLayer) buildMissing() {
	s := l.n.sched.Load()
	if s == nil {
		return
	}
	for _, r := range s.Replicas() {
		st := r.Status()
		if st.Desc == nil || st.Desc.IsMeta || st.LeaderID != l.n.nodeID() {
			continue
		}
		l.mu.Lock()
		tr := l.ranges[r.RangeID]
		l.mu.Unlock()
		if tr != nil && tr.Current(st) {
			continue
		}
		l.mu.Lock()
		busy := l.building[r.RangeID]
		l.building[r.RangeID] = true
		l.mu.Unlock()
		if busy {
			continue
		}
		go func() {
			defer func() {
				l.mu.Lock()
				delete(l.building, r.RangeID)
				l.mu.Unlock()
			}()
			if _, err := l.build(l.n.ctx, s, r); err != nil {
				l.n.log.Debug("txn tenure not built", "range", r.RangeID, "err", err)
			}
		}()
	}
}
