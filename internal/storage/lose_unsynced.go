package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// LoseUnsyncedFS is a vfs.FS for crash tests in which a killed process
// loses every byte it had not synced, as after a power loss. A SIGKILL of a
// process on the real file system loses nothing the process wrote: the
// kernel's page cache outlives the process and writes it back later, so
// crash tests on a real disk never see the data loss they are meant to
// check for.
//
// File data written through this FS stays in the process's memory until the
// file is synced (Sync or SyncData); only then is it written to the
// underlying file and that file synced. Closing a file does not write its
// data: like a page cache, the buffered bytes outlive the handle and stay
// visible to every handle of the same file in this process (reads and Stat
// see them), until a Sync through any handle writes them. A process that
// dies before the sync takes them with it.
//
// Only file data is buffered. Creating, renaming, linking and removing files
// and directories go to the underlying FS at once, as if every directory
// were synced after each change; a rename or link carries the buffered data
// with the file. SyncTo persists nothing (its contract allows that). Files
// do not expose their descriptor (Fd returns vfs.InvalidFd), so nothing can
// write around the buffer.
//
// It is meant for tests and the torture tool (vowdb start
// --unsafe-lose-unsynced), never for a production store: the buffered data
// costs memory until synced.
type LoseUnsyncedFS struct {
	fs vfs.FS

	mu sync.Mutex
	// files maps a cleaned path to the buffered state of the file there.
	// An entry is added when the file is first created or opened, and moves
	// with renames.
	files map[string]*unsyncedFile
}

var _ vfs.FS = (*LoseUnsyncedFS)(nil)

// NewLoseUnsyncedFS returns a LoseUnsyncedFS over fs (vfs.Default for a
// process that runs on a real disk).
func NewLoseUnsyncedFS(fs vfs.FS) *LoseUnsyncedFS {
	return &LoseUnsyncedFS{fs: fs, files: map[string]*unsyncedFile{}}
}

// UnsyncedBytes returns how many bytes of file data are buffered and would
// be lost if the process died now (whole pages, so an upper bound).
func (l *LoseUnsyncedFS) UnsyncedBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, f := range uniqueFiles(l.files) {
		f.mu.RLock()
		n += int64(len(f.pages)) * unsyncedPageSize
		f.mu.RUnlock()
	}
	return n
}

