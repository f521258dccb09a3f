package torture

import (
	"bytes"
	"context"
	"encoding/json"
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

// Register is the "register" workload: clients run get, put and
// compare-and-swap on a few keys through the Go client. Every written value
// is a unique integer, so a read names the write it observed.
//
// A key takes OpsPerKey operations, then its slot moves on to a fresh key
// (Jepsen's independent keys): a linearizability checker's work grows
// exponentially with the concurrency on one key, so per-key histories must
// stay short.
//
// Outcomes follow the client's error contract: ErrAmbiguousCommit is info
// (unknown); ErrUnavailable, ErrRetryable, ErrInvalidArgument and
// ErrNotInitialized are fail (nothing applied); ErrNotFound is an ok read of
// an absent key; any other error is info for a write and fail for a read.
// After an info op the client takes a new process id, since the op may
// still be in flight.
type Register struct {
	opts WorkloadOptions
	// Keys is the number of registers in use at once (default 5).
	Keys int
	// OpsPerKey is how many operations a key takes before its slot moves
	// to a fresh key (default 1000).
	OpsPerKey int
	// OpTimeout bounds each operation (default 3 s).
	OpTimeout time.Duration

	rec       *Recorder
	nextValue atomic.Int64

	mu       sync.Mutex
	slots    []regSlot
	keys     []string       // every key used, in order of first use
	lastSeen map[string]int // the latest value a client saw or wrote, per key
	ops      []regOp
	finals   map[string]bool // keys whose final read succeeded
}

type regSlot struct{ ops, gen int }

// regOp is one operation in history.jsonl, in the shape of internal/check's
// Op: Found is whether a get found the key, or whether a cas swapped.
type regOp struct {
	Process  int    `json:"process"`
	Type     OpType `json:"type"`
	Invoke   int64  `json:"invoke"`
	Complete int64  `json:"complete,omitempty"`
	F        string `json:"f"`
	Key      string `json:"key"`
	Value    int    `json:"value,omitempty"`
	Expected int    `json:"expected,omitempty"`
	Found    bool   `json:"found,omitempty"`
	// Final marks the reads of Final; Error is the client's error.
	Final bool   `json:"final,omitempty"`
	Error string `json:"error,omitempty"`
	// Raw is a value read that is not an integer (then Value is 0).
	Raw string `json:"raw,omitempty"`
}

// NewRegister returns the register workload.
func NewRegister(opts WorkloadOptions) *Register {
	if opts.Clients <= 0 {
		opts.Clients = 10
	}
	if opts.Rate == 0 {
		opts.Rate = 200
	}
	return &Register{opts: opts, Keys: 5, OpsPerKey: 1000, OpTimeout: 3 * time.Second,
		lastSeen: map[string]int{}, finals: map[string]bool{}}
}

// Run implements Workload.
func (r *Register) Run(ctx context.Context, endpoints []string, rec *Recorder) error {
	if len(endpoints) == 0 {
		return errors.New("torture: register: no endpoints")
	}
	r.mu.Lock()
	r.rec = rec
	r.slots = make([]regSlot, r.Keys)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for w := 0; w < r.opts.Clients; w++ {
		wg.Go(func() { r.client(ctx, w, endpoints) })
	}
	wg.Wait()
	return nil
}

// open connects a client, retrying until ctx is done (the cluster may be
// faulted right then).
func (r *Register) open(ctx context.Context, endpoints []string) (*vowdb.DB, error) {
	for {
		db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: endpoints, RequestTimeout: r.OpTimeout, DialTimeout: 2 * time.Second})
		if err == nil {
			return db, nil
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// client runs one client: its own connections, first endpoint w's node.
func (r *Register) client(ctx context.Context, w int, endpoints []string) {
	k := w % len(endpoints)
	db, err := r.open(ctx, append(slices.Clone(endpoints[k:]), endpoints[:k]...))
	if err != nil {
		return
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(r.opts.Seed, uint64(w)+1))
	var interval time.Duration
	if r.opts.Rate > 0 {
		interval = time.Duration(float64(r.opts.Clients) / r.opts.Rate * float64(time.Second))
	}
	next := time.Now().Add(time.Duration(rng.Int64N(int64(interval) + 1)))
	process := w
	for ctx.Err() == nil {
		if interval > 0 {
			if !sleepCtx(ctx, time.Until(next)) {
				return
			}
			// After a slow op, go on at the rate; do not catch up.
			next = next.Add(interval)
			if now := time.Now(); next.Before(now) {
				next = now
			}
		}
		if r.step(ctx, db, process, rng) == Info {
			process += r.opts.Clients
		}
	}
}

// pick draws the next operation: 40% get, 30% put, 30% cas (from the
// latest value seen on the key; a put when none is known yet).
func (r *Register) pick(rng *rand.Rand) regOp {
	slot := rng.IntN(r.Keys)
	p := rng.IntN(10)
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.slots[slot]
	if s.ops >= r.OpsPerKey {
		s.gen++
		s.ops = 0
	}
	s.ops++
	key := fmt.Sprintf("torture/register/%d/%d", slot, s.gen)
	if s.ops == 1 {
		r.keys = append(r.keys, key)
	}
	op := regOp{Key: key, F: "get"}
	if p >= 4 {
		op.F, op.Value = "put", int(r.nextValue.Add(1))
		if last, ok := r.lastSeen[key]; ok && p >= 7 {
			op.F, op.Expected = "cas", last
		}
	}
	return op
}

// outcome classifies a client error.
func outcome(err error, write bool) OpType {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, vowdb.ErrAmbiguousCommit):
		return Info
	case errors.Is(err, vowdb.ErrRetryable), errors.Is(err, vowdb.ErrInvalidArgument),
		errors.Is(err, vowdb.ErrNotInitialized), errors.Is(err, vowdb.ErrClosed):
		return Fail
	case write:
		return Info
	}
	return Fail
}

