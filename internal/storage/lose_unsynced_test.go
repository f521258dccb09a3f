package storage

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized lose-unsynced test (0: a new one)")

// readAll reads the whole file at name through fs.
func readAll(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, f vfs.File, s string) {
	t.Helper()
	if _, err := f.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// TestLoseUnsyncedFSKeepsOnlySynced: write, sync, write more. The process
// reads everything it wrote (also after closing the file); the underlying
// FS, and so a restarted process, holds only the synced prefix.
func TestLoseUnsyncedFSKeepsOnlySynced(t *testing.T) {
	disk := vfs.NewMem()
	fs := NewLoseUnsyncedFS(disk)
	f, err := fs.Create("wal", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "synced ")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	write(t, f, "lost")

	got := make([]byte, 11)
	if n, err := f.ReadAt(got, 0); n != 11 || err != nil || string(got) != "synced lost" {
		t.Fatalf("ReadAt = %d, %v, %q; want 11, nil, %q", n, err, got, "synced lost")
	}
	if n, err := f.ReadAt(make([]byte, 5), 8); n != 3 || err != io.EOF {
		t.Fatalf("ReadAt across the end = %d, %v; want 3, EOF", n, err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 11 {
		t.Fatalf("File.Stat size = %v (%v), want 11", st, err)
	}
	if got := fs.UnsyncedBytes(); got != unsyncedPageSize {
		t.Fatalf("UnsyncedBytes = %d, want one page", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing wrote nothing; the process still sees its writes.
	if got := readAll(t, fs, "wal"); string(got) != "synced lost" {
		t.Fatalf("after close, read %q", got)
	}
	if st, err := fs.Stat("wal"); err != nil || st.Size() != 11 {
		t.Fatalf("FS.Stat size = %v (%v), want 11", st, err)
	}
	// What a killed process leaves behind.
	if got := readAll(t, disk, "wal"); string(got) != "synced " {
		t.Fatalf("underlying file holds %q, want %q", got, "synced ")
	}
	if got := readAll(t, NewLoseUnsyncedFS(disk), "wal"); string(got) != "synced " {
		t.Fatalf("after a restart, read %q", got)
	}

	// A second sync, through another handle, writes the rest.
	f, err = fs.OpenReadWrite("wal", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if got := readAll(t, disk, "wal"); string(got) != "synced lost" {
		t.Fatalf("after the second sync the underlying file holds %q", got)
	}
	if got := fs.UnsyncedBytes(); got != 0 {
		t.Fatalf("UnsyncedBytes after sync = %d", got)
	}
}

// TestLoseUnsyncedFSNamespace: renames and links carry buffered data,
// Create and Remove drop it, and a read-only handle's Sync writes it.
func TestLoseUnsyncedFSNamespace(t *testing.T) {
	disk := vfs.NewMem()
	fs := NewLoseUnsyncedFS(disk)
	if err := fs.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create("d/a", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "abc")
	_ = f.Close()

	if err := fs.Rename("d/a", "d/b"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fs, "d/b"); string(got) != "abc" {
		t.Fatalf("after rename read %q", got)
	}
	if err := fs.Link("d/b", "d/c"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fs, "d/c"); string(got) != "abc" {
		t.Fatalf("through a link read %q", got)
	}
	// Sync through a read-only handle.
	r, err := fs.Open("d/c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write([]byte("x")); err == nil {
		t.Fatal("write to a read-only file succeeded")
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	if got := readAll(t, disk, "d/b"); string(got) != "abc" {
		t.Fatalf("after a read-only sync the underlying file holds %q", got)
	}

	// Create replaces a file, buffered data included.
	f, err = fs.Create("d/b", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fs, "d/b"); len(got) != 0 {
		t.Fatalf("a new file reads %q", got)
	}
	write(t, f, "new")
	_ = f.Close()
	if err := fs.RemoveAll("d"); err != nil {
		t.Fatal(err)
	}
	if fs.UnsyncedBytes() != 0 {
		t.Fatalf("removed files still hold %d buffered bytes", fs.UnsyncedBytes())
	}
	if _, err := fs.Stat("d/b"); err == nil {
		t.Fatal("removed file still exists")
	}
}

// TestLoseUnsyncedFSRandom runs random writes (overwrites, appends, writes
// past the end that leave holes), reads and syncs against a model of what
// the process sees and what is durable.
func TestLoseUnsyncedFSRandom(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := 0; round < 20; round++ {
		disk := vfs.NewMem()
		fs := NewLoseUnsyncedFS(disk)
		f, err := fs.Create("f", vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		var visible, durable []byte
		for step := 0; step < 200; step++ {
			switch op := rng.IntN(10); {
			case op < 5: // write
				off := int64(rng.IntN(len(visible) + 3*unsyncedPageSize))
				p := make([]byte, rng.IntN(2*unsyncedPageSize))
				for i := range p {
					p[i] = byte(rng.IntN(255) + 1)
				}
				if _, err := f.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				if end := int(off) + len(p); end > len(visible) && len(p) > 0 {
					visible = append(visible, make([]byte, end-len(visible))...)
				}
				copy(visible[off:], p)
			case op < 9: // read
				off := int64(rng.IntN(len(visible) + 10))
				p := make([]byte, rng.IntN(3*unsyncedPageSize))
				n, err := f.ReadAt(p, off)
				want := 0
				if int(off) < len(visible) {
					want = min(len(p), len(visible)-int(off))
				}
				if n != want || (n < len(p) && err != io.EOF) || (n == len(p) && err != nil) {
					t.Fatalf("seed %d round %d step %d: ReadAt(%d bytes at %d) = %d, %v; want %d bytes of %d", seed, round, step, len(p), off, n, err, want, len(visible))
				}
				if n > 0 && !bytes.Equal(p[:n], visible[off:int(off)+n]) {
					t.Fatalf("seed %d round %d step %d: ReadAt at %d returned other bytes than written", seed, round, step, off)
				}
			default:
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				durable = append(durable[:0], visible...)
			}
			if st, _ := f.Stat(); st.Size() != int64(len(visible)) {
				t.Fatalf("seed %d round %d step %d: size %d, want %d", seed, round, step, st.Size(), len(visible))
			}
		}
		if got := readAll(t, disk, "f"); !bytes.Equal(got, durable) {
			t.Fatalf("seed %d round %d: the underlying file holds %d bytes that differ from the %d synced ones", seed, round, len(got), len(durable))
		}
		_ = f.Close()
	}
}

// TestLoseUnsyncedFSPebble runs a store on the FS and copies the underlying
// files while it is open, as a SIGKILL would leave them: the synced write
// survives, the unsynced one is gone.
func TestLoseUnsyncedFSPebble(t *testing.T) {
	disk := vfs.NewMem()
	e, err := Open(Options{Dir: "db", FS: NewLoseUnsyncedFS(disk), CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.DB().Set([]byte("synced"), []byte("1"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := e.DB().Set([]byte("unsynced"), []byte("2"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Get([]byte("unsynced")); err != nil || string(v) != "2" {
		t.Fatalf("the running store reads %q, %v", v, err)
	}

	crashed := vfs.NewMem()
	if _, err := vfs.Clone(disk, crashed, "db", "db"); err != nil {
		t.Fatal(err)
	}
	r, err := Open(Options{Dir: "db", FS: NewLoseUnsyncedFS(crashed), CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v, err := r.Get([]byte("synced")); err != nil || string(v) != "1" {
		t.Fatalf("after the crash the synced key reads %q, %v", v, err)
	}
	if v, err := r.Get([]byte("unsynced")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after the crash the unsynced key reads %q, %v; want not found", v, err)
	}
}
