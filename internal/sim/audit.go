package sim

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/check"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/replica"
)

// setup creates the nodes and ranges: the keyspace is split among the
// workload's hot keys, each range on 3 consecutive nodes.
func (w *world) setup() error {
	if w.cfg.Nodes < 3 {
		return fmt.Errorf("need at least 3 nodes, got %d", w.cfg.Nodes)
	}
	switch w.cfg.Workload {
	case "bank":
		w.wl = newBank(w)
	case "append":
		w.wl = newAppender(w)
	default:
		return fmt.Errorf("unknown workload %q (want bank or append)", w.cfg.Workload)
	}
	hot := w.wl.keys()
	var descs []*vowdbpb.RangeDescriptor
	var start []byte
	for i := 0; i < w.cfg.Ranges; i++ {
		var end []byte
		if i < w.cfg.Ranges-1 {
			end = []byte(hot[(i+1)*len(hot)/w.cfg.Ranges])
		}
		d := &vowdbpb.RangeDescriptor{RangeId: uint64(2 + i), StartKey: start, EndKey: end, Generation: 1}
		ri := rangeInfo{id: d.RangeId, gen: d.Generation, start: start, end: end}
		for k := 0; k < 3; k++ {
			id := uint64((i+k)%w.cfg.Nodes + 1)
			d.Replicas = append(d.Replicas, &vowdbpb.ReplicaDescriptor{NodeId: id})
			ri.replicas = append(ri.replicas, id)
		}
		descs = append(descs, d)
		w.ranges = append(w.ranges, ri)
		start = end
	}
	for i := 1; i <= w.cfg.Nodes; i++ {
		n := w.newNode(uint64(i))
		w.nodes = append(w.nodes, n)
		if err := n.open(); err != nil {
			return err
		}
		if err := n.bootstrap(descs); err != nil {
			return err
		}
	}
	var hist []check.Op
	w.hist = &hist
	for i := 0; i < w.cfg.Clients; i++ {
		w.clients = append(w.clients, &client{w: w, id: i, hist: w.hist})
	}
	w.event("setup: %d nodes, %d ranges, %d %s clients", w.cfg.Nodes, w.cfg.Ranges, w.cfg.Clients, w.cfg.Workload)
	return nil
}

// rangeLeftovers says what the leader of rangeID still holds: a
// transaction's locks, a prepare record, a decided record not yet ended.
func (n *node) rangeLeftovers(rangeID uint64) string {
	tr := n.current(rangeID)
	if tr == nil {
		return fmt.Sprintf("range %d: leader node %d has no tenure yet", rangeID, n.id)
	}
	if held, waiting := tr.Held(), tr.Waits(); len(held)+len(waiting) > 0 {
		var who []string
		for _, lk := range held {
			who = append(who, fmt.Sprintf("t%d %v %q", lk.Txn, lk.Mode, lk.Span.Start))
		}
		return fmt.Sprintf("range %d: %d locks held (%s), %d waiting", rangeID, len(held), strings.Join(who, ", "), len(waiting))
	}
	prep, err := replica.PrepareRecords(n.eng, rangeID)
	if err != nil || len(prep) > 0 {
		return fmt.Sprintf("range %d: %d prepare records left (%v)", rangeID, len(prep), err)
	}
	recs, err := replica.TxnRecords(n.eng, rangeID)
	if err != nil {
		return err.Error()
	}
	for _, r := range recs {
		if !r.Ended {
			return fmt.Sprintf("range %d: txn record %x is %v, not ended", rangeID, r.TxnId, r.State)
		}
	}
	return ""
}

// replicasBehind says which replica of ri has not applied everything the
// leader committed.
func (w *world) replicasBehind(ri rangeInfo) string {
	l := w.leaderOf(ri.id)
	commit := l.status(ri.id).Commit
	for _, id := range ri.replicas {
		st := w.nodes[id-1].status(ri.id)
		if st == nil || st.Applied != commit {
			return fmt.Sprintf("range %d: replica on node %d has not applied index %d", ri.id, id, commit)
		}
	}
	return ""
}

