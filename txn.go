package vowdb

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/transport"
)

// TxnID identifies a transaction. Ids are chosen by the client library at
// random unless WithTxnID names one; valid ids are 1 .. 2^63-1.
type TxnID uint64

// TxnState is what the cluster knows of a transaction (see DB.TxnStatus).
type TxnState int

// Transaction states.
const (
	// TxnUnknown: no node knows the id (never committed, or forgotten).
	TxnUnknown TxnState = iota
	// TxnPending: the transaction is in flight; ask again later.
	TxnPending
	// TxnCommitted: it committed; its writes are applied or will be.
	TxnCommitted
	// TxnAborted: it aborted; none of its writes were applied.
	TxnAborted
)

func (s TxnState) String() string {
	switch s {
	case TxnPending:
		return "PENDING"
	case TxnCommitted:
		return "COMMITTED"
	case TxnAborted:
		return "ABORTED"
	}
	return "UNKNOWN"
}

// Transaction limits. Exceeding one is a permanent error (ErrTxnLimit) and
// the transaction is rolled back.
const (
	DefaultMaxTxnBytes    = 64 << 20 // bytes of keys and values written
	DefaultMaxTxnKeys     = 100000   // distinct keys written
	DefaultTxnTimeout     = 60 * time.Second
	DefaultTxnLockTimeout = 5 * time.Second
)

var (
	// ErrTxnDone is returned by operations on a transaction that already
	// committed, rolled back or aborted.
	ErrTxnDone = errors.New("vowdb: transaction already finished")
	// ErrTxnCommitted is returned by Begin for a WithTxnID id that already
	// committed: the id is an idempotency key, so nothing runs twice.
	// Transact treats it as success.
	ErrTxnCommitted = errors.New("vowdb: transaction id already committed")
	// ErrTxnInFlight is returned by Begin for a WithTxnID id whose earlier
	// attempt is still in flight; it matches ErrRetryable.
	ErrTxnInFlight = fmt.Errorf("vowdb: an earlier attempt of this transaction id is still in flight (%w)", ErrRetryable)
	// ErrTxnLimit means the transaction went over a limit (size, keys,
	// duration); it was rolled back and retrying it unchanged fails again.
	// It matches ErrInvalidArgument.
	ErrTxnLimit = fmt.Errorf("vowdb: transaction limit exceeded (%w)", ErrInvalidArgument)
)

// AbortReason says why a transaction was aborted.
type AbortReason int

// Abort reasons.
const (
	AbortUnknown      AbortReason = iota
	AbortDeadlock                 // chosen as the victim of a waits-for cycle
	AbortLockTimeout              // waited longer than the lock-wait timeout
	AbortStateLost                // a participant lost the txn's state (leader change, rule 8) or voted NO
	AbortConflict                 // a condition checked by the program failed (CompareAndSwap)
	AbortDeadline                 // the transaction ran past its deadline
	AbortRollback                 // explicit rollback
	AbortDecisionLost             // the coordinator was presumed gone and the txn record aborted
	AbortIdle                     // a range heard no operation or keep-alive for its idle timeout
)

var abortNames = map[AbortReason]string{AbortUnknown: "unknown", AbortDeadlock: "deadlock",
	AbortLockTimeout: "lock-wait timeout", AbortStateLost: "participant lost state", AbortConflict: "conflict",
	AbortDeadline: "deadline", AbortRollback: "rollback", AbortDecisionLost: "decision lost", AbortIdle: "idle"}

func (r AbortReason) String() string { return abortNames[r] }

// AbortError is returned when a transaction was aborted: nothing it wrote
// was applied. Every reason but AbortRollback and AbortDeadline matches
// ErrRetryable, and Transact retries those.
type AbortError struct {
	Txn            TxnID
	Reason         AbortReason
	ConflictingTxn TxnID         // who held the lock, if known
	Key            []byte        // the key waited for, if any
	Mode           string        // the lock mode asked for ("S" or "X")
	Wait           time.Duration // how long it waited
	Cycle          []TxnID       // for a deadlock: the waits-for cycle, starting at the victim
	Range          uint64        // the range that reported it
}

func (e *AbortError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vowdb: transaction %d aborted: %s", e.Txn, e.Reason)
	if e.Key != nil {
		fmt.Fprintf(&b, " on key %q", e.Key)
		if e.Mode != "" {
			fmt.Fprintf(&b, " (%s lock)", e.Mode)
		}
	}
	if e.ConflictingTxn != 0 {
		fmt.Fprintf(&b, ", conflicting txn %d", e.ConflictingTxn)
	}
	if e.Wait > 0 {
		fmt.Fprintf(&b, ", waited %v", e.Wait.Round(time.Millisecond))
	}
	if len(e.Cycle) > 0 {
		parts := make([]string, len(e.Cycle))
		for i, t := range e.Cycle {
			parts[i] = fmt.Sprint(t)
		}
		fmt.Fprintf(&b, ", cycle %s -> %s", strings.Join(parts, " -> "), parts[0])
	}
	if e.Range != 0 {
		fmt.Fprintf(&b, " (range %d)", e.Range)
	}
	return b.String()
}

