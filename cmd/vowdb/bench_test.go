package main

import (
	"bytes"
	"context"
	"errors"
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
