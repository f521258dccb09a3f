package torture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// leaderLookupTimeout bounds how long a leader fault looks for leaders
// before it gives up (right after a heal, elections may still be running).
const leaderLookupTimeout = 15 * time.Second

// rangeLeader is one range and the node (index into the cluster) that
// leads it.
type rangeLeader struct {
	Range uint64
	// Meta is the meta range (range 1): the range index, node liveness
	// and the deadlock detector.
	Meta bool
	// Node is the leader's index in the cluster, -1 if no leader is known.
	Node int
}

// name is "r4", or "r1(meta)" for the meta range.
func (l rangeLeader) name() string {
	r := "r" + strconv.FormatUint(l.Range, 10)
	if l.Meta {
		r += "(meta)"
	}
	return r
}

// leaderView finds which node leads which range, from `vowdb range ls`
// (each range's leader with the highest term any replica reports) and
// `vowdb node ls` (node ids to addresses). Node ids never change, so the
// map from id to node is kept once learned.
type leaderView struct {
	c    *Cluster
	byID map[uint64]int
}

// find runs one lookup.
func (v *leaderView) find(ctx context.Context) ([]rangeLeader, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	eps := strings.Join(v.c.Endpoints(), ",")
	res := v.c.CLI(ctx, "range", "ls", "-w", "json", "--timeout", "3s", "--endpoints", eps)
	if err := res.err(); err != nil {
		return nil, err
	}
	var ranges []struct {
		ID     uint64 `json:"id"`
		Meta   bool   `json:"meta"`
		Leader uint64 `json:"leader"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &ranges); err != nil {
		return nil, fmt.Errorf("vowdb range ls: %v: %s", err, res.Stdout)
	}
	var out []rangeLeader
	for _, r := range ranges {
		node := -1
		if r.Leader != 0 {
			if _, ok := v.byID[r.Leader]; !ok {
				if err := v.learnIDs(ctx); err != nil {
					return nil, err
				}
			}
			if i, ok := v.byID[r.Leader]; ok {
				node = i
			}
		}
		out = append(out, rangeLeader{Range: r.ID, Meta: r.Meta, Node: node})
	}
	return out, nil
}

// learnIDs maps node ids to the cluster's nodes with `vowdb node ls`.
func (v *leaderView) learnIDs(ctx context.Context) error {
	res := v.c.CLI(ctx, "node", "ls", "-w", "json", "--timeout", "3s", "--endpoints", strings.Join(v.c.Endpoints(), ","))
	if err := res.err(); err != nil {
		return err
	}
	var nodes []struct {
		ID      uint64 `json:"id"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &nodes); err != nil {
		return fmt.Errorf("vowdb node ls: %v: %s", err, res.Stdout)
	}
	if v.byID == nil {
		v.byID = map[uint64]int{}
	}
	for _, n := range nodes {
		for i, ep := range v.c.Endpoints() {
			if ep == n.Address {
				v.byID[n.ID] = i
			}
		}
	}
	return nil
}