// step runs and records one operation.
func (r *Register) step(ctx context.Context, db *vowdb.DB, process int, rng *rand.Rand) OpType {
	op := r.pick(rng)
	op.Process = process
	r.do(ctx, db, &op)
	return op.Type
}

// do runs op (its F, Key, Value and Expected set) and records it. The
// operation is not cut short when ctx ends, only by OpTimeout, so that
// stopping the run does not turn writes into unknowns.
func (r *Register) do(ctx context.Context, db *vowdb.DB, op *regOp) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.OpTimeout)
	defer cancel()
	key := []byte(op.Key)
	op.Invoke = int64(r.rec.Now())
	var err error
	switch op.F {
	case "get":
		var v []byte
		v, err = db.Get(octx, key)
		switch {
		case err == nil:
			op.Found = true
			if op.Value, err = strconv.Atoi(string(v)); err != nil {
				op.Value, op.Raw, err = 0, string(v), nil
			}
		case errors.Is(err, vowdb.ErrNotFound):
			err = nil
		}
		op.Type = outcome(err, false)
	case "put":
		err = db.Put(octx, key, []byte(strconv.Itoa(op.Value)))
		op.Type = outcome(err, true)
	case "cas":
		op.Found, err = db.CompareAndSwap(octx, key, []byte(strconv.Itoa(op.Expected)), []byte(strconv.Itoa(op.Value)))
		op.Type = outcome(err, true)
	}
	complete := r.rec.Now()
	op.Complete = int64(complete)
	if err != nil {
		op.Error = err.Error()
	}
	r.mu.Lock()
	r.ops = append(r.ops, *op)
	if op.Type == OK {
		switch {
		case op.F == "get" && op.Found && op.Raw == "":
			r.lastSeen[op.Key] = op.Value
		case op.F == "put", op.F == "cas" && op.Found:
			r.lastSeen[op.Key] = op.Value
		}
		if op.Final {
			r.finals[op.Key] = true
		}
	}
	r.mu.Unlock()
	_ = r.rec.Record(op.Type, complete, op)
}

// Final implements Workload: it reads every key the run used, retrying
// each until a read succeeds or ctx is done. The reads are recorded with
// final set, by processes of their own.
func (r *Register) Final(ctx context.Context, endpoints []string) error {
	r.mu.Lock()
	keys := slices.Clone(r.keys)
	rec := r.rec
	r.mu.Unlock()
	if rec == nil {
		return errors.New("torture: register: Final before Run")
	}
	db, err := r.open(ctx, endpoints)
	if err != nil {
		return fmt.Errorf("register final reads: cannot connect: %w", err)
	}
	defer db.Close()
	process := 1 << 20 // above every client's
	for _, key := range keys {
		for {
			op := regOp{Process: process, F: "get", Key: key, Final: true}
			r.do(ctx, db, &op)
			if op.Type == OK {
				break
			}
			process++
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return fmt.Errorf("register final read of %s: %s (%w)", key, op.Error, ctx.Err())
			}
		}
	}
	return nil
}

