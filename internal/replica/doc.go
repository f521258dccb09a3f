// Package replica holds one Replica per range on a node: an etcd-raft RawNode,
// the Raft log mirrored between raft.MemoryStorage and Pebble, and the range
// state machine that applies committed commands deterministically.
//
// A Replica is not safe for concurrent use: the node's scheduler (package
// multiraft) is the only goroutine that touches it, except for the fields
// published through atomics for readers (descriptor, leader, applied index,
// and the newest consistency checksums, see checksum.go).
//
// # Components
//
//	        Step/Propose/ReadIndex/Tick          (scheduler goroutine)
//	                   │
//	            ┌──────▼──────┐
//	            │  RawNode    │── Storage() ──▶ raftStorage (MemoryStorage + Snapshot from Pebble)
//	            └──────┬──────┘
//	                   │ Ready
//	PersistReady(batch)│  entries, hard state, snapshot → shared synced Pebble batch
//	AfterPersist       │  mirror into MemoryStorage, return messages
//	Apply(batch)       │  committed entries → apply.go (data + applied index, one batch)
//	Advance            ▼
//
// # Durable records (keys in package keys)
//
// descriptor, hard state, conf state, truncated state, applied index, and the
// log entries after the truncated index. Applying entries and advancing the
// applied index are written in one batch, so a restart re-applies exactly the
// entries after the durable applied index. The log write is synced before any
// message that depends on it is sent (the Raft contract); apply batches are
// not synced, because a crash can only lose applies that are still in the
// synced log and will be replayed.
//
// # Initial state
//
// A range created by bootstrap or by a split starts at index 10, term 5 with
// the descriptor's replicas as voters and an empty log (the truncated state
// marks index 10). Every replica of a split computes the same state, so the
// right-hand range needs no extra round to agree on it. A replica created for
// an unknown range on receipt of a Raft message starts empty and
// uninitialized (no descriptor) until a snapshot or a split fills it.
package replica