// Is makes retryable aborts match ErrRetryable.
func (e *AbortError) Is(target error) bool {
	return target == ErrRetryable && e.Reason != AbortRollback && e.Reason != AbortDeadline
}

func abortFromPB(id TxnID, ab *vowdbpb.TxnAbort) *AbortError {
	e := &AbortError{Txn: id}
	if ab == nil {
		return e
	}
	e.Reason = map[vowdbpb.TxnAbort_Reason]AbortReason{
		vowdbpb.TxnAbort_DEADLOCK: AbortDeadlock, vowdbpb.TxnAbort_LOCK_TIMEOUT: AbortLockTimeout,
		vowdbpb.TxnAbort_STATE_LOST: AbortStateLost, vowdbpb.TxnAbort_CONFLICT: AbortConflict,
		vowdbpb.TxnAbort_DEADLINE: AbortDeadline, vowdbpb.TxnAbort_ROLLBACK: AbortRollback,
		vowdbpb.TxnAbort_DECISION_LOST: AbortDecisionLost, vowdbpb.TxnAbort_IDLE: AbortIdle}[ab.Reason]
	e.ConflictingTxn, e.Key, e.Mode = TxnID(ab.ConflictingTxnId), ab.Key, ab.LockMode
	e.Wait, e.Range = time.Duration(ab.WaitMicros)*time.Microsecond, ab.RangeId
	for _, t := range ab.Cycle {
		e.Cycle = append(e.Cycle, TxnID(t))
	}
	return e
}

// TxnOption configures a transaction.
type TxnOption func(*txnOptions)

type txnOptions struct {
	id          TxnID
	lockTimeout time.Duration
	timeout     time.Duration
	deadline    time.Time
	priority    int
	maxBytes    int
	maxKeys     int
	maxAttempts int
}

// WithTxnID names the transaction. The id is an idempotency key: Begin
// with an id that already committed returns ErrTxnCommitted (Transact
// returns nil without running fn), so a commit retried with the same id
// never applies twice; DB.TxnStatus(id) tells whether it committed. Begin
// with a named id costs one extra cluster-wide status lookup.
func WithTxnID(id TxnID) TxnOption { return func(o *txnOptions) { o.id = id } }

// WithLockTimeout bounds how long one operation waits for a lock before
// the transaction is aborted with AbortLockTimeout (default 5s).
func WithLockTimeout(d time.Duration) TxnOption { return func(o *txnOptions) { o.lockTimeout = d } }

// WithTimeout bounds the transaction's life from Begin (default 60s); past
// it, operations fail and the cluster aborts the transaction's locks.
func WithTimeout(d time.Duration) TxnOption { return func(o *txnOptions) { o.timeout = d } }

// WithDeadline is WithTimeout with an absolute time.
func WithDeadline(t time.Time) TxnOption { return func(o *txnOptions) { o.deadline = t } }

// WithPriority makes the transaction older for deadlock victim choice by
// priority seconds: with a higher priority it is less likely to be the
// victim.
func WithPriority(p int) TxnOption { return func(o *txnOptions) { o.priority = p } }

// WithMaxBytes and WithMaxKeys change the transaction size limits.
func WithMaxBytes(n int) TxnOption { return func(o *txnOptions) { o.maxBytes = n } }

// WithMaxKeys limits the number of distinct keys a transaction writes.
func WithMaxKeys(n int) TxnOption { return func(o *txnOptions) { o.maxKeys = n } }

// WithMaxAttempts bounds how many times Transact runs the function
// (default 10).
func WithMaxAttempts(n int) TxnOption { return func(o *txnOptions) { o.maxAttempts = n } }

// Receipt describes how a transaction committed.
type Receipt struct {
	Path          string   // "1PC", "2PC" or "read-only"
	Ranges        []uint64 // participant ranges
	Gateway       uint64   // the node that coordinated the commit
	RoundTrips    int      // sequential round trips of the commit
	DurableWrites int      // sequential replicated writes on the commit path
	LockWait      time.Duration
	Attempts      int
}

// Txn is a transaction begun with DB.Begin. Its methods are safe for
// concurrent use but a transaction is meant to be used by one goroutine.
// Every write takes its X lock at its range when it is issued; reads take S
// locks (scans lock the scanned span), held until the end (strict 2PL).
type Txn struct {
	db      *DB
	id      TxnID
	attempt uint64
	opts    txnOptions
	begin   time.Time
	age     int64
	gateway string

	mu        sync.Mutex
	parts     map[uint64]*txnPart
	order     []uint64
	anchorKey []byte
	anchorRng uint64
	firstKey  []byte
	firstRng  uint64
	writes    map[string]*[]byte // key -> value; nil value pointer target means deleted
	bytes     int
	lockWait  time.Duration
	done      bool
	abort     error
	receipt   *Receipt
	attempts  int
	touched   []uint64 // ranges an operation of unknown fate went to
	keepAlive *time.Timer
	kaStopped bool
}