// Check implements Workload with invariants that need no search:
//
//   - every value an ok get returned, and every value an ok cas swapped
//     out, was written to that key by some put or cas (no garbage reads);
//   - not only by writes that definitely failed (no reads of failed
//     writes);
//   - by a write invoked before the read completed (no reads from the
//     future);
//   - every key got a final read.
//
// Linearizability is not checked here; internal/check.Register does that,
// as a Checker over history.jsonl.
func (r *Register) Check() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type writes struct {
		earliest  int64 // earliest invocation of a write of the value
		maybeDone bool  // some write of it is ok or info
	}
	written := map[string]map[int]*writes{}
	counts := map[OpType]int{}
	for _, op := range r.ops {
		counts[op.Type]++
		if op.F != "put" && op.F != "cas" {
			continue
		}
		m := written[op.Key]
		if m == nil {
			m = map[int]*writes{}
			written[op.Key] = m
		}
		w := m[op.Value]
		if w == nil {
			w = &writes{earliest: op.Invoke}
			m[op.Value] = w
		}
		w.earliest = min(w.earliest, op.Invoke)
		w.maybeDone = w.maybeDone || op.Type != Fail
	}
	var anomalies []string
	checkRead := func(op regOp, v int, what string) {
		w := written[op.Key][v]
		switch {
		case op.Raw != "":
			anomalies = append(anomalies, fmt.Sprintf("garbage read: p%d get(%s) at %v returned %q, not a value any client writes", op.Process, op.Key, time.Duration(op.Complete), op.Raw))
		case w == nil:
			anomalies = append(anomalies, fmt.Sprintf("garbage read: p%d %s(%s) at %v %s %d, never written to that key", op.Process, op.F, op.Key, time.Duration(op.Complete), what, v))
		case !w.maybeDone:
			anomalies = append(anomalies, fmt.Sprintf("read of a failed write: p%d %s(%s) at %v %s %d, whose every write failed", op.Process, op.F, op.Key, time.Duration(op.Complete), what, v))
		case w.earliest > op.Complete:
			anomalies = append(anomalies, fmt.Sprintf("read from the future: p%d %s(%s) completed at %v but %s %d, first written at %v", op.Process, op.F, op.Key, time.Duration(op.Complete), what, v, time.Duration(w.earliest)))
		}
	}
	for _, op := range r.ops {
		if op.Type != OK || !op.Found {
			continue
		}
		switch op.F {
		case "get":
			checkRead(op, op.Value, "read")
		case "cas":
			checkRead(op, op.Expected, "swapped out")
		}
	}
	var unread []string
	for _, k := range r.keys {
		if !r.finals[k] {
			unread = append(unread, k)
		}
	}
	if len(unread) > 0 {
		anomalies = append(anomalies, fmt.Sprintf("no final read of %d keys: %s", len(unread), strings.Join(unread, ", ")))
	}

	var b strings.Builder
	verdict := "ok"
	if len(anomalies) > 0 {
		verdict = fmt.Sprintf("%d anomalies", len(anomalies))
	}
	fmt.Fprintf(&b, "register invariants: %s (%d ops: %d ok, %d fail, %d info; %d keys, each read at the end)\n",
		verdict, len(r.ops), counts[OK], counts[Fail], counts[Info], len(r.keys))
	const maxListed = 20
	for i, a := range anomalies {
		if i == maxListed {
			fmt.Fprintf(&b, "  ... and %d more\n", len(anomalies)-maxListed)
			break
		}
		fmt.Fprintf(&b, "  %s\n", a)
	}
	b.WriteString("  checked: no garbage reads, no reads of failed writes, no reads from the future, a final read of every key.\n")
	lin, report := r.linearizable()
	b.WriteString(report)
	return len(anomalies) == 0 && lin, b.String()
}

// linearizable checks the history per key with internal/check.Register
// (porcupine; ambiguous operations may or may not have happened; a search
// that runs out of time is a failure).
func (r *Register) linearizable() (bool, string) {
	var buf bytes.Buffer
	for _, op := range r.ops {
		line, err := json.Marshal(op)
		if err != nil {
			return false, fmt.Sprintf("  linearizability: cannot encode the history: %v\n", err)
		}
		buf.Write(append(line, '\n'))
	}
	hist, err := check.ReadJSONL(&buf)
	if err != nil {
		return false, fmt.Sprintf("  linearizability: cannot read the history: %v\n", err)
	}
	res, _ := check.Register(hist, 5*time.Minute)
	ok, report := reportResult("linearizability (porcupine, per key)", res)
	return ok, "  " + strings.ReplaceAll(report, "\n", "\n  ") + "\n"
}
