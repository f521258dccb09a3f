package replica

import (
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vowdb/vowdb/internal/keys"
)

// txnIndex lets the state machine skip Pebble reads for txn state that does
// not exist. Nearly every txn command first looks for keys that are absent:
// a PREPARE for an outcome and an earlier prepare record, a one-phase commit
// for an outcome and a txn record. Each such miss costs a seek through the
// memtable skiplists and a bloom probe per sstable, and every replica pays
// it for every command it applies.
//
// The index holds a 64-bit hash of the txn id of every prepare record, txn
// record and outcome the range has, or had at some point since the index
// was built. It is exact in one direction only, which is the one that
// matters: a txn id whose hash is absent has no txn state in the range, so
// the read can be skipped; a present hash (a live key, a deleted one, or a
// collision) means the read is done as before. Answers are therefore the
// same with or without the index, on every replica.
//
// The index is built by scanning the range's txn state the first time the
// range applies a command, and again after a snapshot replaced that state;
// every txn key the state machine writes afterwards is added as it is
// written. A range with more than maxTxnIndex txn ids gives up (full): its
// index stays unbuilt and every read goes to Pebble, until a snapshot
// replaces the range's state (remembered outcomes are never collected today,
// so a long-lived range would otherwise hold an unbounded set in memory).
//
// Only the scheduler goroutine uses a replica's index.
type txnIndex struct {
	built bool
	full  bool
	ids   map[uint64]struct{}
}

// maxTxnIndex bounds a range's index: about 16 MiB of memory.
const maxTxnIndex = 1 << 20

var txnIndexSeed = maphash.MakeSeed()

// mayHave reports whether the range may hold txn state for txnID. A nil or
// unbuilt index knows nothing, so the answer is yes.
func (x *txnIndex) mayHave(txnID []byte) bool {
	if x == nil || !x.built {
		return true
	}
	_, ok := x.ids[maphash.Bytes(txnIndexSeed, txnID)]
	return ok
}

// add records that the range now holds txn state for txnID.
func (x *txnIndex) add(txnID []byte) {
	if x == nil || !x.built {
		return
	}
	if len(x.ids) >= maxTxnIndex {
		x.built, x.full, x.ids = false, true, nil
		return
	}
	x.ids[maphash.Bytes(txnIndexSeed, txnID)] = struct{}{}
}

// needsBuild reports whether build should run before the next command.
func (x *txnIndex) needsBuild() bool { return !x.built && !x.full }

// reset forgets everything (the range's txn state was replaced): until the
// next build, every read goes to Pebble.
func (x *txnIndex) reset() {
	x.built, x.full, x.ids = false, false, nil
}

// build scans the txn state of range rangeID in b (an indexed batch, so
// writes not yet committed are seen). If the range holds more than
// maxTxnIndex txn ids, the index is left unbuilt and full.
func (x *txnIndex) build(b batchRW, rangeID uint64) error {
	x.reset()
	ids := map[uint64]struct{}{}
	for _, suffix := range keys.TxnSuffixes {
		p := keys.RangeLocalKey(rangeID, suffix)
		it, err := b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: keys.PrefixEnd(p)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid() && len(ids) <= maxTxnIndex; it.Next() {
			ids[maphash.Bytes(txnIndexSeed, it.Key()[len(p):])] = struct{}{}
		}
		if err := it.Close(); err != nil {
			return err
		}
		if len(ids) > maxTxnIndex {
			x.full = true
			return nil
		}
	}
	x.ids, x.built = ids, true
	return nil
}
