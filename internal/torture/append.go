package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/check"
)

// Append is the "append" workload (Jepsen's list-append, checked by
// internal/check.ListAppend, an Elle-style cycle checker): each transaction
// reads and appends unique integers to a few list-valued keys spread over
// three ranges. A key's list is stored as comma-separated integers; an
// append reads it and writes it back longer, under the transaction's locks.
// Keys move on to fresh ones after KeyAppends appends so lists stay short.
type Append struct {
	opts WorkloadOptions
	// Keys is the number of keys in use at once (default 8).
	Keys int
	// KeyAppends is how many appends a key takes before its slot moves on
	// (default 200).
	KeyAppends int
	// MaxOps bounds the micro-operations of one transaction (default 4).
	MaxOps int
	// OpTimeout bounds each transaction (default 5 s).
	OpTimeout time.Duration

	rec  *Recorder
	next atomic.Int64

	mu    sync.Mutex
	slots []int // appends taken by each slot's current key
	gens  []int
	log   opLog
}

// appendPrefix is the workload's keyspace; appendSplits spread it over
// three ranges.
const appendPrefix = "torture/append/"

var appendSplits = []string{appendPrefix + "3", appendPrefix + "6"}

// NewAppend returns the list-append workload.
func NewAppend(opts WorkloadOptions) *Append {
	if opts.Clients <= 0 {
		opts.Clients = 10
	}
	if opts.Rate == 0 {
		opts.Rate = 200
	}
	return &Append{opts: opts, Keys: 8, KeyAppends: 200, MaxOps: 4, OpTimeout: 5 * time.Second}
}

// splitKeys splits the keyspace at keys, ignoring splits that already exist.
func splitKeys(ctx context.Context, endpoints []string, keys []string) {
	db, err := openDB(ctx, endpoints, 5*time.Second)
	if err != nil {
		return
	}
	defer db.Close()
	for _, k := range keys {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, _ = db.Split(sctx, []byte(k))
		cancel()
	}
}

// openDB connects a client, retrying until ctx is done.
func openDB(ctx context.Context, endpoints []string, timeout time.Duration) (*vowdb.DB, error) {
	for {
		db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: endpoints, RequestTimeout: timeout, DialTimeout: 2 * time.Second})
		if err == nil {
			return db, nil
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// rotated returns endpoints starting at the w-th.
func rotated(endpoints []string, w int) []string {
	k := w % len(endpoints)
	return append(slices.Clone(endpoints[k:]), endpoints[:k]...)
}

// pace returns the pause between one client's operations at the offered rate.
func pace(opts WorkloadOptions) time.Duration {
	if opts.Rate <= 0 {
		return 0
	}
	return time.Duration(float64(opts.Clients) / opts.Rate * float64(time.Second))
}

// Run implements Workload.
func (a *Append) Run(ctx context.Context, endpoints []string, rec *Recorder) error {
	if len(endpoints) == 0 {
		return errors.New("torture: append: no endpoints")
	}
	a.mu.Lock()
	a.rec = rec
	a.slots, a.gens = make([]int, a.Keys), make([]int, a.Keys)
	a.mu.Unlock()
	splitKeys(ctx, endpoints, appendSplits)
	runClients(ctx, a.opts, endpoints, a.OpTimeout, a.txn)
	return nil
}

// plan draws a transaction: 1..MaxOps micro-ops, each a read or an append
// of a fresh value, on keys of the current slots.
func (a *Append) plan(rng *rand.Rand) []check.Mop {
	n := 1 + rng.IntN(a.MaxOps)
	a.mu.Lock()
	defer a.mu.Unlock()
	var mops []check.Mop
	for range n {
		s := rng.IntN(a.Keys)
		key := fmt.Sprintf("%s%d/%d", appendPrefix, s, a.gens[s])
		if rng.IntN(2) == 0 {
			mops = append(mops, check.Read(key))
			continue
		}
		a.slots[s]++
		if a.slots[s] >= a.KeyAppends {
			a.slots[s], a.gens[s] = 0, a.gens[s]+1
		}
		mops = append(mops, check.Append(key, int(a.next.Add(1))))
	}
	return mops
}

func parseList(v []byte) ([]int, error) {
	if len(v) == 0 {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(string(v), ",") {
		x, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list value %q: %w", v, err)
		}
		out = append(out, x)
	}
	return out, nil
}

func formatList(l []int) []byte {
	var b []byte
	for i, x := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(x), 10)
	}
	return b
}

