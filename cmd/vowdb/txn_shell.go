package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vowdb/vowdb"
)

// The transaction shell (vowdb txn) reads statements, one per line or
// separated by ";". A statement is a keyword followed by arguments separated
// by spaces. An argument in double quotes is a Go string literal ("two
// words", "", "a\x00b"), so every key or value the shell prints can be typed
// back as it was printed. An unquoted "-" stands for "none" where the syntax
// allows it (the open ends of a scan, an absent OLD value of cas); a quoted
// "-" is the one-byte string.

// txnShellHelp lists the statements (the help statement and vowdb txn --help).
const txnShellHelp = `Statements (separated by ";" or newlines; keywords are case-insensitive):
  begin                     start a transaction; it lasts until commit or rollback
  get KEY                   print the value of KEY, or (not found)
  put KEY VALUE             set KEY to VALUE
  del KEY                   delete KEY (delete is an alias)
  scan START [END] [LIMIT]  print "key value" lines for the keys in [START, END)
                            in order; - as START or END is the open end of the
                            keyspace; LIMIT 0 (the default) prints every key
  cas KEY OLD NEW           set KEY to NEW if its value is OLD (OLD - : KEY must
                            be absent); prints swapped: true or swapped: false
  commit                    commit the open transaction
  rollback                  roll the open transaction back
  status ID                 print COMMITTED, ABORTED, PENDING or UNKNOWN
  help                      print this list
  exit                      leave, rolling back an open transaction (quit is an alias)

Outside begin ... commit each statement runs in a transaction of its own
(autocommit), retried by the client if it aborts for a retryable reason.
Double-quoted arguments are Go string literals: "two words", "", "a\x00b";
an unquoted - means "none" where the syntax allows it, "-" is the string -.
Keys and values print the same way, so they can be typed back: as they are
when printable, free of spaces, ';' and '"' and not -, otherwise Go-quoted.
`

// txnStmtSpec is the grammar of one statement.
type txnStmtSpec struct {
	syntax   string // as the help and the errors show it
	min, max int    // arguments after the keyword
}

var txnStmtSpecs = map[string]txnStmtSpec{
	"begin":    {"begin", 0, 0},
	"get":      {"get KEY", 1, 1},
	"put":      {"put KEY VALUE", 2, 2},
	"del":      {"del KEY", 1, 1},
	"scan":     {"scan START [END] [LIMIT]", 1, 3},
	"cas":      {"cas KEY OLD NEW", 3, 3},
	"commit":   {"commit", 0, 0},
	"rollback": {"rollback", 0, 0},
	"status":   {"status ID", 1, 1},
	"help":     {"help", 0, 0},
	"exit":     {"exit", 0, 0},
}

// txnStmtNames lists the statements in the order the errors name them.
const txnStmtNames = "begin, get, put, del, scan, cas, commit, rollback, status, help, exit"

var txnStmtAliases = map[string]string{"delete": "del", "quit": "exit"}

// txnToken is one word of a statement.
type txnToken struct {
	s      string
	quoted bool
}

// none reports whether the token is the unquoted "-".
func (t txnToken) none() bool { return !t.quoted && t.s == "-" }

// txnStmt is a parsed statement, checked and ready to run.
type txnStmt struct {
	n     int    // position in the script or line, from 1
	text  string // as written, trimmed
	op    string // the keyword, aliases resolved
	key   []byte // get, put, del, cas: KEY; scan: START
	value []byte // put: VALUE; cas: NEW
	old   []byte // cas: OLD; nil means KEY must be absent
	end   []byte // scan: END; nil means the end of the keyspace
	limit int    // scan
	id    vowdb.TxnID
}

// txnStmtError is a statement that cannot run as written. It is a usage
// error: nothing was sent.
func txnStmtError(n int, text, format string, args ...any) error {
	return usageErrorf("statement %d (%s): %s", n, txnShort(text), fmt.Sprintf(format, args...))
}

