package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/testcluster"
)

func TestTxnParse(t *testing.T) {
	tests := []struct {
		src  string
		want []txnStmt // only the fields set are compared, with n and op
	}{
		{src: "", want: nil},
		{src: " ; \n ;; ", want: nil},
		{src: "BEGIN; Put a 1\nget a;commit", want: []txnStmt{
			{n: 1, op: "begin", text: "BEGIN"},
			{n: 2, op: "put", key: []byte("a"), value: []byte("1"), text: "Put a 1"},
			{n: 3, op: "get", key: []byte("a"), text: "get a"},
			{n: 4, op: "commit", text: "commit"}}},
		{src: `put "two words" "a;b"`, want: []txnStmt{{n: 1, op: "put", key: []byte("two words"), value: []byte("a;b")}}},
		{src: `put k ""`, want: []txnStmt{{n: 1, op: "put", key: []byte("k"), value: []byte{}}}},
		{src: `put "a\x00b" "\"q\"\n"`, want: []txnStmt{{n: 1, op: "put", key: []byte("a\x00b"), value: []byte("\"q\"\n")}}},
		{src: `put a"b c"d`, want: []txnStmt{{n: 1, op: "put", key: []byte(`a"b`), value: []byte(`c"d`)}}},
		{src: "delete k; quit", want: []txnStmt{{n: 1, op: "del", key: []byte("k")}, {n: 2, op: "exit"}}},
		{src: "cas k - new", want: []txnStmt{{n: 1, op: "cas", key: []byte("k"), value: []byte("new")}}},
		{src: `cas k "-" ""`, want: []txnStmt{{n: 1, op: "cas", key: []byte("k"), old: []byte("-"), value: []byte{}}}},
		{src: `cas k "" new`, want: []txnStmt{{n: 1, op: "cas", key: []byte("k"), old: []byte{}, value: []byte("new")}}},
		{src: "scan a", want: []txnStmt{{n: 1, op: "scan", key: []byte("a")}}},
		{src: "scan a b 10", want: []txnStmt{{n: 1, op: "scan", key: []byte("a"), end: []byte("b"), limit: 10}}},
		{src: "scan - - 3", want: []txnStmt{{n: 1, op: "scan", key: []byte{0}, limit: 3}}},
		{src: "status 9223372036854775807", want: []txnStmt{{n: 1, op: "status", id: 1<<63 - 1}}},
	}
	for _, tc := range tests {
		got, err := parseTxnScript(tc.src)
		if err != nil {
			t.Errorf("parse %q: %v", tc.src, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("parse %q: %d statements, want %d: %+v", tc.src, len(got), len(tc.want), got)
			continue
		}
		same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
		for i, w := range tc.want {
			g := got[i]
			if g.n != w.n || g.op != w.op || (w.text != "" && g.text != w.text) || !same(g.key, w.key) ||
				!same(g.value, w.value) || !same(g.old, w.old) || !same(g.end, w.end) || g.limit != w.limit || g.id != w.id {
				t.Errorf("parse %q: statement %d = %+v, want %+v", tc.src, i+1, g, w)
			}
		}
	}
}

func TestTxnParseErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"frob a", `statement 1 (frob a): unknown statement "frob"`},
		{`"get" a`, `unknown statement "get"`},
		{"begin; put a", "statement 2 (put a): put takes 2 argument(s), got 1; syntax: put KEY VALUE"},
		{"get", "syntax: get KEY"},
		{"get a b", "get takes 1 argument(s), got 2"},
		{"begin x", "syntax: begin"},
		{"scan", "scan takes 1 to 3 argument(s), got 0; syntax: scan START [END] [LIMIT]"},
		{"scan a b c d", "got 4"},
		{"scan b a", "END a is not after START b"},
		{"scan a a", "is not after START"},
		{"scan a b -1", `LIMIT "-1" is not a number >= 0`},
		{"scan a b x", `LIMIT "x"`},
		{`get ""`, "KEY must not be empty; syntax: get KEY"},
		{`scan ""`, "START must not be empty"},
		{"cas k old", "syntax: cas KEY OLD NEW"},
		{"status abc", `transaction id "abc" is not a number`},
		{"status 0", `transaction id "0"`},
		{"status 9223372036854775808", "is not a number from 1 to 9223372036854775807"},
		{`put "a b`, "unterminated quoted string"},
		{"put \"a\nb\" c", "unterminated quoted string"},
		{`put "a"b c`, "text right after the closing quote"},
		{`put "a\q" b`, "bad quoted string"},
	}
	for _, tc := range tests {
		_, err := parseTxnScript(tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse %q: error %v, want it to contain %q", tc.src, err, tc.want)
			continue
		}
		if exitCode(err) != exitUsage {
			t.Errorf("parse %q: exit code %d, want %d", tc.src, exitCode(err), exitUsage)
		}
	}
	// A long statement is shortened in errors.
	_, err := parseTxnScript("put k " + strings.Repeat("v", 1<<20) + " extra")
	if err == nil || len(err.Error()) > 300 || !strings.Contains(err.Error(), "...") {
		t.Errorf("error for a 1 MiB statement is not shortened: %.400v", err)
	}
}

