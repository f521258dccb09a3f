// Package multiraft is a node's Raft scheduler: one goroutine that drives
// every replica (Raft group) on the node and batches their work.
//
// # Components
//
//	gRPC handlers ──Propose/Read──┐        transport ──Deliver──┐
//	                              ▼                             ▼
//	                      inbox (mutex-protected queues, one wake channel)
//	                              │
//	               ┌──────────────▼───────────────┐
//	               │ loop (the only goroutine that │  tick every TickInterval
//	               │ touches RawNodes)             │
//	               └──────────────┬───────────────┘
//	   1. step messages; the round's proposals of a range go to Raft as one
//	      MsgProp (one append per follower); one ReadIndex per range; tick
//	   2. leaders' appends and heartbeats are sent at once, while
//	      the Ready of every group → ONE Pebble batch, synced once (group commit)
//	   3. then the other messages (votes, append acks), batched per node
//	   4. apply committed entries of every group → one batch (not synced:
//	      the log is durable and apply is replayed from the applied index)
//	   5. answer proposals and reads, Advance, open ranges created by splits
//
// Votes and append acknowledgements leave only after step 2's write is
// durable (the Raft contract). A leader's appends may leave before its own
// write (Raft thesis 10.2.1): its new entries count toward a commit only when
// a later round steps the followers' acks, and no later round starts before
// this round's synced write has completed.
// While step 2 waits on fsync, new requests queue in the inbox and ride the
// next round together, which is where throughput under load comes from.
package multiraft