// audit checks the settled cluster: every replica of a range holds the same
// data, and the history and the final state pass the workload's checks.
func (w *world) audit() {
	final := map[string][]byte{}
	for _, ri := range w.ranges {
		var first map[string][]byte
		for _, id := range ri.replicas {
			n := w.nodes[id-1]
			data := map[string][]byte{}
			start, end := keys.UserSpan(ri.start, ri.end)
			err := n.eng.Scan(start, end, func(k, v []byte) bool {
				uk, _ := keys.DecodeUserKey(k)
				data[string(uk)] = append([]byte(nil), v...)
				return true
			})
			if err != nil {
				w.fail("audit: scan node %d: %v", id, err)
				return
			}
			if first == nil {
				first = data
				continue
			}
			if d := diff(first, data); d != "" {
				w.fail("audit: replicas of range %d disagree: node %d vs node %d: %s", ri.id, ri.replicas[0], id, d)
				return
			}
		}
		for k, v := range first {
			final[k] = v
		}
	}
	w.event("audit: %d keys, %d history ops", len(final), len(*w.hist))
	switch wl := w.wl.(type) {
	case *bank:
		w.auditBank(wl, final)
	case *appender:
		w.auditAppend(wl, final)
	}
}

func diff(a, b map[string][]byte) string {
	for _, k := range sortedKeys(a) {
		if v, ok := b[k]; !ok || !bytes.Equal(v, a[k]) {
			return fmt.Sprintf("key %q: %q vs %q (present %v)", k, a[k], v, ok)
		}
	}
	for _, k := range sortedKeys(b) {
		if _, ok := a[k]; !ok {
			return fmt.Sprintf("key %q only on the second", k)
		}
	}
	return ""
}

func (w *world) report(name string, r check.Result) {
	if !r.Valid {
		a := r.Anomalies[0]
		w.fail("%s: %s (%d anomalies: %v): %s", name, a.Type, len(r.Anomalies), r.Types(), a.Explanation)
	}
}

func (w *world) auditBank(b *bank, final map[string][]byte) {
	w.report("bank reads", check.Bank(*w.hist, b.accounts, bankInitial*len(b.accounts)))
	initial, balances := map[string]int{}, map[string]int{}
	for _, a := range b.accounts {
		initial[a] = bankInitial
		balances[a] = balance(final, a)
	}
	var ledger []check.Transfer
	for _, k := range sortedKeys(final) {
		if !strings.HasPrefix(k, "l/") {
			continue
		}
		f := strings.Fields(string(final[k]))
		if len(f) != 3 {
			w.fail("audit: malformed ledger entry %q = %q", k, final[k])
			return
		}
		amt, _ := strconv.Atoi(f[2])
		ledger = append(ledger, check.Transfer{ID: check.TransferID(k[2:]), From: f[0], To: f[1], Amount: amt})
	}
	ack, failed := check.TransferOutcomes(*w.hist)
	w.report("bank ledger", check.LedgerCheck(ack, failed, ledger, initial, balances))
}

func (w *world) auditAppend(a *appender, final map[string][]byte) {
	w.report("list-append", check.ListAppend(*w.hist, check.ListAppendOptions{Realtime: true}))
	// No acknowledged append is lost and no failed one applied: the final
	// lists hold every ok append once and no fail append.
	got := map[string][]int{}
	for _, k := range a.names {
		got[k] = parseList(final[k])
	}
	for _, op := range *w.hist {
		for _, m := range op.Txn {
			if m.F != check.FAppend {
				continue
			}
			n := 0
			for _, v := range got[m.Key] {
				if v == m.Value {
					n++
				}
			}
			switch {
			case op.Type == check.OK && n != 1:
				w.fail("audit: acknowledged append %d to %s found %d times in the final list %v", m.Value, m.Key, n, got[m.Key])
			case op.Type == check.Fail && n != 0:
				w.fail("audit: failed append %d to %s is in the final list %v", m.Value, m.Key, got[m.Key])
			}
		}
	}
	for _, k := range a.names {
		s := slices.Clone(got[k])
		slices.Sort(s)
		if len(slices.Compact(s)) != len(got[k]) {
			w.fail("audit: duplicate element in the final list of %s: %v", k, got[k])
		}
	}
}
