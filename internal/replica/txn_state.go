package replica

import (
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// The readers below return a range's durable txn state as applied on this
// replica. A leader calls them after a ReadIndex read, so everything
// committed before its term began is included (DESIGN rule 6).

// PrepareRecords returns the range's prepare records (keyed txn id bytes).
func PrepareRecords(eng *storage.Engine, rangeID uint64) (map[string]*vowdbpb.PrepareTxnOp, error) {
	out := map[string]*vowdbpb.PrepareTxnOp{}
	err := scanTxn(eng, rangeID, keys.SuffixPrepare, nil, func(id, v []byte) error {
		var rec vowdbpb.PrepareTxnOp
		if err := proto.Unmarshal(v, &rec); err != nil {
			return err
		}
		out[string(id)] = &rec
		return nil
	})
	return out, err
}

// TxnRecords returns the txn records anchored in the range.
func TxnRecords(eng *storage.Engine, rangeID uint64) ([]*vowdbpb.TxnRecord, error) {
	var out []*vowdbpb.TxnRecord
	err := scanTxn(eng, rangeID, keys.SuffixTxnRecord, nil, func(_, v []byte) error {
		var rec vowdbpb.TxnRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return err
		}
		out = append(out, &rec)
		return nil
	})
	return out, err
}

// TxnRecord returns one txn record, or nil.
func TxnRecord(eng *storage.Engine, rangeID uint64, txnID []byte) (*vowdbpb.TxnRecord, error) {
	v, err := eng.Get(keys.TxnKey(rangeID, keys.SuffixTxnRecord, txnID))
	if err == storage.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec vowdbpb.TxnRecord
	return &rec, proto.Unmarshal(v, &rec)
}

// TxnStates calls fn for every piece of txn state of the range whose txn id
// starts with prefix: kind is keys.SuffixPrepare, SuffixTxnRecord or
// SuffixOutcome; st is the record's or outcome's state (PENDING for a
// prepare record).
func TxnStates(eng *storage.Engine, rangeID uint64, prefix []byte, fn func(kind byte, id []byte, st vowdbpb.TxnState)) error {
	for _, kind := range keys.TxnSuffixes {
		err := scanTxn(eng, rangeID, kind, prefix, func(id, v []byte) error {
			st := vowdbpb.TxnState_TXN_PENDING
			switch kind {
			case keys.SuffixTxnRecord:
				var rec vowdbpb.TxnRecord
				if err := proto.Unmarshal(v, &rec); err != nil {
					return err
				}
				st = rec.State
			case keys.SuffixOutcome:
				if len(v) == 1 {
					st = vowdbpb.TxnState(v[0])
				}
			}
			fn(kind, id, st)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func scanTxn(eng *storage.Engine, rangeID uint64, kind byte, prefix []byte, fn func(id, v []byte) error) error {
	p := keys.TxnKey(rangeID, kind, prefix)
	n := len(keys.TxnKey(rangeID, kind, nil))
	var ferr error
	err := eng.Scan(p, keys.PrefixEnd(p), func(k, v []byte) bool {
		ferr = fn(append([]byte(nil), k[n:]...), append([]byte(nil), v...))
		return ferr == nil
	})
	if err != nil {
		return err
	}
	return ferr
}
