package torture

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a helper run inside a namespace: with
// TORTURE_HELPER=listen:ADDR it accepts connections on ADDR until killed;
// with TORTURE_HELPER=dial:ADDR it exits 0 if it can connect within a
// second, 1 if not.
func TestMain(m *testing.M) {
	if h := os.Getenv("TORTURE_HELPER"); h != "" {
		os.Exit(helper(h))
	}
	os.Exit(m.Run())
}

func helper(h string) int {
	mode, addr, _ := strings.Cut(h, ":")
	switch mode {
	case "listen":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return 2
		}
		os.Stdout.WriteString("listening\n")
		for {
			c, err := l.Accept()
			if err != nil {
				return 2
			}
			_ = c.Close()
		}
	case "dial":
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return 1
		}
		_ = c.Close()
		return 0
	}
	return 2
}

// helperCmd runs the test binary as a helper on host i of nt.
func helperCmd(t *testing.T, nt *Net, i int, h string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := nt.Command(i, exe)
	cmd.Env = append(os.Environ(), "TORTURE_HELPER="+h)
	return cmd
}

// newTestNet creates a Net, or skips the test when the machine cannot.
func newTestNet(t *testing.T, n int) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CAP_NET_ADMIN); skipped")
	}
	nt, err := NewNet(n)
	if err != nil {
		t.Skipf("network namespaces do not work here: %v", err)
	}
	return nt
}

// TestNetPartition checks the namespaced network: every host is reachable
// from the runner and from the other hosts; Block cuts exactly the pairs
// it is given, never the runner; Unblock restores them; Close removes every
// namespace and link it created.
func TestNetPartition(t *testing.T) {
	nt := newTestNet(t, 3)
	tag := nt.Tag()
	defer func() {
		if err := nt.Close(); err != nil {
			t.Error(err)
		}
		names, _ := listNetns()
		for _, ns := range names {
			if strings.HasPrefix(ns, tag+"-") {
				t.Errorf("namespace %s left after Close", ns)
			}
		}
		if exec.Command("ip", "link", "show", tag+"-h").Run() == nil {
			t.Errorf("link %s-h left after Close", tag)
		}
	}()

	h0 := nt.Hosts()[0]
	addr := net.JoinHostPort(h0.IP, "7999")
	srv := helperCmd(t, nt, 0, "listen:"+addr)
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("helper listener: %q %v", line, err)
	}

	reach := func(from int) bool {
		if from < 0 {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
			}
			return err == nil
		}
		return helperCmd(t, nt, from, "dial:"+addr).Run() == nil
	}
	expect := func(when string, runner, n2, n3 bool) {
		t.Helper()
		if got := reach(-1); got != runner {
			t.Errorf("%s: runner reaches n1: %v, want %v", when, got, runner)
		}
		if got := reach(1); got != n2 {
			t.Errorf("%s: n2 reaches n1: %v, want %v", when, got, n2)
		}
		if got := reach(2); got != n3 {
			t.Errorf("%s: n3 reaches n1: %v, want %v", when, got, n3)
		}
	}
	expect("connected", true, true, true)

	blocked, desc := planPartition(partIsolate, []int{1, 0, 2}, nodeName)
	t.Logf("partition: %s", desc)
	if err := nt.Block(blocked); err != nil {
		t.Fatal(err)
	}
	expect("n2 isolated", true, false, true)
	if err := nt.Unblock(); err != nil {
		t.Fatal(err)
	}
	expect("healed", true, true, true)
}
