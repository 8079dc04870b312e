package ha

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/l4"
)

// entryMoves is what a daemon's metrics say of conntrack entries changing
// hands: taken over for traffic here, and yielded to a peer.
func entryMoves(t *testing.T, ctx context.Context, d *l4.Daemon) (taken, yielded float64) {
	t.Helper()
	found := 0
	for _, line := range strings.Split(scrape(t, ctx, d), "\n") {
		var into *float64
		switch {
		case strings.HasPrefix(line, `telcolb_ha_entries_taken_over_total{reason="traffic"} `):
			into = &taken
		case strings.HasPrefix(line, "telcolb_ha_entries_yielded_total "):
			into = &yielded
		default:
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		*into = v
		found++
	}
	if found != 2 {
		t.Fatalf("the daemon's metrics lack telcolb_ha_entries_taken_over_total{reason=\"traffic\"} or telcolb_ha_entries_yielded_total")
	}
	return taken, yielded
}

// settledMoves starts watching the entries moving between the lab's two
// nodes once the routes moved back to lb1 and every flow answered through
// it: a few refresh rounds later, lb2 carries no packet. From then on
// entries may still move to lb1 (an SCTP path's entry when a heartbeat
// first crosses lb1), never back: lb2 taking an entry over for traffic, or
// lb1 yielding one, is ownership passing back and forth
// (docs/architecture.md, "Ownership"). The returned func, called at the
// end of the run, logs the moves both ways and fails when more than 1% of
// the flows moved back to lb2.
func settledMoves(t *testing.T, ctx context.Context, lb *lab2, flows int) (check func()) {
	t.Helper()
	time.Sleep(3 * time.Second) // three refresh rounds (1 s)
	start := time.Now()
	t1, y1 := entryMoves(t, ctx, lb.daemons[0])
	t2, y2 := entryMoves(t, ctx, lb.daemons[1])
	return func() {
		t.Helper()
		t1b, y1b := entryMoves(t, ctx, lb.daemons[0])
		t2b, y2b := entryMoves(t, ctx, lb.daemons[1])
		toLB1, toLB2 := (t1b-t1)+(y2b-y2), (t2b-t2)+(y1b-y1)
		t.Logf("after the rejoin settled, in %v: %v entry moves to lb1 (lb1 took %v for traffic, lb2 yielded %v), %v back to lb2 (lb2 took %v, lb1 yielded %v)",
			time.Since(start).Round(time.Second), toLB1, t1b-t1, y2b-y2, toLB2, t2b-t2, y1b-y1)
		if toLB2 > float64(flows)/100 {
			t.Errorf("%v entry moves back to lb2 in %v while lb1 carries every flow (%d flows): ownership moving back and forth", toLB2, time.Since(start).Round(time.Second), flows)
		}
	}
}
