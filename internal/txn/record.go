package txn

import (
	"fmt"
	"sort"

	"github.com/vowdb/vowdb/internal/lock"
)

// Write is one buffered write of a transaction on a range.
type Write struct {
	Key, Value []byte
	Delete     bool
}

func (w Write) String() string {
	if w.Delete {
		return fmt.Sprintf("del %q", w.Key)
	}
	return fmt.Sprintf("%q=%q", w.Key, w.Value)
}

// Record is a durable write the driver must make before it sends the
// messages of later Readys. The concrete types are PrepareRecord,
// CommitRecord and AbortRecord (a participant's range, through its Raft
// log) and DecisionRecord and EndRecord (the anchor range's txn record).
type Record interface {
	fmt.Stringer
	isRecord()
}

// PrepareRecord is a participant's vow: once it is durable the participant
// votes YES and never takes it back (rules 1, 2). It holds everything a new
// leader needs to rebuild the prepared transaction (rule 6). The range state
// keeps it until a CommitRecord or AbortRecord of the same txn deletes it.
type PrepareRecord struct {
	Txn          lock.TxnID
	Attempt      uint64
	Range        RangeID
	Anchor       RangeID // range of the txn record, for Inquire
	AnchorKey    []byte
	Participants []Participation // every range of the txn, for InquirePeer
	Coordinator  NodeID
	Writes       []Write
	// Locks are the X locks T holds on Range. S locks are not recorded: T
	// passed its lock point before PREPARE, so dropping them at failover is
	// two-phase locking's shrinking phase (rule 9).
	Locks []lock.Lock
}

// CommitRecord applies Writes to the range and deletes T's prepare record
// (if any). OnePhase marks the single-entry commit of rule 10.
//
// Decide, set only with OnePhase, makes it the anchor's commit that rides
// on the decision (CoordinatorConfig.AnchorDecides): the same Raft entry
// compare-and-sets T's txn record to COMMITTED and applies Writes only if
// that CAS wins. If an inquirer's presumed ABORTED was recorded first, the
// entry applies nothing and remembers T aborted; the driver then confirms
// the AbortRecord of the same attempt in its place (Participant.Persisted).
type CommitRecord struct {
	Txn      lock.TxnID
	Attempt  uint64
	Range    RangeID
	Writes   []Write
	OnePhase bool
	Decide   *DecisionRecord
}

// AbortRecord deletes T's prepare record; nothing is applied.
type AbortRecord struct {
	Txn     lock.TxnID
	Attempt uint64
	Range   RangeID
}

// DecisionRecord asks the anchor range to compare-and-set T's txn record
// from undecided (absent or PENDING) to Decision. Both the coordinator's
// COMMITTED and an inquirer's presumed ABORTED are such a CAS, so exactly
// one of them wins (rule 4). Participants are the ranges phase 2 must reach:
// recovery resends the decision to them (rule 6).
type DecisionRecord struct {
	Txn          lock.TxnID
	Attempt      uint64
	Anchor       RangeID
	AnchorKey    []byte
	Decision     Decision
	Participants []RangeID
	Coordinator  NodeID
}

// EndRecord ends T's txn record once every participant acknowledged the
// decision (seed 004's end record): recovery no longer resends it, and a
// bounded tombstone keeps answering late messages (RecordTable).
type EndRecord struct {
	Txn       lock.TxnID
	Attempt   uint64
	Anchor    RangeID
	AnchorKey []byte
}

func (PrepareRecord) isRecord()  {}
func (CommitRecord) isRecord()   {}
func (AbortRecord) isRecord()    {}
func (DecisionRecord) isRecord() {}
func (EndRecord) isRecord()      {}

func (r PrepareRecord) String() string {
	return fmt.Sprintf("r%d PrepareRecord t%d.%d writes=%v", r.Range, r.Txn, r.Attempt, r.Writes)
}

