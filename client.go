package vowdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/transport"
)

// Config configures a client.
type Config struct {
	// Endpoints are gRPC addresses of some nodes (host:port); the client
	// learns the rest from the cluster.
	Endpoints []string
	// RequestTimeout bounds each operation when ctx has no deadline
	// (default 10s).
	RequestTimeout time.Duration
	// DialTimeout bounds Open's first contact with the cluster (default 5s).
	DialTimeout time.Duration
	// TxnKeepAlive is how often an open transaction tells each range it
	// holds locks on that its client is still running it (default 1s;
	// negative: never). A range aborts a transaction it has not heard from
	// for its idle timeout (vowdb start --txn-idle-timeout, 4s by default),
	// so the locks of a client that vanished are freed.
	TxnKeepAlive time.Duration
}

// KeyValue is one key and its value.
type KeyValue struct {
	Key   []byte
	Value []byte
}

// DB is a handle to a vowdb cluster. It is safe for concurrent use.
type DB struct {
	cfg Config

	mu struct {
		sync.Mutex
		conns map[string]*grpc.ClientConn
		pipes map[*grpc.ClientConn]*pipe
		nodes map[uint64]string // node id -> address
		// suspect holds nodes that let a request time out, and when: the
		// router avoids them for suspectFor (a paused or overloaded node
		// keeps its TCP connections, so only a timeout reveals it).
		suspect map[uint64]time.Time
		routes  []*route // sorted by start key, non-overlapping
		closed  bool
	}
}

type route struct {
	desc   *vowdbpb.RangeDescriptor
	leader uint64
}

// Open connects to the cluster and learns its first range locations.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints given", ErrInvalidArgument)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.TxnKeepAlive == 0 {
		cfg.TxnKeepAlive = time.Second
	}
	db := &DB{cfg: cfg}
	db.mu.conns = map[string]*grpc.ClientConn{}
	db.mu.nodes = map[uint64]string{}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := db.lookup(ctx, nil); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("vowdb: open %v: %w", cfg.Endpoints, err)
	}
	return db, nil
}

// Close releases connections.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.closed = true
	for _, p := range db.mu.pipes {
		p.cancel()
	}
	for _, c := range db.mu.conns {
		_ = c.Close()
	}
	db.mu.conns = map[string]*grpc.ClientConn{}
	return nil
}

func (db *DB) conn(addr string) (*grpc.ClientConn, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return nil, ErrClosed
	}
	if c, ok := db.mu.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, transport.DialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint %q: %v", ErrInvalidArgument, addr, err)
	}
	db.mu.conns[addr] = c
	return c, nil
}

// readyConn returns a connection to addr that is ready to carry a request,
// or an error if it could not connect within a short wait. A request is
// only sent on a ready connection, so a connection failure before sending is
// known not to have delivered it.
func (db *DB) readyConn(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	c, err := db.conn(addr)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		s := c.GetState()
		if s == connectivity.Ready {
			return c, nil
		}
		if s == connectivity.Idle {
			c.Connect()
		}
		if !c.WaitForStateChange(wctx, s) {
			return nil, fmt.Errorf("%w: cannot connect to %s (%v)", ErrUnavailable, addr, s)
		}
	}
}

// endpoints returns the configured endpoints followed by the known nodes.
func (db *DB) endpoints() []string {
	db.mu.Lock()
	defer db.mu.Unlock()
	out := append([]string(nil), db.cfg.Endpoints...)
	seen := map[string]bool{}
	for _, e := range out {
		seen[e] = true
	}
	ids := make([]uint64, 0, len(db.mu.nodes))
	for id := range db.mu.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if a := db.mu.nodes[id]; !seen[a] {
			out = append(out, a)
			seen[a] = true
		}
	}
	return out
}

// admin calls fn on the first endpoint that answers.
func (db *DB) admin(ctx context.Context, fn func(ctx context.Context, c vowdbpb.AdminClient) error) error {
	var lastErr, memberErr error // memberErr: last error from a node that is a cluster member
	// Nodes that recently let a request time out (paused, cut off) go last.
	var eps, stale []string
	for _, ep := range db.endpoints() {
		if db.isSuspectAddr(ep) {
			stale = append(stale, ep)
		} else {
			eps = append(eps, ep)
		}
	}
	eps = append(eps, stale...)
	for i, ep := range eps {
		// Give each endpoint a share of the time left, so one slow or
		// partitioned node cannot use up the whole deadline.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < len(eps)-1 {
			share := time.Until(dl) / time.Duration(len(eps)-i)
			actx, cancel = context.WithTimeout(ctx, max(share, 500*time.Millisecond))
		}
		err := db.adminOne(actx, ep, fn)
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		if d, ok := transport.Detail(err); !ok || d.Code != vowdbpb.ErrorDetail_NOT_INITIALIZED {
			memberErr = err
		}
		if d, ok := transport.Detail(err); ok && d.Code == vowdbpb.ErrorDetail_INVALID {
			return err
		}
		if ctx.Err() != nil {
			break
		}
	}
	// A node that has not joined yet says "not initialized"; report that
	// only if no endpoint said anything else.
	if memberErr != nil {
		lastErr = memberErr
	}
	if lastErr == nil {
		lastErr = errors.New("no endpoints")
	}
	return classify(lastErr, false)
}

