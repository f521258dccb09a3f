// Package server wires a vowdb node together from its parts and owns every
// goroutine of it: the gRPC and HTTP servers, the Raft scheduler, the
// transport, and the background loops (join, heartbeat/liveness,
// up-replication, meta descriptor sync).
//
// # Components
//
//	gRPC :listen ── KV service ──────┐           HTTP :http ── /metrics /livez /readyz
//	             ── Admin service ───┤
//	             ── Raft service ──┐ │
//	                               ▼ ▼
//	               transport ◀── multiraft.Scheduler ──▶ storage.Engine (Pebble)
//	                                  ▲
//	  loops: join (until initialized) · heartbeat → meta leader (liveness, node
//	  addresses) · replicate (leaders add learners, promote them, publish
//	  descriptors to the meta range)
//
// # Meta range
//
// Range 1 holds the descriptors of user ranges (keyed by start key) and the
// node records. Requests that need it (Lookup, ListNodes, Heartbeat,
// MetaCommand) are served by its leader; other nodes forward them there,
// following NOT_LEADER hints. The meta range is an index: each range's own
// replicas hold the authoritative descriptor, and each range leader
// republishes its descriptor to the meta range after a split or membership
// change (and after it becomes leader), so the index converges even if a
// leader dies between the split and its publication.
package server
