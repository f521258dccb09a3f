package replica

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/storage"
)

// checksumEngine is a store on which a range [a, m) applied the same
// commands on every call: plain writes, a 1PC commit, a committed and a
// still-prepared 2PC transaction with its record, and writes of the
// neighbouring range [m, +inf) that share the store.
func checksumEngine(t *testing.T) (*storage.Engine, *vowdbpb.RangeDescriptor) {
	t.Helper()
	eng, err := storage.Open(storage.Options{Dir: "/db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	left, right := userDesc("a", "m"), userDesc("m", "")
	right.RangeId = 3
	apply := func(desc *vowdbpb.RangeDescriptor, cmds ...*vowdbpb.Command) {
		b := eng.DB().NewIndexedBatch()
		for _, c := range cmds {
			res, err := applyCommand(b, desc, nil, c)
			if err != nil || res.Err != nil {
				t.Fatalf("apply %v: %v %v", c, err, res.Err)
			}
		}
		if err := eng.Commit(b, false); err != nil {
			t.Fatal(err)
		}
	}
	apply(left, put("a", "1"), put("b", "2"), del("b"), put("c", "3"),
		onePhaseCmd("t1", w("d", "4")),
		prepareCmd("t2", w("e", "5")), resolveCmd("t2", true),
		prepareCmd("t3", w("f", "6")),
		casCmd("t3", "f", unknown, pending, false))
	apply(right, put("x", "9"), prepareCmd("t9", w("y", "1")))
	return eng, left
}

func mustChecksum(t *testing.T, rd storage.Reader, desc *vowdbpb.RangeDescriptor) []byte {
	t.Helper()
	sum, err := Checksum(rd, desc)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 32 {
		t.Fatalf("checksum is %d bytes, want 32 (SHA-256)", len(sum))
	}
	return sum
}

func setKey(t *testing.T, eng *storage.Engine, k, v []byte) {
	t.Helper()
	b := eng.NewBatch()
	if err := b.Set(k, v, nil); err != nil {
		t.Fatal(err)
	}
	if err := eng.Commit(b, false); err != nil {
		t.Fatal(err)
	}
}

// TestChecksumSameCommandsSameSum: two stores that applied the same
// commands have the same checksum, and the ComputeChecksum command returns
// it too, counting the writes of the apply batch it is part of.
func TestChecksumSameCommandsSameSum(t *testing.T) {
	e1, desc := checksumEngine(t)
	e2, _ := checksumEngine(t)
	s1, s2 := mustChecksum(t, e1.DB(), desc), mustChecksum(t, e2.DB(), desc)
	if !bytes.Equal(s1, s2) {
		t.Fatalf("same commands, different checksums: %x vs %x", s1, s2)
	}

	b := e1.DB().NewIndexedBatch()
	defer b.Close()
	if _, err := applyCommand(b, desc, nil, put("g", "7")); err != nil {
		t.Fatal(err)
	}
	res, err := applyCommand(b, desc, nil, &vowdbpb.Command{Op: &vowdbpb.Command_ComputeChecksum{ComputeChecksum: &vowdbpb.ComputeChecksumOp{}}})
	if err != nil || res.Err != nil {
		t.Fatalf("compute checksum: %v %v", err, res.Err)
	}
	if bytes.Equal(res.Checksum, s1) {
		t.Fatal("the checksum command did not see the put applied before it in the same batch")
	}
	setKey(t, e2, keys.UserKey([]byte("g")), []byte("7"))
	if got := mustChecksum(t, e2.DB(), desc); !bytes.Equal(res.Checksum, got) {
		t.Fatalf("checksum command %x, store with the same writes %x", res.Checksum, got)
	}
}

// TestChecksumSeesEveryDifference: one differing value, one extra key, a
// differing piece of transaction state or a differing descriptor changes
// the checksum.
func TestChecksumSeesEveryDifference(t *testing.T) {
	rec := func(id string) []byte { return keys.TxnKey(2, keys.SuffixTxnRecord, []byte(id)) }
	cases := []struct {
		name string
		k, v []byte
	}{
		{"a value differs", keys.UserKey([]byte("a")), []byte("1x")},
		{"an extra key", keys.UserKey([]byte("b")), []byte("2")},
		{"a key at the span's start", keys.UserKey([]byte("a\x00")), nil},
		{"a prepare record", keys.TxnKey(2, keys.SuffixPrepare, []byte("t7")), []byte{}},
		{"a txn record", rec("t3"), []byte("corrupt")},
		{"an outcome", keys.TxnKey(2, keys.SuffixOutcome, []byte("t2")), []byte{byte(aborted)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e1, desc := checksumEngine(t)
			e2, _ := checksumEngine(t)
			setKey(t, e2, tc.k, tc.v)
			if s1, s2 := mustChecksum(t, e1.DB(), desc), mustChecksum(t, e2.DB(), desc); bytes.Equal(s1, s2) {
				t.Fatalf("the stores differ (%q), the checksums do not: %x", tc.k, s1)
			}
		})
	}
	e1, desc := checksumEngine(t)
	other := userDesc("a", "m")
	other.Generation++
	if s1, s2 := mustChecksum(t, e1.DB(), desc), mustChecksum(t, e1.DB(), other); bytes.Equal(s1, s2) {
		t.Fatal("the descriptors differ, the checksums do not")
	}
}

// TestChecksumIgnoresReplicaLocalKeys: the Raft log, hard state, conf
// state, truncated state and applied index differ between replicas of one
// range, and so does every key of other ranges; none counts.
func TestChecksumIgnoresReplicaLocalKeys(t *testing.T) {
	e1, desc := checksumEngine(t)
	e2, _ := checksumEngine(t)
	for _, kv := range [][2][]byte{
		{keys.RaftLogKey(2, 11), []byte("entry")},
		{keys.RangeLocalKey(2, keys.SuffixHardState), []byte("hs")},
		{keys.RangeLocalKey(2, keys.SuffixConfState), []byte("cs")},
		{keys.RangeLocalKey(2, keys.SuffixTruncated), []byte("tr")},
		{keys.RangeLocalKey(2, keys.SuffixApplied), u64(42)},
		{keys.RangeLocalKey(2, keys.SuffixDescriptor), []byte("stale")},
		{keys.UserKey([]byte("m")), []byte("right range")},
		{keys.UserKey([]byte("0")), []byte("left of the span")},
		{keys.TxnKey(3, keys.SuffixPrepare, []byte("t8")), []byte{}},
		{keys.MetaNodeKey(7), []byte("meta")},
		{keys.StoreIdentKey, []byte("ident")},
	} {
		setKey(t, e2, kv[0], kv[1])
	}
	if s1, s2 := mustChecksum(t, e1.DB(), desc), mustChecksum(t, e2.DB(), desc); !bytes.Equal(s1, s2) {
		t.Fatalf("only replica-local keys and other ranges differ, yet %x vs %x", s1, s2)
	}
	// The meta range hashes the meta span instead of user keys.
	m1, m2 := mustChecksum(t, e1.DB(), metaDesc()), mustChecksum(t, e2.DB(), metaDesc())
	if bytes.Equal(m1, m2) {
		t.Fatal("the meta spans differ (node 7), the meta checksums do not")
	}
}

// TestReplicaRemembersNewestChecksums: a replica answers for the newest
// keptChecksums indexes and forgets older ones.
func TestReplicaRemembersNewestChecksums(t *testing.T) {
	r := &Replica{}
	if _, ok := r.Checksum(1); ok {
		t.Fatal("a fresh replica has a checksum")
	}
	for i := uint64(1); i <= keptChecksums+3; i++ {
		r.rememberChecksum(i*10, []byte{byte(i)})
	}
	for i := uint64(1); i <= keptChecksums+3; i++ {
		sum, ok := r.Checksum(i * 10)
		if want := i > 3; ok != want || (ok && sum[0] != byte(i)) {
			t.Fatalf("index %d: got %x, %v; want kept=%v", i*10, sum, ok, want)
		}
	}
}
