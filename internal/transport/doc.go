// Package transport moves Raft messages between nodes over long-lived gRPC
// client streams, one per destination node, and owns the node's pool of gRPC
// connections to its peers.
//
// # Components
//
//	scheduler ──Send(node, msgs)──▶ peer queue (bounded) ──▶ peer goroutine
//	                                                         │ drains the queue into one
//	                                                         │ RaftBatch per stream Send
//	                                                         ▼
//	                                   remote Raft.Stream handler ──▶ Handler.Deliver
//
// Send never blocks the scheduler: when a queue is full or a peer is down,
// messages are dropped (Raft retransmits), the groups are told the peer is
// unreachable, and snapshot senders are told their snapshot failed so Raft
// tries again later.
package transport