func TestTxnScriptCheck(t *testing.T) {
	tests := []struct{ src, want string }{
		{"begin; put a 1; commit", ""},
		{"begin; rollback; begin; commit; get a", ""},
		{"get a; exit", ""},
		{"", "the script has no statements"},
		{"begin; begin", "statement 2 (begin): the transaction begun at statement 1 is still open"},
		{"commit", "statement 1 (commit): no transaction is open"},
		{"begin; commit; rollback", "statement 3 (rollback): no transaction is open"},
		{"put a 1; begin; put b 2", "statement 2 (begin): the transaction is never committed or rolled back"},
		{"begin; exit", "statement 1 (begin): the transaction is never committed"},
		{"exit; get a", "statement 2 (get a): comes after exit (statement 1)"},
	}
	for _, tc := range tests {
		stmts, err := parseTxnScript(tc.src)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.src, err)
		}
		err = checkTxnScript(stmts)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("check %q: %v", tc.src, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("check %q: error %v, want it to contain %q", tc.src, err, tc.want)
		case tc.want != "" && exitCode(err) != exitUsage:
			t.Errorf("check %q: exit code %d, want %d", tc.src, exitCode(err), exitUsage)
		}
	}
}

// TestTxnShellBytes checks that every printed key or value reads back as
// the same bytes, and that plain words print as themselves.
func TestTxnShellBytes(t *testing.T) {
	plain := map[string]string{"a": "a", "acct/001": "acct/001", `a"b`: `"a\"b"`, "two words": `"two words"`,
		"": `""`, "-": `"-"`, "a;b": `"a;b"`, "<x>": `"<x>"`, "tab\there": `"tab\there"`, "\x00\xff": `"\x00\xff"`,
		"(not found)": `"(not found)"`, "héllo": "héllo"}
	for in, want := range plain {
		got := txnShellBytes([]byte(in))
		if got != want {
			t.Errorf("txnShellBytes(%q) = %s, want %s", in, got, want)
		}
		stmts, err := parseTxnScript("put k " + got)
		if err != nil || len(stmts) != 1 || string(stmts[0].value) != in {
			t.Errorf("%s does not read back as %q: %+v %v", got, in, stmts, err)
		}
	}
}

func TestTxnDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", 1500 * time.Nanosecond: "2µs", 1234567 * time.Nanosecond: "1.2ms",
		1549 * time.Millisecond: "1.5s", 90*time.Second + 400*time.Millisecond: "1m30s"} {
		if got := txnDuration(d); got != want {
			t.Errorf("txnDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestTxnsWrite: txn ls prints IDLE for ACTIVE transactions and "-" for
// the others, and idle_seconds in JSON.
func TestTxnsWrite(t *testing.T) {
	txns := []vowdb.TxnInfo{
		{ID: 7, State: "ACTIVE", Ranges: []uint64{2, 3}, Age: 2600 * time.Millisecond, Idle: 1200 * time.Millisecond},
		{ID: 9, Coordinator: 1, State: "PREPARED", Ranges: []uint64{4}, Age: 3 * time.Second},
	}
	var b bytes.Buffer
	if err := writeTxns(&b, formatTable, txns); err != nil {
		t.Fatal(err)
	}
	want := `TXN  COORDINATOR  STATE     RANGES  AGE   IDLE
7    -            ACTIVE    2,3     2.6s  1.2s
9    1            PREPARED  4       3s    -
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := writeTxns(&b, formatJSON, txns); err != nil {
		t.Fatal(err)
	}
	var j []struct {
		ID          string  `json:"id"`
		IdleSeconds float64 `json:"idle_seconds"`
	}
	if err := json.Unmarshal(b.Bytes(), &j); err != nil || len(j) != 2 || j[0].IdleSeconds != 1.2 || j[1].IdleSeconds != 0 {
		t.Fatalf("json %s: %+v %v", b.String(), j, err)
	}
}

func TestLocksWrite(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	waits := []vowdb.LockWait{
		{Waiter: 11, Holder: 22, Key: []byte("k"), Mode: "X", Wait: 1500 * time.Millisecond, Range: 3, Node: 2},
		{Waiter: 0, Holder: 0, Key: []byte("\x00"), Mode: "S", Wait: time.Millisecond, Range: 4, Node: 1},
	}
	dls := []vowdb.Deadlock{{Cycle: []vowdb.TxnID{11, 22, 33}, Victim: 33, At: now.Add(-2 * time.Second)}}
	held := []vowdb.HeldLock{
		{Holder: 22, Key: []byte("k"), Point: true, Mode: "X", Range: 3, Node: 2},
		{Holder: 44, Key: []byte("a"), EndKey: []byte("m"), Mode: "S", Range: 3, Node: 2},
		{Holder: 0, Key: []byte("z"), Mode: "S", Range: 5, Node: 1},
	}
	rep := vowdb.LockReport{Held: held, Waits: waits, Deadlocks: dls}
	var b bytes.Buffer
	if err := writeLocks(&b, formatTable, now, rep); err != nil {
		t.Fatal(err)
	}
	want := `WAITER  HOLDER  KEY     MODE  WAITED  RANGE  NODE
11      22      k       X     1.5s    3      2
-       -       "\x00"  S     1ms     4      1

DEADLOCK TIME  CYCLE                 VICTIM
2s ago         11 -> 22 -> 33 -> 11  33

HOLDER  KEY  END    MODE  RANGE  NODE
22      k    -      X     3      2
44      a    m      S     3      2
-       z    <max>  S     5      1
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := writeLocks(&b, formatJSON, now, rep); err != nil {
		t.Fatal(err)
	}
	var j struct {
		Waits []struct {
			Waiter, Holder *string
			Key            *string
			KeyBase64      *string `json:"key_base64"`
			Mode           string
			Waited         float64 `json:"waited_seconds"`
			Range, Node    uint64
		}
		Deadlocks []struct {
			Time   string
			Cycle  []string
			Victim string
		}
		Held []struct {
			Holder      *string
			Key         string
			EndKey      *string `json:"end_key"`
			Mode        string
			Range, Node uint64
		}
	}
	if err := json.Unmarshal(b.Bytes(), &j); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	if len(j.Waits) != 2 || *j.Waits[0].Waiter != "11" || *j.Waits[0].Holder != "22" || *j.Waits[0].Key != "k" ||
		j.Waits[0].Waited != 1.5 || j.Waits[1].Waiter != nil || j.Waits[1].Holder != nil || j.Waits[1].Key == nil {
		t.Errorf("waits: %s", b.String())
	}
	if len(j.Deadlocks) != 1 || j.Deadlocks[0].Time != "2026-01-02T03:04:03Z" || strings.Join(j.Deadlocks[0].Cycle, ",") != "11,22,33" ||
		j.Deadlocks[0].Victim != "33" {
		t.Errorf("deadlocks: %s", b.String())
	}
	if h := j.Held; len(h) != 3 || *h[0].Holder != "22" || h[0].Key != "k" || h[0].EndKey != nil || h[0].Mode != "X" ||
		*h[1].EndKey != "m" || h[2].Holder != nil || *h[2].EndKey != "" || h[2].Range != 5 || h[2].Node != 1 {
		t.Errorf("held: %s", b.String())
	}
	// Nothing to show: every header in a table, empty arrays in JSON.
	b.Reset()
	_ = writeLocks(&b, formatJSON, now, vowdb.LockReport{})
	if !strings.Contains(b.String(), `"waits": []`) || !strings.Contains(b.String(), `"deadlocks": []`) ||
		!strings.Contains(b.String(), `"held": []`) {
		t.Errorf("empty json: %s", b.String())
	}
}

// TestTxnUsage covers the paths of txn and locks that never reach a
// cluster.
func TestTxnUsage(t *testing.T) {
	unreachable := map[string]string{"VOWDB_ENDPOINTS": "127.0.0.1:1", "VOWDB_TIMEOUT": "2s"}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "txn help", args: []string{"txn", "--help"}, wantStdout: "cas KEY OLD NEW"},
		{name: "root lists txn", args: []string{"--help"}, wantStdout: "locks"},
		{name: "locks help", args: []string{"locks", "--help"}, wantStdout: "deadlocks"},
		{name: "status help", args: []string{"txn", "status", "--help"}, wantStdout: "UNKNOWN"},
		{name: "unknown subcommand", args: []string{"txn", "stats"}, wantCode: 2, wantStderr: `did you mean "status"?`},
		{name: "status arity", args: []string{"txn", "status"}, wantCode: 2, wantStderr: "Run 'vowdb txn status --help'"},
		{name: "status bad id", env: unreachable, args: []string{"txn", "status", "abc"}, wantCode: 6, wantStderr: `transaction id "abc"`},
		{name: "status zero id", env: unreachable, args: []string{"txn", "status", "0"}, wantCode: 6},
		{name: "ls args", args: []string{"txn", "ls", "x"}, wantCode: 2},
		{name: "locks args", args: []string{"locks", "x"}, wantCode: 2},
		{name: "malformed before connecting", env: unreachable, args: []string{"txn", "-e", "put a"}, wantCode: 2, wantStderr: "syntax: put KEY VALUE"},
		{name: "malformed via env", env: map[string]string{"VOWDB_EXECUTE": "begin"}, args: []string{"txn"}, wantCode: 2, wantStderr: "never committed"},
		{name: "empty script", args: []string{"txn", "-e", ""}, wantCode: 2, wantStderr: "no statements"},
		{name: "unreachable script", env: unreachable, args: []string{"txn", "-e", "get a"}, wantCode: 4},
		{name: "unreachable locks", env: unreachable, args: []string{"locks"}, wantCode: 4},
		{name: "unreachable ls", env: unreachable, args: []string{"txn", "ls"}, wantCode: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.env, tc.args...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantStdout) || !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("exit code %d (want %d)\nstdout (want %q): %s\nstderr (want %q): %s",
					code, tc.wantCode, tc.wantStdout, stdout, tc.wantStderr, stderr)
			}
			if tc.wantCode != 0 && (stdout != "" || !strings.HasPrefix(stderr, "Error: ")) {
				t.Errorf("a failing command must print only \"Error: ...\" on stderr\nstdout: %s\nstderr: %s", stdout, stderr)
			}
		})
	}
}