func (db *DB) adminOne(ctx context.Context, ep string, fn func(ctx context.Context, c vowdbpb.AdminClient) error) error {
	{
		c, err := db.readyConn(ctx, ep)
		if err != nil {
			return err
		}
		return fn(ctx, vowdbpb.NewAdminClient(c))
	}
}

// lookup refreshes the routes starting at key.
func (db *DB) lookup(ctx context.Context, key []byte) error {
	return db.admin(ctx, func(ctx context.Context, c vowdbpb.AdminClient) error {
		resp, err := c.Lookup(ctx, &vowdbpb.LookupRequest{Key: key, Limit: 64})
		if err != nil {
			return err
		}
		db.learn(resp)
		return nil
	})
}

func (db *DB) learn(resp *vowdbpb.LookupResponse) {
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, nd := range resp.Nodes {
		db.mu.nodes[nd.NodeId] = nd.Address
	}
	for _, rt := range resp.Routes {
		db.insertRouteLocked(&route{desc: rt.Desc, leader: rt.LeaderNodeId})
	}
}

// insertRouteLocked adds r, evicting cached routes that overlap it.
func (db *DB) insertRouteLocked(r *route) {
	out := db.mu.routes[:0:0]
	for _, o := range db.mu.routes {
		if overlaps(o.desc, r.desc) {
			if o.desc.RangeId == r.desc.RangeId && o.desc.Generation > r.desc.Generation {
				return // we already know a newer version
			}
			continue
		}
		out = append(out, o)
	}
	out = append(out, r)
	sort.Slice(out, func(i, j int) bool { return string(out[i].desc.StartKey) < string(out[j].desc.StartKey) })
	db.mu.routes = out
}

func overlaps(a, b *vowdbpb.RangeDescriptor) bool {
	aBefore := len(a.EndKey) > 0 && string(a.EndKey) <= string(b.StartKey)
	bBefore := len(b.EndKey) > 0 && string(b.EndKey) <= string(a.StartKey)
	return !aBefore && !bBefore
}

func (db *DB) cachedRoute(key []byte) *route {
	db.mu.Lock()
	defer db.mu.Unlock()
	rs := db.mu.routes
	i := sort.Search(len(rs), func(i int) bool { return string(rs[i].desc.StartKey) > string(key) }) - 1
	if i < 0 {
		return nil
	}
	r := rs[i]
	if len(r.desc.EndKey) > 0 && string(key) >= string(r.desc.EndKey) {
		return nil
	}
	return r
}

func (db *DB) evict(rangeID uint64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	out := db.mu.routes[:0:0]
	for _, r := range db.mu.routes {
		if r.desc.RangeId != rangeID {
			out = append(out, r)
		}
	}
	db.mu.routes = out
}

func (db *DB) leaderOf(r *route) uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return r.leader
}

func (db *DB) setLeader(r *route, leader uint64) {
	db.mu.Lock()
	r.leader = leader
	db.mu.Unlock()
}

// suspectFor is how long a node that let a request time out is avoided
// when another replica can be tried: a few election timeouts, time for the
// others to elect a new leader.
const suspectFor = 3 * time.Second

func (db *DB) markSuspect(r *route, id uint64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.suspect == nil {
		db.mu.suspect = map[uint64]time.Time{}
	}
	db.mu.suspect[id] = time.Now()
	if r != nil && r.leader == id {
		r.leader = 0
	}
}

func (db *DB) clearSuspect(id uint64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	delete(db.mu.suspect, id)
}

func (db *DB) isSuspect(id uint64) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	at, ok := db.mu.suspect[id]
	if ok && time.Since(at) > suspectFor {
		delete(db.mu.suspect, id)
		return false
	}
	return ok
}

func (db *DB) addrOf(id uint64) (string, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	a, ok := db.mu.nodes[id]
	return a, ok
}

