package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

const txnLong = `Txn runs transactions: serializable, atomic across ranges.

Without -e it is a shell that reads statements from stdin, one per line or
separated by ";", and prints each result as it goes (with the prompt
"vowdb> " when stdin is a terminal). A statement that fails prints
"Error: ..." on stderr, skips the rest of its line, and the shell goes on;
the error says whether the open transaction is still open or over. End of
input (Ctrl-D) or exit leaves the shell with exit code 0, rolling back an
open transaction and saying so on stderr. Ctrl-C leaves it with exit code
130, rolling back too.

With -e SCRIPT it runs the statements of SCRIPT and exits. The whole script
is parsed first: a malformed statement, a transaction that is never
committed or rolled back, or a commit without begin rejects the script with
exit code 2 before anything is sent. The first statement that fails stops
the script, rolls back the open transaction and sets the exit code.

` + txnShellHelp + `
Results: get prints the value or (not found); put and del print OK; scan
prints "key value" lines (nothing when the span is empty); begin prints
"BEGIN txn ID"; rollback "ROLLED BACK txn ID"; commit prints
"COMMITTED txn ID path=1PC|2PC|read-only ranges=R1,R2 round-trips=N
durable-writes=N lock-wait=D". With -w json every result is one JSON object
on its own line (JSON Lines) with a "statement" field; transaction ids are
strings, since they do not fit a double. Errors and notices go to stderr.

A transaction takes its locks as its statements run and holds them until
commit or rollback, so an open transaction in an idle shell blocks others
that touch its keys. It lives at most 60s: past that its next statement
fails and it is aborted.

--timeout bounds connecting and each statement, not the whole session.

Exit codes with -e: 0 every statement succeeded; 1 the transaction aborted
(deadlock, lock-wait timeout, a participant lost its state ...): nothing it
wrote was applied and running the script again may succeed; 2 the script
is malformed; 4 the cluster is unavailable; 5 the commit is ambiguous: it
may or may not have been applied (look it up with "vowdb txn status ID");
6 the server refused a statement (key or value too large, transaction
over its size limit). A cas that does not swap is not a failure.`

const txnExample = `  vowdb txn -e 'begin; put acct/a 90; put acct/b 110; commit'
  vowdb txn -e 'begin; get acct/a; cas acct/a 90 80; put "greeting" "hello world"; commit'
  vowdb txn -e 'scan acct/ acct0 10'
  vowdb txn                       # interactive: type statements, Ctrl-D to leave
  vowdb txn status 4811216352115375312
  vowdb txn ls -w json`

func newTxnCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	var script string
	cmd := &cobra.Command{
		Use:     "txn [-e SCRIPT]",
		Short:   "Run transactions in a shell or a script; inspect transactions",
		Long:    txnLong,
		Example: txnExample,
		Args:    groupArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var stmts []txnStmt
			isScript := cmd.Flags().Changed("execute")
			if isScript {
				var err error
				if stmts, err = parseTxnScript(script); err != nil {
					return err
				}
				if err := checkTxnScript(stmts); err != nil {
					return err
				}
			}
			db, err := cf.openTxnDB(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			s := &txnShell{db: db, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), json: g.format == formatJSON,
				script: isScript, timeout: cf.timeout}
			if isScript {
				return s.runScript(cmd.Context(), stmts)
			}
			in := cmd.InOrStdin()
			prompt := isTerminal(in)
			if prompt {
				fmt.Fprintln(s.errOut, `vowdb transaction shell: type "help" for the statements, Ctrl-D or "exit" to leave.`)
			}
			return s.interactive(cmd.Context(), in, prompt)
		},
	}
	cf.register(cmd.PersistentFlags())
	cmd.PersistentFlags().Lookup("timeout").Usage = "bound on connecting and on each statement (the whole command for txn status and txn ls)"
	cmd.Flags().StringVarP(&script, "execute", "e", "", "run the statements of this script and exit, instead of reading stdin")
	cmd.AddCommand(newTxnStatusCmd(g, cf), newTxnLsCmd(g, cf))
	return cmd
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// openTxnDB opens a client for a session: --timeout bounds connecting, and
// each statement sets its own bound.
func (cf *clientFlags) openTxnDB(ctx context.Context) (*vowdb.DB, error) {
	eps, err := cf.check()
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	db, err := vowdb.Open(octx, vowdb.Config{Endpoints: eps, RequestTimeout: cf.timeout, DialTimeout: cf.timeout})
	if err != nil {
		return nil, openError(err)
	}
	return db, nil
}

func newTxnStatusCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Print what became of a transaction: COMMITTED, ABORTED, PENDING or UNKNOWN",
		Long: `Status asks the cluster what became of transaction ID (as printed by begin,
commit, an error or txn ls) and prints one word:

  COMMITTED  it committed; its writes are applied or will be
  ABORTED    it aborted; none of its writes were applied
  PENDING    it is in flight; ask again later
  UNKNOWN    no node knows it: it never committed, or it is forgotten

Any node answers for the whole cluster. Use it to resolve an ambiguous
commit (exit code 5). With -w json it prints {"txn": "ID", "state": "..."}.

Exit codes: 0 for any of the four answers; 6 when ID is not a number from 1
to 9223372036854775807; 4 when the cluster is unavailable.`,
		Example: `  vowdb txn status 4811216352115375312`,
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseTxnID(args[0])
			if err != nil {
				return fmt.Errorf("%w: %v", vowdb.ErrInvalidArgument, err)
			}
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				state, err := db.TxnStatus(ctx, id)
				if err != nil {
					return err
				}
				if g.format == formatJSON {
					return writeJSON(cmd.OutOrStdout(), txnStatusJSON{Txn: fmt.Sprint(id), State: state.String()})
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), state)
				return err
			})
		},
	}
}

func newTxnLsCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the transactions in flight",
		Long: `Ls lists the transactions in flight in the cluster, oldest first: id, the
node coordinating the commit (- until the commit starts), state (ACTIVE:
running statements; PREPARED: voted in two-phase commit; COMMITTING: being
committed by its coordinator; PENDING: its transaction record is
undecided), the ranges it touched, its age and, while ACTIVE, IDLE: how
long since its client was last heard on its ranges. A client keeps an open
transaction alive every second, so a larger IDLE means the client is gone
or cut off; each range aborts the transaction past vowdb start
--txn-idle-timeout (4s).

With -w json it prints an array of {"id", "coordinator", "state", "ranges",
"age_seconds", "idle_seconds"} (idle_seconds 0: not ACTIVE); ids are
strings.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				txns, err := db.Txns(ctx)
				if err != nil {
					return err
				}
				return writeTxns(cmd.OutOrStdout(), string(g.format), txns)
			})
		},
	}
}

func newLocksCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "locks",
		Short: "List lock waits, recent deadlocks and held locks",
		Long: `Locks shows who waits for whom across the cluster, longest wait first: the
waiting transaction (- for a single-key operation outside any transaction),
the one holding the lock (- if unknown), the key, the lock mode asked for
(S shared, X exclusive), how long it has waited, and the range and node
where it waits.

Then it lists the recent deadlocks, newest first: when each was broken, its
waits-for cycle, and the victim that was aborted to break it.

