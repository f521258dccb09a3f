package replica

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"google.golang.org/protobuf/proto"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// Consistency checks (vowdb range check). A ComputeChecksumOp travels
// through the range's Raft log like any command, so every replica applies
// it after exactly the same entries; each computes Checksum over its own
// state at that point and remembers the result in memory. The range's
// leader then collects the replicas' checksums at that index and compares
// them. Equal checksums mean the replicas hold the same replicated state.

// keptChecksums is how many checksum results a replica remembers (the
// newest ones).
const keptChecksums = 8

// checksumVersion names the layout hashed by Checksum; it is hashed first,
// so a change of layout can never compare equal to the old one.
const checksumVersion = "vowdb range checksum v1"

// Checksum returns the SHA-256 of the replicated state of the range
// described by desc, as rd holds it: the descriptor, every key and value of
// the range's span (user keys; for the meta range, the meta span), and the
// range's transaction state (prepare records, transaction records and
// remembered outcomes). It leaves out what each replica keeps for itself:
// the Raft log, hard state, conf state, truncated state and applied index.
// rd is a Pebble DB, snapshot or indexed batch (the apply batch, so that the
// writes of the entries applied before the command in the same batch count).
func Checksum(rd storage.Reader, desc *vowdbpb.RangeDescriptor) ([]byte, error) {
	h := sha256.New()
	writeChunk(h, []byte(checksumVersion))
	d, err := proto.MarshalOptions{Deterministic: true}.Marshal(desc)
	if err != nil {
		return nil, fmt.Errorf("replica %d: checksum: %w", desc.GetRangeId(), err)
	}
	writeChunk(h, d)
	section := func(tag byte, start, end []byte) error {
		h.Write([]byte{tag})
		return storage.ScanReader(rd, start, end, func(k, v []byte) bool {
			writeChunk(h, k)
			writeChunk(h, v)
			return true
		})
	}
	start, end := spanOf(desc)
	if err := section('s', start, end); err != nil {
		return nil, fmt.Errorf("replica %d: checksum: %w", desc.GetRangeId(), err)
	}
	for _, suffix := range keys.ReplicatedTxnSuffixes {
		p := keys.RangeLocalKey(desc.GetRangeId(), suffix)
		if err := section(suffix, p, keys.PrefixEnd(p)); err != nil {
			return nil, fmt.Errorf("replica %d: checksum: %w", desc.GetRangeId(), err)
		}
	}
	return h.Sum(nil), nil
}

// writeChunk hashes b with its length in front, so that no two different
// sequences of chunks hash the same bytes.
func writeChunk(h hash.Hash, b []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	h.Write(b)
}

// IndexedChecksum is a checksum a replica computed when it applied the
// ComputeChecksumOp at Index.
type IndexedChecksum struct {
	Index uint64
	Sum   []byte
}

// rememberChecksum keeps sum as the checksum at index, dropping the oldest
// beyond keptChecksums. It publishes a new slice, never changing a
// published one (scheduler goroutine only).
func (r *Replica) rememberChecksum(index uint64, sum []byte) {
	var old []IndexedChecksum
	if p := r.checksums.Load(); p != nil {
		old = *p
	}
	if n := len(old) - (keptChecksums - 1); n > 0 {
		old = old[n:]
	}
	list := append(append(make([]IndexedChecksum, 0, len(old)+1), old...), IndexedChecksum{Index: index, Sum: sum})
	r.checksums.Store(&list)
}

// Checksum returns the checksum this replica computed when it applied the
// ComputeChecksumOp at index, if it still remembers it: a replica forgets
// on restart, after keptChecksums newer checks, and never has one for an
// index it skipped by installing a snapshot. Safe from any goroutine.
func (r *Replica) Checksum(index uint64) ([]byte, bool) {
	p := r.checksums.Load()
	if p == nil {
		return nil, false
	}
	for _, c := range *p {
		if c.Index == index {
			return c.Sum, true
		}
	}
	return nil, false
}
