package testcluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/server"
)

// history records the last acknowledged value of each key, plus values
// whose write was ambiguous (may or may not have applied) since then.
type history struct {
	mu        sync.Mutex
	acked     map[string]string
	ambiguous map[string][]string
}

func newHistory() *history {
	return &history{acked: map[string]string{}, ambiguous: map[string][]string{}}
}

func (h *history) record(k, v string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.acked[k] = v
		h.ambiguous[k] = nil
	case errors.Is(err, vowdb.ErrAmbiguousCommit):
		h.ambiguous[k] = append(h.ambiguous[k], v)
	}
}

// check reads every key and verifies it holds its last acknowledged value
// or a later ambiguous one.
func (h *history) check(t *testing.T, db *vowdb.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, want := range h.acked {
		got, err := db.Get(ctx, []byte(k))
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		ok := string(got) == want
		for _, a := range h.ambiguous[k] {
			ok = ok || string(got) == a
		}
		if !ok {
			t.Fatalf("key %s = %q, want last acknowledged %q (or ambiguous %v)", k, got, want, h.ambiguous[k])
		}
	}
}

// writer writes keys key-<w>-<i%keys> with increasing values until stop.
func writer(ctx context.Context, db *vowdb.DB, h *history, w, keys int, acks *int64, mu *sync.Mutex) {
	for i := 0; ctx.Err() == nil; i++ {
		k := fmt.Sprintf("key-%d-%03d", w, i%keys)
		v := fmt.Sprintf("v%d", i)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := db.Put(wctx, []byte(k), []byte(v))
		cancel()
		if ctx.Err() != nil && err != nil {
			// The workload is stopping; an interrupted write is ambiguous.
			h.record(k, v, vowdb.ErrAmbiguousCommit)
			return
		}
		h.record(k, v, err)
		if err == nil {
			mu.Lock()
			*acks++
			mu.Unlock()
		}
	}
}

func runWorkload(ctx context.Context, db *vowdb.DB, h *history, writers int) (stop func() int64) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var acks int64
	var mu sync.Mutex
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) { defer wg.Done(); writer(ctx, db, h, w, 20, &acks, &mu) }(w)
	}
	return func() int64 {
		cancel()
		wg.Wait()
		return acks
	}
}

func waitAcks(t *testing.T, h *history, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		got := len(h.acked)
		h.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("workload made no progress (fewer than %d keys acknowledged)", n)
}

// leaderIndex returns the cluster index of the node leading the range that
// holds key.
func leaderIndex(t *testing.T, c *Cluster, db *vowdb.DB, key string) int {
	t.Helper()
	ranges, err := db.Ranges(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if !r.Meta && string(r.StartKey) <= key && (len(r.EndKey) == 0 || key < string(r.EndKey)) {
			for i, n := range c.Nodes {
				if n != nil && n.NodeID() == r.Leader {
					return i
				}
			}
		}
	}
	t.Fatalf("no leader for %s in %+v", key, ranges)
	return -1
}

func TestLeaderKillAndReelection(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	h := newHistory()
	stop := runWorkload(ctx, db, h, 4)
	waitAcks(t, h, 20)
	victim := leaderIndex(t, c, db, "key-0-000")
	c.Kill(victim)
	// Writes continue on the two survivors.
	h.mu.Lock()
	before := len(h.acked)
	h.mu.Unlock()
	_ = before
	time.Sleep(1500 * time.Millisecond)
	acksBeforeRestart := stop()
	if acksBeforeRestart == 0 {
		t.Fatal("no writes acknowledged")
	}
	// A fresh write after the failover must succeed.
	if err := db.Put(ctx, []byte("after-failover"), []byte("x")); err != nil {
		t.Fatalf("write after leader kill: %v", err)
	}
	h.check(t, db)
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitReplicated(wctx); err != nil {
		t.Fatal(err)
	}
	h.check(t, db)
}