func uniqueFiles(m map[string]*unsyncedFile) []*unsyncedFile {
	var out []*unsyncedFile
	seen := map[*unsyncedFile]bool{}
	for _, f := range m {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// unsyncedPageSize is the unit in which written data is buffered.
const unsyncedPageSize = 4096

// unsyncedFile is the in-memory state of one file (one inode): its size as
// the process sees it and the pages written since the last sync.
type unsyncedFile struct {
	mu sync.RWMutex
	// name is the file's current path, to write buffered pages when a
	// handle opened read-only is synced; "" once the file is removed.
	name string
	// size is the file's length including buffered writes. It is never
	// below the underlying file's length (files are never truncated).
	size int64
	// pages holds the full image of every page written since the last
	// sync, by page index. Bytes of a page past size are zero.
	pages map[int64][]byte
}

func (l *LoseUnsyncedFS) clean(name string) string { return filepath.Clean(name) }

// fileFor returns the buffered state of the file at name, creating it from
// the underlying file f (just opened) if this process has not seen it yet.
func (l *LoseUnsyncedFS) fileFor(name string, f vfs.File, fresh bool) (*unsyncedFile, error) {
	name = l.clean(name)
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.files[name]; ok {
		if !fresh {
			return old, nil
		}
		old.mu.Lock()
		old.name = "" // replaced: its handles no longer reach this path
		old.mu.Unlock()
	}
	uf := &unsyncedFile{name: name, pages: map[int64][]byte{}}
	if !fresh {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		uf.size = st.Size()
	}
	l.files[name] = uf
	return uf, nil
}

// forget drops the entries at name and below it (a removed directory).
func (l *LoseUnsyncedFS) forget(name string) {
	name = l.clean(name)
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, uf := range l.files {
		if p == name || strings.HasPrefix(p, name+string(filepath.Separator)) {
			delete(l.files, p)
			uf.mu.Lock()
			if uf.name == p {
				uf.name = ""
			}
			uf.mu.Unlock()
		}
	}
}

// Create implements vfs.FS. The new file is empty and replaces any file at
// name, with whatever that file had buffered.
func (l *LoseUnsyncedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := l.fs.Create(name, category)
	if err != nil {
		return nil, err
	}
	uf, err := l.fileFor(name, f, true)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &unsyncedHandle{fs: l, uf: uf, f: f, writable: true}, nil
}

// Link implements vfs.FS. The new name shares the file's buffered data.
func (l *LoseUnsyncedFS) Link(oldname, newname string) error {
	if err := l.fs.Link(oldname, newname); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if uf, ok := l.files[l.clean(oldname)]; ok {
		l.files[l.clean(newname)] = uf
	}
	return nil
}

// Open implements vfs.FS; the file is read-only.
func (l *LoseUnsyncedFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := l.fs.Open(name, opts...)
	if err != nil {
		return nil, err
	}
	return l.wrap(name, f, false)
}

// OpenReadWrite implements vfs.FS.
func (l *LoseUnsyncedFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := l.fs.OpenReadWrite(name, category, opts...)
	if err != nil {
		return nil, err
	}
	return l.wrap(name, f, true)
}

func (l *LoseUnsyncedFS) wrap(name string, f vfs.File, writable bool) (vfs.File, error) {
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if st.IsDir() {
		return f, nil
	}
	uf, err := l.fileFor(name, f, false)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &unsyncedHandle{fs: l, uf: uf, f: f, writable: writable}, nil
}

// OpenDir implements vfs.FS. Directories are not buffered: their Sync
// syncs the underlying directory.
func (l *LoseUnsyncedFS) OpenDir(name string) (vfs.File, error) { return l.fs.OpenDir(name) }

// Remove implements vfs.FS. Open handles keep the file's buffered data,
// as open descriptors keep an unlinked file.
func (l *LoseUnsyncedFS) Remove(name string) error {
	if err := l.fs.Remove(name); err != nil {
		return err
	}
	l.forget(name)
	return nil
}

// RemoveAll implements vfs.FS.
func (l *LoseUnsyncedFS) RemoveAll(name string) error {
	err := l.fs.RemoveAll(name)
	l.forget(name)
	return err
}

// Rename implements vfs.FS. The buffered data moves with the file (and with
// the files of a renamed directory).
func (l *LoseUnsyncedFS) Rename(oldname, newname string) error {
	if err := l.fs.Rename(oldname, newname); err != nil {
		return err
	}
	oldname, newname = l.clean(oldname), l.clean(newname)
	l.forget(newname)
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, uf := range l.files {
		var to string
		switch {
		case p == oldname:
			to = newname
		case strings.HasPrefix(p, oldname+string(filepath.Separator)):
			to = newname + p[len(oldname):]
		default:
			continue
		}
		delete(l.files, p)
		l.files[to] = uf
		uf.mu.Lock()
		if uf.name == p {
			uf.name = to
		}
		uf.mu.Unlock()
	}
	return nil
}

// ReuseForWrite implements vfs.FS as a rename followed by OpenReadWrite,
// like the default FS.
func (l *LoseUnsyncedFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := l.Rename(oldname, newname); err != nil {
		return nil, err
	}
	return l.OpenReadWrite(newname, category)
}

// MkdirAll implements vfs.FS.
func (l *LoseUnsyncedFS) MkdirAll(dir string, perm os.FileMode) error {
	return l.fs.MkdirAll(dir, perm)
}

// Lock implements vfs.FS.
func (l *LoseUnsyncedFS) Lock(name string) (io.Closer, error) { return l.fs.Lock(name) }

// List implements vfs.FS.
func (l *LoseUnsyncedFS) List(dir string) ([]string, error) { return l.fs.List(dir) }

// Stat implements vfs.FS; the size includes buffered writes.
func (l *LoseUnsyncedFS) Stat(name string) (vfs.FileInfo, error) {
	st, err := l.fs.Stat(name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	uf, ok := l.files[l.clean(name)]
	l.mu.Unlock()
	if !ok || st.IsDir() {
		return st, nil
	}
	uf.mu.RLock()
	defer uf.mu.RUnlock()
	return sizedInfo{st, uf.size}, nil
}

// PathBase implements vfs.FS.
func (l *LoseUnsyncedFS) PathBase(path string) string { return l.fs.PathBase(path) }

// PathJoin implements vfs.FS.
func (l *LoseUnsyncedFS) PathJoin(elem ...string) string { return l.fs.PathJoin(elem...) }

// PathDir implements vfs.FS.
func (l *LoseUnsyncedFS) PathDir(path string) string { return l.fs.PathDir(path) }

// GetDiskUsage implements vfs.FS.
func (l *LoseUnsyncedFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	return l.fs.GetDiskUsage(path)
}

// Unwrap implements vfs.FS.
func (l *LoseUnsyncedFS) Unwrap() vfs.FS { return l.fs }

// sizedInfo is a FileInfo whose size includes buffered writes.
type sizedInfo struct {
	vfs.FileInfo
	size int64
}

func (s sizedInfo) Size() int64 { return s.size }

// unsyncedHandle is one open file: an underlying handle (used for reads of
// unbuffered pages and for writing pages back on Sync) plus the file's
// shared buffered state.
type unsyncedHandle struct {
	fs       *LoseUnsyncedFS
	uf       *unsyncedFile
	f        vfs.File
	writable bool

	posMu sync.Mutex
	pos   int64 // offset of Read and Write
}

var errReadOnly = errors.New("storage: write to a file opened read-only")

// Read implements io.Reader.
func (h *unsyncedHandle) Read(p []byte) (int, error) {
	h.posMu.Lock()
	defer h.posMu.Unlock()
	n, err := h.ReadAt(p, h.pos)
	h.pos += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt: buffered pages over the underlying file,
// up to the file's size including buffered writes.
func (h *unsyncedHandle) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("storage: negative read offset %d", off)
	}
	uf := h.uf
	uf.mu.RLock()
	defer uf.mu.RUnlock()
	if len(uf.pages) == 0 {
		return h.f.ReadAt(p, off)
	}
	want := len(p)
	if off >= uf.size {
		return 0, io.EOF
	}
	if rest := uf.size - off; int64(want) > rest {
		want = int(rest)
	}
	for n := 0; n < want; {
		pos := off + int64(n)
		idx, in := pos/unsyncedPageSize, int(pos%unsyncedPageSize)
		chunk := min(want-n, unsyncedPageSize-in)
		dst := p[n : n+chunk]
		if page, ok := uf.pages[idx]; ok {
			copy(dst, page[in:])
		} else if err := readFull(h.f, dst, pos); err != nil {
			return n, err
		}
		n += chunk
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}

// readFull reads len(p) bytes at off from the underlying file; bytes past
// its end (a hole left by buffered writes further on) read as zeros.
func readFull(f vfs.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return err
	}
	clear(p[n:])
	return nil
}

// Write implements io.Writer.
func (h *unsyncedHandle) Write(p []byte) (int, error) {
	h.posMu.Lock()
	defer h.posMu.Unlock()
	n, err := h.WriteAt(p, h.pos)
	h.pos += int64(n)
	return n, err
}

// WriteAt implements io.WriterAt: the bytes go to buffered pages only.
func (h *unsyncedHandle) WriteAt(p []byte, off int64) (int, error) {
	if !h.writable {
		return 0, errReadOnly
	}
	if off < 0 {
		return 0, fmt.Errorf("storage: negative write offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	uf := h.uf
	uf.mu.Lock()
	defer uf.mu.Unlock()
	for n := 0; n < len(p); {
		pos := off + int64(n)
		idx, in := pos/unsyncedPageSize, int(pos%unsyncedPageSize)
		page, ok := uf.pages[idx]
		if !ok {
			// Start the page from what a read would see now.
			page = make([]byte, unsyncedPageSize)
			if start := idx * unsyncedPageSize; start < uf.size {
				if err := readFull(h.f, page[:min(unsyncedPageSize, uf.size-start)], start); err != nil {
					return n, err
				}
			}
			uf.pages[idx] = page
		}
		n += copy(page[in:], p[n:])
	}
	uf.size = max(uf.size, off+int64(len(p)))
	return len(p), nil
}

// writeBack writes the file's buffered pages to the underlying file and
// forgets them. The caller syncs the underlying file afterwards.
func (h *unsyncedHandle) writeBack() error {
	uf := h.uf
	uf.mu.Lock()
	defer uf.mu.Unlock()
	if len(uf.pages) == 0 {
		return nil
	}
	w := h.f
	if !h.writable {
		if uf.name == "" {
			// Removed: nothing will ever read these bytes.
			clear(uf.pages)
			return nil
		}
		f, err := h.fs.fs.OpenReadWrite(uf.name, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	idxs := make([]int64, 0, len(uf.pages))
	for idx := range uf.pages {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	// Write runs of consecutive pages with one call each.
	var run []byte
	runStart := int64(-1)
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		off := runStart * unsyncedPageSize
		end := min(off+int64(len(run)), uf.size)
		_, err := w.WriteAt(run[:end-off], off)
		run = run[:0]
		return err
	}
	for i, idx := range idxs {
		if i > 0 && idx != idxs[i-1]+1 {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(run) == 0 {
			runStart = idx
		}
		run = append(run, uf.pages[idx]...)
	}
	if err := flush(); err != nil {
		return err
	}
	clear(uf.pages)
	return nil
}

// Sync implements vfs.File: buffered data is written, then synced.
func (h *unsyncedHandle) Sync() error {
	if err := h.writeBack(); err != nil {
		return err
	}
	return h.f.Sync()
}

// SyncData implements vfs.File.
func (h *unsyncedHandle) SyncData() error {
	if err := h.writeBack(); err != nil {
		return err
	}
	return h.f.SyncData()
}

// SyncTo implements vfs.File. It persists nothing and says so (fullSync
// false): the contract promises no durability for a partial sync.
func (h *unsyncedHandle) SyncTo(int64) (bool, error) { return false, nil }

// Stat implements vfs.File; the size includes buffered writes.
func (h *unsyncedHandle) Stat() (vfs.FileInfo, error) {
	st, err := h.f.Stat()
	if err != nil {
		return nil, err
	}
	h.uf.mu.RLock()
	defer h.uf.mu.RUnlock()
	return sizedInfo{st, h.uf.size}, nil
}

// Close implements io.Closer. Buffered data stays with the file.
func (h *unsyncedHandle) Close() error { return h.f.Close() }

// Preallocate implements vfs.File as a no-op (allowed by its contract).
func (h *unsyncedHandle) Preallocate(int64, int64) error { return nil }

// Prefetch implements vfs.File as a no-op.
func (h *unsyncedHandle) Prefetch(int64, int64) error { return nil }

// Fd implements vfs.File: no descriptor, so no caller writes around the
// buffer.
func (h *unsyncedHandle) Fd() uintptr { return vfs.InvalidFd }