type txnPart struct {
	term   uint64
	writes bool
	key    []byte // a key of the range, to route keep-alives
}

var gatewayRR atomic.Uint64

func newTxnID() TxnID {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := TxnID(binary.BigEndian.Uint64(b[:]) >> 1); id != 0 {
			return id
		}
	}
}

func buildOptions(opts []TxnOption) (txnOptions, error) {
	o := txnOptions{lockTimeout: DefaultTxnLockTimeout, timeout: DefaultTxnTimeout, maxBytes: DefaultMaxTxnBytes,
		maxKeys: DefaultMaxTxnKeys, maxAttempts: 10}
	for _, f := range opts {
		f(&o)
	}
	switch {
	case o.id >= 1<<63:
		return o, fmt.Errorf("%w: txn id %d is over 2^63-1", ErrInvalidArgument, o.id)
	case o.lockTimeout <= 0 || o.timeout <= 0 || o.maxBytes <= 0 || o.maxKeys <= 0 || o.maxAttempts <= 0:
		return o, fmt.Errorf("%w: transaction timeouts, limits and attempts must be positive", ErrInvalidArgument)
	}
	return o, nil
}

// Begin starts a transaction and picks a reachable node as its gateway.
// Commit moves the gateway to the leader of the anchor range when the
// client knows it (see Commit).
func (db *DB) Begin(ctx context.Context, opts ...TxnOption) (*Txn, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return db.begin(ctx, o, 0, time.Now())
}

func (db *DB) begin(ctx context.Context, o txnOptions, id TxnID, born time.Time) (*Txn, error) {
	if db.isClosed() {
		return nil, ErrClosed
	}
	if id == 0 && o.id != 0 {
		// A named txn: refuse to run it again if an attempt committed.
		switch st, err := db.TxnStatus(ctx, o.id); {
		case err != nil:
			return nil, err
		case st == TxnCommitted:
			return nil, fmt.Errorf("%w: %d", ErrTxnCommitted, o.id)
		case st == TxnPending:
			return nil, fmt.Errorf("%w: %d", ErrTxnInFlight, o.id)
		}
		id = o.id
	}
	if id == 0 {
		id = newTxnID()
	}
	eps := db.endpoints()
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: no endpoint", ErrUnavailable)
	}
	tx := &Txn{db: db, id: id, attempt: uint64(time.Now().UnixNano()), opts: o, begin: time.Now(),
		age:   born.UnixNano() - int64(o.priority)*int64(time.Second),
		parts: map[uint64]*txnPart{}, writes: map[string]*[]byte{}}
	// The gateway: a reachable endpoint. Spread gateways round-robin, preferring nodes that did not recently
	// let a request time out.
	start := int(gatewayRR.Add(1))
	var fresh, stale []string
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		if db.isSuspectAddr(ep) {
			stale = append(stale, ep)
		} else {
			fresh = append(fresh, ep)
		}
	}
	var lastErr error
	for _, ep := range append(fresh, stale...) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := db.readyConn(cctx, ep)
		cancel()
		if err == nil {
			tx.gateway = ep
			tx.startKeepAlive()
			return tx, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("%w: no gateway reachable: %v", ErrUnavailable, lastErr)
}

// isSuspectAddr reports whether the node at addr recently let a request
// time out.
func (db *DB) isSuspectAddr(addr string) bool {
	db.mu.Lock()
	var id uint64
	for nid, a := range db.mu.nodes {
		if a == addr {
			id = nid
		}
	}
	db.mu.Unlock()
	return id != 0 && db.isSuspect(id)
}

func (db *DB) isClosed() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.closed
}

// ID returns the transaction's id.
func (tx *Txn) ID() TxnID { return tx.id }

// Gateway returns the address of the node that coordinates the
// transaction's commit: the node picked at Begin, until Commit moves the
// commit to the leader of the anchor range (see Commit).
func (tx *Txn) Gateway() string {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.gateway
}

// anchorLeader returns the address of the node the client last saw
// lead the range of key, if it knows one that has not recently let a
// request time out.
func (tx *Txn) anchorLeader(key []byte) (string, bool) {
	r := tx.db.cachedRoute(key)
	if r == nil {
		return "", false
	}
	id := tx.db.leaderOf(r)
	if id == 0 || tx.db.isSuspect(id) {
		return "", false
	}
	return tx.db.addrOf(id)
}

// Receipt returns how the transaction committed, or nil before Commit.
func (tx *Txn) Receipt() *Receipt {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.receipt
}

func (tx *Txn) deadline() time.Time {
	if !tx.opts.deadline.IsZero() {
		return tx.opts.deadline
	}
	return tx.begin.Add(tx.opts.timeout)
}

// check returns the error that ends every further operation, if any.
func (tx *Txn) checkLocked() error {
	if tx.abort != nil {
		return tx.abort
	}
	if tx.done {
		return ErrTxnDone
	}
	return nil
}

