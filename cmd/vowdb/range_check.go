package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

func newRangeCheckCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "check [RANGE_ID...]",
		Short: "Check that the replicas of ranges hold the same data",
		Long: `Check runs a consistency check of each given range (every range when none
is given): the range's leader puts a checksum command in the range's Raft
log, every replica computes a SHA-256 of the range's replicated state when
it applies that entry (the descriptor, every key and value of the range, and
its transaction state: prepare records, transaction records, remembered
outcomes; not the Raft log or the applied index, which are each replica's
own), and the leader collects the checksums. A replica that has not applied
the entry yet is waited for up to 5s.

It prints one row per replica: the range, the log INDEX at which every
replica computed its checksum, the NODE, its APPLIED index when it answered,
the first 16 hex digits of its CHECKSUM, and STATUS: ok (it agrees with
every replica of the range that answered); when they do not agree, majority (this replica has the checksum
most replicas have) or DIFFERS (it does not, or no checksum has a
majority); or error: why the replica gave no checksum.

With -w json it prints an array of {"range", "index", "consistent",
"replicas": [{"node", "learner", "applied_index", "checksum" (64 hex
digits, null on error), "error" (absent when none)}]}; a range that could
not be checked at all has "error" and no replicas.

Exit codes: 0 when every replica of every range agrees; 1 when the replicas
of a range disagree (Error: names the range, the index and the nodes);
4 when a range or a replica could not be checked (unreachable, lagging, or
restarted since the checksum: run it again); 6 when a RANGE_ID does not
exist.`,
		Example: `  vowdb range check
  vowdb range check 2 5 -w json`,
		Args: usageArgs(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ids []uint64
			for _, a := range args {
				id, err := strconv.ParseUint(a, 10, 64)
				if err != nil || id == 0 {
					return usageErrorf("RANGE_ID %q is not a range id (a number from 1)", a)
				}
				ids = append(ids, id)
			}
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				if len(ids) == 0 {
					ranges, err := db.Ranges(ctx)
					if err != nil {
						return err
					}
					for _, r := range ranges {
						ids = append(ids, r.ID)
					}
					sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
				}
				results := make([]rangeCheck, 0, len(ids))
				for _, id := range ids {
					c, err := db.CheckConsistency(ctx, id)
					results = append(results, rangeCheck{id: id, check: c, err: err})
				}
				if err := writeRangeChecks(cmd.OutOrStdout(), string(g.format), results); err != nil {
					return err
				}
				return rangeChecksError(results)
			})
		},
	}
}

// rangeCheck is the outcome of checking one range: a check, or the error
// that kept it from running.
type rangeCheck struct {
	id    uint64
	check vowdb.ConsistencyCheck
	err   error
}

type replicaCheckJSON struct {
	Node         uint64  `json:"node"`
	Learner      bool    `json:"learner"`
	AppliedIndex uint64  `json:"applied_index"`
	Checksum     *string `json:"checksum"`
	Error        string  `json:"error,omitempty"`
}

type rangeCheckJSON struct {
	Range      uint64             `json:"range"`
	Index      uint64             `json:"index"`
	Consistent bool               `json:"consistent"`
	Replicas   []replicaCheckJSON `json:"replicas"`
	Error      string             `json:"error,omitempty"`
}

// majority returns the checksum more than half of the answering replicas
// have, or nil.
func majority(c vowdb.ConsistencyCheck) []byte {
	count := map[string]int{}
	answered := 0
	for _, r := range c.Replicas {
		if r.Err == "" {
			count[string(r.Checksum)]++
			answered++
		}
	}
	for sum, n := range count {
		if 2*n > answered {
			return []byte(sum)
		}
	}
	return nil
}

// replicaStatus is a replica's STATUS cell.
func replicaStatus(c vowdb.ConsistencyCheck, r vowdb.ReplicaChecksum) string {
	switch {
	case r.Err != "":
		return "error: " + r.Err
	case !c.Mismatch():
		return "ok"
	case string(r.Checksum) == string(majority(c)):
		return "majority"
	}
	return "DIFFERS"
}

