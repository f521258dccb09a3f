package testcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

func startCluster(t *testing.T, n int, tweaks ...func(*Options)) (*Cluster, *vowdb.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := Options{Nodes: n, Dir: t.TempDir(), Fast: true, LogKeepEntries: 50}
	for _, tw := range tweaks {
		tw(&opts)
	}
	// VOWDB_TEST_LOG=FILE writes every node's debug log to FILE.
	if path := os.Getenv("VOWDB_TEST_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		opts.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	db, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return c, db
}

func TestBasicOps(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	if _, err := db.Get(ctx, []byte("a")); !errors.Is(err, vowdb.ErrNotFound) {
		t.Fatalf("get absent: %v", err)
	}
	if err := db.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	v, err := db.Get(ctx, []byte("a"))
	if err != nil || string(v) != "1" {
		t.Fatalf("get: %q %v", v, err)
	}
	ok, err := db.CompareAndSwap(ctx, []byte("a"), []byte("2"), []byte("3"))
	if err != nil || ok {
		t.Fatalf("cas with wrong old: %v %v", ok, err)
	}
	ok, err = db.CompareAndSwap(ctx, []byte("a"), []byte("1"), []byte("3"))
	if err != nil || !ok {
		t.Fatalf("cas: %v %v", ok, err)
	}
	ok, err = db.CompareAndSwap(ctx, []byte("b"), nil, []byte("x"))
	if err != nil || !ok {
		t.Fatalf("cas absent: %v %v", ok, err)
	}
	if err := db.Delete(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, []byte("a")); !errors.Is(err, vowdb.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	kvs, err := db.Scan(ctx, nil, nil, 0)
	if err != nil || len(kvs) != 1 || string(kvs[0].Key) != "b" {
		t.Fatalf("scan: %v %v", kvs, err)
	}
}

func TestSplitAndCrossRangeScan(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		if err := db.Put(ctx, []byte(fmt.Sprintf("k%02d", i)), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"k10", "k20"} {
		if _, _, err := db.Split(ctx, []byte(k)); err != nil {
			t.Fatalf("split %s: %v", k, err)
		}
	}
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 4 { // meta + 3 user ranges
		t.Fatalf("ranges: %+v", ranges)
	}
	kvs, err := db.Scan(ctx, []byte("k05"), []byte("k25"), 0)
	if err != nil || len(kvs) != 20 {
		t.Fatalf("scan across ranges: %d %v", len(kvs), err)
	}
	for i := 0; i < 30; i++ {
		v, err := db.Get(ctx, []byte(fmt.Sprintf("k%02d", i)))
		if err != nil || string(v) != fmt.Sprint(i) {
			t.Fatalf("get k%02d: %q %v", i, v, err)
		}
	}
}