func (tx *Txn) op(ctx context.Context, req *vowdbpb.TxnOpRequest) (*vowdbpb.TxnOpResponse, error) {
	tx.mu.Lock()
	if err := tx.checkLocked(); err != nil {
		tx.mu.Unlock()
		return nil, err
	}
	tx.mu.Unlock()
	if time.Now().After(tx.deadline()) {
		tx.fail(ctx, &AbortError{Txn: tx.id, Reason: AbortDeadline})
		return nil, tx.abort
	}
	req.TxnId, req.Attempt, req.GatewayNodeId = uint64(tx.id), tx.attempt, 0
	req.BeginUnixNanos, req.LockTimeoutMs = tx.age, tx.opts.lockTimeout.Milliseconds()
	req.DeadlineUnixMs = tx.deadline().UnixMilli()
	var resp *vowdbpb.TxnOpResponse
	octx, cancel := context.WithTimeout(ctx, tx.opts.lockTimeout+tx.db.cfg.RequestTimeout)
	defer cancel()
	err := tx.db.send(octx, req.Key, false, func(ctx context.Context, c *grpc.ClientConn) error {
		// Over the node's Batch stream, with the client's other concurrent
		// operations to that node; the node stops when this client does.
		req.TimeoutMs = remainingMs(ctx)
		res, err := tx.db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_TxnOp{TxnOp: req}})
		if err == nil {
			resp = res.TxnOp
		}
		return err
	})
	if err != nil {
		if d, ok := transport.Detail(err); ok && d.Code == vowdbpb.ErrorDetail_TXN_ABORTED {
			return nil, tx.fail(ctx, abortFromPB(tx.id, d.Abort))
		}
		if d, ok := transport.Detail(err); ok && d.Code == vowdbpb.ErrorDetail_TXN_LIMIT {
			return nil, tx.fail(ctx, fmt.Errorf("%w: %s", ErrTxnLimit, status.Convert(err).Message()))
		}
		if errors.Is(err, ErrInvalidArgument) {
			return nil, err
		}
		// The operation's fate is unknown (it may hold a lock there): the
		// transaction cannot go on safely, and its rollback must reach
		// that range too.
		if r := tx.db.cachedRoute(req.Key); r != nil {
			tx.mu.Lock()
			tx.touched = append(tx.touched, r.desc.RangeId)
			tx.mu.Unlock()
		}
		return nil, tx.fail(ctx, fmt.Errorf("%w: transaction %d: %v", ErrUnavailable, tx.id, err))
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.lockWait += time.Duration(resp.LockWaitMicros) * time.Microsecond
	p := tx.parts[resp.RangeId]
	if p == nil {
		p = &txnPart{term: resp.Term, key: append([]byte(nil), req.Key...)}
		tx.parts[resp.RangeId] = p
		tx.order = append(tx.order, resp.RangeId)
		if tx.firstRng == 0 {
			tx.firstRng, tx.firstKey = resp.RangeId, append([]byte(nil), req.Key...)
		}
	} else if p.term != resp.Term {
		// The range changed leaders since our first operation there: the
		// locks taken then are gone (rule 8).
		tx.mu.Unlock()
		err := tx.fail(ctx, &AbortError{Txn: tx.id, Reason: AbortStateLost, Range: resp.RangeId})
		tx.mu.Lock()
		return nil, err
	}
	if req.Kind == vowdbpb.TxnOpRequest_PUT || req.Kind == vowdbpb.TxnOpRequest_DELETE {
		p.writes = true
		if tx.anchorRng == 0 {
			tx.anchorRng, tx.anchorKey = resp.RangeId, append([]byte(nil), req.Key...)
		}
	}
	return resp, nil
}

// remainingMs is how long ctx still has, in whole milliseconds (at least
// 1), or 0 without a deadline.
func remainingMs(ctx context.Context) int64 {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(d).Milliseconds(), 1)
}

// fail ends the transaction with err and releases its locks.
func (tx *Txn) fail(ctx context.Context, err error) error {
	tx.mu.Lock()
	if tx.abort == nil {
		tx.abort = err
	}
	err = tx.abort
	already := tx.done
	tx.done = true
	tx.mu.Unlock()
	if !already {
		tx.stopKeepAlive()
		tx.rollbackRPC(ctx)
	}
	return err
}

// Get reads key under an S lock; ErrNotFound if absent. It sees the
// transaction's own writes.
func (tx *Txn) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	tx.mu.Lock()
	if w, ok := tx.writes[string(key)]; ok && tx.checkLocked() == nil {
		tx.mu.Unlock()
		if *w == nil {
			return nil, ErrNotFound
		}
		return append([]byte(nil), (*w)...), nil
	}
	tx.mu.Unlock()
	resp, err := tx.op(ctx, &vowdbpb.TxnOpRequest{Kind: vowdbpb.TxnOpRequest_GET, Key: key})
	if err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, ErrNotFound
	}
	return resp.Value, nil
}