Last it lists every lock held in the range leaders' lock tables: the
holder (- for a single-key operation outside any transaction), the key,
END (- for a lock on the key alone; else the lock covers [KEY, END), as a
scan's does; <max> is the end of the keyspace), the mode, and the range
and node.

With -w json it prints {"waits": [...], "deadlocks": [...], "held": [...]}:
waits have "waiter", "holder" (transaction ids as strings; null for - ),
"key" or "key_base64", "mode", "waited_seconds", "range" and "node";
deadlocks have "time" (RFC 3339, UTC), "cycle" and "victim"; held locks
have "holder", "key" or "key_base64", "end_key" or "end_key_base64" (absent
for a lock on the key alone; "" for the end of the keyspace), "mode",
"range" and "node".`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				rep, err := db.LockTable(ctx)
				if err != nil {
					return err
				}
				return writeLocks(cmd.OutOrStdout(), string(g.format), time.Now(), rep)
			})
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

// txnJSON is the JSON form of an in-flight transaction (txn ls).
type txnJSON struct {
	ID          string   `json:"id"`
	Coordinator uint64   `json:"coordinator"`
	State       string   `json:"state"`
	Ranges      []uint64 `json:"ranges"`
	AgeSeconds  float64  `json:"age_seconds"`
	IdleSeconds float64  `json:"idle_seconds"`
}

func writeTxns(w io.Writer, format string, txns []vowdb.TxnInfo) error {
	if format == formatJSON {
		out := make([]txnJSON, 0, len(txns))
		for _, t := range txns {
			out = append(out, txnJSON{ID: fmt.Sprint(t.ID), Coordinator: t.Coordinator, State: t.State,
				Ranges: nonNil(t.Ranges), AgeSeconds: t.Age.Seconds(), IdleSeconds: t.Idle.Seconds()})
		}
		return writeJSON(w, out)
	}
	rows := make([][]string, 0, len(txns))
	for _, t := range txns {
		idle := "-"
		if t.Idle > 0 {
			idle = txnDuration(t.Idle)
		}
		rows = append(rows, []string{fmt.Sprint(t.ID), nodeOrDash(t.Coordinator), t.State, idList(t.Ranges), txnDuration(t.Age), idle})
	}
	return writeTable(w, []string{"TXN", "COORDINATOR", "STATE", "RANGES", "AGE", "IDLE"}, rows)
}

// lockWaitJSON is the JSON form of a lock wait; a nil id is "-" in a table.
type lockWaitJSON struct {
	Waiter        *string `json:"waiter"`
	Holder        *string `json:"holder"`
	Key           *string `json:"key,omitempty"`
	KeyBase64     *string `json:"key_base64,omitempty"`
	Mode          string  `json:"mode"`
	WaitedSeconds float64 `json:"waited_seconds"`
	Range         uint64  `json:"range"`
	Node          uint64  `json:"node"`
}

type deadlockJSON struct {
	Time   string   `json:"time"`
	Cycle  []string `json:"cycle"`
	Victim string   `json:"victim"`
}

type heldLockJSON struct {
	Holder       *string `json:"holder"`
	Key          *string `json:"key,omitempty"`
	KeyBase64    *string `json:"key_base64,omitempty"`
	EndKey       *string `json:"end_key,omitempty"`
	EndKeyBase64 *string `json:"end_key_base64,omitempty"`
	Mode         string  `json:"mode"`
	Range        uint64  `json:"range"`
	Node         uint64  `json:"node"`
}

type locksJSON struct {
	Waits     []lockWaitJSON `json:"waits"`
	Deadlocks []deadlockJSON `json:"deadlocks"`
	Held      []heldLockJSON `json:"held"`
}

// txnIDJSON renders a transaction id for JSON; 0 (none or unknown) is null.
func txnIDJSON(id vowdb.TxnID) *string {
	if id == 0 {
		return nil
	}
	s := fmt.Sprint(id)
	return &s
}

func txnIDCell(id vowdb.TxnID) string {
	if id == 0 {
		return "-"
	}
	return fmt.Sprint(id)
}

func nodeOrDash(id uint64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(id, 10)
}

// txnCycle renders a waits-for cycle as "a -> b -> a".
func txnCycle(cycle []vowdb.TxnID) string {
	if len(cycle) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(cycle)+1)
	for _, t := range cycle {
		parts = append(parts, fmt.Sprint(t))
	}
	return strings.Join(append(parts, parts[0]), " -> ")
}

// writeLocks prints the lock waits, the deadlocks, then the held locks
// (locks). A table prints every header even when there is nothing to show.
func writeLocks(w io.Writer, format string, now time.Time, rep vowdb.LockReport) error {
	waits, deadlocks := rep.Waits, rep.Deadlocks
	if format == formatJSON {
		out := locksJSON{Waits: make([]lockWaitJSON, 0, len(waits)), Deadlocks: make([]deadlockJSON, 0, len(deadlocks)),
			Held: make([]heldLockJSON, 0, len(rep.Held))}
		for _, h := range rep.Held {
			j := heldLockJSON{Holder: txnIDJSON(h.Holder), Mode: h.Mode, Range: h.Range, Node: h.Node}
			j.Key, j.KeyBase64 = jsonBytes(h.Key)
			if !h.Point {
				j.EndKey, j.EndKeyBase64 = jsonBytes(h.EndKey)
			}
			out.Held = append(out.Held, j)
		}
		for _, l := range waits {
			j := lockWaitJSON{Waiter: txnIDJSON(l.Waiter), Holder: txnIDJSON(l.Holder), Mode: l.Mode,
				WaitedSeconds: l.Wait.Seconds(), Range: l.Range, Node: l.Node}
			j.Key, j.KeyBase64 = jsonBytes(l.Key)
			out.Waits = append(out.Waits, j)
		}
		for _, d := range deadlocks {
			j := deadlockJSON{Time: d.At.UTC().Format(time.RFC3339Nano), Cycle: make([]string, 0, len(d.Cycle)),
				Victim: fmt.Sprint(d.Victim)}
			for _, t := range d.Cycle {
				j.Cycle = append(j.Cycle, fmt.Sprint(t))
			}
			out.Deadlocks = append(out.Deadlocks, j)
		}
		return writeJSON(w, out)
	}
	rows := make([][]string, 0, len(waits))
	for _, l := range waits {
		rows = append(rows, []string{txnIDCell(l.Waiter), txnIDCell(l.Holder), tableBytes(l.Key), l.Mode,
			txnDuration(l.Wait), strconv.FormatUint(l.Range, 10), nodeOrDash(l.Node)})
	}
	if err := writeTable(w, []string{"WAITER", "HOLDER", "KEY", "MODE", "WAITED", "RANGE", "NODE"}, rows); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	rows = rows[:0]
	for _, d := range deadlocks {
		rows = append(rows, []string{age(now, d.At), txnCycle(d.Cycle), fmt.Sprint(d.Victim)})
	}
	if err := writeTable(w, []string{"DEADLOCK TIME", "CYCLE", "VICTIM"}, rows); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	rows = rows[:0]
	for _, h := range rep.Held {
		end := "-"
		switch {
		case !h.Point && len(h.EndKey) == 0:
			end = "<max>"
		case !h.Point:
			end = tableBytes(h.EndKey)
		}
		rows = append(rows, []string{txnIDCell(h.Holder), tableBytes(h.Key), end, h.Mode,
			strconv.FormatUint(h.Range, 10), nodeOrDash(h.Node)})
	}
	return writeTable(w, []string{"HOLDER", "KEY", "END", "MODE", "RANGE", "NODE"}, rows)
}
