package vowdb

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/transport"
)

func desc(id uint64, start, end string, gen uint64) *vowdbpb.RangeDescriptor {
	return &vowdbpb.RangeDescriptor{RangeId: id, StartKey: []byte(start), EndKey: []byte(end), Generation: gen}
}

func TestRouteCache(t *testing.T) {
	db := &DB{}
	db.mu.nodes = map[uint64]string{}
	ins := func(d *vowdbpb.RangeDescriptor) {
		db.mu.Lock()
		db.insertRouteLocked(&route{desc: d})
		db.mu.Unlock()
	}
	ins(desc(2, "", "", 1))
	if r := db.cachedRoute([]byte("zzz")); r == nil || r.desc.RangeId != 2 {
		t.Fatal("whole-keyspace range not found")
	}
	// A split replaces the wide range with both halves.
	ins(desc(2, "", "m", 2))
	ins(desc(3, "m", "", 2))
	for k, want := range map[string]uint64{"a": 2, "l": 2, "m": 3, "zz": 3} {
		if r := db.cachedRoute([]byte(k)); r == nil || r.desc.RangeId != want {
			t.Fatalf("key %q routed to %v, want range %d", k, r, want)
		}
	}
	// A stale descriptor of a known range does not replace a newer one.
	ins(desc(2, "", "", 1))
	if r := db.cachedRoute([]byte("z")); r == nil || r.desc.RangeId != 3 {
		t.Fatalf("stale descriptor evicted newer routes: %v", r)
	}
	db.evict(3)
	if r := db.cachedRoute([]byte("z")); r != nil {
		t.Fatalf("evicted range still routed: %v", r)
	}
	if r := db.cachedRoute([]byte("a")); r == nil {
		t.Fatal("evict removed the wrong range")
	}
}

func TestClassify(t *testing.T) {
	st := func(code vowdbpb.ErrorDetail_Code) error {
		return transport.Status(&vowdbpb.ErrorDetail{Code: code}, "x")
	}
	tests := []struct {
		name  string
		err   error
		write bool
		want  error
	}{
		{"ambiguous", st(vowdbpb.ErrorDetail_AMBIGUOUS), true, ErrAmbiguousCommit},
		{"invalid", st(vowdbpb.ErrorDetail_INVALID), true, ErrInvalidArgument},
		{"not initialized", st(vowdbpb.ErrorDetail_NOT_INITIALIZED), false, ErrNotInitialized},
		{"deadline on write is ambiguous", status.Error(codes.DeadlineExceeded, "x"), true, ErrAmbiguousCommit},
		{"deadline on read is unavailable", status.Error(codes.DeadlineExceeded, "x"), false, ErrUnavailable},
		{"unavailable is retryable", status.Error(codes.Unavailable, "x"), false, ErrRetryable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err, tc.write); !errors.Is(got, tc.want) {
				t.Fatalf("classify = %v, want %v", got, tc.want)
			}
		})
	}
}