// Put writes key=value under an X lock, taken now.
func (tx *Txn) Put(ctx context.Context, key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	return tx.write(ctx, key, value, vowdbpb.TxnOpRequest_PUT)
}

// Delete deletes key under an X lock, taken now.
func (tx *Txn) Delete(ctx context.Context, key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return tx.write(ctx, key, nil, vowdbpb.TxnOpRequest_DELETE)
}

func (tx *Txn) write(ctx context.Context, key, value []byte, kind vowdbpb.TxnOpRequest_Kind) error {
	tx.mu.Lock()
	if err := tx.checkLocked(); err != nil {
		tx.mu.Unlock()
		return err
	}
	_, seen := tx.writes[string(key)]
	size := tx.bytes + len(key) + len(value)
	tooMany := !seen && len(tx.writes)+1 > tx.opts.maxKeys
	tx.mu.Unlock()
	if size > tx.opts.maxBytes || tooMany {
		return tx.fail(ctx, fmt.Errorf("%w: transaction %d would write %d bytes in %d keys (limits: %d bytes, %d keys); rolled back",
			ErrTxnLimit, tx.id, size, len(tx.writes)+1, tx.opts.maxBytes, tx.opts.maxKeys))
	}
	if _, err := tx.op(ctx, &vowdbpb.TxnOpRequest{Kind: kind, Key: key, Value: value}); err != nil {
		return err
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	var v []byte
	if kind == vowdbpb.TxnOpRequest_PUT {
		v = append([]byte{}, value...)
	}
	tx.writes[string(key)] = &v
	tx.bytes += len(key) + len(value)
	return nil
}

// CompareAndSwap sets key to new if its current value is old (nil old: the
// key must be absent), under an X lock; it reports whether it swapped.
func (tx *Txn) CompareAndSwap(ctx context.Context, key, old, new []byte) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	// Take the X lock first (a Put of the current value would be a write),
	// so read the value under S, then write under X: the upgrade is safe
	// because both are held to the end.
	cur, err := tx.Get(ctx, key)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if (old == nil && found) || (old != nil && (!found || !bytes.Equal(cur, old))) {
		return false, nil
	}
	if new == nil {
		return true, tx.Delete(ctx, key)
	}
	return true, tx.Put(ctx, key, new)
}

// Scan returns up to limit key-values in [start, end) (end nil: to the end
// of the keyspace; limit <= 0: no limit beyond the server's page size),
// under an S lock on the scanned span: no phantom can appear before the
// transaction ends. It sees the transaction's own writes.
func (tx *Txn) Scan(ctx context.Context, start, end []byte, limit int) ([]KeyValue, error) {
	if err := checkKey(start); err != nil {
		return nil, err
	}
	if end != nil && bytes.Compare(end, start) <= 0 {
		return nil, fmt.Errorf("%w: scan end %q is not after start %q", ErrInvalidArgument, end, start)
	}
	got := map[string][]byte{}
	var keysSeen []string
	cur := start
	for {
		resp, err := tx.op(ctx, &vowdbpb.TxnOpRequest{Kind: vowdbpb.TxnOpRequest_SCAN, Key: cur, EndKey: end})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			if _, ok := got[string(kv.Key)]; !ok {
				keysSeen = append(keysSeen, string(kv.Key))
			}
			got[string(kv.Key)] = kv.Value
		}
		// A full page ends early: continue after its last key.
		if len(resp.Kvs) > 0 && len(resp.Kvs) >= 10000 {
			cur = append(append([]byte(nil), resp.Kvs[len(resp.Kvs)-1].Key...), 0)
			continue
		}
		if len(resp.RangeEnd) == 0 || (end != nil && bytes.Compare(resp.RangeEnd, end) >= 0) {
			break
		}
		if limit > 0 && len(got) >= limit+len(tx.writes) {
			break
		}
		cur = resp.RangeEnd
	}
	tx.mu.Lock()
	for k, v := range tx.writes {
		if k < string(start) || (end != nil && k >= string(end)) {
			continue
		}
		if _, ok := got[k]; !ok {
			keysSeen = append(keysSeen, k)
		}
		if *v == nil {
			got[k] = nil
			continue
		}
		got[k] = *v
	}
	tx.mu.Unlock()
	sort.Strings(keysSeen)
	var out []KeyValue
	for _, k := range keysSeen {
		v, ok := got[k]
		if !ok || v == nil {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, KeyValue{Key: []byte(k), Value: v})
	}
	return out, nil
}

