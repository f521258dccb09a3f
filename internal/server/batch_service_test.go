package server

import (
	"testing"
	"time"
)

// TestStreamTimeout: a transactional request on the Batch stream stops when
// its client stops waiting, never later than the node's own bound.
func TestStreamTimeout(t *testing.T) {
	def := 15 * time.Second
	for _, c := range []struct {
		clientMs int64
		want     time.Duration
	}{
		{0, def},                        // no client deadline
		{-5, def},                       // nonsense: ignored
		{2500, 2500 * time.Millisecond}, // the client waits less
		{60000, def},                    // the client waits longer
		{15000, def},                    // equal
		{1, time.Millisecond},           // almost expired
	} {
		if got := streamTimeout(c.clientMs, def); got != c.want {
			t.Errorf("streamTimeout(%d, %v) = %v, want %v", c.clientMs, def, got, c.want)
		}
	}
}
