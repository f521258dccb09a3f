package testcluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/api/vowdbpb"
)

// splitAt splits the keyspace at each key.
func splitAt(t *testing.T, db *vowdb.DB, ks ...string) {
	t.Helper()
	for _, k := range ks {
		if _, _, err := db.Split(context.Background(), []byte(k)); err != nil {
			t.Fatalf("split at %q: %v", k, err)
		}
	}
}

func mustGet(t *testing.T, db *vowdb.DB, k string) string {
	t.Helper()
	v, err := db.Get(context.Background(), []byte(k))
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	return string(v)
}

// TestTxnCommitPaths: writes in two ranges commit by 2PC, writes in one
// range by the one-phase path (rule 10), a txn without writes read-only;
// all are visible afterwards and the receipts say which path was taken.
func TestTxnCommitPaths(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "z"} {
		if err := tx.Put(ctx, []byte(k), []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := tx.Get(ctx, []byte("a")); err != nil || string(v) != "v-a" {
		t.Fatalf("read own write: %q %v", v, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := tx.Receipt(); r == nil || r.Path != "2PC" || len(r.Ranges) != 2 || r.DurableWrites != 2 {
		t.Fatalf("2PC receipt %+v", r)
	}
	if mustGet(t, db, "a") != "v-a" || mustGet(t, db, "z") != "v-z" {
		t.Fatal("2PC writes not visible")
	}
	if st, err := db.TxnStatus(ctx, tx.ID()); err != nil || st != vowdb.TxnCommitted {
		t.Fatalf("TxnStatus after 2PC commit: %v %v", st, err)
	}

	// One writing range (plus a read elsewhere): one-phase.
	tx, _ = db.Begin(ctx)
	if _, err := tx.Get(ctx, []byte("z")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("b"), []byte("1pc")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := tx.Receipt(); r.Path != "1PC" || r.DurableWrites != 1 {
		t.Fatalf("1PC receipt %+v", r)
	}
	if mustGet(t, db, "b") != "1pc" {
		t.Fatal("1PC write not visible")
	}
	if st, _ := db.TxnStatus(ctx, tx.ID()); st != vowdb.TxnCommitted {
		t.Fatalf("TxnStatus after 1PC commit: %v", st)
	}

	// Rollback: nothing applied, locks released (a plain put goes through).
	tx, _ = db.Begin(ctx)
	if err := tx.Put(ctx, []byte("c"), []byte("never")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Put(pctx, []byte("c"), []byte("plain")); err != nil {
		t.Fatalf("plain put after rollback: %v", err)
	}
	if err := tx.Put(ctx, []byte("d"), nil); !errors.Is(err, vowdb.ErrTxnDone) {
		var ab *vowdb.AbortError
		if !errors.As(err, &ab) || ab.Reason != vowdb.AbortRollback {
			t.Fatalf("op after rollback: %v", err)
		}
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("commit after rollback succeeded")
	}

	// Scan sees own writes and deletes.
	tx, _ = db.Begin(ctx)
	_ = tx.Delete(ctx, []byte("b"))
	_ = tx.Put(ctx, []byte("y"), []byte("new"))
	kvs, err := tx.Scan(ctx, []byte("a"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, string(kv.Key))
	}
	if fmt.Sprint(got) != "[a c y z]" {
		t.Fatalf("scan in txn: %v", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, []byte("b")); !errors.Is(err, vowdb.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

// TestTxnLocksBlockPlainOps: a plain write waits for a transaction's X
// lock, so it cannot be overwritten by the transaction's later commit, and a
// plain read never sees a half-committed transaction.
func TestTxnLocksBlockPlainOps(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	tx, _ := db.Begin(ctx)
	if err := tx.Put(ctx, []byte("a"), []byte("txn")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- db.Put(ctx, []byte("a"), []byte("plain")) }()
	select {
	case err := <-done:
		t.Fatalf("plain put went through an X lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, db, "a"); v != "plain" {
		t.Fatalf("a = %q: the plain put did not come after the txn", v)
	}
}

// TestTxnDeadlockAcrossRanges: two transactions lock keys in opposite
// orders on two ranges: exactly one is the victim, with a deadlock reason
// and the cycle; the other commits.
func TestTxnDeadlockAcrossRanges(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	t1, _ := db.Begin(ctx, vowdb.WithLockTimeout(20*time.Second))
	t2, _ := db.Begin(ctx, vowdb.WithLockTimeout(20*time.Second))
	if err := t1.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := t2.Put(ctx, []byte("z"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- t1.Put(ctx, []byte("z"), []byte("1")) }()
	time.Sleep(100 * time.Millisecond)
	go func() { errs <- t2.Put(ctx, []byte("a"), []byte("2")) }()
	var victims int
	var winner *vowdb.Txn
	start := time.Now()
	for range 2 {
		err := <-errs
		var ab *vowdb.AbortError
		if errors.As(err, &ab) {
			if ab.Reason != vowdb.AbortDeadlock || len(ab.Cycle) != 2 || !errors.Is(err, vowdb.ErrRetryable) {
				t.Fatalf("victim error %v", err)
			}
			victims++
			if ab.Txn == t1.ID() {
				winner = t2
			} else {
				winner = t1
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if victims != 1 {
		t.Fatalf("%d victims", victims)
	}
	t.Logf("deadlock broken after %v", time.Since(start))
	if err := winner.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_, dls, err := db.Locks(ctx)
	if err != nil || len(dls) == 0 {
		t.Fatalf("deadlock history: %v %v", dls, err)
	}
}

// TestTxnBank: concurrent transfers between accounts on three ranges and
// full-table reads in transactions: every read sees the exact total, no
// balance goes negative, and the final state conserves the total.
func TestTxnBank(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "acct/3", "acct/6")
	const accounts, initial = 9, 100
	for i := range accounts {
		if err := db.Put(ctx, acct(i), []byte(strconv.Itoa(initial))); err != nil {
			t.Fatal(err)
		}
	}
	var commits, aborts, reads atomic.Int64
	deadline := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	errCh := make(chan error, 16)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				from, to := (w+i)%accounts, (w*3+i*7+1)%accounts
				if from == to {
					continue
				}
				err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
					fb, err := getInt(ctx, tx, acct(from))
					if err != nil {
						return err
					}
					tb, err := getInt(ctx, tx, acct(to))
					if err != nil {
						return err
					}
					amt := 1 + i%5
					if fb < amt {
						return nil
					}
					if err := tx.Put(ctx, acct(from), []byte(strconv.Itoa(fb-amt))); err != nil {
						return err
					}
					return tx.Put(ctx, acct(to), []byte(strconv.Itoa(tb+amt)))
				}, vowdb.WithLockTimeout(3*time.Second))
				if err != nil {
					aborts.Add(1)
					if !errors.Is(err, vowdb.ErrRetryable) {
						errCh <- err
						return
					}
					continue
				}
				commits.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
				kvs, err := tx.Scan(ctx, []byte("acct/"), []byte("acct0"), 0)
				if err != nil {
					return err
				}
				sum := 0
				for _, kv := range kvs {
					v, _ := strconv.Atoi(string(kv.Value))
					if v < 0 {
						return fmt.Errorf("negative balance %s=%d", kv.Key, v)
					}
					sum += v
				}
				if len(kvs) != accounts || sum != accounts*initial {
					return fmt.Errorf("read saw %d accounts totalling %d, want %d totalling %d", len(kvs), sum, accounts, accounts*initial)
				}
				return nil
			})
			if err != nil && !errors.Is(err, vowdb.ErrRetryable) {
				errCh <- err
				return
			}
			reads.Add(1)
		}
	}()
	wg.Wait()
	close(errCh)
	for err := range errCh {
		t.Fatal(err)
	}
	sum := 0
	for i := range accounts {
		v, _ := strconv.Atoi(mustGet(t, db, string(acct(i))))
		sum += v
	}
	if sum != accounts*initial {
		t.Fatalf("final total %d, want %d", sum, accounts*initial)
	}
	if commits.Load() == 0 || reads.Load() == 0 {
		t.Fatalf("no progress: %d commits, %d reads", commits.Load(), reads.Load())
	}
	t.Logf("%d transfers committed, %d gave up, %d full reads", commits.Load(), aborts.Load(), reads.Load())
}

func acct(i int) []byte { return []byte(fmt.Sprintf("acct/%d", i)) }

func getInt(ctx context.Context, tx *vowdb.Txn, k []byte) (int, error) {
	v, err := tx.Get(ctx, k)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(v))
}

// TestTxnWriteSkewAcrossFailover is the G2 scenario of DESIGN rule 9 with a
// leader failover between a transaction's read and its commit. T1 reads y
// (range B) and T2 reads x (range A); B's leader dies, so T1's S lock on y
// is gone; T2 then writes y and commits; T1 writes x and commits. If both
// committed, each would have read a value the other overwrote: a cycle of
// anti-dependencies (write skew). Rule 8 forbids it: B's leader term
// changed since T1's read there, so B votes NO and T1 aborts.
func TestTxnWriteSkewAcrossFailover(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	x, y := []byte("a-x"), []byte("y-z") // x < "m" <= y: two ranges
	for _, k := range [][]byte{x, y} {
		if err := db.Put(ctx, k, []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	// Give x's range and y's range different leaders, so that the failover
	// below hits B (y's range) alone.
	if lx := leaderIndex(t, c, db, string(x)); lx == leaderIndex(t, c, db, string(y)) {
		ranges, _ := db.Ranges(ctx)
		for _, r := range ranges {
			if !r.Meta && string(r.StartKey) <= string(x) && string(x) < string(r.EndKey) {
				tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Nodes[lx].TransferLeadership(tctx, r.ID, c.Nodes[(lx+1)%3].NodeID())
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	t1, _ := db.Begin(ctx)
	t2, _ := db.Begin(ctx)
	if _, err := t1.Get(ctx, y); err != nil {
		t.Fatal(err)
	}
	if _, err := t2.Get(ctx, x); err != nil {
		t.Fatal(err)
	}
	// Fail over B.
	b := leaderIndex(t, c, db, string(y))
	shared := b == leaderIndex(t, c, db, string(x))
	bid := c.Nodes[b].NodeID()
	c.Kill(b)
	// Let the survivors elect a new leader of B before the old one returns.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ranges, err := db.Ranges(ctx)
		elected := false
		for _, r := range ranges {
			if err == nil && !r.Meta && string(r.StartKey) <= string(y) && r.Leader != 0 && r.Leader != bid {
				elected = true
			}
		}
		if elected || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Restart(b); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := t2.Put(wctx, y, []byte("t2")); err != nil {
		t.Fatalf("T2 write y after failover: %v", err)
	}
	err2 := t2.Commit(wctx)
	err1 := t1.Put(wctx, x, []byte("t1"))
	if err1 == nil {
		err1 = t1.Commit(wctx)
	}
	t.Logf("T1: %v; T2: %v", err1, err2)
	if err1 == nil && err2 == nil {
		t.Fatal("both transactions committed: write skew (G2) across failover")
	}
	if !shared && err2 != nil {
		t.Fatalf("T2 (untouched by the failover) aborted: %v", err2)
	}
	var ab *vowdb.AbortError
	if err1 != nil && !errors.As(err1, &ab) && !errors.Is(err1, vowdb.ErrRetryable) {
		t.Fatalf("T1 failed with a non-abort error: %v", err1)
	}
}

// TestTxnParticipantRecoversPreparedLocks: a participant leader dies after
// the transaction prepared there; the new leader rebuilds the prepared
// transaction from its durable record (its X locks included) and applies
// the commit; the client sees committed.
func TestTxnPreparedSurvivesLeaderRestart(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	for round := range 3 {
		tx, _ := db.Begin(ctx)
		a, z := fmt.Appendf(nil, "a%d", round), fmt.Appendf(nil, "z%d", round)
		if err := tx.Put(ctx, a, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Put(ctx, z, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// Restart z's leader: committed state must be durable, and the new
		// tenure must not hold stale locks.
		i := leaderIndex(t, c, db, string(z))
		c.Kill(i)
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if err := db.Put(pctx, z, []byte("plain")); err != nil {
			t.Fatalf("plain put after restart: %v", err)
		}
		cancel()
		if mustGet(t, db, string(a)) != "v" {
			t.Fatal("committed write lost")
		}
	}
}

// TestTxnBadInput: limits, finished transactions and unknown ids get clear
// errors and write nothing.
func TestTxnBadInput(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	tx, _ := db.Begin(ctx, vowdb.WithMaxBytes(100))
	if err := tx.Put(ctx, []byte("big1"), make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	err := tx.Put(ctx, []byte("big2"), make([]byte, 60))
	if !errors.Is(err, vowdb.ErrTxnLimit) || !errors.Is(err, vowdb.ErrInvalidArgument) {
		t.Fatalf("oversize txn: %v", err)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("commit of an over-limit txn succeeded")
	}
	if _, err := db.Get(ctx, []byte("big1")); !errors.Is(err, vowdb.ErrNotFound) {
		t.Fatalf("over-limit txn wrote: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Put(pctx, []byte("big1"), []byte("x")); err != nil {
		t.Fatalf("locks of the over-limit txn not released: %v", err)
	}

	tx, _ = db.Begin(ctx)
	_ = tx.Put(ctx, []byte("k"), []byte("v"))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("k2"), []byte("v")); !errors.Is(err, vowdb.ErrTxnDone) {
		t.Fatalf("put after commit: %v", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, vowdb.ErrTxnDone) {
		t.Fatalf("second commit: %v", err)
	}
	if st, err := db.TxnStatus(ctx, 12345); err != nil || st != vowdb.TxnUnknown {
		t.Fatalf("unknown id: %v %v", st, err)
	}
	if _, err := db.TxnStatus(ctx, 0); !errors.Is(err, vowdb.ErrInvalidArgument) {
		t.Fatalf("id 0: %v", err)
	}
	if _, err := db.Begin(ctx, vowdb.WithTxnID(1<<63)); !errors.Is(err, vowdb.ErrInvalidArgument) {
		t.Fatalf("id 2^63: %v", err)
	}
	if _, err := tx.Get(ctx, nil); !errors.Is(err, vowdb.ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
}

// TestTxnIDIsIdempotencyKey: a transaction named with WithTxnID that
// committed is never applied again: Begin refuses the id and Transact
// returns success without running the function.
func TestTxnIDIsIdempotencyKey(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	const id = vowdb.TxnID(777)
	runs := 0
	incr := func(ctx context.Context, tx *vowdb.Txn) error {
		runs++
		n := 0
		if v, err := tx.Get(ctx, []byte("counter")); err == nil {
			n, _ = strconv.Atoi(string(v))
		} else if !errors.Is(err, vowdb.ErrNotFound) {
			return err
		}
		if err := tx.Put(ctx, []byte("counter"), []byte(strconv.Itoa(n+1))); err != nil {
			return err
		}
		return tx.Put(ctx, []byte("zz-log"), []byte("x"))
	}
	for range 3 {
		if err := db.Transact(ctx, incr, vowdb.WithTxnID(id)); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 1 || mustGet(t, db, "counter") != "1" {
		t.Fatalf("named txn ran %d times, counter %s", runs, mustGet(t, db, "counter"))
	}
	if _, err := db.Begin(ctx, vowdb.WithTxnID(id)); !errors.Is(err, vowdb.ErrTxnCommitted) {
		t.Fatalf("Begin of a committed id: %v", err)
	}
}

// spreadLeaders gives the ranges holding keys different leader nodes.
func spreadLeaders(t *testing.T, c *Cluster, db *vowdb.DB, keys ...string) {
	t.Helper()
	ctx := context.Background()
	ranges, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		for _, r := range ranges {
			if r.Meta || string(r.StartKey) > k || (len(r.EndKey) > 0 && k >= string(r.EndKey)) {
				continue
			}
			want := c.Nodes[i%len(c.Nodes)].NodeID()
			from := leaderIndex(t, c, db, k)
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Nodes[from].TransferLeadership(tctx, r.ID, want)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTxnDeadlockThreeRangesThreeNodes: T1 holds a and wants m, T2 holds m
// and wants z, T3 holds z and wants a, each range led by another node: the
// global detector breaks the cycle with exactly one victim, and the other
// two commit.
func TestTxnDeadlockThreeRangesThreeNodes(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "h", "s")
	keys := []string{"a", "m", "z"}
	spreadLeaders(t, c, db, keys...)
	txs := make([]*vowdb.Txn, 3)
	for i := range txs {
		txs[i], _ = db.Begin(ctx, vowdb.WithLockTimeout(30*time.Second))
		if err := txs[i].Put(ctx, []byte(keys[i]), []byte("held")); err != nil {
			t.Fatal(err)
		}
	}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range txs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = txs[i].Put(ctx, []byte(keys[(i+1)%3]), []byte("wanted"))
			if errs[i] == nil {
				errs[i] = txs[i].Commit(ctx)
			}
		}()
	}
	wg.Wait()
	victims := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		var ab *vowdb.AbortError
		if !errors.As(err, &ab) || ab.Reason != vowdb.AbortDeadlock || len(ab.Cycle) != 3 {
			t.Fatalf("T%d: %v, want a deadlock abort with a 3-cycle", i+1, err)
		}
		victims++
	}
	if victims != 1 {
		t.Fatalf("%d victims: %v", victims, errs)
	}
}

// TestTxnLockWaitTimeout: a transaction that waits longer than its lock
// timeout is aborted with the key, the holder and the wait, and releases
// its own locks.
func TestTxnLockWaitTimeout(t *testing.T) {
	_, db := startCluster(t, 3)
	ctx := context.Background()
	holder, _ := db.Begin(ctx)
	if err := holder.Put(ctx, []byte("k"), []byte("h")); err != nil {
		t.Fatal(err)
	}
	w, _ := db.Begin(ctx, vowdb.WithLockTimeout(300*time.Millisecond))
	if err := w.Put(ctx, []byte("other"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	_, err := w.Get(ctx, []byte("k"))
	var ab *vowdb.AbortError
	if !errors.As(err, &ab) || ab.Reason != vowdb.AbortLockTimeout || ab.ConflictingTxn != holder.ID() ||
		string(ab.Key) != "k" || ab.Mode != "S" || ab.Wait < 300*time.Millisecond {
		t.Fatalf("lock timeout error: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Put(pctx, []byte("other"), []byte("plain")); err != nil {
		t.Fatalf("timed-out txn kept its locks: %v", err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// rawTxnClient is a Txn service client of the cluster's first node with
// none of the client library's behaviour (no rollback after a failure).
func rawTxnClient(t *testing.T, c *Cluster) vowdbpb.TxnClient {
	t.Helper()
	conn, err := grpc.NewClient(c.Endpoints()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return vowdbpb.NewTxnClient(conn)
}

// TestTxnRollbackBeforeOperation: a client that gave up on an operation
// still in flight rolls its attempt back; if the rollback reaches the range
// first, the late operation must be refused, not take locks that nobody
// releases before the attempt's deadline.
func TestTxnRollbackBeforeOperation(t *testing.T) {
	c, db := startCluster(t, 1)
	ctx := context.Background()
	// A first transaction makes the range's tenure exist, so the rollback
	// below is handled before its RPC returns.
	if err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
		return tx.Put(ctx, []byte("warm"), []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	tc := rawTxnClient(t, c)
	rs, err := db.Ranges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rangeID uint64
	for _, r := range rs {
		if !r.Meta {
			rangeID = r.ID
		}
	}
	const id = 777
	attempt := uint64(time.Now().UnixNano()) // attempts are begin times
	if _, err := tc.Rollback(ctx, &vowdbpb.TxnRollbackRequest{TxnId: id, Attempt: attempt,
		Participants: []*vowdbpb.TxnParticipant{{RangeId: rangeID}}}); err != nil {
		t.Fatal(err)
	}
	_, err = tc.Op(ctx, &vowdbpb.TxnOpRequest{TxnId: id, Attempt: attempt, Kind: vowdbpb.TxnOpRequest_PUT,
		Key: []byte("k"), Value: []byte("late"), GatewayNodeId: 1})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("operation after its attempt's rollback: %v, want an abort", err)
	}
	// Nothing holds k: a plain write goes through at once.
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := db.Put(pctx, []byte("k"), []byte("plain")); err != nil {
		t.Fatalf("the refused operation left a lock: %v", err)
	}
	// A new attempt of the same id is served.
	if _, err := tc.Op(ctx, &vowdbpb.TxnOpRequest{TxnId: id, Attempt: attempt + 1, Kind: vowdbpb.TxnOpRequest_GET,
		Key: []byte("k"), GatewayNodeId: 1}); err != nil {
		t.Fatalf("next attempt: %v", err)
	}
}

// TestTxnCommitOnAnchorLeader: whatever node Begin picked as gateway, a
// commit is coordinated by the leader of the anchor range (the range of
// the first write) once the client has seen that leader, so the decision
// record is written without a hop between nodes. The anchor's leader is
// moved between the two transactions: the client follows it.
func TestTxnCommitOnAnchorLeader(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	spreadLeaders(t, c, db, "a", "z") // "a" on node 1, "z" on node 2
	for round := 0; round < 2; round++ {
		anchor := c.Nodes[leaderIndex(t, c, db, "a")]
		moved := false
		for i := 0; i < 6; i++ { // Begin spreads gateways over the nodes
			tx, err := db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			began := tx.Gateway()
			for _, k := range []string{"a", "z"} {
				if err := tx.Put(ctx, []byte(k), []byte(fmt.Sprint(round, i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := tx.Receipt()
			if r == nil || r.Path != "2PC" || r.Gateway != anchor.NodeID() || tx.Gateway() != anchor.Addr() {
				t.Fatalf("round %d: receipt %+v, gateway %s: want the anchor's leader n%d (%s)", round, r, tx.Gateway(), anchor.NodeID(), anchor.Addr())
			}
			moved = moved || began != anchor.Addr()
		}
		if !moved {
			t.Fatal("every Begin picked the anchor's leader: the test proved nothing")
		}
		// Move the anchor range's leadership to the next node.
		from := leaderIndex(t, c, db, "a")
		ranges, _ := db.Ranges(ctx)
		for _, rg := range ranges {
			if !rg.Meta && string(rg.StartKey) <= "a" && "a" < string(rg.EndKey) {
				tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Nodes[from].TransferLeadership(tctx, rg.ID, c.Nodes[(from+2)%3].NodeID())
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestTxnStreamCancel: a transactional operation sent on the KV.Batch
// stream and waiting for a lock stops when its client cancels it
// (BatchCancel), as a cancelled unary call would, though the client sends
// no rollback: the node drops the waiting request at once instead of at
// the 30 s lock-wait timeout, and the transaction is never granted the
// lock.
func TestTxnStreamCancel(t *testing.T) {
	c, db := startCluster(t, 1)
	ctx := context.Background()
	holder, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Put(ctx, []byte("k"), []byte("held")); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.Endpoints()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	st, err := vowdbpb.NewKVClient(conn).Batch(sctx)
	if err != nil {
		t.Fatal(err)
	}
	const id = 5151
	if err := st.Send(&vowdbpb.BatchRequest{Ops: []*vowdbpb.BatchOp{{Id: 1, Op: &vowdbpb.BatchOp_TxnOp{TxnOp: &vowdbpb.TxnOpRequest{
		TxnId: id, Attempt: uint64(time.Now().UnixNano()), Kind: vowdbpb.TxnOpRequest_GET, Key: []byte("k"), GatewayNodeId: 1,
		LockTimeoutMs: 30000, BeginUnixNanos: time.Now().UnixNano()}}}}}); err != nil {
		t.Fatal(err)
	}
	waiting := func() bool {
		rep, err := db.LockTable(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range rep.Waits {
			if w.Waiter == id {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !waiting() {
		if time.Now().After(deadline) {
			t.Fatal("the stream operation never waited for the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := st.Send(&vowdbpb.BatchRequest{Ops: []*vowdbpb.BatchOp{{Op: &vowdbpb.BatchOp_Cancel{Cancel: &vowdbpb.BatchCancel{Id: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for waiting() {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled operation still waits for the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 1 || resp.Results[0].Id != 1 || resp.Results[0].GrpcCode == 0 {
		t.Fatalf("answer to the cancelled operation: %+v, want one failed result for id 1", resp.Results)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := db.LockTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range rep.Held {
		if h.Holder == id {
			t.Fatalf("the cancelled operation was granted its lock: %+v", h)
		}
	}
}

// TestTxnIdleTimeout: a range aborts an open transaction whose client went
// silent (no operation, no keep-alive) for the node's idle timeout, so a
// waiter gets its locks long before its lock-wait timeout; the client's
// keep-alives keep a slow but live transaction, on every range it touched,
// past that timeout.
func TestTxnIdleTimeout(t *testing.T) {
	c, db := startCluster(t, 3, func(o *Options) { o.TxnIdleTimeout = time.Second })
	splitAt(t, db, "m")
	ctx := context.Background()
	open := func(keepAlive time.Duration) *vowdb.DB {
		d, err := vowdb.Open(ctx, vowdb.Config{Endpoints: c.Endpoints(), TxnKeepAlive: keepAlive})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	live, silent := open(200*time.Millisecond), open(-1)

	slow, err := live.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a1", "z1"} {
		if err := slow.Put(ctx, []byte(k), []byte("slow")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // idle timeouts without an operation
	info := func(id vowdb.TxnID) vowdb.TxnInfo {
		t.Helper()
		txns, err := db.Txns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range txns {
			if ti.ID == id {
				return ti
			}
		}
		t.Fatalf("transaction %d not in flight: %+v", id, txns)
		return vowdb.TxnInfo{}
	}
	if ti := info(slow.ID()); ti.State != "ACTIVE" || ti.Idle <= 0 || ti.Idle >= time.Second {
		t.Fatalf("kept-alive transaction listed as %+v, want ACTIVE, idle under the 1s timeout", ti)
	}
	time.Sleep(time.Second)
	for _, k := range []string{"b1", "y1"} { // both ranges, new keys: each goes to its range
		if err := slow.Put(ctx, []byte(k), []byte("slow")); err != nil {
			t.Fatalf("a transaction kept alive was aborted: %v", err)
		}
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatalf("commit of a transaction kept alive: %v", err)
	}

	gone, err := silent.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a2", "z2"} {
		if err := gone.Put(ctx, []byte(k), []byte("gone")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if ti := info(gone.ID()); ti.State != "ACTIVE" || ti.Idle < 300*time.Millisecond {
		t.Fatalf("silent transaction listed as %+v, want ACTIVE, idle at least 300ms", ti)
	}
	// The silent client neither commits nor rolls back: a waiter with a
	// 20 s lock-wait timeout gets both keys once the idle timeout passed,
	// and its receipt counts the wait.
	waiter, err := db.Begin(ctx, vowdb.WithLockTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a2", "z2"} {
		if err := waiter.Put(ctx, []byte(k), []byte("next")); err != nil {
			t.Fatalf("the waiter did not get the silent transaction's lock on %s: %v", k, err)
		}
	}
	if err := waiter.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if lw := waiter.Receipt().LockWait; lw < 500*time.Millisecond {
		t.Fatalf("receipt lock-wait %v, want about the 1s the holder stayed silent", lw)
	}
	for _, k := range []string{"a2", "z2"} {
		if v := mustGet(t, db, k); v != "next" {
			t.Fatalf("%s = %q, want the waiter's write", k, v)
		}
	}
	var ab *vowdb.AbortError
	if err := gone.Put(ctx, []byte("a3"), []byte("late")); !errors.As(err, &ab) || ab.Reason != vowdb.AbortIdle || !errors.Is(err, vowdb.ErrRetryable) {
		t.Fatalf("operation of the silent transaction: %v, want a retryable abort for idleness", err)
	}

	// Bad input on the RPC itself: an id out of range is refused; a
	// keep-alive for a transaction the range does not know changes nothing.
	conn, err := grpc.NewClient(c.Endpoints()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kc := vowdbpb.NewTxnClient(conn)
	for _, req := range []*vowdbpb.TxnKeepAliveRequest{{TxnId: 0, Attempt: 1, Key: []byte("a")}, {TxnId: 1 << 63, Attempt: 1, Key: []byte("a")},
		{TxnId: 7, Attempt: 0, Key: []byte("a")}} {
		if _, err := kc.KeepAlive(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("KeepAlive(%v): %v, want InvalidArgument", req, err)
		}
	}
	served := 0 // by the leader of a4's range; the others answer NOT_LEADER
	for _, ep := range c.Endpoints() {
		cc, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = vowdbpb.NewTxnClient(cc).KeepAlive(ctx, &vowdbpb.TxnKeepAliveRequest{TxnId: 4242, Attempt: 1, Key: []byte("a4")})
		_ = cc.Close()
		if err == nil {
			served++
		}
	}
	if served == 0 {
		t.Fatal("no node served the keep-alive of an unknown transaction")
	}
	if txns, err := db.Txns(ctx); err != nil || len(txns) != 0 {
		t.Fatalf("in flight after an unknown keep-alive: %+v, %v", txns, err)
	}
}
