package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vowdb/vowdb"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"generic", errors.New("boom"), 1},
		{"already initialized", errors.New("vowdb: cluster already initialized (cluster x, this is node 1); nothing changed"), 1},
		{"usage", usageErrorf("accepts 1 arg(s), received 0"), 2},
		{"wrapped usage", fmt.Errorf("ctx: %w", usageErrorf("bad")), 2},
		{"not found", fmt.Errorf("get k: %w", vowdb.ErrNotFound), 3},
		{"unavailable", fmt.Errorf("%w: no leader", vowdb.ErrUnavailable), 4},
		{"not initialized", vowdb.ErrNotInitialized, 4},
		{"open failure", openError(errors.New("vowdb: open [x]: cannot connect to x")), 4},
		{"ambiguous", fmt.Errorf("%w: deadline", vowdb.ErrAmbiguousCommit), 5},
		{"ambiguous beats unavailable", fmt.Errorf("%w: %w", vowdb.ErrAmbiguousCommit, vowdb.ErrUnavailable), 5},
		{"invalid", fmt.Errorf("%w: key is empty", vowdb.ErrInvalidArgument), 6},
		{"invalid open", openError(fmt.Errorf("%w: no endpoints", vowdb.ErrInvalidArgument)), 6},
		{"interrupted", fmt.Errorf("%w: context canceled", errInterrupted), 130},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestOpenErrorKeepsMessage(t *testing.T) {
	err := openError(errors.New("cannot connect to 127.0.0.1:1"))
	if err.Error() != "cannot connect to 127.0.0.1:1" || !errors.Is(err, vowdb.ErrUnavailable) {
		t.Errorf("openError = %q (unavailable: %t)", err, errors.Is(err, vowdb.ErrUnavailable))
	}
}

func TestParseCasArgs(t *testing.T) {
	tests := []struct {
		name          string
		args          []string
		absent, del   bool
		want          casArgs
		wantUsageFail bool
	}{
		{name: "swap", args: []string{"k", "old", "new"}, want: casArgs{key: []byte("k"), old: []byte("old"), new: []byte("new")}},
		{name: "empty old is a value", args: []string{"k", "", "new"}, want: casArgs{key: []byte("k"), old: []byte{}, new: []byte("new")}},
		{name: "expect absent", args: []string{"k", "new"}, absent: true, want: casArgs{key: []byte("k"), new: []byte("new")}},
		{name: "delete", args: []string{"k", "old"}, del: true, want: casArgs{key: []byte("k"), old: []byte("old")}},
		{name: "both", args: []string{"k"}, absent: true, del: true, want: casArgs{key: []byte("k")}},
		{name: "too few", args: []string{"k", "old"}, wantUsageFail: true},
		{name: "too many with absent", args: []string{"k", "old", "new"}, absent: true, wantUsageFail: true},
		{name: "too many with delete", args: []string{"k", "old", "new"}, del: true, wantUsageFail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCasArgs(tc.args, tc.absent, tc.del)
			if tc.wantUsageFail {
				if exitCode(err) != exitUsage {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			same := func(a, b []byte) bool { return (a == nil) == (b == nil) && string(a) == string(b) }
			if !same(got.key, tc.want.key) || !same(got.old, tc.want.old) || !same(got.new, tc.want.new) {
				t.Errorf("got key=%q old=%q(nil %t) new=%q(nil %t), want key=%q old=%q(nil %t) new=%q(nil %t)",
					got.key, got.old, got.old == nil, got.new, got.new == nil,
					tc.want.key, tc.want.old, tc.want.old == nil, tc.want.new, tc.want.new == nil)
			}
		})
	}
}