func TestFollowerCatchUpBySnapshot(t *testing.T) {
	c, db := startCluster(t, 3) // LogKeepEntries 50: the log is truncated quickly
	ctx := context.Background()
	leader := leaderIndex(t, c, db, "a")
	follower := (leader + 1) % 3
	c.Kill(follower)
	h := newHistory()
	for i := 0; i < 400; i++ {
		k, v := fmt.Sprintf("snap-%03d", i%50), fmt.Sprint(i)
		err := db.Put(ctx, []byte(k), []byte(v))
		if err != nil {
			t.Fatalf("put with a follower down: %v", err)
		}
		h.record(k, v, nil)
	}
	snapsBefore := snapshotsApplied(t, c, -1)
	if err := c.Restart(follower); err != nil {
		t.Fatal(err)
	}
	// The follower must catch up: wait until it applied a snapshot and its
	// applied index matches the leader's on every range.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if snapshotsApplied(t, c, follower) > 0 && caughtUp(c, follower) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower did not catch up by snapshot (snapshots applied before restart: %v)", snapsBefore)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Kill the other follower: the restarted one is now needed for quorum,
	// so the data must really be there.
	other := 3 - leader - follower
	c.Kill(other)
	h.check(t, db)
}

func snapshotsApplied(t *testing.T, c *Cluster, i int) float64 {
	t.Helper()
	if i < 0 || c.Nodes[i] == nil {
		return 0
	}
	return c.Nodes[i].SnapshotsApplied()
}

func caughtUp(c *Cluster, i int) bool {
	mine := c.Nodes[i].AppliedIndexes()
	for j, n := range c.Nodes {
		if j == i || n == nil {
			continue
		}
		for id, idx := range n.LeaderAppliedIndexes() {
			if mine[id] < idx {
				return false
			}
		}
	}
	return true
}

