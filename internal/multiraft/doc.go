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
//	   1. step messages, propose, issue one ReadIndex per range, tick
//	   2. Ready of every group → ONE Pebble batch, synced once (group commit)
//	   3. send messages, batched per destination node (Sender)
//	   4. apply committed entries of every group → one batch (not synced:
//	      the log is durable and apply is replayed from the applied index)
//	   5. answer proposals and reads, Advance, open ranges created by splits
//
// Step 3 comes after step 2: no message that depends on a log entry or a
// vote leaves the node before that state is durable (the Raft contract).
// While step 2 waits on fsync, new requests queue in the inbox and ride the
// next round together, which is where throughput under load comes from.
package multiraft
