package testcluster

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

// TestDrainHandsOffLeadership: a draining node transfers every range it
// leads before it stops, so clients need not wait for an election timeout.
func TestDrainHandsOffLeadership(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	if _, _, err := db.Split(ctx, []byte("m")); err != nil {
		t.Fatal(err)
	}
	victim := leaderIndex(t, c, db, "a")
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if left := c.Nodes[victim].Drain(dctx); left != 0 {
		t.Fatalf("node still leads %d ranges after drain", left)
	}
	if err := db.Put(ctx, []byte("a"), []byte("after drain")); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPEndpoints: /metrics, /livez and /readyz answer as documented.
func TestHTTPEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 1, Dir: t.TempDir(), Fast: true, HTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	db, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	base := "http://" + c.Nodes[0].HTTPAddr()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Fatalf("/livez %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, body := get("/metrics")
	for _, m := range []string{"vowdb_raft_proposals_total", "vowdb_storage_fsync_seconds", "vowdb_raft_leader_changes_total", "vowdb_raft_apply_seconds", "vowdb_ranges"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestFiveNodesReplicationFactorThree: with more nodes than the replication
// factor, every range has exactly three voters, and a client that only knows
// a node without a meta replica still gets through.
func TestFiveNodesReplicationFactorThree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 5, ReplicationFactor: 3, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	db, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var metaVoters []uint64
	for _, r := range ranges {
		if len(r.Voters) != 3 {
			t.Fatalf("range %d has voters %v", r.ID, r.Voters)
		}
		if r.Meta {
			metaVoters = r.Voters
		}
	}
	outsider := -1
	for i, n := range c.Nodes {
		in := false
		for _, v := range metaVoters {
			in = in || v == n.NodeID()
		}
		if !in {
			outsider = i
		}
	}
	thin, err := vowdb.Open(ctx, vowdb.Config{Endpoints: []string{c.Nodes[outsider].Addr()}})
	if err != nil {
		t.Fatalf("open via node without meta replica: %v", err)
	}
	defer thin.Close()
	if err := thin.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	nodes, err := thin.Nodes(ctx)
	if err != nil || len(nodes) != 5 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
}
