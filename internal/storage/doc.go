// Package storage is the thin layer over Pebble that every other package uses
// to reach a node's single store: batches, synced commits, point reads and
// bounded scans. One Engine per node holds user data, every range's Raft log,
// hard state, applied index and descriptor (layout in package keys).
//
// The file system is injected (vfs.FS), so tests can run on Pebble's
// in-memory, crashable file system and a crash can drop unsynced writes.
package storage