// txn runs one transaction and records it.
func (a *Append) txn(ctx context.Context, db *vowdb.DB, process int, rng *rand.Rand) OpType {
	plan := a.plan(rng)
	op := check.Op{Process: process, F: "txn", Invoke: int64(a.rec.Now())}
	var done []check.Mop
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.OpTimeout)
	defer cancel()
	err := db.Transact(octx, func(ctx context.Context, tx *vowdb.Txn) error {
		done = done[:0]
		for _, m := range plan {
			v, err := tx.Get(ctx, []byte(m.Key))
			if err != nil && !errors.Is(err, vowdb.ErrNotFound) {
				return err
			}
			cur, perr := parseList(v)
			if perr != nil {
				return perr
			}
			if m.F == check.FR {
				done = append(done, check.Read(m.Key, cur...))
				continue
			}
			if err := tx.Put(ctx, []byte(m.Key), formatList(append(cur, m.Value))); err != nil {
				return err
			}
			done = append(done, m)
		}
		return nil
	}, vowdb.WithMaxAttempts(3), vowdb.WithLockTimeout(2*time.Second))
	complete := a.rec.Now()
	op.Type = check.OpType(outcome(err, true))
	if op.Type == check.OK {
		op.Complete, op.Txn = int64(complete), slices.Clone(done)
	} else {
		// Unknown or failed: its appends may (info) or must not (fail) be
		// visible; its reads say nothing.
		for _, m := range plan {
			if m.F == check.FAppend {
				op.Txn = append(op.Txn, m)
			} else {
				op.Txn = append(op.Txn, check.Read(m.Key))
			}
		}
		if op.Type == check.Fail {
			op.Complete = int64(complete)
		}
	}
	a.log.record(a.rec, op, complete)
	return OpType(op.Type)
}

// Final implements Workload: one transaction reads every key the run used,
// after everything healed. It goes into the history like any other read, so
// an acknowledged append missing from it is a realtime cycle (the append
// completed before the read began, yet the read did not see it): no
// acknowledged append can be lost unnoticed at the end of a run.
func (a *Append) Final(ctx context.Context, endpoints []string) error {
	a.mu.Lock()
	var keys []string
	for s, g := range a.gens {
		for i := 0; i <= g; i++ {
			keys = append(keys, fmt.Sprintf("%s%d/%d", appendPrefix, s, i))
		}
	}
	a.mu.Unlock()
	db, err := openDB(ctx, endpoints, 10*time.Second)
	if err != nil {
		return fmt.Errorf("append final read: %w", err)
	}
	defer db.Close()
	for {
		invoke := a.rec.Now()
		var reads []check.Mop
		err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			reads = reads[:0]
			for _, k := range keys {
				v, err := tx.Get(ctx, []byte(k))
				if err != nil && !errors.Is(err, vowdb.ErrNotFound) {
					return err
				}
				l, err := parseList(v)
				if err != nil {
					return err
				}
				reads = append(reads, check.Read(k, l...))
			}
			return nil
		})
		if err == nil {
			complete := a.rec.Now()
			a.log.record(a.rec, check.Op{Process: 1 << 20, Type: check.OK, F: "txn", Invoke: int64(invoke),
				Complete: int64(complete), Txn: reads}, complete)
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("append final read: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// Check implements Workload: internal/check.ListAppend over the history,
// with realtime edges (vowdb's transactions are strictly serializable:
// each commits at one instant inside its own lifetime, under its locks).
func (a *Append) Check() (bool, string) {
	res := check.ListAppend(a.log.ops(), check.ListAppendOptions{Realtime: true})
	return reportResult("append (list-append, Elle-style cycles incl. realtime)", res)
}

// reportResult turns a checker result into the workload's verdict.
func reportResult(what string, res check.Result) (bool, string) {
	var b strings.Builder
	if res.Valid {
		fmt.Fprintf(&b, "%s: valid", what)
	} else {
		fmt.Fprintf(&b, "%s: INVALID: %v", what, res.Types())
	}
	keys := make([]string, 0, len(res.Stats))
	for k := range res.Stats {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s: %d", k, res.Stats[k])
	}
	for _, an := range res.Anomalies {
		fmt.Fprintf(&b, "\n  %s: %s", an.Type, an.Explanation)
	}
	return res.Valid, b.String()
}
