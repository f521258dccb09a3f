package sim

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vowdb/vowdb/internal/check"
	"github.com/vowdb/vowdb/internal/lock"
	"github.com/vowdb/vowdb/internal/txn"
)

// Workload constants.
const (
	bankAccounts   = 6
	bankInitial    = 10 // an account's balance before its first write
	appendKeys     = 6
	maxOpRetries   = 5
	tickNanos      = int64(1_000_000) // history timestamps: one tick = 1 ms
	clientThinkMax = 4
)

// workload generates transactions and checks what came of them.
type workload interface {
	// keys returns the hot keys; the ranges are split among them.
	keys() []string
	// plan returns the next transaction of client c.
	plan(c *client) *plan
}

// plan is one transaction: reads, then writes computed from the reads.
type plan struct {
	op     check.Op // the history op (filled in as results arrive)
	reads  []string
	writes func(reads map[string][]byte) (kv [][2]string, ok bool) // ok false: roll back (fail)
	finish func(op *check.Op, reads map[string][]byte)             // fill the op's results
}

// client runs one transaction at a time through the cluster, as the Go
// client does: operations to the range leaders, commit to a gateway.
type client struct {
	w      *world
	id     int
	idleTo int64
	cur    *ctxn
	hist   *[]check.Op
	reqSeq uint64 // request ids, unique over the client's life
}

type ctxn struct {
	id       lock.TxnID
	attempt  uint64
	p        *plan
	gateway  uint64
	reads    map[string][]byte
	writes   [][2]string
	i        int // next operation: reads, then writes
	parts    map[uint64]*txn.Participation
	order    []uint64 // ranges in first-touch order
	anchor   []byte
	req      uint64 // id of the request in flight
	deadline int64
	retries  int
	retryAt  int64
	invoke   int64
	aliveAt  int64 // next keep-alive (Config.KeepAlive)
}

func (c *client) busy() bool { return c.cur != nil }

func (c *client) step() {
	w := c.w
	if c.cur == nil {
		if w.stop || w.now < c.idleTo {
			return
		}
		w.txnSeq++
		t := &ctxn{id: lock.TxnID(w.txnSeq), attempt: uint64(w.now) + 1, p: w.wl.plan(c), gateway: uint64(1 + w.rng.IntN(len(w.nodes))),
			reads: map[string][]byte{}, parts: map[uint64]*txn.Participation{}, invoke: w.now, aliveAt: w.now + keepAliveTicks}
		t.p.op.Process, t.p.op.Invoke = c.id, w.now*tickNanos
		c.cur = t
		w.event("client %d begins t%d via node %d: %s", c.id, t.id, t.gateway, t.p.op.F)
		c.next()
		return
	}
	if t := c.cur; w.cfg.KeepAlive && w.now >= t.aliveAt {
		c.keepAlive()
	}
	if t := c.cur; t.req == 0 && w.now >= t.retryAt {
		c.next()
	} else if t.req != 0 && w.now >= t.deadline {
		if t.i > len(t.p.reads)+len(t.writes) { // the commit is unanswered
			c.finish(check.Info, "commit unanswered")
		} else {
			c.abort("operation timed out")
		}
	}
}

// keepAlive tells every range the open transaction operated on that its
// client still runs it, as the Go client does every second until the
// commit is answered.
func (c *client) keepAlive() {
	c.cur.aliveAt = c.w.now + keepAliveTicks
	c.toRanges("keep-alive", (*node).keepAlive)
}

// toRanges sends what to the leader of every range the open transaction
// operated on (node 1 when a range has no leader), where it calls fn.
func (c *client) toRanges(what string, fn func(n *node, id lock.TxnID, attempt, rangeID uint64)) {
	w, t := c.w, c.cur
	for _, r := range t.order {
		target := w.nodes[0].id
		if l := w.leaderOf(r); l != nil {
			target = l.id
		}
		id, attempt, rangeID := t.id, t.attempt, r
		w.send(0, target, 0, what, func() { fn(w.nodes[target-1], id, attempt, rangeID) })
	}
}

