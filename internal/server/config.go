package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/vowdb/vowdb/internal/keys"
)

// Config configures a node. Zero values pick the defaults in Defaults.
type Config struct {
	DataDir           string
	ListenAddr        string // gRPC; port 0 picks a free port
	AdvertiseAddr     string // defaults to the bound ListenAddr
	HTTPAddr          string // empty disables HTTP
	Join              []string
	ReplicationFactor int

	TickInterval   time.Duration // one Raft tick
	ElectionTicks  int
	HeartbeatTicks int
	LogKeepEntries uint64
	// RequestTimeout bounds how long a write waits for its entry to apply
	// before it is answered as ambiguous.
	RequestTimeout    time.Duration
	HeartbeatInterval time.Duration
	ReplicateInterval time.Duration
	MaxKeyBytes       int
	MaxValueBytes     int
	// LockTimeout is how long a transaction waits for a lock when its
	// client set no timeout; then it is aborted (the last resort against
	// deadlocks the detector has not broken).
	LockTimeout time.Duration
	// MaxTxnBytes bounds the bytes of keys and values one transaction may
	// write on one range (default 16 MiB); past it the txn is aborted. A
	// range commits a transaction's writes in one Raft entry, and applying
	// an entry holds up the node's Raft loop: 48 MiB took about 1.5 s here,
	// past the 1 s election timeout, and ended in a leader change and an
	// ambiguous commit; 16 MiB applies in about 0.4 s.
	MaxTxnBytes int
	// MaxTxnDuration bounds how long a transaction may hold locks on a
	// range before its commit starts (default 60 s; a client deadline may
	// shorten it). Past it the ACTIVE transaction is aborted.
	MaxTxnDuration time.Duration
	// TxnIdleTimeout aborts an ACTIVE transaction on a range once its
	// client sent that range no operation and no keep-alive for this long
	// (default 4 s, under the client's default 5 s lock-wait timeout, so a
	// waiter outlasts a vanished holder): the client vanished, or its
	// rollback was lost. The Go client keeps an open transaction alive
	// every second.
	TxnIdleTimeout time.Duration
	// TxnRetention is how long a range remembers the outcomes of finished
	// transactions before collecting them (default 10 min; more than twice
	// MaxTxnDuration). Within it a late or duplicated message is answered
	// from that memory; past it the attempt is below the range's txn
	// horizon, where an absent outcome is final (replica/txn_gc.go), and
	// TxnStatus of a one-phase transaction reports UNKNOWN (txn records
	// are kept). An operation of an attempt older than half of it is
	// refused.
	TxnRetention time.Duration
	// TxnCollectInterval is how often a range leader collects finished
	// txn state past TxnRetention (default 1 min).
	TxnCollectInterval time.Duration
	// TxnPipelineRecords is how many transaction records (prepare, commit,
	// abort) a range's leader keeps in its Raft log at once before the next
	// ones wait and batch (default 1). More lowers commit latency at low
	// concurrency and costs CPU per transaction under load (measured in
	// docs/benchmarks.md).
	TxnPipelineRecords int
	// TxnPrepareAnchor prepares a transaction's anchor range like every
	// other participant and records the decision separately (classic
	// two-phase commit). By default the anchor is not prepared: once the
	// others voted YES it commits its writes and records the decision in
	// one Raft entry, which saves two Raft entries per commit.
	TxnPrepareAnchor bool

	FS     vfs.FS // nil: the real file system
	Logger *slog.Logger
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:7401"
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 3
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.LogKeepEntries == 0 {
		c.LogKeepEntries = 10000
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 500 * time.Millisecond
	}
	if c.ReplicateInterval == 0 {
		c.ReplicateInterval = 500 * time.Millisecond
	}
	if c.MaxTxnDuration == 0 {
		c.MaxTxnDuration = 60 * time.Second
	}
	if c.TxnIdleTimeout == 0 {
		c.TxnIdleTimeout = 4 * time.Second
	}
	if c.TxnRetention == 0 {
		c.TxnRetention = 10 * time.Minute
	}
	if c.TxnCollectInterval == 0 {
		c.TxnCollectInterval = time.Minute
	}
	if c.MaxTxnBytes == 0 {
		c.MaxTxnBytes = 16 << 20
	}
	if c.TxnPipelineRecords == 0 {
		c.TxnPipelineRecords = 1
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = 5 * time.Second
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = keys.DefaultMaxKeyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = keys.DefaultMaxValueBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("server: --data-dir is required")
	}
	if c.ReplicationFactor < 1 {
		return errors.New("server: --replication-factor must be at least 1")
	}
	if c.TxnRetention <= 2*c.MaxTxnDuration {
		return fmt.Errorf("server: the txn retention (%v) must be more than twice the longest transaction (%v)", c.TxnRetention, c.MaxTxnDuration)
	}
	return nil
}
