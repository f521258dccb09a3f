package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runCLI runs the CLI in this process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmdEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	code = runContext(context.Background(), root, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCLIUsage covers the paths that never reach a cluster: usage errors,
// help, and failures to connect.
func TestCLIUsage(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{name: "help", args: []string{"--help"}, wantCode: 0, wantStdout: "Exit codes:"},
		{name: "no args prints help", args: nil, wantCode: 0, wantStdout: "Available Commands"},
		{name: "group help", args: []string{"kv"}, wantCode: 0, wantStdout: "cas"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `Error: unknown command "frobnicate" for "vowdb"`},
		{name: "suggestion", args: []string{"rnage"}, wantCode: 2, wantStderr: `did you mean "range"?`},
		{name: "unknown subcommand", args: []string{"kv", "frob"}, wantCode: 2, wantStderr: `unknown command "frob" for "vowdb kv"`},
		{name: "unknown flag", args: []string{"kv", "get", "k", "--bogus"}, wantCode: 2, wantStderr: "unknown flag: --bogus"},
		{name: "missing arg", args: []string{"kv", "get"}, wantCode: 2, wantStderr: "Run 'vowdb kv get --help' for usage."},
		{name: "extra arg", args: []string{"kv", "put", "a", "b", "c"}, wantCode: 2},
		{name: "cas arity", args: []string{"kv", "cas", "--delete", "k", "a", "b"}, wantCode: 2, wantStderr: "KEY OLD (with --delete)"},
		{name: "bad format", args: []string{"-w", "yaml", "node", "ls"}, wantCode: 2, wantStderr: `unknown output format "yaml"`},
		{name: "bad format env", env: map[string]string{"VOWDB_WRITE_OUT": "yaml"}, args: []string{"range", "ls"}, wantCode: 2, wantStderr: "VOWDB_WRITE_OUT"},
		{name: "negative limit", args: []string{"kv", "scan", "--limit", "-1"}, wantCode: 2},
		{name: "empty endpoints", args: []string{"kv", "get", "k", "--endpoints", ""}, wantCode: 2, wantStderr: "--endpoints is empty"},
		{name: "start needs data dir", args: []string{"start"}, wantCode: 2, wantStderr: "--data-dir is required (or set VOWDB_DATA_DIR)"},
		{name: "start bad log level", args: []string{"start", "--data-dir", "x", "--log-level", "loud"}, wantCode: 2},
		{name: "start bad env int", env: map[string]string{"VOWDB_REPLICATION_FACTOR": "x"}, args: []string{"start"}, wantCode: 2, wantStderr: "VOWDB_REPLICATION_FACTOR"},
		{name: "start zero rf", args: []string{"start", "--data-dir", "x", "--replication-factor", "0"}, wantCode: 2},
		{name: "help mentions env", args: []string{"start", "--help"}, wantCode: 0, wantStdout: "VOWDB_DATA_DIR"},
		// Port 1 on loopback refuses connections at once.
		{name: "unreachable kv", args: []string{"kv", "get", "k", "--endpoints", "127.0.0.1:1", "--timeout", "2s"}, wantCode: 4, wantStderr: "Error: "},
		{name: "unreachable via env", env: map[string]string{"VOWDB_ENDPOINTS": "127.0.0.1:1", "VOWDB_TIMEOUT": "2s"}, args: []string{"node", "ls"}, wantCode: 4},
		{name: "unreachable init", args: []string{"init", "--endpoints", "127.0.0.1:1", "--timeout", "2s"}, wantCode: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.env, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, stdout)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
			if tc.wantCode != 0 && !strings.HasPrefix(stderr, "Error: ") {
				t.Errorf("stderr does not start with \"Error: \":\n%s", stderr)
			}
			if tc.wantCode != 0 && stdout != "" {
				t.Errorf("a failing command wrote to stdout:\n%s", stdout)
			}
		})
	}
}
