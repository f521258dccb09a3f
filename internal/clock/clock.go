// Package clock is the one place vowdb reads time. Drivers (the Raft
// scheduler, the server's loops) take a Clock; tests pass a Manual clock and
// advance it from the script, so the same code runs under a simulated clock.
package clock

import (
	"sync"
	"time"
)

// Clock tells time and makes tickers.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker delivers ticks on C until Stop.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTicker returns a time.Ticker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Manual is a clock that moves only when Advance is called.
type Manual struct {
	mu struct {
		sync.Mutex
		now     time.Time
		tickers []*manualTicker
	}
}

var _ Clock = (*Manual)(nil)

// NewManual returns a Manual clock set to start.
func NewManual(start time.Time) *Manual {
	m := &Manual{}
	m.mu.now = start
	return m
}

// Now returns the manual time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.now
}

// NewTicker returns a ticker that fires as Advance passes its period.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTicker{m: m, period: d, next: m.mu.now.Add(d), c: make(chan time.Time, 1)}
	m.mu.tickers = append(m.mu.tickers, t)
	return t
}

// Advance moves time forward by d, firing tickers whose period elapsed. A
// ticker whose channel is full drops the tick, as time.Ticker does.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.now = m.mu.now.Add(d)
	for _, t := range m.mu.tickers {
		for !t.stopped && !t.next.After(m.mu.now) {
			select {
			case t.c <- t.next:
			default:
			}
			t.next = t.next.Add(t.period)
		}
	}
}

type manualTicker struct {
	m       *Manual
	period  time.Duration
	next    time.Time // guarded by m.mu
	stopped bool      // guarded by m.mu
	c       chan time.Time
}

func (t *manualTicker) C() <-chan time.Time { return t.c }

func (t *manualTicker) Stop() {
	t.m.mu.Lock()
	t.stopped = true
	t.m.mu.Unlock()
}