func (r CommitRecord) String() string {
	s := fmt.Sprintf("r%d CommitRecord t%d.%d writes=%v", r.Range, r.Txn, r.Attempt, r.Writes)
	if r.OnePhase && r.Decide != nil {
		s += fmt.Sprintf(" with the decision (CAS→COMMITTED %v)", r.Decide.Participants)
	} else if r.OnePhase {
		s += " 1PC"
	}
	return s
}

func (r AbortRecord) String() string {
	return fmt.Sprintf("r%d AbortRecord t%d.%d", r.Range, r.Txn, r.Attempt)
}

func (r DecisionRecord) String() string {
	return fmt.Sprintf("r%d DecisionRecord t%d.%d CAS→%v %v", r.Anchor, r.Txn, r.Attempt, r.Decision, r.Participants)
}

func (r EndRecord) String() string {
	return fmt.Sprintf("r%d EndRecord t%d.%d", r.Anchor, r.Txn, r.Attempt)
}

// Ready is a batch of outputs of a Participant or Coordinator. The driver
// handles one Ready at a time, always in the order
//
//	persist Records (fsync) → send Messages → release, answer → Advance(rd)
//
// in detail:
//
//  1. Persist Records, in order: a participant's records are Raft-committed
//     (and so fsynced on a quorum) in its range's log and applied; a
//     coordinator's DecisionRecord is proposed as a CAS on the anchor range
//     and its result reported with Coordinator.CASResult; its EndRecord is
//     proposed there too (RecordTable.End).
//  2. Send Messages (after step 1, never before).
//  3. Release the lock-table entries of the txns in Release, and hand Results
//     to the waiting clients.
//  4. Call Advance(rd), which confirms that every record of rd is durable
//     and every message was handed to the transport.
//
// A message that depends on a record (a YES vote on its PrepareRecord, an
// ACK on its CommitRecord) is never in the same Ready as that record: it
// appears only after Advance confirmed the record. So even a driver that
// crashes between any two steps cannot reveal a decision that is not
// durable (rule 1). If a record cannot be made durable (the leader lost its
// term), the driver must discard the Participant without calling Advance;
// the next leader rebuilds from durable records with NewParticipant.
type Ready struct {
	Records  []Record
	Messages []Message
	Release  []lock.TxnID // participant: txns whose locks (and buffered writes) to drop
	Results  []Result     // coordinator: answers for clients
}

// Empty reports whether rd holds nothing to do.
func (rd Ready) Empty() bool {
	return len(rd.Records) == 0 && len(rd.Messages) == 0 && len(rd.Release) == 0 && len(rd.Results) == 0
}

// trim drops the prefix of rd that done covered: Advance keeps whatever
// was emitted after the driver called Ready.
func (rd *Ready) trim(done Ready) {
	if len(done.Records) > len(rd.Records) || len(done.Messages) > len(rd.Messages) ||
		len(done.Release) > len(rd.Release) || len(done.Results) > len(rd.Results) {
		panic("txn: Advance with a Ready that was not returned by Ready")
	}
	rd.Records = rd.Records[len(done.Records):]
	rd.Messages = rd.Messages[len(done.Messages):]
	rd.Release = rd.Release[len(done.Release):]
	rd.Results = rd.Results[len(done.Results):]
}

// RecordTable is the set of txn records kept by one anchor range: the
// deterministic apply side of DecisionRecord, EndRecord and Inquire. The
// driver calls it from the range's apply loop, so its writes are ordered by
// the Raft log like every other command. The zero value is ready to use.
//
// End does not forget a decision at once: the record stays as a tombstone,
// out of recovery's work (Decided) but still the answer to Get, Inquire and
// CAS, for the last MaxEnded ended txns. NB: without it, an Inquire sent
// while T was prepared and delivered after End would find no record and,
// its coordinator gone, presume abort: a committed txn's record would turn
// ABORTED (TestLateInquireAfterEnd). A late message older than MaxEnded
// ends can still do that, so the window must cover the longest message
// delay; it is also the window of TxnStatus answers.
type RecordTable struct {
	// MaxEnded bounds the tombstones kept; 0 means DefaultMaxEnded.
	MaxEnded int
	recs     map[recordKey]txnRecord
	ended    []recordKey // tombstones, oldest first
}

