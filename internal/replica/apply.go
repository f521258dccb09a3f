package replica

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
)

// Result is what applying one command produced, handed to the waiting
// proposer on the node that proposed it.
type Result struct {
	Err     error
	Swapped bool   // CAS: the swap happened
	Found   bool   // CAS: the key existed before the command
	Current []byte // CAS: the value before the command
	NodeID  uint64 // AllocNode: the new node id
	RangeID uint64 // AllocRangeID: the new range id
	// Left and Right are the descriptors after a split.
	Left, Right *vowdbpb.RangeDescriptor
	// TxnState is the transaction state after a txn command.
	TxnState vowdbpb.TxnState
	// Checksum (ComputeChecksum) is the range's checksum at Index, the
	// command's log index.
	Checksum []byte
	Index    uint64
	// Collected (GcTxnState) is how many pieces of finished txn state the
	// command deleted.
	Collected int
}

// batchRW is the state the range state machine reads and writes: an indexed
// Pebble batch, so a command sees the writes of the commands applied before
// it in the same batch.
type batchRW = *pebble.Batch

func getRW(b batchRW, k []byte) ([]byte, bool, error) {
	v, closer, err := b.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, true, nil
}

// ErrInvalidCommand marks a command that the state machine refuses (for
// example a user write on the meta range); nothing is written.
var ErrInvalidCommand = errors.New("replica: invalid command")

// applyCommand is the range state machine: it applies cmd to b for a range
// described by desc, deterministically (the same on every replica). It
// returns the command's result and, for a split, the new left descriptor and
// the right-hand one. Errors in Result are answers to the client; a returned
// error is a storage failure and is fatal. txns, if not nil, is the range's
// index of txn ids (txn_index.go); it changes no answer, only how many reads
// are needed to find it.
func applyCommand(b batchRW, desc *vowdbpb.RangeDescriptor, txns *txnIndex, cmd *vowdbpb.Command) (Result, error) {
	inRange := func(k []byte) error {
		if desc.GetIsMeta() || !keys.Contains(desc.GetStartKey(), desc.GetEndKey(), k) {
			return &KeyMismatchError{Key: k, Desc: desc}
		}
		return nil
	}
	switch op := cmd.Op.(type) {
	case nil:
		// A barrier: it changes nothing, and once it applies every entry
		// before it in the log has applied. A new transaction tenure
		// proposes one before it reads the prepare records.
		return Result{}, nil
	case *vowdbpb.Command_Put:
		if err := inRange(op.Put.Key); err != nil {
			return Result{Err: err}, nil
		}
		return Result{}, b.Set(keys.UserKey(op.Put.Key), op.Put.Value, nil)
	case *vowdbpb.Command_Delete:
		if err := inRange(op.Delete.Key); err != nil {
			return Result{Err: err}, nil
		}
		return Result{}, b.Delete(keys.UserKey(op.Delete.Key), nil)
	case *vowdbpb.Command_Cas:
		c := op.Cas
		if err := inRange(c.Key); err != nil {
			return Result{Err: err}, nil
		}
		sk := keys.UserKey(c.Key)
		cur, found, err := getRW(b, sk)
		if err != nil {
			return Result{}, err
		}
		res := Result{Found: found, Current: cur}
		if c.ExpectAbsent {
			res.Swapped = !found
		} else {
			res.Swapped = found && string(cur) == string(c.Expected)
		}
		if !res.Swapped {
			return res, nil
		}
		if c.DeleteOnSwap {
			return res, b.Delete(sk, nil)
		}
		return res, b.Set(sk, c.Value, nil)
	case *vowdbpb.Command_Split:
		return applySplit(b, desc, txns, op.Split)
	case *vowdbpb.Command_AllocNode:
		if !desc.GetIsMeta() {
			return Result{Err: fmt.Errorf("%w: node allocation outside the meta range", ErrInvalidCommand)}, nil
		}
		id, err := bumpCounter(b, "node")
		if err != nil {
			return Result{}, err
		}
		nd := &vowdbpb.NodeDescriptor{NodeId: id, Address: op.AllocNode.Address, HttpAddress: op.AllocNode.HttpAddress}
		return Result{NodeID: id}, setProto(b, keys.MetaNodeKey(id), nd)
	case *vowdbpb.Command_AllocRangeId:
		if !desc.GetIsMeta() {
			return Result{Err: fmt.Errorf("%w: range id allocation outside the meta range", ErrInvalidCommand)}, nil
		}
		id, err := bumpCounter(b, "range")
		return Result{RangeID: id}, err
	case *vowdbpb.Command_PrepareTxn:
		return (&rangeState{b, desc, txns}).prepare(op.PrepareTxn)
	case *vowdbpb.Command_ResolveTxn:
		return (&rangeState{b, desc, txns}).resolve(op.ResolveTxn)
	case *vowdbpb.Command_OnePhaseTxn:
		return (&rangeState{b, desc, txns}).onePhase(op.OnePhaseTxn)
	case *vowdbpb.Command_TxnRecordCas:
		return (&rangeState{b, desc, txns}).recordCAS(op.TxnRecordCas)
	case *vowdbpb.Command_EndTxns:
		return (&rangeState{b, desc, txns}).endTxns(op.EndTxns)
	case *vowdbpb.Command_GcTxnState:
		return (&rangeState{b, desc, txns}).gcTxnState(op.GcTxnState)
	case *vowdbpb.Command_ComputeChecksum:
		sum, err := Checksum(b, desc)
		return Result{Checksum: sum}, err
	case *vowdbpb.Command_PutDescriptor:
		if !desc.GetIsMeta() {
			return Result{Err: fmt.Errorf("%w: descriptor write outside the meta range", ErrInvalidCommand)}, nil
		}
		return Result{}, putMetaDescriptor(b, op.PutDescriptor.Desc)
	default:
		return Result{Err: fmt.Errorf("%w: unknown operation %T", ErrInvalidCommand, cmd.Op)}, nil
	}
}

