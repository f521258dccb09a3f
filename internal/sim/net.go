package sim

import (
	"cmp"
	"slices"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// network holds the messages in flight. A message is a closure run at its
// destination when it arrives: on node to (0: a client, never down), and
// only in the destination's incarnation epoch when epoch > 0 (a reply to a
// request made before a crash finds nobody waiting).
type network struct {
	q   []envelope
	seq uint64
	cut map[[2]uint64]bool // partitioned node pairs (from, to)
}

type envelope struct {
	at       int64
	seq      uint64
	from, to uint64
	epoch    int
	what     string
	fn       func()
	onDrop   func() // if set, run when the message is lost
}

// send queues fn for delivery at node to (0: a client), from node from (0:
// a client), with the network's delay and, while faults are on, loss,
// duplication and long delays.
func (w *world) send(from, to uint64, epoch int, what string, fn func()) {
	w.sendOrDrop(from, to, epoch, what, fn, nil)
}

// sendOrDrop is send with a callback for a lost message, run at the start
// of the next tick when the loss is decided at send time.
func (w *world) sendOrDrop(from, to uint64, epoch int, what string, fn, onDrop func()) {
	delay := int64(1 + w.rng.IntN(2))
	copies := 1
	if w.cfg.Faults && !w.healed {
		switch r := w.rng.IntN(100); {
		case r < 2:
			w.event("drop %s %d→%d", what, from, to)
			if onDrop != nil {
				w.later(onDrop)
			}
			return
		case r < 4:
			copies = 2
		case r < 8:
			delay += int64(w.rng.IntN(15)) // overtaken by later messages
		}
	}
	for i := 0; i < copies; i++ {
		w.net.seq++
		w.net.q = append(w.net.q, envelope{at: w.now + delay + int64(i), seq: w.net.seq, from: from, to: to,
			epoch: epoch, what: what, fn: fn, onDrop: onDrop})
		onDrop = nil // a duplicate that is lost is no loss
	}
}

// deliver runs every message due by now, in (time, send order) order.
func (n *network) deliver(w *world) {
	var due, later []envelope
	for _, e := range n.q {
		if e.at <= w.now {
			due = append(due, e)
		} else {
			later = append(later, e)
		}
	}
	n.q = later
	slices.SortFunc(due, func(a, b envelope) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for _, e := range due {
		lost := n.cut[[2]uint64{e.from, e.to}]
		if e.to != 0 {
			dst := w.nodes[e.to-1]
			lost = lost || !dst.up || (e.epoch > 0 && e.epoch != dst.epoch)
		}
		if lost {
			if e.onDrop != nil {
				e.onDrop()
			}
			continue
		}
		e.fn()
	}
}

// raftSender is a node's multiraft.Sender.
type raftSender struct {
	w    *world
	from *node
}

func (s raftSender) Send(to uint64, msgs []*vowdbpb.RaftMessage) {
	w, from := s.w, s.from.id
	if to == 0 || int(to) > len(w.nodes) {
		return
	}
	// The transport tells Raft whether a snapshot got through, as the gRPC
	// transport does; without the report the leader waits for it forever.
	var snaps []uint64
	for _, m := range msgs {
		if m.Snapshot {
			snaps = append(snaps, m.RangeId)
		}
	}
	sender, epoch := s.from, s.from.epoch
	report := func(ok bool) {
		if sender.up && sender.epoch == epoch {
			for _, r := range snaps {
				sender.sched.ReportSnapshot(r, to, ok)
			}
		}
	}
	var onDrop func()
	if len(snaps) > 0 {
		w.saw("snapshot")
		onDrop = func() { report(false) }
	}
	w.sendOrDrop(from, to, 0, "raft", func() {
		if len(snaps) > 0 {
			w.later(func() { report(true) })
		}
		dst := w.nodes[to-1]
		for _, m := range msgs {
			var rm raftpb.Message
			if rm.Unmarshal(m.Msg) == nil && rm.From == from &&
				(rm.Type == raftpb.MsgApp || rm.Type == raftpb.MsgHeartbeat || rm.Type == raftpb.MsgSnap) {
				dst.heardLeader(m.RangeId)
			}
		}
		dst.sched.Deliver(msgs)
	}, onDrop)
}