// DefaultMaxEnded is RecordTable's tombstone bound when MaxEnded is 0.
const DefaultMaxEnded = 100000

type txnRecord struct {
	rec   DecisionRecord
	ended bool
}

type recordKey struct {
	txn     lock.TxnID
	attempt uint64
}

// CAS applies a DecisionRecord: if T's record is undecided it becomes
// rec.Decision. It returns the decision the record holds afterwards, so
// the caller won iff the result equals rec.Decision. A decision, once
// recorded, never changes (rule 2).
func (t *RecordTable) CAS(rec DecisionRecord) Decision {
	if rec.Decision == DecisionPending {
		panic(fmt.Sprintf("txn: CAS to PENDING for t%d", rec.Txn))
	}
	k := recordKey{rec.Txn, rec.Attempt}
	if cur, ok := t.recs[k]; ok {
		return cur.rec.Decision
	}
	if t.recs == nil {
		t.recs = map[recordKey]txnRecord{}
	}
	t.recs[k] = txnRecord{rec: rec}
	return rec.Decision
}

// End applies an EndRecord: the record leaves recovery's work and becomes
// a tombstone.
func (t *RecordTable) End(rec EndRecord) {
	k := recordKey{rec.Txn, rec.Attempt}
	r, ok := t.recs[k]
	if !ok || r.ended {
		return
	}
	r.ended = true
	t.recs[k] = r
	t.ended = append(t.ended, k)
	limit := t.MaxEnded
	if limit <= 0 {
		limit = DefaultMaxEnded
	}
	for len(t.ended) > limit {
		delete(t.recs, t.ended[0])
		t.ended = t.ended[1:]
	}
}

// Get returns T's recorded decision, DecisionPending if none.
func (t *RecordTable) Get(txn lock.TxnID, attempt uint64) Decision {
	return t.recs[recordKey{txn, attempt}].rec.Decision
}

// Inquire answers a participant's Inquire (rule 5). A decided record is the
// answer. An undecided one is aborted by CAS here if the driver has proven
// T's coordinator gone (its node is not live or restarted, or T's deadline
// passed): presumed abort (rule 4). That judgement only affects liveness: if
// it is wrong, the coordinator's own CAS to COMMITTED simply loses. Otherwise
// the answer is PENDING and the participant keeps waiting.
func (t *RecordTable) Inquire(m Message, coordinatorGone bool) Message {
	d := t.Get(m.Txn, m.Attempt)
	if d == DecisionPending && coordinatorGone {
		d = t.CAS(DecisionRecord{
			Txn: m.Txn, Attempt: m.Attempt, Anchor: m.To.Range, AnchorKey: m.AnchorKey,
			Decision: DecisionAborted, Participants: ranges(m.Participants), Coordinator: m.Coordinator,
		})
	}
	return Message{Type: MsgInquireResp, Txn: m.Txn, Attempt: m.Attempt, From: m.To, To: m.From, Decision: d}
}

// Decided returns every decided record, sorted by txn and attempt: the work
// of this range's recovery (rule 6), for Coordinator.Restore.
func (t *RecordTable) Decided() []DecisionRecord {
	var out []DecisionRecord
	for _, r := range t.recs {
		if !r.ended {
			out = append(out, r.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Txn != out[j].Txn {
			return out[i].Txn < out[j].Txn
		}
		return out[i].Attempt < out[j].Attempt
	})
	return out
}

// ranges returns the ranges of ps. A presumed-abort record lists all of
// them, not only the writers: a range the coordinator took for read-only may
// have prepared anyway, and an ABORT to a range with nothing to do costs one
// ACK.
func ranges(ps []Participation) []RangeID {
	out := make([]RangeID, len(ps))
	for i, p := range ps {
		out[i] = p.Range
	}
	return out
}
