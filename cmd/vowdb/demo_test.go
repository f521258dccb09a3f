package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
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
	if strings.Contains(out.String(), "press Ctrl-C") {
		t.Fatal("demo with --duration 0 should exit right after the audit")
	}
}

// TestDemoAuditModel checks the model the audit uses: a key may hold its
// last acknowledged value or the value of an ambiguous write issued after
// it, and nothing else.
func TestDemoAuditModel(t *testing.T) {
	k := &demoKey{key: "user/001"}
	if !k.allowed("", false) || k.allowed("x", true) {
		t.Fatal("a never-written key must be absent")
	}
	k.acknowledged("a")
	if k.allowed("", false) || !k.allowed("a", true) || k.allowed("b", true) {
		t.Fatal("after an ack only that value is allowed")
	}
	k.pending = append(k.pending, "b", "c") // two ambiguous writes
	for _, v := range []string{"a", "b", "c"} {
		if !k.allowed(v, true) {
			t.Fatalf("%q must be allowed", v)
		}
	}
	k.observe("b", true) // b applied: a can no longer be read
	if k.allowed("a", true) || !k.allowed("b", true) || !k.allowed("c", true) {
		t.Fatalf("after reading b: %s", k.describe())
	}
	k.acknowledged("d")
	if k.allowed("c", true) || !k.allowed("d", true) {
		t.Fatalf("after ack of d: %s", k.describe())
	}
	if k.ambApplied != 1 || k.ambOverwritten != 1 {
		t.Fatalf("applied %d overwritten %d", k.ambApplied, k.ambOverwritten)
	}
}