// txnCLI runs the CLI against a cluster, with stdin.
type txnCLI struct {
	t   *testing.T
	env map[string]string
	db  *vowdb.DB
}

func (c txnCLI) run(stdin string, args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmdEnv(func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
	root.SetIn(strings.NewReader(stdin))
	code = runContext(context.Background(), root, args, &out, &errb)
	return code, out.String(), errb.String()
}

// script runs txn -e and fails the test unless it exits with want.
func (c txnCLI) script(want int, script string, flags ...string) (stdout, stderr string) {
	c.t.Helper()
	code, stdout, stderr := c.run("", append(append([]string{"txn"}, flags...), "-e", script)...)
	if code != want {
		c.t.Fatalf("txn -e %.200q: exit code %d, want %d\nstdout: %s\nstderr: %s", script, code, want, stdout, stderr)
	}
	return stdout, stderr
}

// get reads key with the Go client; "" with found false if absent.
func (c txnCLI) get(key string) (string, bool) {
	c.t.Helper()
	v, err := c.db.Get(context.Background(), []byte(key))
	if errors.Is(err, vowdb.ErrNotFound) {
		return "", false
	}
	if err != nil {
		c.t.Fatalf("get %s: %v", key, err)
	}
	return string(v), true
}

// lines splits output into lines, without the final newline.
func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

// txnIDOf reads the id from a "BEGIN txn ID" line.
func txnIDOf(t *testing.T, line string) string {
	t.Helper()
	id, ok := strings.CutPrefix(line, "BEGIN txn ")
	if !ok {
		t.Fatalf("not a BEGIN line: %q", line)
	}
	return id
}

// TestTxnCLI runs txn, txn status, txn ls and locks against one in-process
// three-node cluster; each subtest uses its own keys.
func TestTxnCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := testcluster.Start(ctx, testcluster.Options{Nodes: 3, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	db, err := cl.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := map[string]string{"VOWDB_ENDPOINTS": strings.Join(cl.Endpoints(), ","), "VOWDB_TIMEOUT": "20s"}

	t.Run("script commits across two ranges", func(t *testing.T) {
		c := txnCLI{t, env, db}
		if _, _, err := db.Split(ctx, []byte("x/m")); err != nil {
			t.Fatal(err)
		}
		stdout, _ := c.script(0, `begin; put x/a 1; put x/z "two words"; get x/a
			get x/z; commit`)
		got := lines(stdout)
		if len(got) != 6 || got[1] != "OK" || got[2] != "OK" || got[3] != "1" || got[4] != `"two words"` {
			t.Fatalf("output:\n%s", stdout)
		}
		id := txnIDOf(t, got[0])
		commit := got[5]
		if !strings.HasPrefix(commit, "COMMITTED txn "+id+" path=2PC ranges=") || !strings.Contains(commit, " round-trips=") ||
			!strings.Contains(commit, " durable-writes=2 lock-wait=") {
			t.Fatalf("commit line %q", commit)
		}
		ranges := strings.TrimPrefix(strings.Fields(commit)[4], "ranges=")
		if len(strings.Split(ranges, ",")) != 2 {
			t.Fatalf("commit touched ranges %s, want two", ranges)
		}
		if v, _ := c.get("x/a"); v != "1" {
			t.Fatalf("x/a = %q after commit", v)
		}
		if v, _ := c.get("x/z"); v != "two words" {
			t.Fatalf("x/z = %q after commit", v)
		}

		// txn status of the committed id, as text and json.
		code, stdout, stderr := c.run("", "txn", "status", id)
		if code != 0 || stdout != "COMMITTED\n" {
			t.Fatalf("txn status %s: %d %q %s", id, code, stdout, stderr)
		}
		code, stdout, _ = c.run("", "txn", "status", id, "-w", "json")
		var st struct{ Txn, State string }
		if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil || st.Txn != id || st.State != "COMMITTED" {
			t.Fatalf("txn status -w json: %d %v %s", code, err, stdout)
		}
		// The status statement answers the same.
		if stdout, _ := c.script(0, "status "+id); stdout != "COMMITTED\n" {
			t.Fatalf("status statement: %q", stdout)
		}
	})

	t.Run("status of an unknown id", func(t *testing.T) {
		c := txnCLI{t, env, db}
		// Ids are chosen at random in [1, 2^63); this one was never used.
		code, stdout, stderr := c.run("", "txn", "status", "1234567")
		if code != 0 || stdout != "UNKNOWN\n" {
			t.Fatalf("txn status 1234567: %d %q %s", code, stdout, stderr)
		}
	})

	t.Run("get sees own writes", func(t *testing.T) {
		c := txnCLI{t, env, db}
		stdout, _ := c.script(0, "begin; get own/k; put own/k v1; get own/k; del own/k; get own/k; put own/k v2; scan own/ own0; commit")
		want := []string{"(not found)", "OK", "v1", "OK", "(not found)", "OK", "own/k v2"}
		got := lines(stdout)
		if len(got) != len(want)+2 || strings.Join(got[1:len(got)-1], "|") != strings.Join(want, "|") ||
			!strings.HasPrefix(got[len(got)-1], "COMMITTED txn ") {
			t.Fatalf("output:\n%s\nwant BEGIN, %q, COMMITTED", stdout, want)
		}
		if v, _ := c.get("own/k"); v != "v2" {
			t.Fatalf("own/k = %q after commit", v)
		}
	})

	t.Run("malformed script writes nothing", func(t *testing.T) {
		c := txnCLI{t, env, db}
		for _, script := range []string{"put bad/a 1; put bad/b", "begin; put bad/a 1", `put bad/a 1; put "bad/b 2`, "put bad/a 1; frob"} {
			stdout, stderr := c.script(exitUsage, script)
			if stdout != "" || !strings.HasPrefix(stderr, "Error: statement ") {
				t.Fatalf("%q: stdout %q stderr %q", script, stdout, stderr)
			}
		}
		_, stderr := c.script(exitUsage, "put bad/a 1; put bad/b")
		if !strings.Contains(stderr, "statement 2 (put bad/b)") || !strings.Contains(stderr, "syntax: put KEY VALUE") {
			t.Fatalf("stderr %q does not name the statement and its syntax", stderr)
		}
		if _, found := c.get("bad/a"); found {
			t.Fatal("a rejected script wrote bad/a")
		}
	})

	t.Run("rollback leaves nothing", func(t *testing.T) {
		c := txnCLI{t, env, db}
		stdout, _ := c.script(0, "begin; put rb/a 1; get rb/a; rollback; get rb/a")
		got := lines(stdout)
		if len(got) != 5 || got[3] != "ROLLED BACK txn "+txnIDOf(t, got[0]) || got[4] != "(not found)" {
			t.Fatalf("output:\n%s", stdout)
		}
		if _, found := c.get("rb/a"); found {
			t.Fatal("rb/a exists after rollback")
		}
	})

	t.Run("failing statement stops the script and rolls back", func(t *testing.T) {
		c := txnCLI{t, env, db}
		// The server refuses values over 1 MiB.
		big := strings.Repeat("v", 1<<20+1)
		stdout, stderr := c.script(exitInvalid, "begin; put fail/a 1; put fail/b "+big+"; put fail/c 1; commit")
		got := lines(stdout)
		if len(got) != 2 || got[1] != "OK" {
			t.Fatalf("output:\n%s", stdout)
		}
		id := txnIDOf(t, got[0])
		if !strings.Contains(stderr, "statement 3 (put fail/b vvv") || !strings.Contains(stderr, "transaction "+id+" rolled back") ||
			len(stderr) > 1000 {
			t.Fatalf("stderr: %.2000s", stderr)
		}
		for _, k := range []string{"fail/a", "fail/c"} {
			if _, found := c.get(k); found {
				t.Fatalf("%s exists after a failed script", k)
			}
		}
	})

	t.Run("autocommit", func(t *testing.T) {
		c := txnCLI{t, env, db}
		stdout, _ := c.script(0, "put ac/a 1; get ac/a; cas ac/a 1 2; cas ac/a 1 3; cas ac/b - x; get ac/b; scan ac/ - 1; del ac/b; get ac/b")
		want := "OK\n1\nswapped: true\nswapped: false\nswapped: true\nx\nac/a 2\nOK\n(not found)\n"
		if stdout != want {
			t.Fatalf("output:\n%s\nwant:\n%s", stdout, want)
		}
		if v, _ := c.get("ac/a"); v != "2" {
			t.Fatalf("ac/a = %q", v)
		}
	})

	t.Run("json script", func(t *testing.T) {
		c := txnCLI{t, env, db}
		stdout, _ := c.script(0, `begin; put js/a "x y"; get js/a; get js/b; scan js/ js0; cas js/a "x y" z; commit`, "-w", "json")
		var objs []map[string]any
		for _, l := range lines(stdout) {
			var o map[string]any
			if err := json.Unmarshal([]byte(l), &o); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			objs = append(objs, o)
		}
		if len(objs) != 7 {
			t.Fatalf("%d objects:\n%s", len(objs), stdout)
		}
		id, _ := objs[0]["txn"].(string)
		if objs[0]["statement"] != "begin" || id == "" || objs[2]["value"] != "x y" || objs[2]["found"] != true ||
			objs[3]["found"] != false || objs[5]["swapped"] != true {
			t.Fatalf("output:\n%s", stdout)
		}
		if kvs, _ := objs[4]["kvs"].([]any); len(kvs) != 1 {
			t.Fatalf("scan: %v", objs[4])
		}
		if c := objs[6]; c["statement"] != "commit" || c["txn"] != id || c["state"] != "COMMITTED" || c["path"] == "" {
			t.Fatalf("commit: %v", c)
		}
	})

	t.Run("shell", func(t *testing.T) {
		c := txnCLI{t, env, db}
		in := "begin\nput sh/a \"1 2\"\nget sh/a\nbegin\ncommit\ncommit\nput sh/b\nget sh/b; put sh/b 1 2; put sh/c 1\nhelp\n" +
			"begin; put sh/d 1\nget sh/d" // no final newline: the last line still runs
		code, stdout, stderr := c.run(in, "txn")
		if code != 0 {
			t.Fatalf("exit code %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		got := lines(stdout)
		if len(got) < 7 || got[1] != "OK" || got[2] != `"1 2"` || !strings.HasPrefix(got[3], "COMMITTED txn "+txnIDOf(t, got[0])) ||
			!strings.Contains(stdout, "Statements (separated by") || got[len(got)-1] != "1" {
			t.Fatalf("stdout:\n%s", stdout)
		}
		lastID := txnIDOf(t, got[len(got)-3])
		for _, want := range []string{
			"Error: statement 1 (begin): transaction ", "is already open",
			"Error: statement 1 (commit): no transaction is open",
			"Error: statement 1 (put sh/b): put takes 2 argument(s)",
			"Error: statement 2 (put sh/b 1 2)",
			"end of input: transaction " + lastID + " rolled back",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if strings.Contains(stdout, "vowdb>") || strings.Contains(stderr, "vowdb>") {
			t.Error("prompt printed for input that is not a terminal")
		}
		if v, _ := c.get("sh/a"); v != "1 2" {
			t.Fatalf("sh/a = %q", v)
		}
		for _, k := range []string{"sh/b", "sh/c", "sh/d"} {
			if _, found := c.get(k); found {
				t.Errorf("%s exists", k)
			}
		}

		// exit rolls back and stops reading.
		code, _, stderr = c.run("begin\nput sh/e 1\nexit\nput sh/f 1\n", "txn")
		if code != 0 || !strings.Contains(stderr, "exit: transaction ") {
			t.Fatalf("exit: code %d stderr %s", code, stderr)
		}
		for _, k := range []string{"sh/e", "sh/f"} {
			if _, found := c.get(k); found {
				t.Errorf("%s exists after exit", k)
			}
		}
	})

	t.Run("ls and locks", func(t *testing.T) {
		c := txnCLI{t, env, db}
		holder, err := db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback(ctx)
		if err := holder.Put(ctx, []byte("lk/a"), []byte("1")); err != nil {
			t.Fatal(err)
		}
		hid := fmt.Sprint(holder.ID())

		code, stdout, stderr := c.run("", "txn", "ls")
		if code != 0 || !strings.HasPrefix(stdout, "TXN ") || !strings.Contains(stdout, "COORDINATOR") ||
			!strings.Contains(stdout, "\n"+hid+" ") || !strings.Contains(stdout, "ACTIVE") {
			t.Fatalf("txn ls: %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, _ = c.run("", "txn", "ls", "-w", "json")
		var txns []struct {
			ID     string
			State  string
			Ranges []uint64
		}
		if err := json.Unmarshal([]byte(stdout), &txns); code != 0 || err != nil {
			t.Fatalf("txn ls -w json: %d %v\n%s", code, err, stdout)
		}
		found := false
		for _, tx := range txns {
			found = found || (tx.ID == hid && len(tx.Ranges) == 1)
		}
		if !found {
			t.Fatalf("txn ls -w json lacks %s:\n%s", hid, stdout)
		}

		// A second transaction waits for the holder's lock.
		waiter, err := db.Begin(ctx, vowdb.WithLockTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer waiter.Rollback(ctx)
		wid := fmt.Sprint(waiter.ID())
		waited := make(chan error, 1)
		go func() { waited <- waiter.Put(ctx, []byte("lk/a"), []byte("2")) }()
		for {
			waits, _, err := db.Locks(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(waits) > 0 {
				break
			}
			select {
			case err := <-waited:
				t.Fatalf("the waiter did not wait: %v", err)
			case <-ctx.Done():
				t.Fatal("no lock wait showed up")
			case <-time.After(20 * time.Millisecond):
			}
		}
		code, stdout, stderr = c.run("", "locks")
		row, heldRow := false, false
		for _, l := range lines(stdout) {
			f := strings.Fields(l)
			row = row || (len(f) == 7 && f[0] == wid && f[1] == hid && f[2] == "lk/a" && f[3] == "X")
			heldRow = heldRow || (len(f) == 6 && f[0] == hid && f[1] == "lk/a" && f[2] == "-" && f[3] == "X")
		}
		if code != 0 || !strings.HasPrefix(stdout, "WAITER ") || !strings.Contains(stdout, "DEADLOCK TIME") || !row || !heldRow {
			t.Fatalf("locks: %d (want a wait row %s %s lk/a X and a held row %s lk/a - X)\n%s%s", code, wid, hid, hid, stdout, stderr)
		}
		code, stdout, _ = c.run("", "locks", "-w", "json")
		var locks struct {
			Waits []struct {
				Waiter, Holder *string
				Key            string
			}
			Deadlocks []any
		}
		if err := json.Unmarshal([]byte(stdout), &locks); code != 0 || err != nil || locks.Deadlocks == nil ||
			len(locks.Waits) != 1 || *locks.Waits[0].Waiter != wid || *locks.Waits[0].Holder != hid || locks.Waits[0].Key != "lk/a" {
			t.Fatalf("locks -w json: %d %v\n%s", code, err, stdout)
		}

		// The holder goes; the waiter gets the lock.
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		if err := waiter.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