// txnShort shortens a statement for an error message: a statement may hold
// a value of a megabyte.
func txnShort(text string) string {
	const max = 60
	if len(text) <= max {
		return text
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + "..."
}

// isTxnSpace reports whether c separates the words of a statement.
func isTxnSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' }

// parseTxnScript parses every statement of src. It fails on the first
// malformed one, so a caller that parses before running runs all or none.
func parseTxnScript(src string) ([]txnStmt, error) {
	var out []txnStmt
	var toks []txnToken
	start := 0 // where the current statement began in src
	flush := func(end int) error {
		if len(toks) > 0 {
			st, err := compileTxnStmt(len(out)+1, strings.TrimSpace(src[start:end]), toks)
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		toks, start = nil, end+1
		return nil
	}
	// lineText is the current statement up to the end of its line, for
	// errors found before the statement ends.
	lineText := func(i int) string {
		end := strings.IndexAny(src[i:], "\n")
		if end < 0 {
			return strings.TrimSpace(src[start:])
		}
		return strings.TrimSpace(src[start : i+end])
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ';' || c == '\n':
			if err := flush(i); err != nil {
				return nil, err
			}
			i++
		case isTxnSpace(c):
			i++
		case c == '"':
			j := i + 1
			for j < len(src) && src[j] != '"' && src[j] != '\n' {
				if src[j] == '\\' && j+1 < len(src) && src[j+1] != '\n' {
					j++
				}
				j++
			}
			if j >= len(src) || src[j] != '"' {
				return nil, txnStmtError(len(out)+1, lineText(i), "unterminated quoted string %s", txnShort(src[i:j]))
			}
			s, err := strconv.Unquote(src[i : j+1])
			if err != nil {
				return nil, txnStmtError(len(out)+1, lineText(i), "bad quoted string %s: want a Go string literal such as \"two words\" or \"a\\x00b\"", txnShort(src[i:j+1]))
			}
			if j+1 < len(src) && !isTxnSpace(src[j+1]) && src[j+1] != ';' && src[j+1] != '\n' {
				return nil, txnStmtError(len(out)+1, lineText(i), "text right after the closing quote of %s: put a space between arguments", txnShort(src[i:j+1]))
			}
			toks = append(toks, txnToken{s: s, quoted: true})
			i = j + 1
		default:
			j := i
			for j < len(src) && !isTxnSpace(src[j]) && src[j] != ';' && src[j] != '\n' {
				j++
			}
			toks = append(toks, txnToken{s: src[i:j]})
			i = j
		}
	}
	if err := flush(len(src)); err != nil {
		return nil, err
	}
	return out, nil
}

// compileTxnStmt checks a statement's words against its grammar.
func compileTxnStmt(n int, text string, toks []txnToken) (txnStmt, error) {
	st := txnStmt{n: n, text: text, op: strings.ToLower(toks[0].s)}
	if a, ok := txnStmtAliases[st.op]; ok {
		st.op = a
	}
	spec, ok := txnStmtSpecs[st.op]
	if !ok || toks[0].quoted {
		return st, txnStmtError(n, text, "unknown statement %q; the statements are %s", toks[0].s, txnStmtNames)
	}
	args := toks[1:]
	bad := func(format string, a ...any) error {
		return txnStmtError(n, text, "%s; syntax: %s", fmt.Sprintf(format, a...), spec.syntax)
	}
	if len(args) < spec.min || len(args) > spec.max {
		want := fmt.Sprintf("%d", spec.min)
		if spec.max != spec.min {
			want = fmt.Sprintf("%d to %d", spec.min, spec.max)
		}
		return st, bad("%s takes %s argument(s), got %d", st.op, want, len(args))
	}
	key := func(t txnToken, name string) ([]byte, error) {
		if t.s == "" {
			return nil, bad("%s must not be empty", name)
		}
		return []byte(t.s), nil
	}
	var err error
	switch st.op {
	case "get", "put", "del", "cas":
		if st.key, err = key(args[0], "KEY"); err != nil {
			return st, err
		}
		switch st.op {
		case "put":
			st.value = []byte(args[1].s)
		case "cas":
			if !args[1].none() {
				st.old = []byte(args[1].s) // non-nil even when empty: expect the empty value
			}
			st.value = []byte(args[2].s)
		}
	case "scan":
		if args[0].none() {
			st.key = []byte{0} // keys are never empty, so "\x00" is the first possible key
		} else if st.key, err = key(args[0], "START"); err != nil {
			return st, err
		}
		if len(args) > 1 && !args[1].none() {
			if st.end, err = key(args[1], "END"); err != nil {
				return st, err
			}
			if bytes.Compare(st.end, st.key) <= 0 {
				return st, bad("END %s is not after START %s", txnShort(txnShellBytes(st.end)), txnShort(txnShellBytes(st.key)))
			}
		}
		if len(args) > 2 {
			l, err := strconv.Atoi(args[2].s)
			if err != nil || l < 0 {
				return st, bad("LIMIT %q is not a number >= 0", args[2].s)
			}
			st.limit = l
		}
	case "status":
		if st.id, err = parseTxnID(args[0].s); err != nil {
			return st, bad("%v", err)
		}
	}
	return st, nil
}

// parseTxnID reads a transaction id as printed by begin, commit and txn ls.
func parseTxnID(s string) (vowdb.TxnID, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 || id >= 1<<63 {
		return 0, fmt.Errorf("transaction id %q is not a number from 1 to %d", s, uint64(1<<63-1))
	}
	return vowdb.TxnID(id), nil
}

// checkTxnScript checks how the statements of a -e script nest: a script
// runs to its end unless a statement fails, so where a transaction is open
// is known before anything runs. A transaction must end in the script
// (commit or rollback), and nothing may follow exit.
func checkTxnScript(stmts []txnStmt) error {
	if len(stmts) == 0 {
		return usageErrorf("the script has no statements")
	}
	open := 0 // the statement that began the open transaction
	for i, st := range stmts {
		switch st.op {
		case "begin":
			if open != 0 {
				return txnStmtError(st.n, st.text, "the transaction begun at statement %d is still open; commit or roll it back first", open)
			}
			open = st.n
		case "commit", "rollback":
			if open == 0 {
				return txnStmtError(st.n, st.text, "no transaction is open; start one with begin")
			}
			open = 0
		case "exit":
			if i+1 < len(stmts) {
				next := stmts[i+1]
				return txnStmtError(next.n, next.text, "comes after exit (statement %d) and would never run", st.n)
			}
		}
		if st.op == "exit" {
			break
		}
	}
	if open != 0 {
		return txnStmtError(open, stmts[open-1].text, "the transaction is never committed or rolled back; end it with commit or rollback")
	}
	return nil
}

// txnShellBytes renders a key or value as the shell would read it back: as
// itself when it is a printable word, otherwise Go-quoted.
func txnShellBytes(b []byte) string {
	if !printable(b) || string(b) == "-" || bytes.ContainsAny(b, `;"`) || bytes.ContainsFunc(b, unicode.IsSpace) {
		return strconv.Quote(string(b))
	}
	return string(b)
}

// txnShell runs statements against a cluster and prints their results.
type txnShell struct {
	db      *vowdb.DB
	out     io.Writer // results
	errOut  io.Writer // errors and notices
	json    bool
	script  bool          // -e: failures end the run
	timeout time.Duration // per statement
	tx      *vowdb.Txn    // the open transaction, if any
}

// errNoTxn is the failure of commit and rollback with no open transaction.
var errNoTxn = errors.New("no transaction is open; start one with begin")

// txnEnds reports whether a failed operation ended its transaction. Only an
// invalid argument caught before anything changed leaves it open; a limit
// exceeded rolls it back.
func txnEnds(err error) bool {
	return !errors.Is(err, vowdb.ErrInvalidArgument) || errors.Is(err, vowdb.ErrTxnLimit)
}

// run runs one statement. A failure names the statement and says what
// became of the open transaction; in a script the transaction is rolled
// back.
func (s *txnShell) run(ctx context.Context, st txnStmt) error {
	before := s.tx
	err := s.exec(ctx, st)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("statement %d (%s): %w", st.n, txnShort(st.text), err)
	if before == nil || (st.op == "begin" && s.tx == before) {
		return err // no transaction, or the open one is untouched
	}
	id := before.ID()
	switch {
	case s.tx != nil && !s.script:
		return fmt.Errorf("%w; transaction %d is still open", err, id)
	case s.tx != nil:
		s.rollback(ctx)
		return fmt.Errorf("%w; transaction %d rolled back: nothing it wrote was applied", err, id)
	case errors.Is(err, vowdb.ErrAmbiguousCommit):
		how := fmt.Sprintf("status %d", id)
		if s.script {
			how = "vowdb txn status " + fmt.Sprint(id)
		}
		return fmt.Errorf("%w; the outcome of transaction %d is unknown: look it up with %q", err, id, how)
	}
	return fmt.Errorf("%w; transaction %d is over: nothing it wrote was applied", err, id)
}

// rollback rolls the open transaction back, if any, and reports its id.
func (s *txnShell) rollback(ctx context.Context) vowdb.TxnID {
	if s.tx == nil {
		return 0
	}
	tx := s.tx
	s.tx = nil
	// Rollback only sends (it never fails), and must run even when ctx was
	// cancelled by an interrupt.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	_ = tx.Rollback(rctx)
	return tx.ID()
}

// leave ends the session, rolling back the open transaction and saying so.
func (s *txnShell) leave(ctx context.Context, why string) {
	if id := s.rollback(ctx); id != 0 {
		fmt.Fprintf(s.errOut, "%s: transaction %d rolled back: nothing it wrote was applied\n", why, id)
	}
}

func (s *txnShell) exec(ctx context.Context, st txnStmt) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	switch st.op {
	case "help":
		w := s.out
		if s.json {
			w = s.errOut // stdout carries JSON only
		}
		_, err := io.WriteString(w, txnShellHelp)
		return err
	case "status":
		state, err := s.db.TxnStatus(ctx, st.id)
		if err != nil {
			return err
		}
		return s.emit(state.String(), txnStatusJSON{Statement: "status", Txn: fmt.Sprint(st.id), State: state.String()})
	case "begin":
		if s.tx != nil {
			return fmt.Errorf("transaction %d is already open; commit or roll it back first", s.tx.ID())
		}
		tx, err := s.db.Begin(ctx)
		if err != nil {
			return err
		}
		s.tx = tx
		return s.emit(fmt.Sprintf("BEGIN txn %d", tx.ID()), txnBeginJSON{Statement: "begin", Txn: fmt.Sprint(tx.ID())})
	case "commit":
		if s.tx == nil {
			return errNoTxn
		}
		tx := s.tx
		s.tx = nil // whatever Commit returns, the transaction is over
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		return s.emitCommit(tx.ID(), tx.Receipt())
	case "rollback":
		if s.tx == nil {
			return errNoTxn
		}
		id := s.rollback(ctx)
		return s.emit(fmt.Sprintf("ROLLED BACK txn %d", id), txnBeginJSON{Statement: "rollback", Txn: fmt.Sprint(id)})
	}
	var res txnResult
	if s.tx != nil {
		var err error
		if res, err = s.data(ctx, s.tx, st); err != nil {
			if txnEnds(err) {
				s.rollback(ctx) // a no-op unless the client kept it open
			}
			return err
		}
	} else {
		err := s.db.Transact(ctx, func(ctx context.Context, tx *vowdb.Txn) error {
			var err error
			res, err = s.data(ctx, tx, st)
			return err
		})
		if err != nil {
			return err
		}
	}
	return s.emitData(st, res)
}