// next issues the next operation, or the commit.
func (c *client) next() {
	w, t := c.w, c.cur
	if t.i == len(t.p.reads) && t.writes == nil {
		kv, ok := t.p.writes(t.reads)
		if !ok {
			c.abort("") // nothing to do: roll back, the op failed
			return
		}
		t.writes = kv
		if len(kv) == 0 {
			t.writes = [][2]string{}
		}
	}
	if t.i < len(t.p.reads)+len(t.writes) {
		var key, value string
		write := t.i >= len(t.p.reads)
		if write {
			key, value = t.writes[t.i-len(t.p.reads)][0], t.writes[t.i-len(t.p.reads)][1]
		} else {
			key = t.p.reads[t.i]
		}
		ri := w.rangeFor([]byte(key))
		target := ri.replicas[w.rng.IntN(len(ri.replicas))]
		if l := w.leaderOf(ri.id); l != nil {
			target = l.id
		}
		c.reqSeq++
		t.req = c.reqSeq
		req, id, attempt, age := t.req, t.id, t.attempt, uint64(t.invoke)
		t.deadline = w.now + requestTimeout
		w.send(0, target, 0, "op", func() {
			dst := w.nodes[target-1]
			dst.op(id, attempt, age, []byte(key), []byte(value), write, func(r opReply) {
				w.send(target, 0, 0, "op-resp", func() { c.opDone(req, key, write, r) })
			})
		})
		return
	}
	// Commit.
	t.i++
	req := txn.CommitRequest{Txn: t.id, Attempt: t.attempt}
	for _, r := range t.order {
		req.Participants = append(req.Participants, *t.parts[r])
	}
	if t.anchor != nil {
		req.AnchorKey = t.anchor
		req.Anchor = txn.RangeID(w.rangeFor(t.anchor).id)
	} else {
		req.Anchor = req.Participants[0].Range
		req.AnchorKey = []byte(t.p.reads[0])
	}
	c.reqSeq++
	t.req = c.reqSeq
	rq, gw := t.req, t.gateway
	t.deadline = w.now + 2*requestTimeout
	w.send(0, gw, 0, "commit", func() {
		w.nodes[gw-1].commit(req, func(res txn.Result) {
			w.send(gw, 0, 0, "commit-resp", func() { c.commitDone(rq, res) })
		})
	})
}

func (c *client) opDone(req uint64, key string, write bool, r opReply) {
	t := c.cur
	if t == nil || t.req != req {
		return
	}
	switch {
	case r.retry:
		if t.retries++; t.retries > maxOpRetries {
			c.abort("no leader")
			return
		}
		t.req, t.retryAt = 0, c.w.now+2
		return
	case r.abort != "":
		c.abort(r.abort)
		return
	}
	c.w.event("client %d t%d %s %s: range %d tenure %x found %v %q", c.id, t.id, map[bool]string{false: "get", true: "put"}[write], key, r.rangeID, r.term, r.found, r.value)
	p := t.parts[r.rangeID]
	if p != nil && p.Term != r.term {
		// As the Go client: the range changed leaders since the first
		// operation there, so the locks taken then are gone (rule 8).
		c.abort("participant lost state")
		return
	}
	if p == nil {
		p = &txn.Participation{Range: txn.RangeID(r.rangeID), Term: r.term}
		t.parts[r.rangeID] = p
		t.order = append(t.order, r.rangeID)
	}
	if write {
		p.Writes = true
		if t.anchor == nil {
			t.anchor = []byte(key)
		}
	} else if r.found {
		t.reads[key] = r.value
	}
	t.i++
	t.retries = 0
	c.next()
}

func (c *client) commitDone(req uint64, res txn.Result) {
	t := c.cur
	if t == nil || t.req != req {
		return
	}
	switch res.Outcome {
	case txn.OutcomeCommitted:
		c.w.saw("committed " + res.Path.String())
		c.finish(check.OK, "")
	case txn.OutcomeAborted:
		c.finish(check.Fail, res.String())
	default:
		c.finish(check.Info, res.String())
	}
}

// abort gives up before the commit: the ranges touched are told to roll
// back (best effort; their deadline aborts the rest), and the op failed.
func (c *client) abort(why string) {
	c.toRanges("rollback", (*node).rollback)
	c.finish(check.Fail, why)
}

