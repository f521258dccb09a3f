package torture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"
)

// OpType is what a client learned about an operation, in Jepsen's terms
// (the values internal/check reads).
type OpType string

const (
	// OK: the operation took effect and its results are valid.
	OK OpType = "ok"
	// Fail: the operation definitely did not take effect.
	Fail OpType = "fail"
	// Info: unknown; it may take effect at any time after its invocation,
	// or never.
	Info OpType = "info"
)

// Recorder writes a run's history, one JSON value per line, and keeps the
// counts the summary reports. Its clock (Now) is the run's clock: history
// times and fault times are both measured on it. It is safe for concurrent
// use.
type Recorder struct {
	start time.Time

	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	err    error // the first write error
	counts map[OpType]int
	acks   []time.Duration // completion times of OK operations
}

// NewRecorder creates the history file at path; its clock starts now.
func NewRecorder(path string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &Recorder{start: time.Now(), f: f, w: bufio.NewWriterSize(f, 1<<16), counts: map[OpType]int{}}, nil
}

// Now is the time since the recorder was created, on the monotonic clock.
func (r *Recorder) Now() time.Duration { return time.Since(r.start) }

// Write appends one line, line encoded as JSON, to the history.
func (r *Recorder) Write(line any) error {
	b, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("torture: history line: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		_, r.err = r.w.Write(append(b, '\n'))
	}
	return r.err
}

// Record writes line to the history and counts one operation that
// completed at complete (Recorder.Now) with outcome typ.
func (r *Recorder) Record(typ OpType, complete time.Duration, line any) error {
	err := r.Write(line)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[typ]++
	if typ == OK {
		r.acks = append(r.acks, complete)
	}
	return err
}

// Close flushes and closes the history file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return r.err
	}
	if err := r.w.Flush(); r.err == nil {
		r.err = err
	}
	if err := r.f.Close(); r.err == nil {
		r.err = err
	}
	r.f = nil
	return r.err
}

// Stats returns the counts so far.
func (r *Recorder) Stats() OpStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	acks := slices.Clone(r.acks)
	slices.Sort(acks)
	return OpStats{OK: r.counts[OK], Fail: r.counts[Fail], Info: r.counts[Info], acks: acks}
}

// OpStats counts a run's operations by outcome.
type OpStats struct {
	OK, Fail, Info int
	acks           []time.Duration // sorted
}

// Attempted is the number of operations recorded.
func (s OpStats) Attempted() int { return s.OK + s.Fail + s.Info }

// FirstAckAfter returns the completion time of the first OK operation that
// completed after t.
func (s OpStats) FirstAckAfter(t time.Duration) (time.Duration, bool) {
	i := sort.Search(len(s.acks), func(i int) bool { return s.acks[i] > t })
	if i == len(s.acks) {
		return 0, false
	}
	return s.acks[i], true
}

// LongestGap returns the longest stretch within [from, to] with no OK
// completion, and where it starts.
func (s OpStats) LongestGap(from, to time.Duration) (gap, at time.Duration) {
	prev := from
	for _, a := range s.acks {
		if a < from {
			continue
		}
		if a > to {
			break
		}
		if a-prev > gap {
			gap, at = a-prev, prev
		}
		prev = a
	}
	if to-prev > gap {
		gap, at = to-prev, prev
	}
	return gap, at
}