// applySplit shrinks desc to [start, split) and creates the right-hand range
// [split, end) with the same replicas. The right-hand range's initial Raft
// state is written by the caller (it needs the conf state).
func applySplit(b batchRW, desc *vowdbpb.RangeDescriptor, txns *txnIndex, op *vowdbpb.SplitOp) (Result, error) {
	k := op.SplitKey
	if desc.GetIsMeta() || len(k) == 0 || string(k) <= string(desc.StartKey) ||
		(len(desc.EndKey) > 0 && string(k) >= string(desc.EndKey)) {
		return Result{Err: &KeyMismatchError{Key: k, Desc: desc}}, nil
	}
	if op.NewRangeId == 0 || op.NewRangeId == desc.RangeId {
		return Result{Err: fmt.Errorf("%w: split needs a fresh range id", ErrInvalidCommand)}, nil
	}
	left := proto.Clone(desc).(*vowdbpb.RangeDescriptor)
	left.EndKey = append([]byte(nil), k...)
	left.Generation++
	right := proto.Clone(desc).(*vowdbpb.RangeDescriptor)
	right.RangeId = op.NewRangeId
	right.StartKey = append([]byte(nil), k...)
	right.Generation = left.Generation
	if err := setProto(b, keys.RangeLocalKey(left.RangeId, keys.SuffixDescriptor), left); err != nil {
		return Result{}, err
	}
	if err := splitTxnState(b, left, right); err != nil {
		return Result{}, err
	}
	if txns != nil {
		txns.reset() // splitTxnState rewrote the left's txn state behind its back
	}
	return Result{Left: left, Right: right}, nil
}

// putMetaDescriptor records d in the meta range unless the meta range already
// holds a newer generation of the same range at that start key.
func putMetaDescriptor(b batchRW, d *vowdbpb.RangeDescriptor) error {
	k := keys.MetaDescriptorKey(d.StartKey)
	old, found, err := getRW(b, k)
	if err != nil {
		return err
	}
	if found {
		var od vowdbpb.RangeDescriptor
		if err := proto.Unmarshal(old, &od); err != nil {
			return err
		}
		if od.RangeId == d.RangeId && od.Generation >= d.Generation {
			return nil
		}
		if od.RangeId != d.RangeId && od.Generation > d.Generation {
			// A newer range starts here (for example after a merge of
			// history we do not have yet); keep the newer one.
			return nil
		}
	}
	return setProto(b, k, d)
}

func bumpCounter(b batchRW, name string) (uint64, error) {
	k := keys.MetaCounterKey(name)
	v, found, err := getRW(b, k)
	if err != nil {
		return 0, err
	}
	var n uint64
	if found {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	if name == "range" && n < firstAllocatedRangeID {
		n = firstAllocatedRangeID
	}
	return n, b.Set(k, binary.BigEndian.AppendUint64(nil, n), nil)
}

// Range ids 1 (meta) and 2 (first user range) are created by bootstrap.
const (
	MetaRangeID           = 1
	FirstUserRangeID      = 2
	firstAllocatedRangeID = 3
)

func setProto(b batchRW, k []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return b.Set(k, v, nil)
}
