package vowdb

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// Keep-alives. A range leader aborts an ACTIVE transaction it has heard
// nothing from for its idle timeout (vowdb start --txn-idle-timeout), so a
// client that vanished, or whose rollback was lost in a partition, does not
// keep its locks until the transaction's deadline. An open transaction
// therefore tells each range it operated on, every Config.TxnKeepAlive,
// that it is still running, until its commit is answered or it is rolled
// back, or until its deadline. A transaction that ends within the first
// period sends none.

// startKeepAlive arms the first keep-alive.
func (tx *Txn) startKeepAlive() {
	if d := tx.db.cfg.TxnKeepAlive; d > 0 {
		tx.mu.Lock()
		tx.keepAlive = time.AfterFunc(d, tx.sendKeepAlives)
		tx.mu.Unlock()
	}
}

// stopKeepAlive stops the keep-alives for good.
func (tx *Txn) stopKeepAlive() {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.kaStopped = true
	if tx.keepAlive != nil {
		tx.keepAlive.Stop()
	}
}

// sendKeepAlives sends one keep-alive to every range the transaction
// operated on, each to the range's leader, then arms the next round. A
// failed keep-alive is not an error: the next operation or the commit
// learns what became of the transaction.
func (tx *Txn) sendKeepAlives() {
	tx.mu.Lock()
	if tx.kaStopped || time.Now().After(tx.deadline()) || tx.db.isClosed() {
		// Past its deadline the transaction can only fail: a program that
		// neither commits nor rolls back keeps it alive no longer; nor
		// does a closed DB.
		tx.kaStopped = true
		tx.mu.Unlock()
		return
	}
	keys := make([][]byte, 0, len(tx.order))
	for _, r := range tx.order {
		keys = append(keys, tx.parts[r].key)
	}
	id, attempt := uint64(tx.id), tx.attempt
	tx.mu.Unlock()

	period := tx.db.cfg.TxnKeepAlive
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), period)
			defer cancel()
			req := &vowdbpb.TxnKeepAliveRequest{TxnId: id, Attempt: attempt, Key: key}
			_ = tx.db.send(ctx, key, false, func(ctx context.Context, c *grpc.ClientConn) error {
				_, err := vowdbpb.NewTxnClient(c).KeepAlive(ctx, req)
				return err
			})
		}()
	}
	wg.Wait()

	tx.mu.Lock()
	if !tx.kaStopped {
		tx.keepAlive.Reset(period)
	}
	tx.mu.Unlock()
}
