package torture

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vowdb/vowdb"
)

// The orphan audit after the final heal (Cluster.Audit), past readiness:
//
//  1. No lock is held and nobody waits for one (`vowdb locks`), and no
//     transaction is in flight (`vowdb txn ls`: ACTIVE, PREPARED,
//     COMMITTING, or an undecided PENDING record), polled until both are
//     empty for at most auditSettle: a prepared participant asks its
//     transaction record every 0.5 s, coordinators resend decisions (a
//     restored one after about 2 s), and an ACTIVE transaction whose
//     client vanished keeps its locks until its deadline
//     (vowdb.DefaultTxnTimeout).
//  2. Every range's replicas agree (`vowdb range check`): the same state at
//     the same log index. A disagreement fails at once; a check that could
//     not reach or wait for every replica is run again for at most
//     auditCheckFor.

// Bounds of the audit.
const (
	auditSettle   = vowdb.DefaultTxnTimeout + 15*time.Second
	auditCheckFor = time.Minute
	auditPoll     = time.Second
	// auditListMax is how many leftovers a failure names before "and N more".
	auditListMax = 10
)

// auditor runs the audit's client commands through cli (the vowdb binary
// in a run; a fake in tests).
type auditor struct {
	cli       func(ctx context.Context, args ...string) CLIResult
	endpoints string
	settle    time.Duration
	checkFor  time.Duration
	poll      time.Duration
	// logf, if set, is told what the audit waits for.
	logf func(format string, args ...any)
}

func (c *Cluster) auditor() *auditor {
	return &auditor{cli: c.CLI, endpoints: strings.Join(c.Endpoints(), ","),
		settle: auditSettle, checkFor: auditCheckFor, poll: auditPoll, logf: c.logf}
}

func (a *auditor) log(format string, args ...any) {
	if a.logf != nil {
		a.logf(format, args...)
	}
}

func (a *auditor) run(ctx context.Context, timeout string, args ...string) CLIResult {
	return a.cli(ctx, append(args, "-w", "json", "--timeout", timeout, "--endpoints", a.endpoints)...)
}

// jsonKey renders a key of the CLI's JSON output (key or key_base64).
func jsonKey(text, b64 *string) string {
	switch {
	case text != nil:
		return strconv.Quote(*text)
	case b64 != nil:
		if b, err := base64.StdEncoding.DecodeString(*b64); err == nil {
			return strconv.Quote(string(b))
		}
		return "base64:" + *b64
	}
	return `""`
}

func txnName(id *string) string {
	if id == nil {
		return "a single-key operation"
	}
	return "txn " + *id
}

// locksOutput is what the audit reads of `vowdb locks -w json`.
type locksOutput struct {
	Waits []struct {
		Waiter, Holder *string
		Key            *string `json:"key"`
		KeyBase64      *string `json:"key_base64"`
		Mode           string
		Waited         float64 `json:"waited_seconds"`
		Range, Node    uint64
	} `json:"waits"`
	Held *[]struct {
		Holder       *string
		Key          *string `json:"key"`
		KeyBase64    *string `json:"key_base64"`
		EndKey       *string `json:"end_key"`
		EndKeyBase64 *string `json:"end_key_base64"`
		Mode         string
		Range, Node  uint64
	} `json:"held"`
}

// lockLeftovers describes every held lock and every wait in the output of
// `vowdb locks -w json`.
func lockLeftovers(stdout string) ([]string, error) {
	var out locksOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		return nil, fmt.Errorf("vowdb locks: %v: %s", err, stdout)
	}
	if out.Held == nil {
		return nil, fmt.Errorf("vowdb locks: no held locks in the output (a binary without them?): %s", stdout)
	}
	var left []string
	for _, h := range *out.Held {
		what := jsonKey(h.Key, h.KeyBase64)
		switch {
		case h.EndKey != nil && *h.EndKey == "":
			what = fmt.Sprintf("[%s, +inf)", what)
		case h.EndKey != nil || h.EndKeyBase64 != nil:
			what = fmt.Sprintf("[%s, %s)", what, jsonKey(h.EndKey, h.EndKeyBase64))
		}
		left = append(left, fmt.Sprintf("%s holds a %s lock on %s (range %d, node %d)", txnName(h.Holder), h.Mode, what, h.Range, h.Node))
	}
	for _, w := range out.Waits {
		holder := "?"
		if w.Holder != nil {
			holder = "txn " + *w.Holder
		}
		left = append(left, fmt.Sprintf("%s waits %.1fs for %s's %s lock on %s (range %d, node %d)",
			txnName(w.Waiter), w.Waited, holder, w.Mode, jsonKey(w.Key, w.KeyBase64), w.Range, w.Node))
	}
	return left, nil
}

// txnLeftovers describes every transaction in the output of
// `vowdb txn ls -w json`.
func txnLeftovers(stdout string) ([]string, error) {
	var txns []struct {
		ID          string
		Coordinator uint64
		State       string
		Ranges      []uint64
		Age         float64 `json:"age_seconds"`
	}
	if err := json.Unmarshal([]byte(stdout), &txns); err != nil {
		return nil, fmt.Errorf("vowdb txn ls: %v: %s", err, stdout)
	}
	var left []string
	for _, t := range txns {
		rs := make([]string, len(t.Ranges))
		for i, r := range t.Ranges {
			rs[i] = strconv.FormatUint(r, 10)
		}
		left = append(left, fmt.Sprintf("txn %s %s (coordinator node %d, ranges %s, age %.1fs)",
			t.ID, t.State, t.Coordinator, strings.Join(rs, ","), t.Age))
	}
	return left, nil
}

