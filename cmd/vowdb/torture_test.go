package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTortureFlags: bad flags are usage errors, before anything starts.
func TestTortureFlags(t *testing.T) {
	for _, args := range [][]string{
		{"torture", "--faults", "kill,meteor"},
		{"torture", "--nodes", "0", "--loopback"},
		{"torture", "--duration", "0s", "--loopback"},
		{"torture", "--workload", "nope", "--loopback"},
		{"torture", "--every", "1s", "--loopback"},
		{"torture", "--every", "-5s", "--loopback"},
	} {
		var out, errb bytes.Buffer
		if code := runContext(context.Background(), newRootCmd(), args, &out, &errb); code != exitUsage {
			t.Errorf("vowdb %s: exit %d, want %d; stderr: %s", strings.Join(args, " "), code, exitUsage, errb.String())
		}
	}
}

// TestTortureSmoke runs `vowdb torture` from the built binary, end to end:
//
//  1. loopback mode, 3 nodes, kill and pause faults, 15 s; then
//     pause-leader and power-loss on a fixed 6 s cadence, 18 s;
//  2. only as root where `ip netns` works: network namespaces, 5 nodes,
//     partition and kill faults (partition-leader for append), 20 s each;
//     afterwards none of the run's namespaces may remain.
//
// Each run must exit 0 with every check passed, inject at least one fault,
// skip none, and leave history.jsonl, faults.log and the node logs in its
// output directory. Nothing here depends on timing beyond the run's own
// schedule.
func TestTortureSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs clusters for about a minute; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the torture runner controls processes with Linux signals and namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildBinary(ctx, t, t.TempDir())

	t.Run("loopback", func(t *testing.T) {
		runTortureSmoke(ctx, t, bin, "--loopback", "--workload", "set", "--faults", "kill,pause", "--nodes", "3",
			"--duration", "15s", "--hold", "3s", "--recovery", "3s", "--seed", "1")
	})
	t.Run("loopback-leader-power", func(t *testing.T) {
		summary := runTortureSmoke(ctx, t, bin, "--loopback", "--workload", "register", "--faults", "pause-leader,power-loss",
			"--nodes", "3", "--duration", "18s", "--every", "6s", "--hold", "2s", "--seed", "7")
		// Seed 7 draws pause-leader at 6s, then power-loss at 12s.
		if !strings.Contains(summary, "Faults injected: 2 ") || !strings.Contains(summary, ", which lead") || !strings.Contains(summary, "power loss:") {
			t.Errorf("want 2 faults, pause-leader at 6s and power-loss at 12s")
		}
	})
	t.Run("netns", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("network namespaces need root (CAP_NET_ADMIN); run the test as root to cover partitions")
		}
		probe := fmt.Sprintf("vtprobe%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
			t.Skipf("ip netns does not work here (%v: %s); partitions are not covered", err, bytes.TrimSpace(out))
		}
		_ = exec.Command("ip", "netns", "del", probe).Run()
		for i, w := range []string{"register", "bank", "append"} {
			faults := "partition,kill"
			if w == "append" {
				faults = "partition-leader"
			}
			summary := runTortureSmoke(ctx, t, bin, "--workload", w, "--faults", faults, "--nodes", "5",
				"--duration", "20s", "--hold", "3s", "--recovery", "3s", "--seed", fmt.Sprint(3+i))
			m := regexp.MustCompile(`network namespaces (vt\w+)-n1`).FindStringSubmatch(summary)
			if m == nil {
				t.Fatalf("the summary names no namespaces:\n%s", summary)
			}
			out, err := exec.Command("ip", "netns", "list").CombinedOutput()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), m[1]+"-") {
				t.Errorf("namespaces of run %s left behind:\n%s", m[1], out)
			}
			if err := exec.Command("ip", "link", "show", m[1]+"-h").Run(); err == nil {
				t.Errorf("link %s-h left behind", m[1])
			}
		}
	})
}

// runTortureSmoke runs `vowdb torture args` with --out in a temporary
// directory, checks its outcome and output files, and returns the summary.
func runTortureSmoke(ctx context.Context, t *testing.T, bin string, args ...string) string {
	t.Helper()
	out := t.TempDir()
	full := append([]string{"torture", "--out", out}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	summary := stdout.String()
	t.Logf("vowdb %s\n%s", strings.Join(full, " "), summary)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("exit %d; progress:\n%s", ee.ExitCode(), stderr.String())
	}
	if !strings.Contains(summary, "\nResult: PASS\n") {
		t.Fatalf("no PASS in the summary; progress:\n%s", stderr.String())
	}
	if m := regexp.MustCompile(`Faults injected: (\d+)`).FindStringSubmatch(summary); m == nil || m[1] == "0" {
		t.Errorf("no fault was injected")
	}
	if strings.Contains(summary, "Faults skipped") {
		t.Errorf("a fault was skipped")
	}
	for _, name := range []string{"history.jsonl", "faults.log", "summary.txt", "nodes/n1.log"} {
		st, err := os.Stat(filepath.Join(out, name))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty in the output directory (%v)", name, err)
		}
	}
	return summary
}
