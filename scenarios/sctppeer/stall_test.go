package sctppeer_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// TestStalledStreamIsTheStacks (TELCOLB_SCTP_STALL=1, about 2 minutes,
// load-dependent): usrsctp 0.9.5 stops sending one stream of an
// association under load with no LB anywhere (docs/testing.md). Four
// clients of 50 multi-homed associations, 2 streams, a message every
// 50 ms for 90 s, through a router dropping 2% of SCTP at random (the
// retransmissions the HA lab's load causes). Every association that lost
// echoes without dying must be told a peer stall the way scenarios/ha
// tells it: nothing in flight on the client after its wait
// (Result.AllAcked) nor on the server before the close (closed event,
// InFlight 0). It seldom stalls on an idle machine; the run logs how many
// stalled.
func TestStalledStreamIsTheStacks(t *testing.T) {
	if os.Getenv("TELCOLB_SCTP_STALL") == "" {
		t.Skip("TELCOLB_SCTP_STALL=1 runs it (about 2 minutes)")
	}
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1, Links: 2, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	timers := sctppeer.FastTimers
	timers.Blackhole = 2 // four client stacks share the namespace
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11", "10.77.12.11"), Port: 38412, ID: "be1", Timers: timers,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = l.Router.Exec(context.Background(), "nft", "delete table inet tlb_loss") })
	for _, cmd := range []string{
		"add table inet tlb_loss",
		"add chain inet tlb_loss lossy { type filter hook forward priority 0 ; }",
		"add rule inet tlb_loss lossy meta l4proto sctp numgen random mod 100 < 2 drop",
	} {
		if out, err := l.Router.Exec(ctx, "nft", cmd); err != nil {
			t.Fatalf("nft %s: %v: %s", cmd, err, out)
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stalled []sctppeer.Result
	)
	for k := 0; k < 4; k++ {
		c, err := sctppeer.StartClient(ctx, l.Client, sctppeer.ClientOptions{
			Bind: addrs("10.77.1.2", "10.77.11.2"), Connect: addrs("10.77.2.11", "10.77.12.11"), Port: 38412,
			Count: 1800, Size: 64, Interval: 50 * time.Millisecond, Streams: 2, PPID: 60, Timers: timers,
			Associations: 50, LocalPort: uint16(40000 + 100*k), Wait: 20 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, _ := c.WaitMany(ctx)
			mu.Lock()
			defer mu.Unlock()
			for _, r := range m.Associations {
				// Associations that died (both paths lost to the 2% and the
				// fast timers) are not stalls.
				dead := r.Error != "" || slices.ContainsFunc(r.Events, func(e sctppeer.Event) bool {
					return e.Kind == "assoc" && e.State != "COMM_UP" || e.Kind == "send-failed"
				})
				if r.Associated && r.Lost > 0 && !dead {
					stalled = append(stalled, r)
				}
			}
		}()
	}
	wg.Wait()
	// The server's closed events follow the clients' closes.
	time.Sleep(2 * time.Second)
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stalled {
		var closed *sctppeer.ServerEvent
		mine := map[uint32]bool{}
		for i, ev := range evs {
			if ev.Event == "assoc" && ev.State == "COMM_UP" && slices.ContainsFunc(ev.Peers, func(p string) bool { return slices.Contains(r.LocalAddrs, p) }) {
				mine[ev.Assoc] = true
			}
			if ev.Event == "closed" && mine[ev.Assoc] {
				closed = &evs[i]
			}
		}
		switch {
		case closed == nil:
			t.Errorf("association %v lost %d of %d echoes: no closed event from the server", r.LocalAddrs, r.Lost, r.Sent)
		case !r.AllAcked || closed.InFlight != 0:
			t.Errorf("association %v lost %d of %d echoes and is not told a stall: client all acknowledged %v (%d bytes held), server %d chunks in flight (%d bytes held)",
				r.LocalAddrs, r.Lost, r.Sent, r.AllAcked, r.StuckBytes, closed.InFlight, closed.Queued)
		default:
			t.Logf("association %v: stream stalled in a stack, %d of %d echoes missing, nothing in flight at either end (client held %d bytes, server %d)",
				r.LocalAddrs, r.Lost, r.Sent, r.StuckBytes, closed.Queued)
		}
	}
	t.Logf("%d of 200 associations stalled without an LB", len(stalled))
}