// listSome joins up to auditListMax items.
func listSome(items []string) string {
	if len(items) <= auditListMax {
		return strings.Join(items, "\n")
	}
	return strings.Join(items[:auditListMax], "\n") + fmt.Sprintf("\n... and %d more", len(items)-auditListMax)
}

// settled polls `vowdb locks` and `vowdb txn ls` until neither shows
// anything, for at most a.settle.
func (a *auditor) settled(ctx context.Context) (string, error) {
	start := time.Now()
	var logged time.Time
	var first string // what the first poll found, when something
	for {
		var locks, txns []string
		var err error
		res := a.run(ctx, "10s", "locks")
		if err = res.err(); err == nil {
			locks, err = lockLeftovers(res.Stdout)
		}
		if err == nil {
			res = a.run(ctx, "10s", "txn", "ls")
			if err = res.err(); err == nil {
				txns, err = txnLeftovers(res.Stdout)
			}
		}
		if err == nil && len(locks) == 0 && len(txns) == 0 {
			desc := fmt.Sprintf("no lock held or awaited and no transaction in flight (vowdb locks, vowdb txn ls; settled in %v)",
				time.Since(start).Round(time.Millisecond))
			if first != "" {
				desc += "; first seen and waited for:\n" + first
			}
			return desc, nil
		}
		if err == nil && first == "" {
			first = listSome(append(locks, txns...))
		}
		if time.Since(start) >= a.settle {
			if err != nil {
				return "", fmt.Errorf("locks and transactions unknown after %v: %w", a.settle, err)
			}
			var parts []string
			if len(locks) > 0 {
				parts = append(parts, fmt.Sprintf("%d locks still held or awaited after %v (vowdb locks):\n%s", len(locks), a.settle, listSome(locks)))
			}
			if len(txns) > 0 {
				parts = append(parts, fmt.Sprintf("%d transactions still in flight after %v (vowdb txn ls):\n%s", len(txns), a.settle, listSome(txns)))
			}
			return "", errors.New(strings.Join(parts, "\n"))
		}
		if time.Since(logged) >= 10*time.Second {
			logged = time.Now()
			if err != nil {
				a.log("audit: waiting for vowdb locks and txn ls: %v", err)
			} else {
				a.log("audit: waiting for %d locks and %d transactions to go:\n%s", len(locks), len(txns), listSome(append(locks, txns...)))
			}
		}
		if !sleepCtx(ctx, a.poll) {
			return "", ctx.Err()
		}
	}
}

// rangeCheckOutput is what the audit reads of `vowdb range check -w json`.
type rangeCheckOutput []struct {
	Range      uint64
	Index      uint64
	Consistent bool
	Error      string
	Replicas   []struct {
		Node         uint64
		AppliedIndex uint64 `json:"applied_index"`
		Checksum     *string
		Error        string
	}
}

// judgeChecks reads `vowdb range check -w json`: how many ranges agree,
// which disagree (each naming its replicas and their checksums), and which
// could not be compared.
func judgeChecks(stdout string) (agree int, disagree, unchecked []string, err error) {
	var out rangeCheckOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		return 0, nil, nil, fmt.Errorf("vowdb range check: %v: %s", err, stdout)
	}
	if len(out) == 0 {
		return 0, nil, nil, fmt.Errorf("vowdb range check: no ranges checked")
	}
	for _, r := range out {
		if r.Error != "" {
			unchecked = append(unchecked, fmt.Sprintf("range %d: %s", r.Range, r.Error))
			continue
		}
		sums := map[string]bool{}
		var reps, failed []string
		for _, rep := range r.Replicas {
			if rep.Checksum == nil {
				failed = append(failed, fmt.Sprintf("range %d: node %d gave no checksum: %s", r.Range, rep.Node, rep.Error))
				continue
			}
			sums[*rep.Checksum] = true
			reps = append(reps, fmt.Sprintf("node %d %.16s", rep.Node, *rep.Checksum))
		}
		switch {
		case len(sums) > 1:
			disagree = append(disagree, fmt.Sprintf("range %d at index %d: replicas disagree: %s", r.Range, r.Index, strings.Join(reps, ", ")))
		case len(failed) > 0 || len(r.Replicas) == 0:
			unchecked = append(unchecked, failed...)
			if len(r.Replicas) == 0 {
				unchecked = append(unchecked, fmt.Sprintf("range %d: no replica answered", r.Range))
			}
		default:
			agree++
		}
	}
	return agree, disagree, unchecked, nil
}

// consistent runs `vowdb range check` over every range until every replica
// of every range was compared (for at most a.checkFor); replicas that
// disagree fail it at once.
func (a *auditor) consistent(ctx context.Context) (string, error) {
	start := time.Now()
	for {
		res := a.run(ctx, "25s", "range", "check")
		agree, disagree, unchecked, err := judgeChecks(res.Stdout)
		if err == nil && len(disagree) > 0 {
			return "", fmt.Errorf("replicas disagree (vowdb range check):\n%s", listSome(disagree))
		}
		if err == nil && len(unchecked) == 0 && res.Code == 0 {
			return fmt.Sprintf("the replicas of each of %d ranges agree (vowdb range check)", agree), nil
		}
		if err == nil {
			err = fmt.Errorf("%d ranges agree, not every replica compared:\n%s", agree, listSome(unchecked))
		}
		if res.Code != 0 && res.Stderr != "" {
			err = fmt.Errorf("%w\n%s", err, strings.TrimSpace(res.Stderr))
		}
		if time.Since(start) >= a.checkFor {
			return "", fmt.Errorf("consistency check incomplete after %v: %w", a.checkFor, err)
		}
		a.log("audit: consistency check again: %v", err)
		if !sleepCtx(ctx, a.poll) {
			return "", ctx.Err()
		}
	}
}
