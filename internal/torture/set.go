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

// Set is the "set" workload: each add inserts a unique element as two keys
// in two ranges (one transaction), and the final read scans both.
// internal/check.Set judges that no acknowledged add is lost and nothing
// unexpected appears; the workload itself checks that no element is
// half-inserted (present in one range and not the other).
type Set struct {
	opts WorkloadOptions
	// OpTimeout bounds each add (default 5 s).
	OpTimeout time.Duration

	rec  *Recorder
	next atomic.Int64

	mu   sync.Mutex
	log  opLog
	half []string
}

const (
	setLeft  = "torture/set/a/"
	setRight = "torture/set/z/"
)

// NewSet returns the set workload.
func NewSet(opts WorkloadOptions) *Set {
	if opts.Clients <= 0 {
		opts.Clients = 10
	}
	if opts.Rate == 0 {
		opts.Rate = 200
	}
	return &Set{opts: opts, OpTimeout: 5 * time.Second}
}

// Run implements Workload.
func (s *Set) Run(ctx context.Context, endpoints []string, rec *Recorder) error {
	if len(endpoints) == 0 {
		return errors.New("torture: set: no endpoints")
	}
	s.mu.Lock()
	s.rec = rec
	s.mu.Unlock()
	splitKeys(ctx, endpoints, []string{"torture/set/m"})
	runClients(ctx, s.opts, endpoints, s.OpTimeout, func(ctx context.Context, db *vowdb.DB, process int, _ *rand.Rand) OpType {
		return s.add(ctx, db, process)
	})
	return nil
}

// add inserts one fresh element into both ranges and records it.
func (s *Set) add(ctx context.Context, db *vowdb.DB, process int) OpType {
	e := int(s.next.Add(1))
	op := check.Op{Process: process, F: check.FAdd, Element: e, Invoke: int64(s.rec.Now())}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.OpTimeout)
	defer cancel()
	err := db.Transact(octx, func(ctx context.Context, tx *vowdb.Txn) error {
		v := []byte(strconv.Itoa(e))
		if err := tx.Put(ctx, []byte(setLeft+strconv.Itoa(e)), v); err != nil {
			return err
		}
		return tx.Put(ctx, []byte(setRight+strconv.Itoa(e)), v)
	}, vowdb.WithMaxAttempts(3), vowdb.WithLockTimeout(2*time.Second))
	complete := s.rec.Now()
	op.Type = check.OpType(outcome(err, true))
	if op.Type != check.Info {
		op.Complete = int64(complete)
	}
	s.log.record(s.rec, op, complete)
	return OpType(op.Type)
}

// scanElements reads every element under prefix in tx.
func scanElements(ctx context.Context, tx *vowdb.Txn, prefix string) (map[int]bool, error) {
	out := map[int]bool{}
	start := []byte(prefix)
	for {
		kvs, err := tx.Scan(ctx, start, []byte(prefix+"\xff"), 5000)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			e, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				return nil, fmt.Errorf("set key %q", kv.Key)
			}
			out[e] = true
		}
		if len(kvs) < 5000 {
			return out, nil
		}
		start = append([]byte(string(kvs[len(kvs)-1].Key)), 0)
	}
}

// Final implements Workload: one transaction scans both halves.
func (s *Set) Final(ctx context.Context, endpoints []string) error {
	db, err := openDB(ctx, endpoints, 10*time.Second)
	if err != nil {
		return fmt.Errorf("set final read: %w", err)
	}
	defer db.Close()
	for {
		var left, right map[int]bool
		invoke := s.rec.Now()
		err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			var err error
			if left, err = scanElements(ctx, tx, setLeft); err != nil {
				return err
			}
			right, err = scanElements(ctx, tx, setRight)
			return err
		})
		if err == nil {
			var elems []int
			var half []string
			for e := range left {
				elems = append(elems, e)
				if !right[e] {
					half = append(half, fmt.Sprintf("element %d is in range of %q but not of %q", e, setLeft, setRight))
				}
			}
			for e := range right {
				if !left[e] {
					half = append(half, fmt.Sprintf("element %d is in range of %q but not of %q", e, setRight, setLeft))
				}
			}
			slices.Sort(elems)
			complete := s.rec.Now()
			op := check.Op{Process: 1 << 20, Type: check.OK, F: check.FRead, Invoke: int64(invoke), Complete: int64(complete), Elements: elems}
			s.log.record(s.rec, op, complete)
			s.mu.Lock()
			s.half = half
			s.mu.Unlock()
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("set final read: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// Check implements Workload.
func (s *Set) Check() (bool, string) {
	hist := s.log.ops()
	s.mu.Lock()
	half := s.half
	s.mu.Unlock()
	ok, report := reportResult("set (no lost or unexpected element)", check.Set(hist))
	if len(half) > 0 {
		ok = false
		report += fmt.Sprintf("\nset: INVALID: %d half-inserted elements", len(half))
		for i, h := range half {
			if i == 10 {
				break
			}
			report += "\n  " + h
		}
	} else {
		report += "\nset: no half-inserted element"
	}
	return ok, report
}
