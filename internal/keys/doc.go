// Package keys defines how every piece of vowdb state is laid out in a node's
// single ordered Pebble keyspace.
//
// # Components
//
//	"s" ident                          StoreIdent: cluster id and node id
//	"r" <range id:8> <suffix>          range-local Raft state, not replicated as data:
//	    "d"                            RangeDescriptor
//	    "h"                            raftpb.HardState
//	    "a"                            applied index (8 bytes)
//	    "c"                            raftpb.ConfState
//	    "t"                            RaftTruncatedState
//	    "l" <index:8>                  raftpb.Entry
//	    "p" <txn id>                   prepare record (a participant's durable YES vote)
//	    "x" <txn id>                   transaction record (anchored in this range)
//	    "o" <txn id>                   remembered outcome of a finished transaction
//	"m" "c" <name>                     meta counters (node ids, range ids)
//	"m" "d" <start key>                meta range: RangeDescriptor of the user range starting there
//	"m" "n" <node id:8>                meta range: NodeDescriptor
//	"u" <user key>                     user data
//
// The meta range replicates the span ["m", "n"); a user range [a, b)
// replicates ["u"+a, "u"+b), with an empty b meaning up to "v". Because the
// prefixes sort m < r < s < u, no user key can reach another class of state.
package keys
