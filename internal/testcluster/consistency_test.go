package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/keys"
)

// checkAll runs a consistency check of every range and returns the checks
// by range id.
func checkAll(t *testing.T, ctx context.Context, db *vowdb.DB) map[uint64]vowdb.ConsistencyCheck {
	t.Helper()
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]vowdb.ConsistencyCheck{}
	for _, r := range ranges {
		c, err := db.CheckConsistency(ctx, r.ID)
		if err != nil {
			t.Fatalf("check range %d: %v", r.ID, err)
		}
		if c.Range != r.ID || c.Index == 0 {
			t.Fatalf("check range %d: answered for range %d at index %d", r.ID, c.Range, c.Index)
		}
		out[r.ID] = c
	}
	return out
}

// TestConsistencyCheck: after plain writes, splits and transactions (1PC,
// 2PC, rolled back, one left prepared-then-committed across a split) every
// replica of every range computes the same checksum at the same log index.
// Then a key written straight into one node's store, behind Raft's back,
// makes the check of that range name that node as the one that differs,
// while the other ranges still agree.
func TestConsistencyCheck(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for i := range 30 {
		k := fmt.Sprintf("%c/%02d", 'a'+i%20, i)
		if err := db.Put(ctx, []byte(k), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Delete(ctx, []byte("b/01")); err != nil {
		t.Fatal(err)
	}
	splitAt(t, db, "h", "p")
	// 2PC across three ranges, 1PC in one, and a rollback.
	if err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
		for _, k := range []string{"c/x", "k/x", "t/x"} {
			if err := tx.Put(ctx, []byte(k), []byte("2pc")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
		return tx.Put(ctx, []byte("q/x"), []byte("1pc"))
	}); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("d/x"), []byte("never")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	splitAt(t, db, "s")

	checks := checkAll(t, ctx, db)
	if len(checks) != 5 { // meta + [,h) [h,p) [p,s) [s,)
		t.Fatalf("%d ranges checked, want 5", len(checks))
	}
	for id, ck := range checks {
		if len(ck.Replicas) != 3 || !ck.Consistent() {
			t.Fatalf("range %d: want 3 agreeing replicas, got %+v", id, ck)
		}
	}
	// A second check runs at a later index.
	again, err := db.CheckConsistency(ctx, checks[2].Range)
	if err != nil || again.Index <= checks[2].Index || !again.Consistent() {
		t.Fatalf("second check of range %d: %+v, %v (first at index %d)", checks[2].Range, again, err, checks[2].Index)
	}
	if _, err := db.CheckConsistency(ctx, 999); err == nil {
		t.Fatal("checking a range that does not exist succeeded")
	}

	// Corrupt the replica of the range holding "k/x" on a node that does
	// not lead it: a key of its span written straight into the store.
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var target vowdb.RangeInfo
	for _, r := range ranges {
		if !r.Meta && keys.Contains(r.StartKey, r.EndKey, []byte("k/x")) {
			target = r
		}
	}
	victim := -1
	for i, n := range c.Nodes {
		if n.NodeID() != target.Leader {
			victim = i
			break
		}
	}
	eng := c.Nodes[victim].Engine()
	b := eng.NewBatch()
	if err := b.Set(keys.UserKey([]byte("k/corrupt")), []byte("behind raft's back"), nil); err != nil {
		t.Fatal(err)
	}
	if err := eng.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	bad, err := db.CheckConsistency(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bad.Consistent() || !bad.Mismatch() || len(bad.Failed()) != 0 {
		t.Fatalf("range %d after corrupting node %d: want a mismatch, got %+v", target.ID, c.Nodes[victim].NodeID(), bad)
	}
	sums := map[uint64][]byte{}
	for _, r := range bad.Replicas {
		sums[r.Node] = r.Checksum
	}
	var others [][]byte
	for node, sum := range sums {
		if node != c.Nodes[victim].NodeID() {
			others = append(others, sum)
		}
	}
	if len(sums) != 3 || len(others) != 2 || !bytes.Equal(others[0], others[1]) || bytes.Equal(others[0], sums[c.Nodes[victim].NodeID()]) {
		t.Fatalf("want node %d alone with a different checksum: %+v", c.Nodes[victim].NodeID(), bad)
	}
	for id, ck := range checkAll(t, ctx, db) {
		if id != target.ID && !ck.Consistent() {
			t.Fatalf("range %d was not corrupted but does not agree: %+v", id, ck)
		}
	}
}