// txnResult is what a data statement returned.
type txnResult struct {
	value   []byte
	found   bool
	kvs     []vowdb.KeyValue
	swapped bool
}

// data runs get, put, del, scan or cas in tx.
func (s *txnShell) data(ctx context.Context, tx *vowdb.Txn, st txnStmt) (txnResult, error) {
	var r txnResult
	var err error
	switch st.op {
	case "get":
		r.value, err = tx.Get(ctx, st.key)
		r.found = err == nil
		if errors.Is(err, vowdb.ErrNotFound) {
			err = nil
		}
	case "put":
		err = tx.Put(ctx, st.key, st.value)
	case "del":
		err = tx.Delete(ctx, st.key)
	case "scan":
		r.kvs, err = tx.Scan(ctx, st.key, st.end, st.limit)
	case "cas":
		r.swapped, err = tx.CompareAndSwap(ctx, st.key, st.old, st.value)
	default:
		err = fmt.Errorf("statement %q cannot run in a transaction", st.op)
	}
	return r, err
}

// JSON forms of the statements' results, one object per line.
type (
	txnBeginJSON struct {
		Statement string `json:"statement"`
		Txn       string `json:"txn"`
	}
	txnStatusJSON struct {
		Statement string `json:"statement,omitempty"`
		Txn       string `json:"txn"`
		State     string `json:"state"`
	}
	txnOKJSON struct {
		Statement string `json:"statement"`
		OK        bool   `json:"ok"`
	}
	txnGetJSON struct {
		Statement string `json:"statement"`
		kvJSON
		Found bool `json:"found"`
	}
	txnScanJSON struct {
		Statement string   `json:"statement"`
		KVs       []kvJSON `json:"kvs"`
	}
	txnCasJSON struct {
		Statement string `json:"statement"`
		Swapped   bool   `json:"swapped"`
	}
	txnCommitJSON struct {
		Statement       string   `json:"statement"`
		Txn             string   `json:"txn"`
		State           string   `json:"state"`
		Path            string   `json:"path"`
		Ranges          []uint64 `json:"ranges"`
		Gateway         uint64   `json:"gateway"`
		RoundTrips      int      `json:"round_trips"`
		DurableWrites   int      `json:"durable_writes"`
		LockWaitSeconds float64  `json:"lock_wait_seconds"`
	}
)

