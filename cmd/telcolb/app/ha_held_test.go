package app

import (
	"testing"
	"time"
)

// TestHAResyncAgesCopiesByTheirHoldTime: a flow lb1 synced while no peer
// was up waits in its sync table; lb2, joining 2 s later, gets it in its
// bulk resync, with the 2 s it was held (sync.Record.Held), and dates
// the flow's last packet 2 s back as lb1 does, not at the import. A copy
// dated at its import outlived its flow by the time it was held, up to
// the 2 minutes between two full refreshes, when its owner failed.
func TestHAResyncAgesCopiesByTheirHoldTime(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := newTimedCT(), newTimedCT()
	// No full refresh in the test: a value put again would be sent fresh.
	rare := func(c *HAConfig) { c.FullRefreshEvery = 1000 }
	pair.startWith("lb1", lb1, rare)
	lb1.change("flow", "v1") // a new flow: its event, idle 0
	seen := time.Now()
	time.Sleep(2 * time.Second)
	pair.startWith("lb2", lb2, rare)
	waitFor(t, "the flow on lb2", func() bool { return lb2.has("flow") })
	lb2.mu.Lock()
	got := lb2.seen["flow"]
	lb2.mu.Unlock()
	// The event's idle 0 was read after seen; the transfer adds a little.
	if d := got.Sub(seen); d < -50*time.Millisecond || d > 500*time.Millisecond {
		t.Fatalf("lb2 dates the flow's last packet %v after lb1 saw it, want within 0.5 s: the 2 s lb1 held it are lost", d.Round(time.Millisecond))
	}
}
