package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb/internal/server"
	"github.com/vowdb/vowdb/internal/storage"
)

// stopTimeout bounds the graceful shutdown of a node after a signal: the
// leadership hand-off and the closing of connections and stores.
const stopTimeout = 10 * time.Second

const startLong = `Start runs one vowdb node in the foreground until SIGINT or SIGTERM.

A node with an empty data directory waits to join a cluster: it asks the
--join addresses until one of them belongs to an initialized cluster. Start
every node of a new cluster with the same --join list, then run "vowdb init"
once against one of them. A node restarted on an existing data directory
rejoins its cluster on its own.

On SIGINT or SIGTERM the node stops serving, hands the Raft leadership of its
ranges to other replicas (for up to 10s) and exits 0. A second signal during
that shutdown kills the process at once.

Logs go to stderr (--log-format json or text); stdout gets one line with the
node's addresses once it serves.

` + envHelp

// startFlags are the flags of vowdb start.
type startFlags struct {
	loseUnsynced       bool
	dataDir            string
	listenAddr         string
	advertiseAddr      string
	httpAddr           string
	join               []string
	replicationFactor  int
	logLevel           string
	logFormat          string
	maxKeyBytes        int
	maxValueBytes      int
	maxTxnBytes        int
	tickInterval       time.Duration
	heartbeatInterval  time.Duration
	replicateInterval  time.Duration
	requestTimeout     time.Duration
	txnPipelineRecords int
	txnPrepareAnchor   bool
	txnIdleTimeout     time.Duration
	txnRetention       time.Duration
}

