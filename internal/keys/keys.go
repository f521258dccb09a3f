package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Prefixes of the storage keyspace; see the package doc.
const (
	prefixRangeLocal = 'r'
	prefixMeta       = 'm'
	prefixStore      = 's'
	prefixUser       = 'u'
)

// BootCountKey holds how many times the node's scheduler started (8 bytes,
// big-endian); it names each start's proposals (replica.Config.Incarnation).
var BootCountKey = []byte("sboot")

// StoreIdentKey holds the node's StoreIdent.
var StoreIdentKey = []byte("sident")

// Range-local suffixes.
const (
	SuffixDescriptor = 'd'
	SuffixHardState  = 'h'
	SuffixApplied    = 'a'
	SuffixConfState  = 'c'
	SuffixTruncated  = 't'
	SuffixLog        = 'l'
	// Transaction state kept by a range, followed by the txn id.
	SuffixPrepare   = 'p' // PrepareTxnOp: a participant's durable vote
	SuffixTxnRecord = 'x' // TxnRecord of transactions anchored in the range
	SuffixOutcome   = 'o' // remembered outcome of a finished transaction
	// SuffixTxnHorizon holds the range's txn horizon (8 bytes, big-endian):
	// the attempts below it have had their finished state collected.
	SuffixTxnHorizon = 'g'
)

// TxnKey returns the range-local key of txn state of the given kind.
func TxnKey(rangeID uint64, suffix byte, txnID []byte) []byte {
	return append(RangeLocalKey(rangeID, suffix), txnID...)
}

// TxnSuffixes lists the kinds of range-local txn state kept per txn, which
// snapshots and splits carry along with the range's data.
var TxnSuffixes = []byte{SuffixPrepare, SuffixTxnRecord, SuffixOutcome}

// ReplicatedTxnSuffixes is TxnSuffixes and the txn horizon: every piece of
// range-local txn state that snapshots carry and checksums cover.
var ReplicatedTxnSuffixes = []byte{SuffixPrepare, SuffixTxnRecord, SuffixOutcome, SuffixTxnHorizon}

// RangeLocalPrefix returns the prefix of every range-local key of rangeID.
func RangeLocalPrefix(rangeID uint64) []byte {
	k := make([]byte, 9, 9+1+8)
	k[0] = prefixRangeLocal
	binary.BigEndian.PutUint64(k[1:], rangeID)
	return k
}

// RangeLocalKey returns the range-local key with the given suffix.
func RangeLocalKey(rangeID uint64, suffix byte) []byte {
	return append(RangeLocalPrefix(rangeID), suffix)
}

// RaftLogKey returns the key of the Raft log entry at index.
func RaftLogKey(rangeID, index uint64) []byte {
	k := append(RangeLocalPrefix(rangeID), SuffixLog)
	return binary.BigEndian.AppendUint64(k, index)
}

// RaftLogPrefix returns the prefix of all log entries of rangeID.
func RaftLogPrefix(rangeID uint64) []byte {
	return append(RangeLocalPrefix(rangeID), SuffixLog)
}

// UserKey maps a user key into the storage keyspace.
func UserKey(k []byte) []byte {
	out := make([]byte, 1+len(k))
	out[0] = prefixUser
	copy(out[1:], k)
	return out
}

// DecodeUserKey is the inverse of UserKey.
func DecodeUserKey(sk []byte) ([]byte, error) {
	if len(sk) == 0 || sk[0] != prefixUser {
		return nil, fmt.Errorf("keys: %q is not a user key", sk)
	}
	return sk[1:], nil
}

// UserSpan returns the storage span [start, end) of user span [a, b), where
// an empty b means +infinity.
func UserSpan(a, b []byte) (start, end []byte) {
	start = UserKey(a)
	if len(b) == 0 {
		return start, []byte{prefixUser + 1}
	}
	return start, UserKey(b)
}

// MetaSpan is the storage span the meta range replicates.
func MetaSpan() (start, end []byte) { return []byte{prefixMeta}, []byte{prefixMeta + 1} }

// MetaDescriptorKey is where the meta range keeps the descriptor of the user
// range that starts at startKey.
func MetaDescriptorKey(startKey []byte) []byte {
	return append([]byte{prefixMeta, 'd'}, startKey...)
}

// MetaDescriptorPrefix prefixes every MetaDescriptorKey.
func MetaDescriptorPrefix() []byte { return []byte{prefixMeta, 'd'} }

// MetaNodeKey is where the meta range keeps the NodeDescriptor of nodeID.
func MetaNodeKey(nodeID uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixMeta, 'n'}, nodeID)
}

// MetaNodePrefix prefixes every MetaNodeKey.
func MetaNodePrefix() []byte { return []byte{prefixMeta, 'n'} }

// MetaCounterKey names a counter kept in the meta range.
func MetaCounterKey(name string) []byte { return append([]byte{prefixMeta, 'c'}, name...) }

// Limits on user input; the server may be configured lower or higher.
const (
	DefaultMaxKeyBytes   = 4 << 10
	DefaultMaxValueBytes = 1 << 20
)

// ErrEmptyKey is returned for a zero-length key.
var ErrEmptyKey = errors.New("keys: key is empty")

// ValidateKey checks a user key against the limit.
func ValidateKey(k []byte, maxBytes int) error {
	if len(k) == 0 {
		return ErrEmptyKey
	}
	if len(k) > maxBytes {
		return fmt.Errorf("keys: key is %d bytes, over the limit of %d bytes", len(k), maxBytes)
	}
	return nil
}

// ValidateValue checks a value against the limit.
func ValidateValue(v []byte, maxBytes int) error {
	if len(v) > maxBytes {
		return fmt.Errorf("keys: value is %d bytes, over the limit of %d bytes", len(v), maxBytes)
	}
	return nil
}

// Contains reports whether user key k lies in [start, end), an empty end
// meaning +infinity.
func Contains(start, end, k []byte) bool {
	return string(k) >= string(start) && (len(end) == 0 || string(k) < string(end))
}

// PrefixEnd returns the smallest key greater than every key with prefix p.
func PrefixEnd(p []byte) []byte {
	out := append([]byte(nil), p...)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] != 0xff {
			out[i]++
			return out[:i+1]
		}
	}
	return nil
}
