package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

func TestBenchKeyShape(t *testing.T) {
	// The same keys as the etcd peer benchmark: fmt.Sprintf("%08d", i).
	for i, want := range map[int]string{0: "00000000", 42: "00000042", 99999: "00099999"} {
		if got := string(benchKey(nil, i)); got != want {
			t.Errorf("benchKey(%d) = %q, want %q", i, got, want)
		}
	}
}

func TestBenchPIDCPU(t *testing.T) {
	// Burn a little CPU, then read our own /proc/PID/stat.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = strconv.Itoa(x)
	}
	d, err := benchPIDCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Fatalf("cpu time of this process = %v", d)
	}
	if rss := benchPIDRSS(os.Getpid()); rss <= 0 {
		t.Fatalf("rss = %d", rss)
	}
	if busy, total := benchMachineCPU(); total == 0 || busy > total {
		t.Fatalf("machine cpu busy=%d total=%d", busy, total)
	}
}

func TestBenchErrKind(t *testing.T) {
	cases := map[error]string{
		vowdb.ErrAmbiguousCommit:                   "ambiguous",
		vowdb.ErrUnavailable:                       "unavailable",
		context.DeadlineExceeded:                   "timeout",
		errors.New("boom"):                         "other",
		errors.Join(vowdb.ErrInvalidArgument, nil): "invalid",
	}
	for err, want := range cases {
		if got := benchErrKind(err); got != want {
			t.Errorf("benchErrKind(%v) = %s, want %s", err, got, want)
		}
	}
}

// TestBenchKVEmbedded runs a short mixed workload against an in-process
// cluster and checks the summary.
func TestBenchKVEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	var out bytes.Buffer
	cmd := newBenchCmd()
	cmd.SetArgs([]string{"kv", "--embedded", "--duration", "2s", "--concurrency", "4", "--read-percent", "50", "--keys", "1000",
		"--pids", strconv.Itoa(os.Getpid())})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	m := regexp.MustCompile(`op=mix-r50 conc=4 clients=4 ops=(\d+) errors=0 `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary line with 0 errors in:\n%s", out.String())
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Fatal("no operations")
	}
	if !strings.Contains(out.String(), "µs/op") {
		t.Fatal("no CPU report")
	}
}

// TestBenchBankPick: every transfer crosses two of the three ranges and
// stays inside the account space.
func TestBenchBankPick(t *testing.T) {
	w := &benchBankWorkload{o: benchBankOptions{accounts: 10}, first: benchBankRanges(10)}
	if w.first != [3]int{0, 3, 6} {
		t.Fatalf("ranges start at %v", w.first)
	}
	rangeOf := func(a int) int {
		switch {
		case a < 3:
			return 0
		case a < 6:
			return 1
		}
		return 2
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[[2]int]bool{}
	for i := 0; i < 2000; i++ {
		from, to, amount := w.pick(rng)
		if from < 0 || from >= 10 || to < 0 || to >= 10 || rangeOf(from) == rangeOf(to) || amount < 1 || amount > 100 {
			t.Fatalf("bad transfer %d -> %d (%d)", from, to, amount)
		}
		seen[[2]int{rangeOf(from), rangeOf(to)}] = true
	}
	if len(seen) != 6 {
		t.Fatalf("range pairs seen: %v", seen)
	}
	if got := string(benchBankKey(42)); got != "bank/00000042" {
		t.Fatalf("key %q", got)
	}
	if got := benchAbortName(vowdb.AbortLockTimeout); got != "lock-wait_timeout" {
		t.Fatalf("abort name %q", got)
	}
}

// TestBenchBankEmbedded runs a short bank workload against an in-process
// cluster with -w json and checks the summary.
func TestBenchBankEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	var out, progress bytes.Buffer
	cmd := newBenchCmd()
	cmd.PersistentFlags().StringP("write-out", "w", "table", "output format") // as the root command has
	cmd.SetArgs([]string{"bank", "--embedded", "--duration", "2s", "--concurrency", "4", "--accounts", "300",
		"--pids", strconv.Itoa(os.Getpid()), "-w", "json"})
	cmd.SetOut(&out)
	cmd.SetErr(&progress)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("bench: %v\n%s%s", err, progress.String(), out.String())
	}
	t.Logf("%s%s", progress.String(), out.String())
	var s benchBankSummary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out.String())
	}
	switch {
	case s.Op != "transfer" || s.Accounts != 300 || s.Concurrency != 4:
		t.Fatalf("summary describes another run: %+v", s)
	case s.Voters != 3:
		t.Fatalf("the run did not wait for 3 voters on every range: %d", s.Voters)
		t.Fatalf("summary describes another run: %+v", s)
	case s.Transfers == 0 || s.TxnPerSec <= 0 || s.P50Ms <= 0 || s.P99Ms < s.P50Ms:
		t.Fatalf("no committed transfers or no latencies: %+v", s)
	case s.Attempts != s.Transfers+s.Aborts+s.Errors+s.Skipped:
		t.Fatalf("attempts %d do not add up", s.Attempts)
	case s.Paths["2PC"] != s.Transfers:
		t.Fatalf("every transfer spans two ranges and must commit by 2PC: %v of %d", s.Paths, s.Transfers)
	case s.AvgDurableWrites < 1 || s.AvgRoundTrips < 1:
		t.Fatalf("receipt averages %.2f durable writes, %.2f round trips", s.AvgDurableWrites, s.AvgRoundTrips)
	case !s.Check.OK || s.Check.Total != 300*1000000:
		t.Fatalf("conservation check: %+v", s.Check)
	case s.CPU.PIDsSec <= 0:
		t.Fatalf("no CPU for --pids: %+v", s.CPU)
	}
	if !strings.Contains(progress.String(), "txn/s=") {
		t.Fatal("no per-second lines on stderr")
	}
}
