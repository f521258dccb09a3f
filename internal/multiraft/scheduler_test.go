package multiraft

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	dto "github.com/prometheus/client_model/go"

	"github.com/vowdb/vowdb/api/vowdbpb"
	"github.com/vowdb/vowdb/internal/clock"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/metrics"
	"github.com/vowdb/vowdb/internal/replica"
	"github.com/vowdb/vowdb/internal/storage"
)

type nullSender struct{}

func (nullSender) Send(uint64, []*vowdbpb.RaftMessage) {}

func testConfig(m *metrics.Node) Config {
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	return Config{NodeID: 1, TickInterval: 5 * time.Millisecond, Logger: lg, Metrics: m,
		Replica: replica.Config{NodeID: 1, ElectionTicks: 10, HeartbeatTicks: 1, LogKeepEntries: 20,
			ProposalTimeoutTicks: 2000, Logger: lg, Metrics: m}}
}

func open(t *testing.T, fs vfs.FS, bootstrap bool) (*Scheduler, *storage.Engine, *metrics.Node) {
	t.Helper()
	eng, err := storage.Open(storage.Options{Dir: "/store", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	s, err := New(testConfig(m), eng, nullSender{})
	if err != nil {
		t.Fatal(err)
	}
	if bootstrap {
		one := []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}
		if err := s.Bootstrap(
			&vowdbpb.RangeDescriptor{RangeId: 2, EndKey: []byte("m"), Generation: 1, Replicas: one},
			&vowdbpb.RangeDescriptor{RangeId: 3, StartKey: []byte("m"), Generation: 1, Replicas: one},
		); err != nil {
			t.Fatal(err)
		}
	}
	s.Start()
	return s, eng, m
}

// propose proposes a put and waits for its result, retrying while the
// single-voter group elects itself.
func propose(t *testing.T, s *Scheduler, rangeID uint64, k, v string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := replica.NewProposal(&vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: []byte(k), Value: []byte(v)}}})
		s.Propose(rangeID, p)
		res := <-p.Done
		if res.Err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("propose %s: %v", k, res.Err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGroupCommit: proposals to two ranges queued together are persisted by
// one synced write (the Ready of both groups in one batch).
func TestGroupCommit(t *testing.T) {
	s, eng, m := open(t, vfs.NewMem(), true)
	defer eng.Close()
	defer s.Stop()
	propose(t, s, 2, "a", "warm")
	propose(t, s, 3, "n", "warm")
	maxGroups := 0.0
	for round := 0; round < 50 && maxGroups < 2; round++ {
		p1 := replica.NewProposal(&vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: []byte("a"), Value: []byte("1")}}})
		p2 := replica.NewProposal(&vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: []byte("n"), Value: []byte("1")}}})
		// Queue both under the inbox lock's view: the loop drains them in one round.
		_ = s.Do(context.Background(), func() {
			s.replicas[2].Propose(p1)
			s.replicas[3].Propose(p2)
		})
		if r := <-p1.Done; r.Err != nil {
			t.Fatal(r.Err)
		}
		if r := <-p2.Done; r.Err != nil {
			t.Fatal(r.Err)
		}
		var h dto.Metric
		_ = m.ReadyBatchGroups.Write(&h)
		for _, b := range h.Histogram.Bucket {
			if b.GetCumulativeCount() < h.Histogram.GetSampleCount() && b.GetUpperBound() >= maxGroups {
				maxGroups = b.GetUpperBound() * 2
			}
		}
	}
	if maxGroups < 2 {
		t.Fatal("no round persisted the Ready of two groups in one write")
	}
}