// Commit commits the transaction atomically across every range it touched.
// A nil error means committed (see Receipt); an *AbortError means nothing
// was applied; ErrAmbiguousCommit means the outcome is unknown: look it up
// with DB.TxnStatus(tx.ID()). The commit is coordinated by the node the
// client last saw lead the anchor range (the range of the first write), so
// that the decision record is written there without a hop between nodes;
// without such a leader it goes to the gateway picked at Begin.
func (tx *Txn) Commit(ctx context.Context) error {
	tx.mu.Lock()
	if err := tx.checkLocked(); err != nil {
		tx.mu.Unlock()
		return err
	}
	tx.done = true
	defer tx.stopKeepAlive() // alive until the commit's answer: participants wait for PREPARE
	req := &vowdbpb.TxnCommitRequest{TxnId: uint64(tx.id), Attempt: tx.attempt,
		AnchorRangeId: tx.anchorRng, AnchorKey: tx.anchorKey}
	if req.AnchorRangeId == 0 {
		req.AnchorRangeId, req.AnchorKey = tx.firstRng, tx.firstKey
	}
	// Coordinate the commit on the anchor range's leader when it is known:
	// the decision record is then written without a hop between nodes, and
	// the anchor's own PREPARE and COMMIT stay on that node.
	if addr, ok := tx.anchorLeader(req.AnchorKey); ok {
		tx.gateway = addr
	}
	var ranges []uint64
	for _, r := range tx.order {
		p := tx.parts[r]
		req.Participants = append(req.Participants, &vowdbpb.TxnParticipant{RangeId: r, Term: p.term, Writes: p.writes})
		ranges = append(ranges, r)
	}
	lockWait := tx.lockWait
	tx.mu.Unlock()

	var resp *vowdbpb.TxnCommitResponse
	err := tx.onGateway(ctx, func(ctx context.Context, c *grpc.ClientConn) error {
		req.TimeoutMs = remainingMs(ctx)
		res, err := tx.db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_TxnCommit{TxnCommit: req}})
		if err == nil {
			resp = res.TxnCommit
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrInvalidArgument) {
			// Refused before the commit started: release the locks.
			tx.rollbackRPC(ctx)
			return err
		}
		// The coordinator may never have sent a PREPARE (it is cut off, or
		// the request never reached it), leaving every participant ACTIVE
		// and holding its locks until the transaction's deadline. A
		// rollback cannot abort a prepared participant, so it is safe
		// whatever the coordinator did: it frees the ACTIVE ones now, and a
		// PREPARE arriving after it is answered NO. The gateway is the node
		// that just failed to answer: other nodes route the rollback first.
		tx.rollbackVia(ctx, false)
		return fmt.Errorf("%w: transaction %d: %v (resolve with TxnStatus)", ErrAmbiguousCommit, tx.id, err)
	}
	switch resp.Outcome {
	case vowdbpb.TxnCommitResponse_COMMITTED:
		tx.mu.Lock()
		tx.receipt = &Receipt{Path: resp.Path, Ranges: ranges, Gateway: resp.GatewayNodeId, RoundTrips: int(resp.RoundTrips),
			DurableWrites: int(resp.DurableWrites), LockWait: lockWait, Attempts: max(tx.attempts, 1)}
		tx.mu.Unlock()
		return nil
	case vowdbpb.TxnCommitResponse_ABORTED:
		err := abortFromPB(tx.id, resp.Abort)
		tx.mu.Lock()
		tx.abort = err
		tx.mu.Unlock()
		return err
	}
	tx.rollbackVia(ctx, false) // as above: frees participants the coordinator never reached
	return fmt.Errorf("%w: transaction %d: the coordinator could not learn the decision (resolve with TxnStatus)", ErrAmbiguousCommit, tx.id)
}

// onGateway sends a request to the transaction's gateway. If the gateway
// cannot be reached before anything is sent, another node takes its place
// (a gateway holds no state for a transaction before its commit starts).
func (tx *Txn) onGateway(ctx context.Context, fn func(ctx context.Context, c *grpc.ClientConn) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tx.db.cfg.RequestTimeout+5*time.Second)
		defer cancel()
	}
	eps := append([]string{tx.Gateway()}, tx.db.endpoints()...)
	var lastErr error
	for _, ep := range eps {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := tx.db.readyConn(cctx, ep)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		err = fn(ctx, conn)
		if err == nil {
			return nil
		}
		if errors.Is(err, errNotSent) {
			lastErr = err // nothing left this client: try the next node
			continue
		}
		return classify(err, true)
	}
	return fmt.Errorf("%w: no gateway reachable: %v", ErrUnavailable, lastErr)
}

// Rollback aborts the transaction and releases its locks. It is a no-op
// after Commit returned or after an abort.
func (tx *Txn) Rollback(ctx context.Context) error {
	tx.mu.Lock()
	if tx.done {
		tx.mu.Unlock()
		return nil
	}
	tx.done = true
	tx.abort = &AbortError{Txn: tx.id, Reason: AbortRollback}
	tx.mu.Unlock()
	tx.stopKeepAlive()
	tx.rollbackRPC(ctx)
	return nil
}

// rollbackRPC asks the participants to drop the attempt's ACTIVE state and
// locks. It can never abort a prepared attempt, so it is safe at any time.
func (tx *Txn) rollbackRPC(ctx context.Context) { tx.rollbackVia(ctx, true) }

