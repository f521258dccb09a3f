package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/transport"
)

// Workload phases, for counting what happened while a node was down.
const (
	demoPhaseBefore int32 = iota
	demoPhaseDown
	demoPhaseAfter
)

// demoCounts counts workload outcomes.
type demoCounts struct {
	writesOK, writesAmbiguous, writesFailed int64
	readsOK, readsFailed, readsBad          int64
}

func (a demoCounts) sub(b demoCounts) demoCounts {
	return demoCounts{a.writesOK - b.writesOK, a.writesAmbiguous - b.writesAmbiguous, a.writesFailed - b.writesFailed,
		a.readsOK - b.readsOK, a.readsFailed - b.readsFailed, a.readsBad - b.readsBad}
}

func (a demoCounts) String() string {
	s := fmt.Sprintf("writes %d ok, %d ambiguous, %d failed | reads %d ok, %d failed", a.writesOK, a.writesAmbiguous, a.writesFailed, a.readsOK, a.readsFailed)
	if a.readsBad > 0 {
		s += fmt.Sprintf(" | %d WRONG VALUES READ", a.readsBad)
	}
	return s
}

// demoKey is what the workload knows about one key. Each key is written by
// exactly one worker, one operation at a time, so its history is sequential:
// the key must hold its last acknowledged value (base), or the value of an
// ambiguous write issued after it (pending, in issue order).
type demoKey struct {
	key     string
	hasBase bool // false: absent unless a pending write applied
	base    string
	acked   int64 // acknowledged writes
	pending []string
	failed  map[string]bool // writes reported as not applied (for diagnostics)
	// counts of ambiguous writes already resolved
	ambApplied, ambOverwritten int64
}

// allowed reports whether v (found or not) is an allowed value now.
func (k *demoKey) allowed(v string, found bool) bool {
	if !found {
		return !k.hasBase // the workload never deletes
	}
	if k.hasBase && v == k.base {
		return true
	}
	for _, p := range k.pending {
		if p == v {
			return true
		}
	}
	return false
}

// observe records that a read saw v, resolving pending ambiguous writes: the
// one seen applied, and the ones before it can no longer matter.
func (k *demoKey) observe(v string, found bool) {
	if !found {
		return
	}
	for i, p := range k.pending {
		if p == v {
			k.ambOverwritten += int64(i)
			k.ambApplied++
			k.base, k.hasBase = v, true
			k.pending = k.pending[i+1:]
			return
		}
	}
}

func (k *demoKey) acknowledged(v string) {
	k.ambOverwritten += int64(len(k.pending))
	k.pending = nil
	k.base, k.hasBase = v, true
	k.acked++
}

type demoWorkload struct {
	db      *vowdb.DB
	workers int
	keys    [][]*demoKey // per worker, the keys it owns
	phase   atomic.Int32

	mu     sync.Mutex
	counts demoCounts
	bad    []string // descriptions of wrong reads (first few)

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func newDemoWorkload(db *vowdb.DB, nkeys, workers int) *demoWorkload {
	w := &demoWorkload{db: db, workers: workers, keys: make([][]*demoKey, workers)}
	for i := 0; i < nkeys; i++ {
		w.keys[i%workers] = append(w.keys[i%workers], &demoKey{key: fmt.Sprintf("user/%03d", i)})
	}
	return w
}

func (w *demoWorkload) start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	for i := 0; i < w.workers; i++ {
		if len(w.keys[i]) == 0 {
			continue
		}
		w.wg.Add(1)
		go func(i int) {
			defer w.wg.Done()
			w.run(ctx, i)
		}(i)
	}
}

// stop stops the workers and waits for their last operations.
func (w *demoWorkload) stop() {
	w.once.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		w.wg.Wait()
	})
}

func (w *demoWorkload) snapshot() demoCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts
}

func (w *demoWorkload) add(f func(c *demoCounts)) {
	w.mu.Lock()
	f(&w.counts)
	w.mu.Unlock()
}

func (w *demoWorkload) run(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	mine := w.keys[id]
	seq := 0
	// Write every key once first, so reads find data.
	for i := 0; ctx.Err() == nil; i++ {
		var k *demoKey
		write := true
		if i < len(mine) {
			k = mine[i]
		} else {
			k = mine[rng.IntN(len(mine))]
			write = rng.IntN(2) == 0
		}
		// A short per-operation timeout so a stuck operation shows up as a
		// failure instead of stalling the demo; the client retries inside it.
		opCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if write {
			seq++
			v := fmt.Sprintf("w%d-%06d", id, seq)
			err := w.db.Put(opCtx, []byte(k.key), []byte(v))
			switch {
			case err == nil:
				k.acknowledged(v)
				w.add(func(c *demoCounts) { c.writesOK++ })
			case errors.Is(err, vowdb.ErrAmbiguousCommit):
				k.pending = append(k.pending, v)
				w.add(func(c *demoCounts) { c.writesAmbiguous++ })
			default:
				// Not applied (the client only reports other errors when it is
				// certain): the key's allowed values do not change.
				if k.failed == nil {
					k.failed = map[string]bool{}
				}
				k.failed[v] = true
				w.add(func(c *demoCounts) { c.writesFailed++ })
			}
		} else {
			v, err := w.db.Get(opCtx, []byte(k.key))
			found := err == nil
			switch {
			case err == nil || errors.Is(err, vowdb.ErrNotFound):
				if k.allowed(string(v), found) {
					k.observe(string(v), found)
					w.add(func(c *demoCounts) { c.readsOK++ })
				} else {
					w.add(func(c *demoCounts) {
						c.readsBad++
						if len(w.bad) < 10 {
							w.bad = append(w.bad, fmt.Sprintf("read of %s returned %s; allowed: %s%s", k.key, demoShow(string(v), found), k.describe(), k.explain(string(v), found)))
						}
					})
				}
			default:
				w.add(func(c *demoCounts) { c.readsFailed++ })
			}
		}
		cancel()
	}
}

