// Package vowdb is the Go client of vowdb, a distributed, transactional
// key-value database: an ordered keyspace split into ranges, each range
// replicated by its own Raft group.
//
//	db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: []string{"127.0.0.1:7401"}})
//	if err != nil { ... }
//	defer db.Close()
//	err = db.Put(ctx, []byte("k"), []byte("v"))
//	v, err := db.Get(ctx, []byte("k")) // vowdb.ErrNotFound if absent
//
// The client learns where ranges live from the cluster's meta range, caches
// the locations, follows leader hints and range changes transparently, and
// retries a request only when it is certain the request did not take effect.
// Single-key operations are linearizable. A write whose outcome is unknown
// (the connection broke after the request was sent, or the server could not
// confirm it in time) returns an error matching ErrAmbiguousCommit: read the
// key back to learn what happened; never assume either outcome.
package vowdb
