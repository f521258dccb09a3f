package torture

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/check"
)

// stepFunc runs and records one operation of a client as process and
// returns its outcome.
type stepFunc func(ctx context.Context, db *vowdb.DB, process int, rng *rand.Rand) OpType

// runClients runs opts.Clients clients until ctx is done. Client w opens its
// own connections (first endpoint: the w-th), seeds its rng from opts.Seed
// and w, and calls step at about its share of opts.Rate (with jitter). After
// an operation of unknown outcome it takes a new process id, since that
// operation may still be in flight.
func runClients(ctx context.Context, opts WorkloadOptions, endpoints []string, timeout time.Duration, step stepFunc) {
	var wg sync.WaitGroup
	for w := 0; w < opts.Clients; w++ {
		wg.Go(func() {
			db, err := openDB(ctx, rotated(endpoints, w), timeout)
			if err != nil {
				return
			}
			defer db.Close()
			rng := rand.New(rand.NewPCG(opts.Seed, uint64(w)+1))
			interval := pace(opts)
			process := w
			for ctx.Err() == nil {
				if interval > 0 && !sleepCtx(ctx, time.Duration(rng.Int64N(int64(2*interval)+1))) {
					return
				}
				if step(ctx, db, process, rng) == Info {
					process += opts.Clients
				}
			}
		})
	}
	wg.Wait()
}

// opLog keeps a checked workload's history in memory, for its Check, as
// the Recorder writes it to history.jsonl.
type opLog struct {
	mu   sync.Mutex
	hist []check.Op
}

func (l *opLog) record(rec *Recorder, op check.Op, complete time.Duration) {
	l.mu.Lock()
	l.hist = append(l.hist, op)
	l.mu.Unlock()
	_ = rec.Record(OpType(op.Type), complete, op)
}

func (l *opLog) ops() []check.Op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hist)
}
