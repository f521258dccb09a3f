package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/testcluster"
)

// TestDemo runs the whole demo (start, split, workload, kill the leader,
// restart, audit) and checks that it passes and exits right after the audit.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster and kills a node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := newDemoCmd()
	cmd.SetArgs([]string{"--duration", "0", "--down-time", "3s", "--dir", t.TempDir()})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	start := time.Now()
	err := cmd.ExecuteContext(ctx)
	t.Logf("demo took %s; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatal("demo did not print PASS")
	}
	m := regexp.MustCompile(`transfers: (\d+) committed`).FindStringSubmatch(out.String())
	if m == nil || m[1] == "0" {
		t.Fatal("no committed transfers reported")
	}
	for _, want := range []string{"aborts by reason:", "transfer latency (committed): p50 ", "ambiguous transfers", "while node"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the report lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "press Ctrl-C") {
		t.Fatal("demo with --duration 0 should exit right after the audit")
	}
}

// TestDemoAuditCatches runs the bank briefly, then breaks the data behind
// the workers' backs in the two ways the audit is for: an acknowledged
// transfer whose ledger entry is gone (a lost commit) and a balance changed
// outside any transfer (money created). The audit must report both.
func TestDemoAuditCatches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Nodes: 3, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	db, err := c.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	splits := demoAccountSplits(9)
	for _, k := range splits {
		if _, _, err := db.Split(ctx, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	bank := newDemoBank(db, 9, 3, splits)
	if _, err := bank.open(ctx); err != nil {
		t.Fatal(err)
	}
	bank.start(ctx)
	time.Sleep(time.Second)
	bank.stop()
	if a := bank.audit(ctx); !a.ok() || a.acked == 0 {
		t.Fatalf("clean run: acked %d, problems %v", a.acked, a.problems)
	}

	var lost vowdb.TxnID
	for id := range bank.acked {
		lost = id
		break
	}
	if err := db.Delete(ctx, []byte(demoLedgerKey(lost))); err != nil {
		t.Fatal(err)
	}
	v, err := db.Get(ctx, []byte(demoAcct(0)))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(v))
	if err := db.Put(ctx, []byte(demoAcct(0)), []byte(strconv.Itoa(n+7))); err != nil {
		t.Fatal(err)
	}
	a := bank.audit(ctx)
	if a.ok() || a.ackedSeen != a.acked-1 || a.total != a.want+7 || a.badReplay == 0 {
		t.Fatalf("tampered data passed the audit or was misjudged: acked %d seen %d, total %d want %d, bad replays %d",
			a.acked, a.ackedSeen, a.total, a.want, a.badReplay)
	}
	all := strings.Join(a.problems, "\n")
	for _, want := range []string{"no ledger entry (lost commits): txn " + fmt.Sprint(lost), "not the opening total", "replaying the ledger gives"} {
		if !strings.Contains(all, want) {
			t.Fatalf("the problems do not mention %q:\n%s", want, all)
		}
	}
}

// TestDemoBankModel checks the pieces of the bank the audit relies on: the
// accounts land in three ranges, every transfer crosses ranges, and a read
// of every account is judged by count, sign and total.
func TestDemoBankModel(t *testing.T) {
	splits := demoAccountSplits(30)
	if fmt.Sprint(splits) != "[acct/010 acct/020]" {
		t.Fatalf("splits %v", splits)
	}
	b := newDemoBank(nil, 30, 1, splits)
	for r, accts := range b.byRange {
		if len(accts) != 10 {
			t.Fatalf("range %d holds %d accounts: %v", r, len(accts), accts)
		}
	}
	if b.rangeOf[9] != 0 || b.rangeOf[10] != 1 || b.rangeOf[20] != 2 || b.rangeOf[29] != 2 {
		t.Fatalf("rangeOf %v", b.rangeOf)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		tr := b.pick(rng)
		if b.rangeOf[tr.from] == b.rangeOf[tr.to] || tr.amount < 1 || tr.amount > demoMaxAmount {
			t.Fatalf("transfer %+v stays in one range or has a bad amount", tr)
		}
	}
	if v := (demoTransfer{from: 3, to: 17, amount: 5}).ledgerValue(); v != "acct/003,acct/017,5" {
		t.Fatalf("ledger value %q", v)
	}

	kv := func(pairs ...string) []vowdb.KeyValue {
		var out []vowdb.KeyValue
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, vowdb.KeyValue{Key: []byte(pairs[i]), Value: []byte(pairs[i+1])})
		}
		return out
	}
	if p := demoCheckBalances(kv("acct/000", "150", "acct/001", "50"), 2, 200); p != "" {
		t.Fatalf("exact read judged wrong: %s", p)
	}
	for _, bad := range [][]vowdb.KeyValue{
		kv("acct/000", "150", "acct/001", "49"),  // money lost
		kv("acct/000", "210", "acct/001", "-10"), // negative
		kv("acct/000", "200"),                    // an account missing
		kv("acct/000", "x", "acct/001", "200"),   // garbage
	} {
		if demoCheckBalances(bad, 2, 200) == "" {
			t.Fatalf("wrong read %v judged exact", bad)
		}
	}

	var c demoCounts
	c.aborts[vowdb.AbortDeadlock] = 3
	c.aborts[vowdb.AbortStateLost] = 1
	c.committed = 10
	d := c.sub(demoCounts{committed: 4})
	if d.committed != 6 || d.abortTotal() != 4 {
		t.Fatalf("sub: %+v", d)
	}
	if s := d.abortsString(); s != "deadlock 3, participant lost state 1" {
		t.Fatalf("aborts %q", s)
	}
}
