// Package txnhost runs the transaction protocol cores of package txn on one
// node. The same code runs in the server (goroutines, Raft, gRPC, the wall
// clock) and in the deterministic simulator (one goroutine, simulated
// network, disks and clock); only the hosts differ.
//
// What lives here:
//
//   - Tenure: the transaction side of one range on its leader, for one
//     leader tenure. It owns the range's lock table, its 2PC participant
//     (txn.Participant) and the requests waiting for locks, and carries out
//     the participant's Ready in the order package txn documents.
//   - Gateway: the coordinator of the transactions a node is the gateway
//     of (txn.Coordinator). It proposes the decision by compare-and-set on
//     the transaction record, marks records ended (batched per tick) and
//     hands results to the waiting clients.
//   - AnswerInquiry and Restorer: the anchor range's side, answering a
//     prepared participant's inquiry from the txn record (presuming abort
//     when the coordinator is gone) and handing decided, un-ended records
//     back to a gateway.
//   - Dispatch: where a protocol message that arrived at a node goes. Only
//     moving messages between nodes (the transport) is the host's.
//
// # Tenure lifecycle
//
//	building ──barrier applied, prepare records read──▶ live ──▶ dead
//
// The states:
//
//   - building: the host proposes an empty barrier command in its current
//     raft term and waits for it to apply; every entry before it has then
//     applied, so the prepare records it reads next are complete (rule 6),
//     including those an earlier tenure of the same term proposed and gave
//     up waiting for. NewTenure rebuilds the participant from them and
//     re-takes their X locks.
//   - live: operations take their locks when issued (rule 9); protocol
//     messages step the participant; records go through the range's Raft
//     log as soon as the participant emits them, several Readys in flight,
//     and are confirmed to it in log order once applied (so a vote or ack
//     never leaves before its record is durable); READ-ONLY votes leave
//     only after a ReadIndex round confirms the raft term (rules 8, 9).
//   - dead: leadership, the raft term or the span changed, or a record
//     could not be made durable. Waiters fail with STATE_LOST, the lock
//     table is dropped. A tenure never comes back; the next request builds
//     a new one with a new tenure number, which is what clients and
//     PREPAREs carry as "term" (rule 8).
//
// # What the host must guarantee
//
// A Host's methods never call back into the Tenure or Gateway before they
// return: Propose, ConfirmLeadership and ProposeAt report later (another
// goroutine in the server, a later simulation step in the simulator), and
// Send delivers asynchronously, also to this node. So a driver may call its
// host while holding its own mutex, and callbacks take that mutex again.
//
// Callbacks the drivers make to their callers (a lock granted or refused, a
// commit's result) run after the driver released its mutex, in the order
// they were produced.
//
// # Crash behaviour
//
// Neither driver keeps durable state of its own: everything durable is a
// Raft command (prepare, commit, abort records on the participant's range;
// the decision and END on the anchor's). A crash loses the tenure and the
// gateway; recovery is the next tenure's rebuild from the prepare records
// (participants) and the anchor leader's restore of decided, un-ended
// records (coordinators), as package txn describes.
package txnhost
