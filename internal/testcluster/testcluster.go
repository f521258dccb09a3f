// Package testcluster runs an N-node vowdb cluster inside one process, over
// real gRPC on loopback and real Pebble stores in temporary directories, for
// tests and the demo.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/server"
)

// Options configure a cluster.
type Options struct {
	Nodes             int
	ReplicationFactor int
	Dir               string // base directory; each node gets Dir/nN
	Fast              bool   // short ticks and loops, for tests
	LogKeepEntries    uint64
	Logger            *slog.Logger
	HTTP              bool
	TxnIdleTimeout    time.Duration // 0: the server's default
	// Txn state collection (0: the server's defaults).
	MaxTxnDuration, TxnRetention, TxnCollectInterval time.Duration
}

// Cluster is a running in-process cluster.
type Cluster struct {
	opts  Options
	Nodes []*server.Node // nil entries are stopped nodes
	cfgs  []server.Config
}

// Start starts opts.Nodes nodes, initializes the cluster through node 0,
// and waits until every range has its full replication factor.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.ReplicationFactor == 0 {
		opts.ReplicationFactor = min(3, opts.Nodes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Cluster{opts: opts}
	for i := 0; i < opts.Nodes; i++ {
		cfg := server.Config{
			DataDir:            filepath.Join(opts.Dir, fmt.Sprintf("n%d", i+1)),
			ListenAddr:         "127.0.0.1:0",
			ReplicationFactor:  opts.ReplicationFactor,
			LogKeepEntries:     opts.LogKeepEntries,
			TxnIdleTimeout:     opts.TxnIdleTimeout,
			MaxTxnDuration:     opts.MaxTxnDuration,
			TxnRetention:       opts.TxnRetention,
			TxnCollectInterval: opts.TxnCollectInterval,
			Logger:             opts.Logger.With("node", i+1),
		}
		if opts.HTTP {
			cfg.HTTPAddr = "127.0.0.1:0"
		}
		if opts.Fast {
			cfg.TickInterval = 20 * time.Millisecond
			cfg.HeartbeatInterval = 100 * time.Millisecond
			cfg.ReplicateInterval = 100 * time.Millisecond
			cfg.RequestTimeout = 5 * time.Second
		}
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].Addr()}
		}
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, err
		}
		n, err := server.Start(cfg)
		if err != nil {
			c.Stop()
			return nil, err
		}
		cfg.ListenAddr = n.Addr()
		if opts.HTTP {
			cfg.HTTPAddr = n.HTTPAddr()
		}
		c.Nodes = append(c.Nodes, n)
		c.cfgs = append(c.cfgs, cfg)
		if i == 0 {
			if _, err := vowdb.Init(ctx, n.Addr()); err != nil {
				c.Stop()
				return nil, err
			}
		}
	}
	if err := c.WaitReplicated(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Endpoints returns the addresses of the running nodes.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.Nodes {
		if n != nil {
			out = append(out, n.Addr())
		}
	}
	return out
}

// Client opens a client on every node's address.
func (c *Cluster) Client(ctx context.Context) (*vowdb.DB, error) {
	return vowdb.Open(ctx, vowdb.Config{Endpoints: c.Endpoints(), RequestTimeout: 20 * time.Second, DialTimeout: 30 * time.Second})
}

// WaitReplicated waits until every range has ReplicationFactor voters and no
// learners, as seen through the cluster's own status APIs.
func (c *Cluster) WaitReplicated(ctx context.Context) error {
	// A cluster that just started (or restarted) may not have elected its
	// meta leader yet: keep trying to open a client until ctx ends.
	var db *vowdb.DB
	var err error
	for db == nil {
		if db, err = c.Client(ctx); err != nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("testcluster: cannot open a client: %w", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	defer db.Close()
	for {
		ranges, err := db.Ranges(ctx)
		if err == nil && len(ranges) > 0 {
			ok := true
			for _, r := range ranges {
				if len(r.Voters) < c.opts.ReplicationFactor || len(r.Learners) > 0 || r.Leader == 0 {
					ok = false
				}
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testcluster: ranges not fully replicated: %v (last error %v)", ranges, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill stops node i abruptly.
func (c *Cluster) Kill(i int) {
	if c.Nodes[i] != nil {
		c.Nodes[i].Kill()
		c.Nodes[i] = nil
	}
}

// Restart starts node i again from its data directory on its old address.
func (c *Cluster) Restart(i int) error {
	if c.Nodes[i] != nil {
		return fmt.Errorf("testcluster: node %d is running", i)
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var n *server.Node
		n, err = server.Start(c.cfgs[i])
		if err == nil {
			c.Nodes[i] = n
			return nil
		}
		time.Sleep(100 * time.Millisecond) // the old port may linger briefly
	}
	return err
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for i, n := range c.Nodes {
		if n != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n.Stop(ctx, false)
			cancel()
			c.Nodes[i] = nil
		}
	}
}