func newStartCmd() *cobra.Command {
	f := &startFlags{}
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run a vowdb node",
		Long:  startLong,
		Example: `  vowdb start --data-dir /var/lib/vowdb/n1 --listen-addr 10.0.0.1:7401 \
    --http-addr 10.0.0.1:7402 --join 10.0.0.1:7401,10.0.0.2:7401,10.0.0.3:7401
  VOWDB_DATA_DIR=/tmp/n1 vowdb start`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runStart(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", "", "directory of the node's store, created if missing (required)")
	fs.StringVar(&f.listenAddr, "listen-addr", "127.0.0.1:7401", "gRPC address to listen on, for clients and other nodes")
	fs.StringVar(&f.advertiseAddr, "advertise-addr", "", "gRPC address other nodes and clients use to reach this node (default: the bound --listen-addr)")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:7402", `HTTP address for /metrics, /livez, /readyz and /debug/pprof ("" disables HTTP)`)
	fs.StringSliceVar(&f.join, "join", nil, "gRPC addresses of the cluster's nodes to join through, comma-separated")
	fs.IntVar(&f.replicationFactor, "replication-factor", 3, "replicas per range")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fs.IntVar(&f.maxKeyBytes, "max-key-bytes", 0, "largest key accepted, in bytes (0: the server default)")
	fs.IntVar(&f.maxValueBytes, "max-value-bytes", 0, "largest value accepted, in bytes (0: the server default)")
	fs.IntVar(&f.maxTxnBytes, "max-txn-bytes", 0, "bytes of keys and values one transaction may write on one range, all committed in one Raft entry; past it the transaction is aborted with a limit error (0: 16 MiB)")
	fs.DurationVar(&f.txnRetention, "txn-retention", 0, "how long each range remembers the outcomes of finished transactions, so that late or duplicated messages are answered and txn status of a one-phase transaction reports it; older outcomes are collected (a cross-range transaction's record is kept); an operation of a transaction begun more than half of it ago is refused (at least 3m; 0: 10m)")
	fs.DurationVar(&f.txnIdleTimeout, "txn-idle-timeout", 0, "abort an open transaction on a range once its client sent that range no operation and no keep-alive for this long, so a vanished client's locks are freed (the Go client keeps open transactions alive every second; at least 2s; 0: 4s, under the 5s default lock-wait timeout)")
	// Timing knobs, mostly for tests; 0 keeps the server's default.
	fs.DurationVar(&f.tickInterval, "tick-interval", 0, "advanced: length of one Raft tick (0: 100ms)")
	fs.DurationVar(&f.heartbeatInterval, "heartbeat-interval", 0, "advanced: liveness heartbeat period (0: 500ms)")
	fs.DurationVar(&f.replicateInterval, "replicate-interval", 0, "advanced: period of the replica placement loop (0: 500ms)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", 0, "advanced: how long a write waits to apply before it is answered as ambiguous (0: 10s)")
	fs.IntVar(&f.txnPipelineRecords, "txn-pipeline-records", 0, "advanced: transaction records a range leader keeps in its Raft log at once before the next wait and batch; more lowers commit latency at low concurrency and costs CPU under load (0: 1)")
	fs.BoolVar(&f.txnPrepareAnchor, "txn-prepare-anchor", false, "advanced: prepare a transaction's anchor range like every other participant and write the decision as a record of its own (classic two-phase commit, two more Raft entries per commit); by default the anchor commits with the decision")
	fs.BoolVar(&f.loseUnsynced, "unsafe-lose-unsynced", false, "testing only: keep file data in memory until fsync, so a SIGKILL loses every unsynced byte (vowdb torture)")
	_ = fs.MarkHidden("unsafe-lose-unsynced")
	return cmd
}

// config validates the flags and turns them into a server configuration.
func (f *startFlags) config(logger *slog.Logger) (server.Config, error) {
	if f.dataDir == "" {
		return server.Config{}, usageErrorf("--data-dir is required (or set %s)", envName("data-dir"))
	}
	if f.listenAddr == "" {
		return server.Config{}, usageErrorf("--listen-addr must not be empty")
	}
	if f.replicationFactor < 1 {
		return server.Config{}, usageErrorf("--replication-factor must be at least 1, not %d", f.replicationFactor)
	}
	for name, v := range map[string]int{"max-key-bytes": f.maxKeyBytes, "max-value-bytes": f.maxValueBytes,
		"max-txn-bytes": f.maxTxnBytes, "txn-pipeline-records": f.txnPipelineRecords} {
		if v < 0 {
			return server.Config{}, usageErrorf("--%s must not be negative", name)
		}
	}
	for name, v := range map[string]time.Duration{"tick-interval": f.tickInterval, "heartbeat-interval": f.heartbeatInterval,
		"replicate-interval": f.replicateInterval, "request-timeout": f.requestTimeout} {
		if v < 0 {
			return server.Config{}, usageErrorf("--%s must not be negative", name)
		}
	}
	if f.txnIdleTimeout != 0 && f.txnIdleTimeout < 2*time.Second {
		return server.Config{}, usageErrorf("--txn-idle-timeout must be at least 2s (clients keep transactions alive every second), not %v", f.txnIdleTimeout)
	}
	if f.txnRetention != 0 && f.txnRetention < 3*time.Minute {
		return server.Config{}, usageErrorf("--txn-retention must be at least 3m (more than twice the 60s a transaction may run), not %v", f.txnRetention)
	}
	return server.Config{
		DataDir:            f.dataDir,
		ListenAddr:         f.listenAddr,
		AdvertiseAddr:      f.advertiseAddr,
		HTTPAddr:           f.httpAddr,
		Join:               cleanList(f.join),
		ReplicationFactor:  f.replicationFactor,
		TickInterval:       f.tickInterval,
		HeartbeatInterval:  f.heartbeatInterval,
		ReplicateInterval:  f.replicateInterval,
		RequestTimeout:     f.requestTimeout,
		MaxKeyBytes:        f.maxKeyBytes,
		MaxValueBytes:      f.maxValueBytes,
		MaxTxnBytes:        f.maxTxnBytes,
		TxnPipelineRecords: f.txnPipelineRecords,
		TxnPrepareAnchor:   f.txnPrepareAnchor,
		TxnIdleTimeout:     f.txnIdleTimeout,
		TxnRetention:       f.txnRetention,
		Logger:             logger,
	}, nil
}

// newLogger builds the node's logger on stderr.
func newLogger(w *os.File, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level: unknown level %q (want debug, info, warn or error)", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageErrorf("--log-format: unknown format %q (want json or text)", format)
}

func runStart(cmd *cobra.Command, f *startFlags) error {
	logger, err := newLogger(os.Stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	cfg, err := f.config(logger)
	if err != nil {
		return err
	}
	if f.loseUnsynced {
		cfg.FS = storage.NewLoseUnsyncedFS(vfs.Default)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	node, err := server.Start(cfg)
	if err != nil {
		return err
	}
	http := node.HTTPAddr()
	if http == "" {
		http = "disabled"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "vowdb node serving: addr=%s http=%s data-dir=%s\n", node.Addr(), http, cfg.DataDir)

	// The context is cancelled by SIGINT/SIGTERM (see run).
	<-cmd.Context().Done()
	logger.Info("shutting down: handing over leaderships", "timeout", stopTimeout)
	// A second signal should kill the process: stop diverting them.
	signal.Reset(os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), stopTimeout)
	defer cancel()
	node.Stop(ctx, true)
	logger.Info("node stopped")
	return nil
}

// cleanList drops blanks from a comma-separated flag's values.
func cleanList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
