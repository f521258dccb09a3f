//go:build failpoints

package testcluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/failpoint"
)

// holdAt makes the first goroutine to reach failpoint name report on hit
// and block until release is closed (a crash of that step, frozen).
func holdAt(t *testing.T, name string) (hit <-chan struct{}, release func()) {
	h := make(chan struct{})
	r := make(chan struct{})
	var once sync.Once
	failpoint.Enable(name, func() {
		first := false
		once.Do(func() { first = true; close(h) })
		if first {
			<-r
		}
	})
	var ronce sync.Once
	rel := func() { ronce.Do(func() { close(r) }) }
	t.Cleanup(func() { failpoint.Disable(name); rel() })
	return h, rel
}

// crashGatewayAt commits a two-range transaction, kills its gateway at
// failpoint name, and returns the gateway's index, the txn id, the
// client's commit error and a client of the surviving nodes.
func crashGatewayAt(t *testing.T, name string) (*Cluster, int, vowdb.TxnID, error, *vowdb.DB) {
	c, _ := startCluster(t, 3)
	ctx := context.Background()
	all, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	splitAt(t, all, "m")
	hit, release := holdAt(t, name)
	tx, err := all.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "z"} {
		if err := tx.Put(ctx, []byte(k), []byte("committed?")); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- tx.Commit(ctx) }()
	select {
	case <-hit:
	case <-time.After(20 * time.Second):
		t.Fatalf("failpoint %s not reached", name)
	}
	g := -1 // Commit may move the gateway to the anchor's leader
	for i, n := range c.Nodes {
		if n.Addr() == tx.Gateway() {
			g = i
		}
	}
	c.Kill(g)
	release()
	commitErr := <-done
	var eps []string
	for i, n := range c.Nodes {
		if i != g {
			eps = append(eps, n.Addr())
		}
	}
	rest, err := vowdb.Open(ctx, vowdb.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rest.Close() })
	return c, g, tx.ID(), commitErr, rest
}