// rollbackVia is rollbackRPC; gatewayFirst says whether the gateway is
// tried before the other endpoints or after them.
func (tx *Txn) rollbackVia(ctx context.Context, gatewayFirst bool) {
	tx.mu.Lock()
	req := &vowdbpb.TxnRollbackRequest{TxnId: uint64(tx.id), Attempt: tx.attempt}
	seen := map[uint64]bool{}
	for _, r := range append(slices.Clone(tx.order), tx.touched...) {
		if !seen[r] {
			seen[r] = true
			req.Participants = append(req.Participants, &vowdbpb.TxnParticipant{RangeId: r})
		}
	}
	tx.mu.Unlock()
	if len(req.Participants) == 0 {
		return
	}
	// Any node can route a rollback: try the gateway, then every other
	// endpoint, each briefly (the gateway may be the node that is down).
	// A node accepts a rollback and forwards it without waiting, so a
	// node cut off from the others accepts it too and loses it.
	ctx = context.WithoutCancel(ctx)
	gw := tx.Gateway()
	var eps []string
	for _, ep := range tx.db.endpoints() {
		if ep != gw {
			eps = append(eps, ep)
		}
	}
	if gatewayFirst {
		eps = append([]string{gw}, eps...)
	} else {
		eps = append(eps, gw)
	}
	for _, ep := range eps {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := tx.db.readyConn(cctx, ep)
		if err == nil {
			_, err = vowdbpb.NewTxnClient(conn).Rollback(cctx, req)
		}
		cancel()
		if err == nil {
			return
		}
	}
}

// Transact runs fn in a transaction and commits it. When fn or the commit
// fails with a retryable error (errors.Is(err, ErrRetryable), such as an
// *AbortError for a deadlock), the transaction is rolled back and fn runs
// again, after an exponential backoff with jitter, up to WithMaxAttempts
// times. So fn may run more than once: it must not have effects outside
// the transaction that cannot be repeated. An ambiguous commit is resolved
// with TxnStatus when it can be; otherwise ErrAmbiguousCommit is returned.
func (db *DB) Transact(ctx context.Context, fn func(ctx context.Context, tx *Txn) error, opts ...TxnOption) error {
	o, err := buildOptions(opts)
	if err != nil {
		return err
	}
	born := time.Now()
	var id TxnID
	backoff := 5 * time.Millisecond
	var lastErr error
	for attempt := 1; attempt <= o.maxAttempts; attempt++ {
		if attempt > 1 {
			d := backoff + time.Duration(mrand.Int64N(int64(backoff)))
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			case <-time.After(d):
			}
			backoff = min(backoff*2, time.Second)
		}
		tx, err := db.begin(ctx, o, id, born)
		if errors.Is(err, ErrTxnCommitted) {
			return nil // a named txn that already committed: exactly once
		}
		if errors.Is(err, ErrTxnInFlight) {
			lastErr = err
			continue
		}
		if err != nil {
			return err
		}
		id = tx.id
		tx.attempts = attempt
		err = fn(ctx, tx)
		if err == nil {
			err = tx.Commit(ctx)
			if errors.Is(err, ErrAmbiguousCommit) {
				if st, serr := db.TxnStatus(ctx, tx.id); serr == nil {
					switch st {
					case TxnCommitted:
						return nil
					case TxnAborted:
						err = &AbortError{Txn: tx.id, Reason: AbortDecisionLost}
					}
				}
			}
		} else {
			_ = tx.Rollback(ctx)
		}
		if err == nil {
			return nil
		}
		lastErr = err
		if !errors.Is(err, ErrRetryable) {
			return err
		}
	}
	return lastErr
}

// TxnStatus asks the cluster what became of transaction id: COMMITTED,
// ABORTED, PENDING (in flight) or UNKNOWN. Any node answers for the whole
// cluster. ABORTED and UNKNOWN are answered only once every range's leader
// answered; while some range has no leader (just after a crash) the answer
// is ErrUnavailable (retryable) rather than a guess. Finished transactions are remembered for at least the last
// 100,000 transactions of each range.
func (db *DB) TxnStatus(ctx context.Context, id TxnID) (TxnState, error) {
	if id == 0 || id >= 1<<63 {
		return TxnUnknown, fmt.Errorf("%w: txn id %d out of range", ErrInvalidArgument, id)
	}
	var resp *vowdbpb.TxnStatusResponse
	err := db.anyNode(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		var err error
		resp, err = c.Status(ctx, &vowdbpb.TxnStatusRequest{TxnId: uint64(id)})
		return err
	})
	if err != nil {
		return TxnUnknown, err
	}
	switch resp.State {
	case vowdbpb.TxnState_TXN_COMMITTED:
		return TxnCommitted, nil
	case vowdbpb.TxnState_TXN_ABORTED:
		return TxnAborted, nil
	case vowdbpb.TxnState_TXN_PENDING:
		return TxnPending, nil
	}
	return TxnUnknown, nil
}