func TestSplitUnderConcurrentWrites(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	h := newHistory()
	stop := runWorkload(ctx, db, h, 4)
	waitAcks(t, h, 20)
	for _, k := range []string{"key-1", "key-2", "key-3", "key-2-010"} {
		if _, _, err := db.Split(ctx, []byte(k)); err != nil {
			t.Fatalf("split at %s: %v", k, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if stop() == 0 {
		t.Fatal("no writes acknowledged")
	}
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 6 {
		t.Fatalf("want meta + 5 user ranges, got %+v", ranges)
	}
	h.check(t, db)
}

func TestNodeRestartFromDisk(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	h := newHistory()
	stop := runWorkload(ctx, db, h, 2)
	waitAcks(t, h, 20)
	for i := 0; i < 3; i++ {
		c.Kill(i)
		time.Sleep(300 * time.Millisecond)
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	stop()
	h.check(t, db)
}

func TestAllNodesRestart(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	h := newHistory()
	stop := runWorkload(ctx, db, h, 4)
	waitAcks(t, h, 20)
	if _, _, err := db.Split(ctx, []byte("key-2")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	for i := 0; i < 3; i++ {
		c.Kill(i)
	}
	for i := 0; i < 3; i++ {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitReplicated(wctx); err != nil {
		t.Fatal(err)
	}
	h.check(t, db)
	if err := db.Put(ctx, []byte("after-restart"), []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

func TestBadInputs(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	big := make([]byte, 4<<10+1)
	cases := []struct {
		name string
		op   func() error
	}{
		{"empty key put", func() error { return db.Put(ctx, nil, []byte("v")) }},
		{"empty key get", func() error { _, err := db.Get(ctx, []byte{}); return err }},
		{"oversize key", func() error { return db.Put(ctx, big, []byte("v")) }},
		{"oversize value", func() error { return db.Put(ctx, []byte("k"), make([]byte, 1<<20+1)) }},
		{"oversize cas value", func() error {
			_, err := db.CompareAndSwap(ctx, []byte("k"), nil, make([]byte, 1<<20+1))
			return err
		}},
		{"scan end before start", func() error { _, err := db.Scan(ctx, []byte("b"), []byte("a"), 0); return err }},
		{"split at empty key", func() error { _, _, err := db.Split(ctx, nil); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, vowdb.ErrInvalidArgument) {
				t.Fatalf("want ErrInvalidArgument, got %v", err)
			}
		})
	}
	// Nothing was written.
	kvs, err := db.Scan(ctx, nil, nil, 0)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("bad inputs wrote data: %v %v", kvs, err)
	}
	// A split at the start of an existing range is refused.
	if _, _, err := db.Split(ctx, []byte("m")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Split(ctx, []byte("m")); !errors.Is(err, vowdb.ErrInvalidArgument) {
		t.Fatalf("second split at the same key: %v", err)
	}
}

func TestUnknownEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := vowdb.Open(ctx, vowdb.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 2 * time.Second})
	if !errors.Is(err, vowdb.ErrUnavailable) {
		t.Fatalf("open on a dead endpoint: %v", err)
	}
}

// TestForeignDataDir: a node whose store belongs to another cluster refuses
// to start when pointed at a different cluster, and writes nothing there.
func TestForeignDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	b, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	cfg := a.cfgs[0]
	a.Kill(0)
	cfg.Join = []string{b.Nodes[0].Addr()}
	cfg.ListenAddr = "127.0.0.1:0"
	n, err := server.Start(cfg)
	if err == nil {
		n.Kill()
		t.Fatal("a node with another cluster's data dir started")
	}
	if !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("unclear error: %v", err)
	}
	nodes, err := func() ([]vowdb.NodeInfo, error) {
		db, err := b.Client(ctx)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return db.Nodes(ctx)
	}()
	if err != nil || len(nodes) != 1 {
		t.Fatalf("cluster b changed: %v %v", nodes, err)
	}
}

// TestSecondInit: init on a cluster member says so and changes nothing.
func TestSecondInit(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	before := c.Nodes[1].ClusterID()
	for _, n := range c.Nodes {
		_, err := vowdb.Init(ctx, n.Addr())
		if err == nil || !strings.Contains(err.Error(), "already initialized") {
			t.Fatalf("second init on node %d: %v", n.NodeID(), err)
		}
	}
	for _, n := range c.Nodes {
		if n.ClusterID() != before {
			t.Fatalf("cluster id changed on node %d", n.NodeID())
		}
	}
	nodes, err := db.Nodes(ctx)
	if err != nil || len(nodes) != 3 {
		t.Fatalf("nodes after second init: %v %v", nodes, err)
	}
}

// TestInitOnJoiningNode: init sent to a node whose --join targets already
// form a cluster must not found a second cluster.
func TestInitOnJoiningNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	cfg := b.cfgs[0]
	cfg.DataDir = t.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Join = []string{b.Nodes[0].Addr()}
	n, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Kill()
	if _, err := vowdb.Init(ctx, n.Addr()); err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Fatalf("init on a joining node: %v", err)
	}
	for n.ClusterID() == "" && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n.ClusterID() != b.Nodes[0].ClusterID() {
		t.Fatalf("joined cluster %q, want %q", n.ClusterID(), b.Nodes[0].ClusterID())
	}
}

// TestPartitionedLeader: the leader of a range is cut off from its peers
// while clients can still reach it. Writes continue through the majority,
// and no read ever returns the value the isolated leader still holds.
func TestPartitionedLeader(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	if err := db.Put(ctx, []byte("p"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	li := leaderIndex(t, c, db, "p")
	leader := c.Nodes[li]
	var others []uint64
	for i, n := range c.Nodes {
		if i != li {
			others = append(others, n.NodeID())
			n.CutRaft(leader.NodeID())
		}
	}
	leader.CutRaft(others...)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.Put(wctx, []byte("p"), []byte("during")); err != nil && !errors.Is(err, vowdb.ErrAmbiguousCommit) {
		t.Fatalf("write during partition: %v", err)
	}
	// Retry until a write is definitely acknowledged by the majority side.
	for {
		err := db.Put(wctx, []byte("p"), []byte("during"))
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("no write acknowledged during the partition: %v", err)
		}
	}
	// A client that only knows the isolated leader must not read "before".
	lone, err := vowdb.Open(ctx, vowdb.Config{Endpoints: []string{leader.Addr()}, RequestTimeout: 5 * time.Second})
	if err == nil {
		v, err := lone.Get(ctx, []byte("p"))
		if err == nil && string(v) != "during" {
			t.Fatalf("stale read from the isolated leader: %q", v)
		}
		_ = lone.Close()
	}
	v, err := db.Get(wctx, []byte("p"))
	if err != nil || string(v) != "during" {
		t.Fatalf("read during partition: %q %v", v, err)
	}
	for _, n := range c.Nodes {
		n.HealRaft()
	}
	if err := c.WaitReplicated(wctx); err != nil {
		t.Fatal(err)
	}
	v, err = db.Get(wctx, []byte("p"))
	if err != nil || string(v) != "during" {
		t.Fatalf("read after heal: %q %v", v, err)
	}
}