// emit prints a result: text in table mode, one JSON line in json mode.
func (s *txnShell) emit(text string, j any) error {
	if s.json {
		enc := json.NewEncoder(s.out)
		enc.SetEscapeHTML(false)
		return enc.Encode(j)
	}
	if text == "" {
		return nil
	}
	_, err := fmt.Fprintln(s.out, text)
	return err
}

func (s *txnShell) emitData(st txnStmt, r txnResult) error {
	switch st.op {
	case "get":
		j := txnGetJSON{Statement: "get", Found: r.found}
		j.Key, j.KeyBase64 = jsonBytes(st.key)
		if !r.found {
			return s.emit("(not found)", j)
		}
		j.Value, j.ValueBase64 = jsonBytes(r.value)
		return s.emit(txnShellBytes(r.value), j)
	case "scan":
		j := txnScanJSON{Statement: "scan", KVs: make([]kvJSON, 0, len(r.kvs))}
		lines := make([]string, 0, len(r.kvs))
		for _, kv := range r.kvs {
			j.KVs = append(j.KVs, newKVJSON(kv))
			lines = append(lines, txnShellBytes(kv.Key)+" "+txnShellBytes(kv.Value))
		}
		return s.emit(strings.Join(lines, "\n"), j)
	case "cas":
		return s.emit(fmt.Sprintf("swapped: %t", r.swapped), txnCasJSON{Statement: "cas", Swapped: r.swapped})
	}
	return s.emit("OK", txnOKJSON{Statement: st.op, OK: true})
}