// TestCrashKeepsAcknowledgedWrites: after a crash that loses every unsynced
// byte (or a random part of them), every acknowledged write is still there,
// including writes whose entries were truncated from the Raft log.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	for _, pct := range []int{0, 50} {
		t.Run(fmt.Sprintf("unsynced-kept-%d%%", pct), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, eng, _ := open(t, fs, true)
			acked := map[string]string{}
			for i := 0; i < 200; i++ {
				k := fmt.Sprintf("%c%02d", "am"[i%2], i%37)
				v := fmt.Sprint(i)
				rangeID := uint64(2 + i%2)
				propose(t, s, rangeID, k, v)
				acked[k] = v
			}
			// Crash: clone the file system as it would survive power loss.
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(uint64(pct+1), 7))})
			s.Stop()
			_ = eng.Close()

			s2, eng2, _ := open(t, crashed, false)
			defer eng2.Close()
			defer s2.Stop()
			// Wait until both groups re-applied their logs.
			deadline := time.Now().Add(10 * time.Second)
			for {
				ok := true
				for k, v := range acked {
					got, err := eng2.Get(keys.UserKey([]byte(k)))
					if err != nil || string(got) != v {
						ok = false
						break
					}
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("acknowledged writes missing after crash")
				}
				time.Sleep(10 * time.Millisecond)
			}
			propose(t, s2, 2, "after", "crash")
		})
	}
}

// TestSoleVoterElectsWithoutTicks: a range whose only voter is this node
// elects itself as soon as it is opened, by Bootstrap (a cluster just
// initialized) or by New (a restart), without an election timeout: the
// manual clock never moves, so no tick ever runs.
func TestSoleVoterElectsWithoutTicks(t *testing.T) {
	fs := vfs.NewMem()
	for _, restart := range []bool{false, true} {
		eng, err := storage.Open(storage.Options{Dir: "/store", FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(metrics.New())
		cfg.Clock = clock.NewManual(time.Unix(0, 0))
		s, err := New(cfg, eng, nullSender{})
		if err != nil {
			t.Fatal(err)
		}
		if !restart {
			if err := s.Bootstrap(&vowdbpb.RangeDescriptor{RangeId: 2, Generation: 1, Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}}); err != nil {
				t.Fatal(err)
			}
		}
		s.Start()
		// The election takes one round of the loop, which the scheduler
		// runs by itself; a proposal made before it is refused.
		deadline := time.Now().Add(10 * time.Second)
		for {
			p := replica.NewProposal(&vowdbpb.Command{Op: &vowdbpb.Command_Put{Put: &vowdbpb.PutOp{Key: []byte("k"), Value: []byte("v")}}})
			s.Propose(2, p)
			err := (<-p.Done).Err
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("restart=%v: the sole voter did not elect itself without ticks: %v", restart, err)
			}
			time.Sleep(time.Millisecond)
		}
		s.Stop()
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLogBoundedByBytes: with large values the in-memory log is truncated by
// size, long before LogKeepEntries entries accumulate.
func TestLogBoundedByBytes(t *testing.T) {
	eng, err := storage.Open(storage.Options{Dir: "/store", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cfg := testConfig(metrics.New())
	cfg.Replica.LogKeepEntries = 100000
	cfg.Replica.LogMaxBytes = 256 << 10
	s, err := New(cfg, eng, nullSender{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(&vowdbpb.RangeDescriptor{RangeId: 2, Generation: 1, Replicas: []*vowdbpb.ReplicaDescriptor{{NodeId: 1}}}); err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	big := string(make([]byte, 32<<10))
	for i := 0; i < 64; i++ { // 2 MiB of values
		propose(t, s, 2, fmt.Sprintf("k%d", i), big)
	}
	var entries, bytes uint64
	_ = s.Do(context.Background(), func() { entries, bytes = s.Replica(2).LogSize() })
	if bytes > 2*cfg.Replica.LogMaxBytes || entries >= 64 {
		t.Fatalf("log not bounded by bytes: %d entries, %d bytes", entries, bytes)
	}
}

// TestBootCountNamesIncarnations: every start of a node gets a new,
// durable incarnation for its proposal ids, so an entry proposed before a
// restart is never taken for one proposed after it.
func TestBootCountNamesIncarnations(t *testing.T) {
	eng, err := storage.Open(storage.Options{Dir: "/store", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	var seen []uint64
	for i := 0; i < 3; i++ {
		s, err := New(testConfig(metrics.New()), eng, nullSender{})
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, s.cfg.Replica.Incarnation)
	}
	if seen[0] == 0 || seen[0] == seen[1] || seen[1] == seen[2] {
		t.Fatalf("incarnations of three starts: %v, want distinct and non-zero", seen)
	}
}
