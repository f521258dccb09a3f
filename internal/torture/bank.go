package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/check"
)

// Bank is the "bank" workload: transfers between accounts spread over
// three ranges, each transfer also writing a ledger entry in the same
// transaction, and full-table read transactions. internal/check.Bank judges
// every read (exact total, no negative balance) and check.LedgerCheck the
// end state (every acknowledged transfer in the ledger exactly once, no
// failed one, and the ledger replayed from the initial balances gives the
// final balances exactly).
type Bank struct {
	opts WorkloadOptions
	// Accounts is the number of accounts (default 12); each starts with
	// Initial (default 100).
	Accounts, Initial int
	// OpTimeout bounds each transaction (default 5 s).
	OpTimeout time.Duration

	rec *Recorder

	mu     sync.Mutex
	log    opLog
	ledger []check.Transfer
	final  map[string]int
}

const (
	bankPrefix   = "torture/bank/acct/"
	ledgerPrefix = "torture/bank/ledger/"
)

// NewBank returns the bank workload.
func NewBank(opts WorkloadOptions) *Bank {
	if opts.Clients <= 0 {
		opts.Clients = 10
	}
	if opts.Rate == 0 {
		opts.Rate = 200
	}
	return &Bank{opts: opts, Accounts: 12, Initial: 100, OpTimeout: 5 * time.Second}
}

func (b *Bank) account(i int) string { return fmt.Sprintf("%s%03d", bankPrefix, i) }

func (b *Bank) accounts() []string {
	out := make([]string, b.Accounts)
	for i := range out {
		out[i] = b.account(i)
	}
	return out
}

// Run implements Workload.
func (b *Bank) Run(ctx context.Context, endpoints []string, rec *Recorder) error {
	if len(endpoints) == 0 {
		return errors.New("torture: bank: no endpoints")
	}
	b.mu.Lock()
	b.rec = rec
	b.mu.Unlock()
	splitKeys(ctx, endpoints, []string{b.account(b.Accounts / 3), b.account(2 * b.Accounts / 3), ledgerPrefix})
	if err := b.setup(ctx, endpoints); err != nil {
		return err
	}
	runClients(ctx, b.opts, endpoints, b.OpTimeout, func(ctx context.Context, db *vowdb.DB, process int, rng *rand.Rand) OpType {
		if rng.IntN(5) == 0 {
			return b.read(ctx, db, process)
		}
		return b.transfer(ctx, db, process, rng)
	})
	return nil
}

