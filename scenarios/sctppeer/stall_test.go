package sctppeer_test

import (
	"context"
	"fmt"
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
		closed := closedEventOf(evs, r.LocalAddrs)
		switch {
		case closed == nil:
			t.Errorf("association %v lost %d of %d echoes: no closed event from the server", r.LocalAddrs, r.Lost, r.Sent)
		case !sctppeer.StalledInStack(r, closed):
			t.Errorf("association %v lost %d of %d echoes and is not told a stall: client all acknowledged %v (%d bytes held), server %d chunks in flight (%d bytes held)",
				r.LocalAddrs, r.Lost, r.Sent, r.AllAcked, r.StuckBytes, closed.InFlight, closed.Queued)
		default:
			t.Logf("association %v: stream stalled in a stack, %d of %d echoes missing, nothing in flight at either end (client held %d bytes, server %d)",
				r.LocalAddrs, r.Lost, r.Sent, r.StuckBytes, closed.Queued)
		}
	}
	t.Logf("%d of 200 associations stalled without an LB", len(stalled))
}

// TestMessageLostOnThePathIsNotAStall: what StalledInStack must not
// excuse. The router drops every packet carrying one message of one
// association (its sequence number in the payload of a DATA chunk, the
// first or after a SACK, alone or bundled with up to three others), as a
// path that black-holes a chunk and all its retransmissions would: that
// message's stream stops and, unlike the stalls, the association does not
// live on quietly: its retransmissions time out until usrsctp gives it up
// (COMM_LOST within about 3 s with the fast timers). Either way it is not
// told a stack stall: the client's stack has the chunk in flight or no
// association left. The other associations are untouched.
func TestMessageLostOnThePathIsNotAStall(t *testing.T) {
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1, Links: 2, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11", "10.77.12.11"), Port: 38413, ID: "be1", Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	const (
		port = 41000
		seq  = 40
		size = 64
	)
	t.Cleanup(func() { _, _ = l.Router.Exec(context.Background(), "nft", "delete table inet tlb_hole") })
	cmds := []string{
		"add table inet tlb_hole",
		"add chain inet tlb_hole hole { type filter hook forward priority 0 ; }",
	}
	// The payload of a DATA chunk starts 28 bytes into the SCTP packet
	// (12 common header, 16 chunk header); a SACK without gaps before it
	// adds 16; each earlier DATA chunk of this size adds 16 + size.
	for k := 0; k < 4; k++ {
		for _, sack := range []int{0, 16} {
			off := (28 + sack + k*(16+size)) * 8
			cmds = append(cmds, fmt.Sprintf("add rule inet tlb_hole hole sctp sport %d @th,%d,64 %d drop", port, off, seq))
		}
	}
	for _, cmd := range cmds {
		if out, err := l.Router.Exec(ctx, "nft", cmd); err != nil {
			t.Fatalf("nft %s: %v: %s", cmd, err, out)
		}
	}
	c, err := sctppeer.StartClient(ctx, l.Client, sctppeer.ClientOptions{
		Bind: addrs("10.77.1.2", "10.77.11.2"), Connect: addrs("10.77.2.11", "10.77.12.11"), Port: 38413,
		Count: 200, Size: size, Interval: 20 * time.Millisecond, Streams: 2, PPID: 60, Timers: sctppeer.FastTimers,
		Associations: 3, LocalPort: port, Wait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.WaitMany(ctx)
	if len(m.Associations) != 3 {
		t.Fatalf("%d associations reported, want 3: %+v", len(m.Associations), m)
	}
	for i, r := range m.Associations[1:] {
		if !r.OK() {
			t.Errorf("association %d: %+v, want every echo", i+1, r)
		}
	}
	r := m.Associations[0]
	// The message and every later one of its stream never come back.
	if r.Lost == 0 || r.Echoed < seq {
		t.Fatalf("association 0: sent %d echoed %d lost %d, want echoes up to message %d and none from there on its stream", r.Sent, r.Echoed, r.Lost, seq)
	}
	time.Sleep(2 * time.Second) // the server's closed event follows the client's close
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	closed := closedEventOf(evs, r.LocalAddrs)
	if r.AllAcked || sctppeer.StalledInStack(r, closed) {
		t.Errorf("a message the path lost for good told a stack stall: client all acknowledged %v (%d bytes held), server closed %+v", r.AllAcked, r.StuckBytes, closed)
	}
	t.Logf("association 0: %d of %d echoes lost, client all acknowledged %v, server closed %+v, events %d: not a stall", r.Lost, r.Sent, r.AllAcked, closed, len(r.Events))
}

// closedEventOf is the server's closed event of the association whose
// peer addresses include one of the client's local addresses (nil if the
// server has not reported it closed).
func closedEventOf(evs []sctppeer.ServerEvent, clientAddrs []string) *sctppeer.ServerEvent {
	var closed *sctppeer.ServerEvent
	mine := map[uint32]bool{}
	for i, ev := range evs {
		if ev.Event == "assoc" && ev.State == "COMM_UP" && slices.ContainsFunc(ev.Peers, func(p string) bool { return slices.Contains(clientAddrs, p) }) {
			mine[ev.Assoc] = true
		}
		if ev.Event == "closed" && mine[ev.Assoc] {
			closed = &evs[i]
		}
	}
	return closed
}