func (s *txnShell) emitCommit(id vowdb.TxnID, r *vowdb.Receipt) error {
	if r == nil {
		r = &vowdb.Receipt{}
	}
	text := fmt.Sprintf("COMMITTED txn %d path=%s ranges=%s round-trips=%d durable-writes=%d lock-wait=%s",
		id, r.Path, idList(r.Ranges), r.RoundTrips, r.DurableWrites, txnDuration(r.LockWait))
	return s.emit(text, txnCommitJSON{Statement: "commit", Txn: fmt.Sprint(id), State: vowdb.TxnCommitted.String(),
		Path: r.Path, Ranges: nonNil(r.Ranges), Gateway: r.Gateway, RoundTrips: r.RoundTrips,
		DurableWrites: r.DurableWrites, LockWaitSeconds: r.LockWait.Seconds()})
}

// runScript runs the statements of -e in order. The first failure stops
// the script and rolls back the open transaction.
func (s *txnShell) runScript(ctx context.Context, stmts []txnStmt) error {
	for _, st := range stmts {
		if st.op == "exit" {
			break
		}
		if err := s.run(ctx, st); err != nil {
			s.rollback(ctx)
			return err
		}
	}
	return nil
}

// txnLine is a line read from the shell's input.
type txnLine struct {
	text string
	err  error // io.EOF at the end of the input
}

