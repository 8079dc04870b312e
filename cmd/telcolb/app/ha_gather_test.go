package app

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
)

// busyFeed is a memCT whose change feed is counted.
type busyFeed struct {
	*memCT
	reads atomic.Int64
}

func (b *busyFeed) ConntrackChanges() (ChangeReader, error) { return b, nil }

func (b *busyFeed) Read() ([]dataplane.Record, error) {
	b.reads.Add(1)
	return b.memCT.Read()
}

// TestHAProducerGathersChanges: with changes always waiting (a datapath
// making thousands of new flows a second), the producer reads them at most
// once per HAConfig.Gather, so they reach the sync in batches instead of
// one wake-up (and one sync message) each; and every change still reaches
// it, none dropped for the wait.
func TestHAProducerGathersChanges(t *testing.T) {
	const gather, run = 50 * time.Millisecond, time.Second
	feed := &busyFeed{memCT: newMemCT()}
	h := newHAPair(t).startWith("lb1", feed, func(c *HAConfig) { c.Gather = gather })
	fed := 0
	stop := time.Now().Add(run)
	reads0 := feed.reads.Load()
	for time.Now().Before(stop) {
		// Blocks while the feed's 16 batches are waiting: the producer
		// always finds one.
		feed.local(ctRec(fmt.Sprintf("flow-%d", fed), "v"))
		fed++
	}
	reads := feed.reads.Load() - reads0
	if most := int64(run/gather) + 2; reads > most {
		t.Errorf("the producer read the changes %d times in %v, want at most %d (once per %v)", reads, run, most, gather)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		taken := len(h.owned)
		h.mu.Unlock()
		if taken == fed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the producer took %d of the %d changes fed", taken, fed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d changes in %d reads", fed, reads)
}