// anyNode calls fn on the first reachable endpoint.
func (db *DB) anyNode(ctx context.Context, fn func(ctx context.Context, c vowdbpb.TxnClient) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, db.cfg.RequestTimeout)
		defer cancel()
	}
	var lastErr error
	for _, ep := range db.endpoints() {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := db.readyConn(cctx, ep)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if err = fn(ctx, vowdbpb.NewTxnClient(conn)); err == nil {
			return nil
		}
		lastErr = classify(err, false)
		if errors.Is(lastErr, ErrInvalidArgument) {
			return lastErr
		}
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
}

// TxnInfo is an in-flight transaction as `vowdb txn ls` shows it.
type TxnInfo struct {
	ID          TxnID
	Attempt     uint64
	Coordinator uint64
	State       string
	Ranges      []uint64
	Age         time.Duration
	// Idle is, for an ACTIVE transaction, how long since its client was
	// last heard on its ranges (an operation or a keep-alive); a range
	// aborts it past its idle timeout (vowdb start --txn-idle-timeout).
	Idle time.Duration
}

// Txns lists the transactions in flight in the cluster: ACTIVE (running
// statements), PREPARED (an in-memory vote or a durable prepare record),
// COMMITTING (its coordinator is committing it) or PENDING (its
// transaction record is undecided).
func (db *DB) Txns(ctx context.Context) ([]TxnInfo, error) {
	var resp *vowdbpb.TxnListResponse
	err := db.anyNode(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		var err error
		resp, err = c.List(ctx, &vowdbpb.TxnListRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]TxnInfo, len(resp.Txns))
	for i, t := range resp.Txns {
		out[i] = TxnInfo{ID: TxnID(t.TxnId), Attempt: t.Attempt, Coordinator: t.CoordinatorNodeId, State: t.State,
			Ranges: t.ParticipantRangeIds, Age: time.Duration(t.AgeMicros) * time.Microsecond,
			Idle: time.Duration(t.IdleMicros) * time.Microsecond}
	}
	return out, nil
}

// LockWait is one transaction waiting for another's lock.
type LockWait struct {
	Waiter TxnID // 0: a single-key operation outside any transaction
	Holder TxnID
	Key    []byte
	Mode   string
	Wait   time.Duration
	Range  uint64
	Node   uint64
}

// Deadlock is a waits-for cycle that was broken by aborting Victim.
type Deadlock struct {
	Cycle  []TxnID
	Victim TxnID
	At     time.Time
}

// HeldLock is a lock granted to a transaction and still held.
type HeldLock struct {
	Holder TxnID // 0: a single-key operation outside any transaction
	Key    []byte
	// Point: a lock on Key alone. Otherwise the lock covers [Key,
	// EndKey), as a scan's does; an empty EndKey means +infinity.
	Point  bool
	EndKey []byte
	Mode   string
	Range  uint64
	Node   uint64
}

// LockReport is the state of the cluster's lock tables, as `vowdb locks`
// shows it.
type LockReport struct {
	Held      []HeldLock
	Waits     []LockWait
	Deadlocks []Deadlock
}

// Locks returns who waits for whom across the cluster, and the recent
// deadlocks with their cycles.
func (db *DB) Locks(ctx context.Context) ([]LockWait, []Deadlock, error) {
	rep, err := db.LockTable(ctx)
	return rep.Waits, rep.Deadlocks, err
}

// LockTable returns every lock held in the leaders' lock tables, who waits
// for whom, and the recent deadlocks with their cycles.
func (db *DB) LockTable(ctx context.Context) (LockReport, error) {
	var resp *vowdbpb.LocksResponse
	err := db.anyNode(ctx, func(ctx context.Context, c vowdbpb.TxnClient) error {
		var err error
		resp, err = c.Locks(ctx, &vowdbpb.LocksRequest{})
		return err
	})
	if err != nil {
		return LockReport{}, err
	}
	held := make([]HeldLock, len(resp.Held))
	for i, h := range resp.Held {
		held[i] = HeldLock{Holder: TxnID(h.Holder), Key: h.Key, Point: h.Point, EndKey: h.EndKey, Mode: h.Mode, Range: h.RangeId, Node: h.NodeId}
	}
	waits := make([]LockWait, len(resp.Waits))
	for i, w := range resp.Waits {
		waits[i] = LockWait{Waiter: TxnID(w.Waiter), Holder: TxnID(w.Holder), Key: w.Key, Mode: w.Mode,
			Wait: time.Duration(w.WaitMicros) * time.Microsecond, Range: w.RangeId, Node: w.NodeId}
	}
	dls := make([]Deadlock, len(resp.Deadlocks))
	for i, d := range resp.Deadlocks {
		dls[i] = Deadlock{Victim: TxnID(d.Victim), At: time.UnixMilli(d.UnixMs)}
		for _, t := range d.Cycle {
			dls[i].Cycle = append(dls[i].Cycle, TxnID(t))
		}
	}
	return LockReport{Held: held, Waits: waits, Deadlocks: dls}, nil
}
