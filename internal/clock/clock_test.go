package clock

import (
	"testing"
	"time"
)

func TestManualTicker(t *testing.T) {
	m := NewManual(time.Unix(0, 0))
	tk := m.NewTicker(10 * time.Millisecond)
	m.Advance(5 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked early")
	default:
	}
	m.Advance(5 * time.Millisecond)
	select {
	case <-tk.C():
	default:
		t.Fatal("did not tick")
	}
	tk.Stop()
	m.Advance(time.Second)
	select {
	case <-tk.C():
		t.Fatal("ticked after Stop")
	default:
	}
	if got := m.Now(); !got.Equal(time.Unix(0, 0).Add(1010 * time.Millisecond)) {
		t.Fatalf("now %v", got)
	}
}
