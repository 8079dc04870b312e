package ha

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/l4"
)

// moves is what a daemon's metrics say of conntrack entries changing
// hands: taken over by reason (traffic here, the peer down, the state
// changed here), and yielded to a peer.
type moves struct {
	traffic, peerDown, changed, yielded float64
}

func (m moves) taken() float64 { return m.traffic + m.peerDown + m.changed }

func (m moves) sub(o moves) moves {
	return moves{m.traffic - o.traffic, m.peerDown - o.peerDown, m.changed - o.changed, m.yielded - o.yielded}
}

func (m moves) String() string {
	return fmt.Sprintf("took %v (traffic %v, peer down %v, changed here %v), yielded %v", m.taken(), m.traffic, m.peerDown, m.changed, m.yielded)
}

func entryMoves(t *testing.T, ctx context.Context, d *l4.Daemon) moves {
	t.Helper()
	var m moves
	found := 0
	for _, line := range strings.Split(scrape(t, ctx, d), "\n") {
		var into *float64
		switch {
		case strings.HasPrefix(line, `telcolb_ha_entries_taken_over_total{reason="traffic"} `):
			into = &m.traffic
		case strings.HasPrefix(line, `telcolb_ha_entries_taken_over_total{reason="peer_down"} `):
			into = &m.peerDown
		case strings.HasPrefix(line, `telcolb_ha_entries_taken_over_total{reason="changed"} `):
			into = &m.changed
		case strings.HasPrefix(line, "telcolb_ha_entries_yielded_total "):
			into = &m.yielded
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
	if found != 4 {
		t.Fatalf("the daemon's metrics lack telcolb_ha_entries_taken_over_total (traffic, peer_down, changed) or telcolb_ha_entries_yielded_total")
	}
	return m
}

// settledMoves starts watching the entries moving between the lab's two
// nodes once the routes moved back to lb1 and every flow answered through
// it: a few refresh rounds later, lb2 carries no packet. From then on
// entries may still move to lb1 (an SCTP path's entry when a heartbeat
// first crosses lb1), never back: lb2 taking an entry over (for traffic,
// its state changed there, or lb1 seen down), or lb1 yielding one, is ownership passing back and forth
// (docs/architecture.md, "Ownership"). The returned func, called at the
// end of the run, logs the moves both ways and fails when more than 1% of
// the flows moved back to lb2.
func settledMoves(t *testing.T, ctx context.Context, lb *lab2, flows int) (check func()) {
	t.Helper()
	time.Sleep(3 * time.Second) // three refresh rounds (1 s)
	start := time.Now()
	m1, m2 := entryMoves(t, ctx, lb.daemons[0]), entryMoves(t, ctx, lb.daemons[1])
	return func() {
		t.Helper()
		d1, d2 := entryMoves(t, ctx, lb.daemons[0]).sub(m1), entryMoves(t, ctx, lb.daemons[1]).sub(m2)
		toLB1, toLB2 := d1.taken()+d2.yielded, d2.taken()+d1.yielded
		t.Logf("after the rejoin settled, in %v: %v entry moves to lb1, %v back to lb2; lb1 %v; lb2 %v",
			time.Since(start).Round(time.Second), toLB1, toLB2, d1, d2)
		if toLB2 > float64(flows)/100 {
			t.Errorf("%v entry moves back to lb2 in %v while lb1 carries every flow (%d flows): ownership moving back and forth", toLB2, time.Since(start).Round(time.Second), flows)
		}
	}
}