// send routes one request for key to the leader of its range and retries it
// while that is safe. write marks requests that must not be sent twice.
func (db *DB) send(ctx context.Context, key []byte, write bool, call func(ctx context.Context, c *grpc.ClientConn) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, db.cfg.RequestTimeout)
		defer cancel()
	}
	var lastErr error
	skip := map[uint64]bool{} // replicas that could not be reached this attempt
	refreshed := false        // the route was looked up again because only suspects were left
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			backoff := time.Duration(min(attempt, 8)) * 10 * time.Millisecond
			backoff += time.Duration(rand.Int64N(int64(backoff)))
			select {
			case <-ctx.Done():
				if lastErr == nil {
					lastErr = ctx.Err()
				}
				if errors.Is(lastErr, ErrNotInitialized) {
					return lastErr
				}
				return fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
			case <-time.After(backoff):
			}
		}
		r := db.cachedRoute(key)
		if r == nil {
			if err := db.lookup(ctx, key); err != nil {
				lastErr = err
				if errors.Is(err, ErrInvalidArgument) {
					return err
				}
				continue
			}
			if r = db.cachedRoute(key); r == nil {
				lastErr = fmt.Errorf("no range holds key %q", key)
				continue
			}
		}
		target := db.leaderOf(r)
		if target == 0 || skip[target] || db.isSuspect(target) {
			target = 0
			var fallback uint64
			for _, rd := range r.desc.Replicas {
				if skip[rd.NodeId] || rd.Learner {
					continue
				}
				if db.isSuspect(rd.NodeId) {
					if fallback == 0 {
						fallback = rd.NodeId
					}
					continue
				}
				target = rd.NodeId
				break
			}
			if target == 0 && fallback != 0 && !refreshed {
				// Every replica this route names is suspect. The cached
				// descriptor may be stale (say, cached while the range had
				// one voter): look it up again before falling back on a
				// node that just let a request time out.
				refreshed = true
				db.evict(r.desc.RangeId)
				continue
			}
			if target == 0 {
				target = fallback
			}
		}
		if target == 0 {
			// Every replica failed: start over with fresh routes.
			skip = map[uint64]bool{}
			db.evict(r.desc.RangeId)
			continue
		}
		addr, ok := db.addrOf(target)
		if !ok {
			db.evict(r.desc.RangeId)
			lastErr = fmt.Errorf("address of node %d unknown", target)
			continue
		}
		c, err := db.readyConn(ctx, addr)
		if err != nil {
			skip[target] = true
			db.setLeader(r, 0)
			lastErr = err
			continue
		}
		err = call(ctx, c)
		if err == nil {
			if db.leaderOf(r) != target {
				db.setLeader(r, target)
			}
			return nil
		}
		lastErr = err
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The node held the request until our deadline: a paused or
			// cut-off node keeps its connection open, so remember it.
			db.markSuspect(r, target)
		}
		if errors.Is(err, errNotSent) {
			// The request never left this client: another try is safe.
			db.setLeader(r, 0)
			continue
		}
		d, hasDetail := transport.Detail(err)
		if !hasDetail {
			code := status.Code(err)
			if code == codes.InvalidArgument {
				return wrap(ErrInvalidArgument, status.Convert(err).Message())
			}
			if write {
				// Sent on a ready connection, then failed: it may have applied.
				return fmt.Errorf("%w: %v", ErrAmbiguousCommit, err)
			}
			if code == codes.DeadlineExceeded || code == codes.Canceled {
				return classify(err, false)
			}
			skip[target] = true
			db.setLeader(r, 0)
			continue
		}
		switch d.Code {
		case vowdbpb.ErrorDetail_NOT_LEADER:
			if d.LeaderNodeId != 0 && d.LeaderNodeId != target {
				if d.LeaderAddress != "" {
					db.mu.Lock()
					db.mu.nodes[d.LeaderNodeId] = d.LeaderAddress
					db.mu.Unlock()
				}
				db.setLeader(r, d.LeaderNodeId)
				// A live replica vouches for it: try it again even if it
				// failed earlier in this call (it may have been elected
				// since).
				db.clearSuspect(d.LeaderNodeId)
				delete(skip, d.LeaderNodeId)
			} else {
				skip[target] = true
				db.setLeader(r, 0)
			}
		case vowdbpb.ErrorDetail_RANGE_NOT_FOUND, vowdbpb.ErrorDetail_KEY_MISMATCH:
			db.evict(r.desc.RangeId)
			if d.Desc != nil && d.Desc.RangeId != 0 {
				db.mu.Lock()
				db.insertRouteLocked(&route{desc: d.Desc, leader: target})
				db.mu.Unlock()
			}
		case vowdbpb.ErrorDetail_NOT_INITIALIZED:
			skip[target] = true
		default:
			return classify(err, write)
		}
	}
}

// classify maps a final server error to the client's error classes.
func classify(err error, write bool) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotInitialized) {
		return err
	}
	msg := status.Convert(err).Message()
	if d, ok := transport.Detail(err); ok {
		switch d.Code {
		case vowdbpb.ErrorDetail_AMBIGUOUS:
			return wrap(ErrAmbiguousCommit, msg)
		case vowdbpb.ErrorDetail_INVALID:
			return wrap(ErrInvalidArgument, msg)
		case vowdbpb.ErrorDetail_NOT_INITIALIZED:
			return wrap(ErrNotInitialized, msg)
		case vowdbpb.ErrorDetail_CLUSTER_MISMATCH:
			return wrap(ErrInvalidArgument, msg)
		case vowdbpb.ErrorDetail_TXN_ABORTED:
			// Refused before anything was proposed (a lock wait ran out):
			// safe to retry. The detail stays reachable for transactions.
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case vowdbpb.ErrorDetail_TXN_LIMIT:
			return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return wrap(ErrInvalidArgument, msg)
	case codes.DeadlineExceeded, codes.Canceled:
		if write {
			return wrap(ErrAmbiguousCommit, msg)
		}
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	case codes.Unavailable:
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	}
	return err
}
