package replica

import (
	"hash/maphash"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
)

// txnIndex lets the state machine answer its reads of txn state from memory.
// Every txn command reads txn state first: a PREPARE looks for an outcome
// and an earlier prepare record, a one-phase commit for an outcome and a txn
// record, a resolution for an outcome and the prepare record, an END for
// the txn record. Most of these keys do not exist, and the rest were written
// moments ago; each read still costs a seek through the memtable skiplists
// and a bloom probe per sstable, on every replica, for every command.
//
// The index has two parts, each exact in the direction it is used:
//
//   - kinds: for the 64-bit hash of every txn id with txn state in the
//     range, the kinds of state (prepare record, txn record, outcome) ever
//     written for it since the index was built. A kind not set proves the
//     key absent, so the read is skipped; a set kind (a live key, a deleted
//     one, or a hash collision) means the read is done.
//   - live: the stored value of every prepare record and of every txn record
//     not ended, dropped when the key is deleted or the record ends. An
//     entry is the value on disk, so it answers the read; and the txn
//     records among them are all the range's records that recovery must
//     look at (liveRecords), without scanning every record ever ended.
//
// Answers are therefore the same with or without the index, on every
// replica. The index is built by scanning the range's txn state the first
// time the range applies a command, and again after a snapshot or a split
// rewrote that state outside the txn commands; every txn key the commands
// write afterwards goes through it. A range with more than maxTxnIndex txn
// ids gives up (full): its index stays unbuilt and every read goes to
// Pebble, until a snapshot replaces the range's state or a collection of
// finished state (txn_gc.go) deletes some of it. A txn id's kinds stay in
// the index after its state is collected (another id may share its hash);
// a collection drops an index grown past half the limit, to be rebuilt from
// what is left.
//
// Only the scheduler goroutine uses a replica's index.
type txnIndex struct {
	built   bool
	full    bool
	kinds   map[uint64]uint8
	live    map[string][]byte
	horizon uint64 // the range's txn horizon (txn_gc.go), when built
}

// maxTxnIndex bounds a range's index: about 16 MiB of memory.
const maxTxnIndex = 1 << 20

var txnIndexSeed = maphash.MakeSeed()

func kindBit(kind byte) uint8 {
	switch kind {
	case keys.SuffixPrepare:
		return 1
	case keys.SuffixTxnRecord:
		return 2
	case keys.SuffixOutcome:
		return 4
	}
	panic("replica: not a kind of txn state")
}

// get answers a read of the txn state of the given kind for txnID (key is
// its storage key) from memory: known reports whether it could.
func (x *txnIndex) get(kind byte, txnID, key []byte) (v []byte, found, known bool) {
	if x == nil || !x.built {
		return nil, false, false
	}
	if v, ok := x.live[string(key)]; ok {
		return v, true, true
	}
	if x.kinds[maphash.Bytes(txnIndexSeed, txnID)]&kindBit(kind) == 0 {
		return nil, false, true
	}
	return nil, false, false
}

// set records a write of the txn state of the given kind for txnID; v is
// kept to answer later reads if keep.
func (x *txnIndex) set(kind byte, txnID, key, v []byte, keep bool) {
	if x == nil || !x.built {
		return
	}
	h := maphash.Bytes(txnIndexSeed, txnID)
	if _, ok := x.kinds[h]; !ok && len(x.kinds) >= maxTxnIndex {
		x.reset()
		x.full = true
		return
	}
	x.kinds[h] |= kindBit(kind)
	if keep {
		x.live[string(key)] = v
	} else {
		delete(x.live, string(key))
	}
}

// deleted records that the key of some txn state was deleted.
func (x *txnIndex) deleted(key []byte) {
	if x == nil || !x.built {
		return
	}
	delete(x.live, string(key))
}

// needsBuild reports whether build should run before the next command.
func (x *txnIndex) needsBuild() bool { return !x.built && !x.full }

// reset forgets everything (the range's txn state was rewritten): until the
// next build, every read goes to Pebble.
func (x *txnIndex) reset() {
	if x != nil {
		*x = txnIndex{}
	}
}

// build scans the txn state of range rangeID in b (an indexed batch, so
// writes not yet committed are seen). If the range holds more than
// maxTxnIndex txn ids, the index is left unbuilt and full.
func (x *txnIndex) build(b batchRW, rangeID uint64) error {
	x.reset()
	kinds := map[uint64]uint8{}
	live := map[string][]byte{}
	for _, kind := range keys.TxnSuffixes {
		p := keys.RangeLocalKey(rangeID, kind)
		it, err := b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: keys.PrefixEnd(p)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid() && len(kinds) <= maxTxnIndex; it.Next() {
			kinds[maphash.Bytes(txnIndexSeed, it.Key()[len(p):])] |= kindBit(kind)
			if keep, err := keepLive(kind, it.Value()); err != nil {
				_ = it.Close()
				return err
			} else if keep {
				live[string(it.Key())] = append([]byte(nil), it.Value()...)
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		if len(kinds) > maxTxnIndex {
			x.full = true
			return nil
		}
	}
	h, err := readHorizon(b, rangeID)
	if err != nil {
		return err
	}
	x.kinds, x.live, x.horizon, x.built = kinds, live, h, true
	return nil
}

// keepLive reports whether stored txn state of the given kind belongs in
// the live part of the index: prepare records, and txn records not ended.
func keepLive(kind byte, v []byte) (bool, error) {
	switch kind {
	case keys.SuffixPrepare:
		return true, nil
	case keys.SuffixTxnRecord:
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return false, err
		}
		return !rec.Ended, nil
	}
	return false, nil
}

// liveRecords returns the stored txn records of range rangeID that are not
// ended, or false if the index is not built (then only a scan can tell).
func (x *txnIndex) liveRecords(rangeID uint64) ([]*vowdbpb.TxnRecord, bool, error) {
	if x == nil || !x.built {
		return nil, false, nil
	}
	p := string(keys.RangeLocalKey(rangeID, keys.SuffixTxnRecord))
	var out []*vowdbpb.TxnRecord
	for k, v := range x.live {
		if !strings.HasPrefix(k, p) {
			continue
		}
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return nil, false, err
		}
		out = append(out, &rec)
	}
	return out, true, nil
}
