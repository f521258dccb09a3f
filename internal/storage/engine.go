package storage

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrNotFound is returned by Get for an absent key.
var ErrNotFound = errors.New("storage: not found")

// Options configure Open.
type Options struct {
	// Dir is the store directory.
	Dir string
	// FS defaults to the real file system.
	FS vfs.FS
	// CacheBytes sizes Pebble's block cache; 0 picks 64 MiB.
	CacheBytes int64
}

// Engine is a node's store. It is safe for concurrent use.
type Engine struct {
	db *pebble.DB
}

// Open opens or creates the store in opts.Dir.
func Open(opts Options) (*Engine, error) {
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = 64 << 20
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	po := &pebble.Options{
		FS:    fs,
		Cache: cache,
		// Small memtables: every Raft log entry passes through the
		// memtable, and each read the state machine makes while applying
		// (outcomes, prepare and txn records) seeks its skiplist; at 32 MiB
		// those seeks were the largest CPU item of a loaded node. 8 MiB
		// measured 15-25 % more puts/s and transfers/s at concurrency 64
		// (docs/benchmarks.md).
		MemTableSize:                8 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		Logger:                      quietLogger{},
	}
	// Bloom filters on every level: most point reads of the apply path
	// (remembered outcomes, prepare records) look for keys that do not
	// exist, which without a filter costs an index search in every
	// sstable that could hold the key.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	return &Engine{db: db}, nil
}

// Close flushes nothing and closes the store; unsynced writes may be lost,
// as on a crash, unless they were followed by a synced commit.
func (e *Engine) Close() error { return e.db.Close() }

// DB exposes Pebble for the few callers that need iterators or snapshots.
func (e *Engine) DB() *pebble.DB { return e.db }

// NewBatch returns a write batch.
func (e *Engine) NewBatch() *pebble.Batch { return e.db.NewBatch() }

// Commit writes b atomically, with fsync when sync is set, and closes it.
func (e *Engine) Commit(b *pebble.Batch, sync bool) error {
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	err := b.Commit(opt)
	_ = b.Close()
	return err
}

// Get returns a copy of the value of k, or ErrNotFound.
func (e *Engine) Get(k []byte) ([]byte, error) {
	v, closer, err := e.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, nil
}

// Scan calls fn for each key in [start, end) in order, until fn returns false.
// Key and value slices are only valid during the call.
func (e *Engine) Scan(start, end []byte, fn func(k, v []byte) bool) error {
	return ScanReader(e.db, start, end, fn)
}

// Reader is what Scan needs: a Pebble DB, snapshot or indexed batch.
type Reader interface {
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// ScanReader is Scan over any Reader.
func ScanReader(r Reader, start, end []byte, fn func(k, v []byte) bool) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		if !fn(it.Key(), v) {
			break
		}
	}
	return it.Close()
}

// SeekLE returns the last key <= k within [lower, k] and its value (copies),
// or ErrNotFound.
func (e *Engine) SeekLE(lower, k []byte) (key, value []byte, err error) {
	upper := append(append([]byte(nil), k...), 0)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	if !it.Last() {
		return nil, nil, ErrNotFound
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return nil, nil, err
	}
	return append([]byte(nil), it.Key()...), append([]byte(nil), v...), nil
}

// Metrics returns Pebble's metrics.
func (e *Engine) Metrics() *pebble.Metrics { return e.db.Metrics() }

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