func demoShow(v string, found bool) string {
	if !found {
		return "(absent)"
	}
	return fmt.Sprintf("%q", v)
}

func (k *demoKey) describe() string {
	var opts []string
	if k.hasBase {
		opts = append(opts, fmt.Sprintf("%q", k.base))
	} else {
		opts = append(opts, "(absent)")
	}
	for _, p := range k.pending {
		opts = append(opts, fmt.Sprintf("%q (ambiguous write)", p))
	}
	return strings.Join(opts, " or ")
}

// explain says where a wrong value came from, when the model knows.
func (k *demoKey) explain(v string, found bool) string {
	if found && k.failed[v] {
		return "; that value's write was reported as NOT applied"
	}
	return ""
}

type demoAudit struct {
	acked, keysWithAck                   int64
	ambiguous, ambApplied, ambNotApplied int64
	ambOverwritten                       int64
	badKeys, badReads                    int64
	problems                             []string
}

func (a demoAudit) ok() bool { return a.badKeys == 0 && a.badReads == 0 }

// audit reads every key (linearizably) and checks it against the model, then
// cross-checks a scan across all ranges. Call after stop.
func (w *demoWorkload) audit(ctx context.Context) demoAudit {
	var a demoAudit
	w.mu.Lock()
	a.badReads = w.counts.readsBad
	a.ambiguous = w.counts.writesAmbiguous
	a.problems = append(a.problems, w.bad...)
	w.mu.Unlock()
	want := map[string]*demoKey{}
	for _, ks := range w.keys {
		for _, k := range ks {
			want[k.key] = k
			var v []byte
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				v, err = w.db.Get(rctx, []byte(k.key))
				cancel()
				if err == nil || errors.Is(err, vowdb.ErrNotFound) || ctx.Err() != nil {
					break
				}
			}
			found := err == nil
			if err != nil && !errors.Is(err, vowdb.ErrNotFound) {
				a.badKeys++
				a.problems = append(a.problems, fmt.Sprintf("cannot read %s: %v", k.key, err))
				continue
			}
			if !k.allowed(string(v), found) {
				a.badKeys++
				a.problems = append(a.problems, fmt.Sprintf("%s holds %s; allowed: %s%s", k.key, demoShow(string(v), found), k.describe(), k.explain(string(v), found)))
				continue
			}
			k.observe(string(v), found)
			a.ambNotApplied += int64(len(k.pending)) // the key holds an earlier value
			k.pending = nil
			a.ambApplied += k.ambApplied
			a.ambOverwritten += k.ambOverwritten
			a.acked += k.acked
			if k.acked > 0 {
				a.keysWithAck++
			}
		}
	}
	// A scan across all three user ranges must agree.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	kvs, err := w.db.Scan(sctx, []byte("user/"), []byte("user0"), 0)
	cancel()
	if err != nil {
		a.badKeys++
		a.problems = append(a.problems, fmt.Sprintf("scan of user/ keys failed: %v", err))
		return a
	}
	seen := map[string]bool{}
	for _, kv := range kvs {
		k := want[string(kv.Key)]
		seen[string(kv.Key)] = true
		if k == nil || !k.hasBase || k.base != string(kv.Value) {
			a.badKeys++
			a.problems = append(a.problems, fmt.Sprintf("scan returned %s = %q, which the audit did not read", kv.Key, kv.Value))
		}
	}
	for name, k := range want {
		if k.hasBase && !seen[name] {
			a.badKeys++
			a.problems = append(a.problems, fmt.Sprintf("scan did not return %s", name))
		}
	}
	return a
}

// demoLocalApplied asks one node for the applied index of its replicas.
func demoLocalApplied(ctx context.Context, addr string) (map[uint64]uint64, error) {
	conn, err := grpc.NewClient(addr, transport.DialOptions()...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := vowdbpb.NewAdminClient(conn).ListRanges(rctx, &vowdbpb.ListRangesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[uint64]uint64{}
	for _, r := range resp.Ranges {
		out[r.Desc.GetRangeId()] = r.AppliedIndex
	}
	return out, nil
}

// demoPrinter prints the demo's steps.
type demoPrinter struct {
	w io.Writer
	n int
}

func (p *demoPrinter) step(format string, args ...any) {
	p.n++
	if p.n > 1 {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "== %d. %s\n", p.n, fmt.Sprintf(format, args...))
}

func (p *demoPrinter) line(format string, args ...any) {
	fmt.Fprintf(p.w, "   %s\n", fmt.Sprintf(format, args...))
}

func (p *demoPrinter) ranges(rs []vowdb.RangeInfo) {
	p.line("%-6s %-22s %-8s %s", "RANGE", "SPAN", "VOTERS", "LEADER")
	for _, r := range rs {
		voters := make([]string, len(r.Voters))
		for i, v := range r.Voters {
			voters[i] = fmt.Sprint(v)
		}
		leader := "none"
		if r.Leader != 0 {
			leader = fmt.Sprintf("node %d", r.Leader)
		}
		p.line("%-6d %-22s %-8s %s", r.ID, demoSpan(r), strings.Join(voters, ","), leader)
	}
}