func (c *client) finish(typ check.OpType, why string) {
	w, t := c.w, c.cur
	op := t.p.op
	op.Type, op.Complete = typ, w.now*tickNanos
	if typ == check.OK {
		t.p.finish(&op, t.reads)
		w.rep.Committed++
	} else if typ == check.Fail {
		w.rep.Failed++
	} else {
		w.rep.Ambiguous++
	}
	*c.hist = append(*c.hist, op)
	w.event("client %d t%d %s %s", c.id, t.id, typ, why)
	c.cur = nil
	c.idleTo = w.now + int64(w.rng.IntN(clientThinkMax))
}

// bank moves money between accounts spread over the ranges, records every
// transfer in a ledger, and reads all balances.
type bank struct {
	w        *world
	accounts []string
}

func newBank(w *world) *bank {
	b := &bank{w: w}
	for i := 0; i < bankAccounts; i++ {
		b.accounts = append(b.accounts, fmt.Sprintf("a%02d", i))
	}
	return b
}

func (b *bank) keys() []string { return b.accounts }

func balance(reads map[string][]byte, acct string) int {
	v, ok := reads[acct]
	if !ok {
		return bankInitial
	}
	n, _ := strconv.Atoi(string(v))
	return n
}

func (b *bank) plan(c *client) *plan {
	w := b.w
	if w.rng.IntN(4) == 0 {
		return &plan{op: check.Op{F: check.FRead}, reads: b.accounts,
			writes: func(map[string][]byte) ([][2]string, bool) { return nil, true },
			finish: func(op *check.Op, reads map[string][]byte) {
				op.Balances = map[string]int{}
				for _, a := range b.accounts {
					op.Balances[a] = balance(reads, a)
				}
			}}
	}
	i := w.rng.IntN(len(b.accounts))
	j := (i + 1 + w.rng.IntN(len(b.accounts)-1)) % len(b.accounts)
	from, to, amount := b.accounts[i], b.accounts[j], 1+w.rng.IntN(5)
	id := fmt.Sprintf("x%d", w.txnSeq+1)
	return &plan{op: check.Op{F: check.FTransfer, From: from, To: to, Amount: amount, ID: id},
		reads: []string{from, to},
		writes: func(reads map[string][]byte) ([][2]string, bool) {
			f, t := balance(reads, from), balance(reads, to)
			if f < amount {
				return nil, false
			}
			return [][2]string{{from, strconv.Itoa(f - amount)}, {to, strconv.Itoa(t + amount)},
				{"l/" + id, fmt.Sprintf("%s %s %d", from, to, amount)}}, true
		},
		finish: func(*check.Op, map[string][]byte) {}}
}

// appender runs list-append transactions over a few hot keys: each
// micro-op reads a list, or appends a unique element to it (read, then
// write the longer list).
type appender struct {
	w     *world
	names []string
	next  map[string]int
}

func newAppender(w *world) *appender {
	a := &appender{w: w, next: map[string]int{}}
	for i := 0; i < appendKeys; i++ {
		a.names = append(a.names, fmt.Sprintf("k%d", i))
	}
	return a
}

func (a *appender) keys() []string { return a.names }

func parseList(v []byte) []int {
	var out []int
	for _, f := range strings.Fields(string(v)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

func (a *appender) plan(c *client) *plan {
	w := a.w
	perm := w.rng.Perm(len(a.names))[:1+w.rng.IntN(3)]
	var mops []check.Mop
	var reads []string
	for _, i := range perm {
		k := a.names[i]
		reads = append(reads, k)
		if w.rng.IntN(2) == 0 {
			mops = append(mops, check.Read(k))
		} else {
			a.next[k]++
			mops = append(mops, check.Append(k, a.next[k]))
		}
	}
	return &plan{op: check.Op{Txn: mops}, reads: reads,
		writes: func(r map[string][]byte) ([][2]string, bool) {
			var kv [][2]string
			for _, m := range mops {
				if m.F == check.FAppend {
					v := strings.TrimSpace(string(r[m.Key]) + " " + strconv.Itoa(m.Value))
					kv = append(kv, [2]string{m.Key, v})
				}
			}
			return kv, true
		},
		finish: func(op *check.Op, r map[string][]byte) {
			op.Txn = append([]check.Mop(nil), op.Txn...)
			for i, m := range op.Txn {
				if m.F == check.FR {
					op.Txn[i].List = parseList(r[m.Key])
				}
			}
		}}
}