// setup writes the initial balances in one transaction, retrying until it
// commits (faults may already be running).
func (b *Bank) setup(ctx context.Context, endpoints []string) error {
	db, err := openDB(ctx, endpoints, b.OpTimeout)
	if err != nil {
		return err
	}
	defer db.Close()
	for {
		err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			for _, a := range b.accounts() {
				if _, err := tx.Get(ctx, []byte(a)); err == nil {
					return nil // already set up
				} else if !errors.Is(err, vowdb.ErrNotFound) {
					return err
				}
				if err := tx.Put(ctx, []byte(a), []byte(strconv.Itoa(b.Initial))); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("bank setup: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// readAll reads every account in tx (a scan: S lock on the whole span).
func (b *Bank) readAll(ctx context.Context, tx *vowdb.Txn) (map[string]int, error) {
	kvs, err := tx.Scan(ctx, []byte(bankPrefix), []byte(bankPrefix+"\xff"), 0)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, kv := range kvs {
		v, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			return nil, fmt.Errorf("account %s holds %q", kv.Key, kv.Value)
		}
		out[string(kv.Key)] = v
	}
	return out, nil
}

func (b *Bank) read(ctx context.Context, db *vowdb.DB, process int) OpType {
	op := check.Op{Process: process, F: check.FRead, Invoke: int64(b.rec.Now())}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.OpTimeout)
	defer cancel()
	var bal map[string]int
	err := db.Transact(octx, func(ctx context.Context, tx *vowdb.Txn) error {
		var err error
		bal, err = b.readAll(ctx, tx)
		return err
	}, vowdb.WithMaxAttempts(2), vowdb.WithLockTimeout(2*time.Second))
	complete := b.rec.Now()
	op.Type = check.OpType(outcome(err, false))
	if op.Type == check.Info {
		op.Type = check.Fail // a read changes nothing
	}
	op.Complete = int64(complete)
	if op.Type == check.OK {
		op.Balances = bal
	}
	b.log.record(b.rec, op, complete)
	return OpType(op.Type)
}

func (b *Bank) transfer(ctx context.Context, db *vowdb.DB, process int, rng *rand.Rand) OpType {
	from := rng.IntN(b.Accounts)
	to := (from + 1 + rng.IntN(b.Accounts-1)) % b.Accounts
	amount := 1 + rng.IntN(5)
	op := check.Op{Process: process, F: check.FTransfer, Invoke: int64(b.rec.Now()),
		From: b.account(from), To: b.account(to), Amount: amount}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.OpTimeout)
	defer cancel()
	var id vowdb.TxnID
	moved := false
	err := db.Transact(octx, func(ctx context.Context, tx *vowdb.Txn) error {
		id, moved = tx.ID(), false
		get := func(k string) (int, error) {
			v, err := tx.Get(ctx, []byte(k))
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(string(v))
		}
		fb, err := get(op.From)
		if err != nil {
			return err
		}
		tb, err := get(op.To)
		if err != nil {
			return err
		}
		if fb < amount {
			return nil // insufficient funds: commits nothing
		}
		moved = true
		if err := tx.Put(ctx, []byte(op.From), []byte(strconv.Itoa(fb-amount))); err != nil {
			return err
		}
		if err := tx.Put(ctx, []byte(op.To), []byte(strconv.Itoa(tb+amount))); err != nil {
			return err
		}
		entry := fmt.Sprintf("%s,%s,%d", op.From, op.To, amount)
		return tx.Put(ctx, []byte(ledgerPrefix+strconv.FormatUint(uint64(id), 10)), []byte(entry))
	}, vowdb.WithMaxAttempts(3), vowdb.WithLockTimeout(2*time.Second))
	complete := b.rec.Now()
	op.Type = check.OpType(outcome(err, true))
	op.ID = strconv.FormatUint(uint64(id), 10)
	if op.Type != check.Info {
		op.Complete = int64(complete)
	}
	if op.Type == check.OK && !moved {
		op.Amount = 0 // declined: nothing moved, no ledger entry
		op.ID = ""
	}
	b.log.record(b.rec, op, complete)
	return OpType(op.Type)
}

// Final implements Workload: one transaction reads every balance and the
// whole ledger.
func (b *Bank) Final(ctx context.Context, endpoints []string) error {
	db, err := openDB(ctx, endpoints, b.OpTimeout)
	if err != nil {
		return fmt.Errorf("bank final read: %w", err)
	}
	defer db.Close()
	for {
		var bal map[string]int
		var ledger []check.Transfer
		err := db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			var err error
			if bal, err = b.readAll(ctx, tx); err != nil {
				return err
			}
			kvs, err := tx.Scan(ctx, []byte(ledgerPrefix), []byte(ledgerPrefix+"\xff"), 0)
			if err != nil {
				return err
			}
			ledger = ledger[:0]
			for _, kv := range kvs {
				f := strings.Split(string(kv.Value), ",")
				if len(f) != 3 {
					return fmt.Errorf("ledger entry %s = %q", kv.Key, kv.Value)
				}
				amt, _ := strconv.Atoi(f[2])
				ledger = append(ledger, check.Transfer{ID: check.TransferID(strings.TrimPrefix(string(kv.Key), ledgerPrefix)),
					From: f[0], To: f[1], Amount: amt})
			}
			return nil
		})
		if err == nil {
			b.mu.Lock()
			b.final, b.ledger = bal, ledger
			b.mu.Unlock()
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("bank final read: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// Check implements Workload.
func (b *Bank) Check() (bool, string) {
	hist := b.log.ops()
	b.mu.Lock()
	ledger, final := b.ledger, b.final
	b.mu.Unlock()
	total := b.Accounts * b.Initial
	ok1, r1 := reportResult("bank reads (exact total, no negative balance)", check.Bank(hist, b.accounts(), total))
	initial := map[string]int{}
	for _, a := range b.accounts() {
		initial[a] = b.Initial
	}
	var acked, failed []check.TransferID
	for _, op := range hist {
		if op.F != check.FTransfer || op.ID == "" {
			continue
		}
		switch op.Type {
		case check.OK:
			acked = append(acked, check.TransferID(op.ID))
		case check.Fail:
			failed = append(failed, check.TransferID(op.ID))
		}
	}
	ok2, r2 := reportResult("bank ledger (acknowledged transfers exactly once; final balances = ledger replay)",
		check.LedgerCheck(acked, failed, ledger, initial, final))
	return ok1 && ok2, r1 + "\n" + r2
}