// wait looks for leaders until ok accepts what it found or
// leaderLookupTimeout passes.
func (v *leaderView) wait(ctx context.Context, ok func([]rangeLeader) bool) ([]rangeLeader, error) {
	deadline := time.Now().Add(leaderLookupTimeout)
	for {
		ls, err := v.find(ctx)
		if err == nil && ok(ls) {
			return ls, nil
		}
		if err == nil {
			err = fmt.Errorf("no suitable leader among %s", describeLeaders(ls, v.c.Name))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("torture: find the leaders: %w", err)
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// anyLeader accepts a lookup in which some range has a known leader.
func anyLeader(ls []rangeLeader) bool {
	return slices.ContainsFunc(ls, func(l rangeLeader) bool { return l.Node >= 0 })
}

// describeLeaders lists each range's leader: "r1(meta)=n2 r2=n1 r3=-".
func describeLeaders(ls []rangeLeader, names func(int) string) string {
	var parts []string
	for _, l := range ls {
		who := "-"
		if l.Node >= 0 {
			who = names(l.Node)
		}
		parts = append(parts, l.name()+"="+who)
	}
	if len(parts) == 0 {
		return "no ranges"
	}
	return strings.Join(parts, " ")
}

// rangesLedBy lists the ranges node leads: "r1(meta), r4".
func rangesLedBy(ls []rangeLeader, node int) string {
	var rs []string
	for _, l := range ls {
		if l.Node == node {
			rs = append(rs, l.name())
		}
	}
	return strings.Join(rs, ", ")
}

// busiestLeader returns the node that leads the most ranges, ties broken
// by rng, and how many it leads; ok is false if no range has a known leader.
func busiestLeader(rng *rand.Rand, ls []rangeLeader, n int) (node, led int, ok bool) {
	count := make([]int, n)
	for _, l := range ls {
		if l.Node >= 0 && l.Node < n {
			count[l.Node]++
		}
	}
	led = slices.Max(append(count, 0))
	if led == 0 {
		return -1, 0, false
	}
	var top []int
	for i, c := range count {
		if c == led {
			top = append(top, i)
		}
	}
	return top[rng.IntN(len(top))], led, true
}

// randomLed returns a range with a known leader that keep accepts, drawn
// by rng; ok is false if there is none.
func randomLed(rng *rand.Rand, ls []rangeLeader, keep func(rangeLeader) bool) (rangeLeader, bool) {
	var cand []rangeLeader
	for _, l := range ls {
		if l.Node >= 0 && keep(l) {
			cand = append(cand, l)
		}
	}
	if len(cand) == 0 {
		return rangeLeader{}, false
	}
	return cand[rng.IntN(len(cand))], true
}

// pickLeaderVictim chooses the node a leader fault (kill-leader,
// pause-leader) hits: with even odds, the node leading the most ranges or
// the leader of a range drawn at random (the meta range included). why
// says which.
func pickLeaderVictim(rng *rand.Rand, ls []rangeLeader, n int, names func(int) string) (node int, why string, err error) {
	if rng.IntN(2) == 0 {
		if node, led, ok := busiestLeader(rng, ls, n); ok {
			return node, fmt.Sprintf("leads the most ranges (%d of %d: %s)", led, len(ls), rangesLedBy(ls, node)), nil
		}
	} else if l, ok := randomLed(rng, ls, func(rangeLeader) bool { return true }); ok {
		return l.Node, fmt.Sprintf("leads %s, drawn at random among the ranges (it leads %s)", l.name(), rangesLedBy(ls, l.Node)), nil
	}
	return -1, "", fmt.Errorf("torture: no range has a known leader (%s)", describeLeaders(ls, names))
}

// pickCoordinatorLeader chooses the node partition-leader isolates: with
// even odds the leader of the meta range (range 1, which also runs the
// deadlock detector) or the leader of a data range drawn at random (the
// transaction records live in the range of each transaction's anchor key,
// so every range the workload writes holds some). If the drawn side has no
// known leader, the other side is used.
func pickCoordinatorLeader(rng *rand.Rand, ls []rangeLeader, names func(int) string) (node int, why string, err error) {
	meta := func(l rangeLeader) bool { return l.Meta }
	data := func(l rangeLeader) bool { return !l.Meta }
	order := []func(rangeLeader) bool{meta, data}
	if rng.IntN(2) == 1 {
		order[0], order[1] = data, meta
	}
	for _, keep := range order {
		if l, ok := randomLed(rng, ls, keep); ok {
			what := "the meta range r%d (range index, liveness, deadlock detector)"
			if !l.Meta {
				what = "r%d (a data range: transaction records)"
			}
			return l.Node, fmt.Sprintf("leader of "+what+"; it leads %s", l.Range, rangesLedBy(ls, l.Node)), nil
		}
	}
	return -1, "", errors.New("torture: no range has a known leader (" + describeLeaders(ls, names) + ")")
}
