package testcluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/api/vowdbpb"
)

// TestTxnStateCollected: past the txn retention the ranges collect the
// outcomes they remembered of finished transactions: TxnStatus of an old
// one-phase transaction (which has no txn record) becomes UNKNOWN, a
// two-phase one still answers COMMITTED from its txn record (records are
// kept), the data stays, and new transactions go on committing. An
// operation whose attempt began longer ago than half the retention (a
// client clock far behind) is refused with a clear error.
func TestTxnStateCollected(t *testing.T) {
	c, db := startCluster(t, 3, func(o *Options) {
		o.MaxTxnDuration = time.Second
		o.TxnRetention = 3 * time.Second
		o.TxnCollectInterval = 200 * time.Millisecond
	})
	splitAt(t, db, "m")
	ctx := context.Background()
	transfer := func(id vowdb.TxnID, a, z string) {
		t.Helper()
		err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			if err := tx.Put(ctx, []byte("a"), []byte(a)); err != nil {
				return err
			}
			return tx.Put(ctx, []byte("z"), []byte(z))
		}, vowdb.WithTxnID(id))
		if err != nil {
			t.Fatal(err)
		}
	}
	transfer(101, "1", "1")
	if err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
		return tx.Put(ctx, []byte("b"), []byte("one-phase"))
	}, vowdb.WithTxnID(102)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []vowdb.TxnID{101, 102} {
		if st, err := db.TxnStatus(ctx, id); err != nil || st != vowdb.TxnCommitted {
			t.Fatalf("TxnStatus(%d) right after commit: %v %v", id, st, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := db.TxnStatus(ctx, 102)
		if err != nil {
			t.Fatal(err)
		}
		if st == vowdb.TxnUnknown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the one-phase txn's outcome was never collected: %v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, err := db.TxnStatus(ctx, 101); err != nil || st != vowdb.TxnCommitted {
		t.Fatalf("TxnStatus of a collected two-phase txn: %v %v (its record is kept)", st, err)
	}
	if mustGet(t, db, "a") != "1" || mustGet(t, db, "z") != "1" || mustGet(t, db, "b") != "one-phase" {
		t.Fatal("collection lost committed data")
	}
	transfer(103, "2", "2")
	if mustGet(t, db, "a") != "2" || mustGet(t, db, "z") != "2" {
		t.Fatal("a transaction after collection did not commit")
	}
	if st, _ := db.TxnStatus(ctx, 103); st != vowdb.TxnCommitted {
		t.Fatalf("TxnStatus of a new txn: %v", st)
	}

	conn, err := grpc.NewClient(c.Endpoints()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = vowdbpb.NewTxnClient(conn).Op(ctx, &vowdbpb.TxnOpRequest{TxnId: 104, Attempt: uint64(time.Now().Add(-time.Minute).UnixNano()),
		Kind: vowdbpb.TxnOpRequest_PUT, Key: []byte("a"), Value: []byte("late"), BeginUnixNanos: time.Now().UnixNano()})
	if err == nil || !strings.Contains(err.Error(), "check the client's clock") {
		t.Fatalf("an operation of a transaction begun a minute ago (retention 3s): %v", err)
	}
	if mustGet(t, db, "a") != "2" {
		t.Fatal("the refused operation wrote")
	}
}
