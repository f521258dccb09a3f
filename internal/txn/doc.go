// Package txn is the pure core of vowdb's cross-range transactions: two-phase
// commit (2PC) over the strict two-phase locking of package lock. It holds
// the decisions only. It starts no goroutines, reads no clock (time is
// Tick), does no I/O and draws no random numbers; the replica and server
// drivers feed it messages and local events and carry out what it returns.
// docs/design/2pc.md is the design; "rule N" below is rule N of the
// "Transactions" section of DESIGN.md.
//
// # Components
//
//	         client: Commit / Result
//	               │        ▲
//	gateway  ┌─────▼────────┴─────┐  DecisionRecord (CAS)  ┌───────────────────────┐
//	node     │    Coordinator     │───── EndRecord ───────▶│ anchor range          │
//	         │ (one per gateway)  │◀──── CASResult ────────│ RecordTable: txn      │
//	         └──┬──────────────▲──┘                        │ records, PENDING →    │
//	 Prepare    │              │ Vote                      │ COMMITTED | ABORTED   │
//	 Commit     │              │ Ack                       └──▲─────────────┬──────┘
//	 Abort      │              │ OnePhaseResp        Inquire  │             │ InquireResp
//	 OnePhase   │              │                              │             │
//	 Commit  ┌──▼──────────────┴──┐                           │             │
//	range    │    Participant     │───────────────────────────┘             │
//	leader   │ (one per range and │◀────────────────────────────────────────┘
//	         │  leader term)      │◀── InquirePeer / InquirePeerResp ──▶ other participants
//	         └──┬──────────────▲──┘
//	            │              │
//	 Prepare-, Commit-,        Admit(op), Abort(txn), Tick, Unreachable(anchor);
//	 AbortRecord (its own      NewParticipant(prepare records) after a leader change
//	 range's Raft log)
//
// Each role is an etcd RawNode-shaped state machine: inputs by Step(msg)
// and local-event methods, outputs collected in a Ready (records to make
// durable, messages to send, locks to release, client results) that the
// driver handles in the order documented on Ready, then confirms with
// Advance. A message that depends on a record never shares a Ready with it:
// the YES vote appears only after Advance confirmed the PrepareRecord, and
// COMMIT only after CASResult reported the won CAS (rule 1).
//
// # States
//
// Participant, per txn attempt and range (State):
//
//	(none) ──Admit──▶ ACTIVE ──Prepare, term ok, record durable──▶ PREPARED ──Commit──▶ COMMITTED
//	                    │ ──Prepare, read-only, term ok──▶ READ-ONLY (released)      └──Abort──▶ ABORTED
//	                    │ ──Prepare, term changed or state lost──▶ NO, ABORTED
//	                    │ ──OnePhaseCommit, term ok──▶ COMMITTED (one Raft entry, rule 10)
//	                    └──Abort(txn) / Abort msg / InquirePeer──▶ ABORTED
//
// PREPARED ends only by the decision: Commit, Abort, or an outcome learned
// by Inquire or InquirePeer (rule 2). Finished attempts are remembered, up
// to ParticipantConfig.MaxFinished, so duplicates are answered and late
// operations refused (rule 7).
//
// Coordinator, per txn attempt: preparing → (one-phase | deciding) →
// committing | aborting → ending → forgotten. With
// CoordinatorConfig.AnchorDecides a txn writing several ranges skips the
// anchor in phase 1 and then sends it a OnePhaseCommit carrying the
// decision (one-phase with the decision): the anchor's one CommitRecord
// (Decide set) compare-and-sets the txn record to COMMITTED and applies its
// writes only if that wins. COMMITTED → committing the YES voters; any other
// answer or none → deciding by a CAS to ABORTED whose result is the outcome
// (it may find the anchor's COMMITTED). The txn record at the anchor
// range goes PENDING (absent) → COMMITTED | ABORTED by compare-and-set, and
// is ended once every participant acknowledged. An ended record stays as a
// bounded tombstone (RecordTable), so a late Inquire cannot presume abort
// on a committed txn (rules 2, 7).
//
// # Messages
//
//	message           from → to                   handler (idempotent, rule 7)
//	Prepare           coordinator → participant   term == expected, ACTIVE: PrepareRecord, YES once durable (rules 1, 8);
//	                                              read-only: READ-ONLY and release (rule 9); else NO, remember ABORTED;
//	                                              duplicate after YES: YES; finished: known outcome
//	Vote              participant → coordinator   first vote per range counts; NO or timeout: abort; all YES: CAS COMMITTED (rule 3)
//	Commit / Abort    coordinator → participant   PREPARED: Commit/AbortRecord, ACK once durable; unknown or finished: ACK
//	OnePhaseCommit    coordinator → participant   ACTIVE, term ok: one CommitRecord, then OnePhaseResp (rule 10);
//	                                              with Coordinator set (the anchor): the record also CASes the decision,
//	                                              and applies as an abort if ABORTED was recorded first
//	Inquire           participant → anchor range  the txn record's decision; undecided and coordinator gone: CAS ABORTED (rule 4)
//	InquirePeer       participant → participant   known outcome; ACTIVE or certainly never prepared: remember ABORTED, answer
//	                                              ABORTED (it can never prepare now); PREPARED, READ-ONLY or cannot tell: PENDING (rule 5)
//
// # Durable records
//
//	PrepareRecord   participant's range   txn, attempt, writes, X locks, anchor, participants (with terms), coordinator
//	CommitRecord    participant's range   apply writes, delete the prepare record (2PC) — or the whole 1PC commit,
//	                                      or (Decide) the anchor's commit with the decision: CAS, then writes
//	AbortRecord     participant's range   delete the prepare record
//	DecisionRecord  anchor range          CAS undecided → COMMITTED | ABORTED, with the phase-2 participants
//	EndRecord       anchor range          end the txn record (kept as a bounded tombstone)
//
// # Crashes
//
// A crash loses a role's memory; what it made durable survives (a range's
// records are in its Raft log, so a leader change is the same as a crash of
// the leader). At each step:
//
//	coordinator before any Prepare         nothing durable; ACTIVE state is dropped by term change or local abort
//	coordinator after some Prepares        prepared participants Inquire; record absent and coordinator gone:
//	                                       CAS ABORTED (rule 4); its own later CAS COMMITTED would lose
//	coordinator after the CAS, before the  the client sees ambiguous; participants Inquire and learn COMMITTED;
//	  reply or during Commit sends         the anchor's recovery (Restore) resends COMMIT until ACKed, then End (rule 6)
//	coordinator with an unknown CAS result never retries the CAS (once the record is ended and its tombstone
//	                                       gone, a retry could decide twice): the client sees ambiguous
//	participant before PrepareRecord is    no YES was sent; the new leader has no state, so a Prepare gets NO and
//	  durable                              the coordinator aborts (rules 1, 8)
//	participant after PrepareRecord,       NewParticipant rebuilds PREPARED, returns the X locks to re-acquire,
//	  before or after YES                  and inquires at once (rule 6); a duplicate Prepare gets YES
//	participant before or after the        the Commit/AbortRecord is in the Raft log or not; a resent Commit/Abort
//	  Commit/AbortRecord                   finds PREPARED (redo) or nothing (ACK)
//	1PC writer after its CommitRecord,     a resent OnePhaseCommit finds nothing in the new term: PENDING, and the
//	  before answering                     client sees ambiguous (never "aborted": it may have applied)
//	anchor range leader                    the txn record is Raft state; the new leader serves it and Restores
//	                                       decided records into a coordinator
//	anchor deciding, before or after its   a resent OnePhaseCommit finds a new tenure that cannot tell (PENDING);
//	  commit-with-decision entry           the coordinator's CAS to ABORTED then wins (nothing applied) or finds
//	                                       COMMITTED (the entry applied) and commits the others
//
// NB: a restarted participant has forgotten which txns it finished, so an
// unknown txn may be one it prepared, committed and forgot. It answers
// InquirePeer with ABORTED only when the asking peer's view of its term is
// the current term and it has forgotten nothing (Participant.neverPrepared);
// otherwise PENDING. The same holds for a OnePhaseCommit it cannot place.
package txn