// waitStatus polls TxnStatus until it is one of want.
func waitStatus(t *testing.T, db *vowdb.DB, id vowdb.TxnID, want ...vowdb.TxnState) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		st, err := db.TxnStatus(context.Background(), id)
		if err == nil && slices.Contains(want, st) {
			return
		}
		if time.Now().After(deadline) {
			inflight, lerr := db.Txns(context.Background())
			t.Fatalf("txn %d status %v (%v), want %v; in flight: %+v (%v)", id, st, err, want, inflight, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireUnlocked writes "after" to each key, each write bounded by
// timeout: it fails the test if a lock is still held on one of them.
func requireUnlocked(t *testing.T, db *vowdb.DB, timeout time.Duration, keys ...string) {
	t.Helper()
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := db.Put(ctx, []byte(k), []byte("after"))
		cancel()
		if err != nil {
			t.Fatalf("lock on %s still held: %v", k, err)
		}
	}
}

// waitValue polls key until it reads want ("" = absent).
func waitValue(t *testing.T, db *vowdb.DB, key, want string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		v, err := db.Get(ctx, []byte(key))
		cancel()
		got := string(v)
		if errors.Is(err, vowdb.ErrNotFound) {
			got, err = "", nil
		}
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q (%v), want %q", key, got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTxnCrashCoordinatorAfterDecision: the gateway dies right after the
// COMMITTED decision is durable, before any COMMIT is sent or the client
// is answered. The client sees an ambiguous commit; TxnStatus resolves it
// as COMMITTED; every participant applies the writes (by inquiry or the
// anchor's recovery, rules 5 and 6) and releases its locks.
func TestTxnCrashCoordinatorAfterDecision(t *testing.T) {
	c, g, id, err, db := crashGatewayAt(t, failpoint.TxnAfterDecision)
	if !errors.Is(err, vowdb.ErrAmbiguousCommit) {
		t.Fatalf("commit through a dead gateway: %v, want ambiguous", err)
	}
	waitStatus(t, db, id, vowdb.TxnCommitted)
	waitValue(t, db, "a", "committed?")
	waitValue(t, db, "z", "committed?")
	if err := c.Restart(g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := db.Put(ctx, []byte("a"), []byte("after")); err != nil {
		t.Fatalf("lock still held after recovery: %v", err)
	}
	waitStatus(t, db, id, vowdb.TxnCommitted)
}

// TestTxnCrashCoordinatorBeforeDecision: the gateway dies after every
// participant prepared but before the decision. The prepared participants
// inquire; the record is undecided and the coordinator is gone, so the
// inquiry aborts it by compare-and-set (presumed abort, rule 4): nothing is
// applied and the locks are released.
func TestTxnCrashCoordinatorBeforeDecision(t *testing.T) {
	c, g, id, err, db := crashGatewayAt(t, failpoint.TxnBeforeDecision)
	if err == nil {
		t.Fatal("commit reported success though the decision was never written")
	}
	// A restarted coordinator does not know the txn.
	restartThenPresumedAbort(t, c, g, id, db, "z")
}

// restartThenPresumedAbort restarts the dead gateway g and waits until the
// txn is ABORTED, neither "a" nor "z" holds a value, and writes to each of
// free succeed (no lock is left held).
func restartThenPresumedAbort(t *testing.T, c *Cluster, g int, id vowdb.TxnID, db *vowdb.DB, free ...string) {
	t.Helper()
	if err := c.Restart(g); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, db, id, vowdb.TxnAborted)
	waitValue(t, db, "a", "")
	waitValue(t, db, "z", "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, k := range free {
		if err := db.Put(ctx, []byte(k), []byte("after")); err != nil {
			t.Fatalf("lock on %s still held after presumed abort: %v", k, err)
		}
	}
}

// TestTxnCoordinatorSilentBeforePrepare: the coordinator accepts the
// commit and then goes silent before sending any PREPARE (cut off from the
// other nodes, or stalled), so every participant is still ACTIVE. The
// client gives up with an ambiguous commit and must not leave the locks to
// the transaction's deadline: its rollback, routed by the other nodes,
// frees them at once. When the coordinator wakes, its PREPAREs are refused
// and the transaction ends ABORTED with nothing applied.
func TestTxnCoordinatorSilentBeforePrepare(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	splitAt(t, db, "m")
	spreadLeaders(t, c, db, "a", "z")
	hit, release := holdAt(t, failpoint.TxnBeforePrepare)
	tx, err := db.Begin(ctx) // default deadline: 60 s
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "z"} {
		if err := tx.Put(ctx, []byte(k), []byte("committed?")); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err = tx.Commit(cctx)
	cancel()
	if !errors.Is(err, vowdb.ErrAmbiguousCommit) {
		t.Fatalf("commit through a silent coordinator: %v, want ambiguous", err)
	}
	select {
	case <-hit:
	default:
		t.Fatal("the coordinator never reached the failpoint")
	}
	// The coordinator is still stalled: the locks must be free anyway.
	requireUnlocked(t, db, 10*time.Second, "z", "a")
	release()
	// The coordinator's PREPAREs are refused, so it aborts. Nothing durable
	// names the txn (no range prepared it, no record was needed): its status
	// settles as UNKNOWN or ABORTED, never PENDING or COMMITTED.
	waitStatus(t, db, tx.ID(), vowdb.TxnAborted, vowdb.TxnUnknown)
	waitValue(t, db, "a", "after")
	waitValue(t, db, "z", "after")
}

// TestTxnCrashCoordinatorThenSplitMovesRecord: the gateway dies after
// both participants prepared and before the decision, then a split moves
// the anchor key (where the txn record would live) into a new range. The
// prepared participants' inquiries must reach the range that now holds the
// anchor key (they are routed by the key, not by the anchor range id the
// participants know), which presumes abort: nothing is applied and both
// locks are released, also on the split-off side.
func TestTxnCrashCoordinatorThenSplitMovesRecord(t *testing.T) {
	c, g, id, err, db := crashGatewayAt(t, failpoint.TxnBeforeDecision)
	if err == nil {
		t.Fatal("commit reported success though the decision was never written")
	}
	splitAt(t, db, "a") // "a", the anchor key, now starts a new range
	restartThenPresumedAbort(t, c, g, id, db, "a", "z")
}

// TestTxnCrashClusterAtEveryStep: a two-range transaction runs until one
// of the transaction failpoints (every durable write and send of the
// protocol), then every node is killed at that instant and restarted.
// Afterwards the transaction has one outcome everywhere: TxnStatus, both
// keys (all or nothing) and the client's answer agree; no lock is left
// held; and the transaction is applied at most once.
func TestTxnCrashClusterAtEveryStep(t *testing.T) {
	for _, name := range failpoint.TxnNames {
		t.Run(name, func(t *testing.T) {
			c, db := startCluster(t, 3)
			ctx := context.Background()
			splitAt(t, db, "m")
			for _, k := range []string{"a", "z"} {
				if err := db.Put(ctx, []byte(k), []byte("0")); err != nil {
					t.Fatal(err)
				}
			}
			hit, release := holdAt(t, name)
			tx, err := db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a", "z"} {
				if err := tx.Put(ctx, []byte(k), []byte("1")); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				done <- tx.Commit(cctx)
			}()
			// Steps after the commit point may come after the client's
			// answer: wait for the failpoint either way.
			select {
			case <-hit:
			case <-time.After(20 * time.Second):
				t.Fatalf("failpoint %s not reached", name)
			}
			for i := range c.Nodes {
				c.Kill(i)
			}
			release()
			commitErr := <-done
			for i := range c.Nodes {
				if err := c.Restart(i); err != nil {
					t.Fatal(err)
				}
			}
			fresh, err := c.Client(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			t.Logf("client saw: %v", commitErr)
			// Wait for the outcome to settle, then check it everywhere.
			var st vowdb.TxnState
			deadline := time.Now().Add(45 * time.Second)
			for {
				st, err = fresh.TxnStatus(ctx, tx.ID())
				if err == nil && (st == vowdb.TxnCommitted || st == vowdb.TxnAborted || st == vowdb.TxnUnknown) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("txn status %v (%v) never settled", st, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if commitErr == nil && st != vowdb.TxnCommitted {
				t.Fatalf("client was told committed, status is %v", st)
			}
			var ab *vowdb.AbortError
			if errors.As(commitErr, &ab) && st == vowdb.TxnCommitted {
				t.Fatalf("client was told aborted (%v), status is COMMITTED", commitErr)
			}
			want := "0"
			if st == vowdb.TxnCommitted {
				want = "1"
			}
			waitValue(t, fresh, "a", want)
			waitValue(t, fresh, "z", want)
			requireUnlocked(t, fresh, 20*time.Second, "a", "z")
			t.Logf("outcome %v", st)
		})
	}
}

// TestTxnOpAbandonedWhileGranted: a transactional read's S lock is granted,
// but its client gave up before the answer left (its deadline passed while
// the node was stalled), and the client's rollback never arrives (this
// caller sends none, as when the node was cut off or paused when it was
// sent). The node must not keep the lock for a transaction nobody runs:
// it rolls the attempt back on that range, and a later operation of the
// same attempt is refused.
func TestTxnOpAbandonedWhileGranted(t *testing.T) {
	c, db := startCluster(t, 1)
	ctx := context.Background()
	if err := db.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	tc := rawTxnClient(t, c)
	hit, release := holdAt(t, failpoint.TxnOpGranted)
	const id = 4242
	attempt := uint64(time.Now().UnixNano()) // attempts are begin times
	octx, cancel := context.WithTimeout(ctx, time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := tc.Op(octx, &vowdbpb.TxnOpRequest{TxnId: id, Attempt: attempt, Kind: vowdbpb.TxnOpRequest_GET,
			Key: []byte("k"), GatewayNodeId: 1})
		done <- err
	}()
	select {
	case <-hit:
	case <-time.After(10 * time.Second):
		t.Fatal("the operation never got its lock")
	}
	<-octx.Done() // the client gives up while the node holds the answer
	cancel()
	// The node learns of it when its own copy of the deadline passes (a
	// little after the client's: it started counting on receipt) or when
	// the cancellation arrives; give it that time before it goes on.
	time.Sleep(time.Second)
	release()
	if err := <-done; err == nil {
		t.Fatal("the abandoned operation reported success")
	}
	// Nothing holds k: a plain write goes through at once.
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if err := db.Put(pctx, []byte("k"), []byte("plain")); err != nil {
		t.Fatalf("the abandoned operation left its lock: %v", err)
	}
	_, err := tc.Op(ctx, &vowdbpb.TxnOpRequest{TxnId: id, Attempt: attempt, Kind: vowdbpb.TxnOpRequest_PUT,
		Key: []byte("k"), Value: []byte("late"), GatewayNodeId: 1})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("a later operation of the abandoned attempt: %v, want an abort", err)
	}
}
