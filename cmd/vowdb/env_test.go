package main

import (
	"errors"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestEnvName(t *testing.T) {
	tests := map[string]string{
		"data-dir":           "VOWDB_DATA_DIR",
		"endpoints":          "VOWDB_ENDPOINTS",
		"write-out":          "VOWDB_WRITE_OUT",
		"replication-factor": "VOWDB_REPLICATION_FACTOR",
		"join":               "VOWDB_JOIN",
	}
	for flag, want := range tests {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestBindEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantDir string
		wantRF  int
		wantEPs []string
		wantTO  time.Duration
		wantErr bool
	}{
		{name: "defaults", wantRF: 3, wantEPs: []string{"127.0.0.1:7401"}, wantTO: 10 * time.Second},
		{name: "env only",
			env:     map[string]string{"VOWDB_DATA_DIR": "/d", "VOWDB_REPLICATION_FACTOR": "5", "VOWDB_ENDPOINTS": "a:1,b:2", "VOWDB_TIMEOUT": "3s"},
			wantDir: "/d", wantRF: 5, wantEPs: []string{"a:1", "b:2"}, wantTO: 3 * time.Second},
		{name: "flag wins",
			args:    []string{"--data-dir", "/flag", "--endpoints", "c:3"},
			env:     map[string]string{"VOWDB_DATA_DIR": "/env", "VOWDB_ENDPOINTS": "a:1,b:2"},
			wantDir: "/flag", wantRF: 3, wantEPs: []string{"c:3"}, wantTO: 10 * time.Second},
		{name: "empty env value is a value",
			env:    map[string]string{"VOWDB_DATA_DIR": "", "VOWDB_ENDPOINTS": ""},
			wantRF: 3, wantEPs: []string{}, wantTO: 10 * time.Second},
		{name: "other variables ignored",
			env:    map[string]string{"DATA_DIR": "/x", "VOWDB_DATADIR": "/y", "VOWDB_HELP": "true"},
			wantRF: 3, wantEPs: []string{"127.0.0.1:7401"}, wantTO: 10 * time.Second},
		{name: "bad int", env: map[string]string{"VOWDB_REPLICATION_FACTOR": "three"}, wantErr: true},
		{name: "bad duration", env: map[string]string{"VOWDB_TIMEOUT": "10"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			var dir string
			var rf int
			fs.StringVar(&dir, "data-dir", "", "")
			fs.IntVar(&rf, "replication-factor", 3, "")
			fs.Bool("help", false, "")
			cf := &clientFlags{}
			cf.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := bindEnv(fs, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr {
				var ue *usageError
				if !errors.As(err, &ue) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dir != tc.wantDir || rf != tc.wantRF || cf.timeout != tc.wantTO || !equalStrings(cf.endpoints, tc.wantEPs) {
				t.Errorf("got dir=%q rf=%d endpoints=%q timeout=%v, want dir=%q rf=%d endpoints=%q timeout=%v",
					dir, rf, cf.endpoints, cf.timeout, tc.wantDir, tc.wantRF, tc.wantEPs, tc.wantTO)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStartMaxTxnBytes: --max-txn-bytes reaches the server configuration,
// and a negative value is a usage error.
func TestStartMaxTxnBytes(t *testing.T) {
	f := &startFlags{dataDir: t.TempDir(), listenAddr: "127.0.0.1:0", replicationFactor: 3, maxTxnBytes: 1 << 20}
	cfg, err := f.config(nil)
	if err != nil || cfg.MaxTxnBytes != 1<<20 {
		t.Fatalf("config: MaxTxnBytes %d, %v; want %d", cfg.MaxTxnBytes, err, 1<<20)
	}
	f.maxTxnBytes = -1
	if _, err := f.config(nil); err == nil {
		t.Fatal("a negative --max-txn-bytes was accepted")
	}
}

// TestStartTxnIdleTimeout: --txn-idle-timeout reaches the server
// configuration; below 2s (clients keep alive every second) or negative it
// is a usage error.
func TestStartTxnIdleTimeout(t *testing.T) {
	f := &startFlags{dataDir: t.TempDir(), listenAddr: "127.0.0.1:0", replicationFactor: 3, txnIdleTimeout: 7 * time.Second}
	cfg, err := f.config(nil)
	if err != nil || cfg.TxnIdleTimeout != 7*time.Second {
		t.Fatalf("config: TxnIdleTimeout %v, %v; want 7s", cfg.TxnIdleTimeout, err)
	}
	for _, d := range []time.Duration{time.Second, -time.Second} {
		f.txnIdleTimeout = d
		if _, err := f.config(nil); err == nil {
			t.Fatalf("--txn-idle-timeout %v was accepted", d)
		}
	}
}

// TestStartTxnRetention: --txn-retention reaches the server configuration;
// below 3m (more than twice the 60s a transaction may run) or negative it
// is a usage error.
func TestStartTxnRetention(t *testing.T) {
	f := &startFlags{dataDir: t.TempDir(), listenAddr: "127.0.0.1:0", replicationFactor: 3, txnRetention: time.Hour}
	cfg, err := f.config(nil)
	if err != nil || cfg.TxnRetention != time.Hour {
		t.Fatalf("config: TxnRetention %v, %v; want 1h", cfg.TxnRetention, err)
	}
	for _, d := range []time.Duration{2 * time.Minute, -time.Minute} {
		f.txnRetention = d
		if _, err := f.config(nil); err == nil {
			t.Fatalf("--txn-retention %v was accepted", d)
		}
	}
}