func writeRangeChecks(w io.Writer, format string, results []rangeCheck) error {
	if format == formatJSON {
		out := make([]rangeCheckJSON, 0, len(results))
		for _, rc := range results {
			j := rangeCheckJSON{Range: rc.id, Index: rc.check.Index, Consistent: rc.err == nil && rc.check.Consistent(),
				Replicas: []replicaCheckJSON{}}
			if rc.err != nil {
				j.Error = rc.err.Error()
			}
			for _, r := range rc.check.Replicas {
				rj := replicaCheckJSON{Node: r.Node, Learner: r.Learner, AppliedIndex: r.Applied, Error: r.Err}
				if r.Err == "" {
					s := hex.EncodeToString(r.Checksum)
					rj.Checksum = &s
				}
				j.Replicas = append(j.Replicas, rj)
			}
			out = append(out, j)
		}
		return writeJSON(w, out)
	}
	var rows [][]string
	for _, rc := range results {
		id := strconv.FormatUint(rc.id, 10)
		if rc.err != nil {
			rows = append(rows, []string{id, "-", "-", "-", "-", "error: " + rc.err.Error()})
			continue
		}
		for _, r := range rc.check.Replicas {
			sum := "-"
			if r.Err == "" {
				sum = hex.EncodeToString(r.Checksum)
				sum = sum[:min(16, len(sum))]
			}
			node := strconv.FormatUint(r.Node, 10)
			if r.Learner {
				node += " (learner)"
			}
			rows = append(rows, []string{id, strconv.FormatUint(rc.check.Index, 10), node,
				strconv.FormatUint(r.Applied, 10), sum, replicaStatus(rc.check, r)})
		}
	}
	return writeTable(w, []string{"RANGE", "INDEX", "NODE", "APPLIED", "CHECKSUM", "STATUS"}, rows)
}

// rangeChecksError is the command's error: replicas that disagree first
// (exit 1), then ranges or replicas that could not be checked.
func rangeChecksError(results []rangeCheck) error {
	var disagree, failed []string
	var firstErr error
	for _, rc := range results {
		switch {
		case rc.err != nil:
			failed = append(failed, fmt.Sprintf("range %d: %v", rc.id, rc.err))
			if firstErr == nil || errors.Is(rc.err, vowdb.ErrInvalidArgument) {
				firstErr = rc.err
			}
		case rc.check.Mismatch():
			disagree = append(disagree, describeMismatch(rc.check))
		default:
			for _, r := range rc.check.Failed() {
				failed = append(failed, fmt.Sprintf("range %d: node %d gave no checksum: %s", rc.id, r.Node, r.Err))
			}
		}
	}
	if len(disagree) > 0 {
		return errors.New(strings.Join(disagree, "; "))
	}
	if len(failed) == 0 {
		return nil
	}
	msg := "could not check every replica: " + strings.Join(failed, "; ")
	if firstErr != nil && errors.Is(firstErr, vowdb.ErrInvalidArgument) {
		return fmt.Errorf("%w: %s", vowdb.ErrInvalidArgument, msg)
	}
	return fmt.Errorf("%w: %s", vowdb.ErrUnavailable, msg)
}

// describeMismatch names the range, the index and which nodes hold which
// checksum: "range 3: replicas disagree at index 57: node 2 has 1a2b...,
// nodes 1, 3 have 3c4d...".
func describeMismatch(c vowdb.ConsistencyCheck) string {
	byString := map[string][]string{}
	var order []string
	for _, r := range c.Replicas {
		if r.Err != "" {
			continue
		}
		s := hex.EncodeToString(r.Checksum)
		if _, seen := byString[s]; !seen {
			order = append(order, s)
		}
		byString[s] = append(byString[s], strconv.FormatUint(r.Node, 10))
	}
	sort.SliceStable(order, func(i, j int) bool { return len(byString[order[i]]) < len(byString[order[j]]) })
	parts := make([]string, 0, len(order))
	for _, s := range order {
		nodes := byString[s]
		if len(nodes) == 1 {
			parts = append(parts, fmt.Sprintf("node %s has %s", nodes[0], s[:16]))
		} else {
			parts = append(parts, fmt.Sprintf("nodes %s have %s", strings.Join(nodes, ", "), s[:16]))
		}
	}
	return fmt.Sprintf("range %d: replicas disagree at index %d: %s", c.Range, c.Index, strings.Join(parts, ", "))
}