// interactive reads statements from in until EOF or exit. A failing
// statement prints its error, skips the rest of its line, and the shell
// goes on. With prompt, "vowdb> " is printed before each line.
func (s *txnShell) interactive(ctx context.Context, in io.Reader, prompt bool) error {
	lines := make(chan txnLine)
	done := make(chan struct{})
	defer close(done)
	// Read in the background so that an interrupt ends the shell while it
	// waits for input.
	go func() {
		r := bufio.NewReader(in)
		for {
			text, err := r.ReadString('\n')
			select {
			case lines <- txnLine{text, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		if prompt {
			fmt.Fprint(s.errOut, "vowdb> ")
		}
		var l txnLine
		select {
		case <-ctx.Done():
			s.leave(ctx, "interrupted")
			return ctx.Err()
		case l = <-lines:
		}
		if stop, err := s.line(ctx, l.text); stop || err != nil {
			return err
		}
		switch {
		case errors.Is(l.err, io.EOF):
			if prompt {
				fmt.Fprintln(s.errOut)
			}
			s.leave(ctx, "end of input")
			return nil
		case l.err != nil:
			s.leave(ctx, "read error")
			return fmt.Errorf("reading statements: %w", l.err)
		}
	}
}

// line runs the statements of one input line. It reports whether the
// shell must stop (exit, or an interrupt, which it returns).
func (s *txnShell) line(ctx context.Context, text string) (stop bool, err error) {
	stmts, err := parseTxnScript(text)
	if err != nil {
		fmt.Fprintf(s.errOut, "Error: %v\n", err)
		return false, nil
	}
	for i, st := range stmts {
		if st.op == "exit" {
			s.leave(ctx, "exit")
			return true, nil
		}
		err := s.run(ctx, st)
		if ctx.Err() != nil {
			s.leave(ctx, "interrupted")
			return true, ctx.Err()
		}
		if err != nil {
			fmt.Fprintf(s.errOut, "Error: %v\n", err)
			if rest := len(stmts) - i - 1; rest > 0 {
				fmt.Fprintf(s.errOut, "skipped the %d statement(s) after it on the line\n", rest)
			}
			return false, nil
		}
	}
	return false, nil
}

// txnDuration renders a wait or an age for tables and receipts.
func txnDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		d = d.Round(time.Microsecond)
	case d < time.Second:
		d = d.Round(100 * time.Microsecond)
	case d < time.Minute:
		d = d.Round(100 * time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	return d.String()
}
