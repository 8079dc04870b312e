package sctppeer_test

import (
	"context"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// TestServerReportsItsOpenAssociations: asked (ReportState), the server
// prints a "state" event per association it still serves, with its send
// queue's last reading, whatever its serving goroutine is doing. That is
// how scenarios/ha tells a stream stalled in a stack when the client's
// close never reached the server. An idle association reports nothing in
// flight (a stall's other half, with a client that had nothing in flight
// either); once the server's packets to the client are dropped, its echo
// stays in flight and the report says so: not a stall.
func TestServerReportsItsOpenAssociations(t *testing.T) {
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1, Links: 1, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11"), Port: 38412, ID: "be1", Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	// One message a second for 12 s: idle between them.
	c, err := sctppeer.StartClient(ctx, l.Client, sctppeer.ClientOptions{
		Bind: addrs("10.77.1.2"), Connect: addrs("10.77.2.11"), Port: 38412,
		Count: 12, Size: 64, Interval: time.Second, Streams: 1, PPID: 60, Timers: sctppeer.FastTimers,
		Wait: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := srv.WaitEvent(wctx, "assoc", "COMM_UP"); err != nil {
		t.Fatal(err)
	}
	assoc := upAssoc(t, srv)
	stalled := sctppeer.Result{Associated: true, Sent: 12, Echoed: 11, Lost: 1, AllAcked: true}

	// Idle: the echo of each message is acknowledged within milliseconds,
	// the readings half a second apart.
	time.Sleep(1500 * time.Millisecond)
	st := askState(t, srv, assoc, func(ev sctppeer.ServerEvent) bool { return ev.InFlight == 0 })
	if !sctppeer.StalledInStack(stalled, &st) {
		t.Errorf("idle association's state %+v does not complete a stall", st)
	}

	// The server's packets to the client dropped on the path (the router):
	// its next echo stays in flight, retransmitted. (Dropped by the
	// server's own output hook instead, the echo stays queued, never
	// counted in flight: the stack's send failed.)
	const table = "tlb_state"
	if out, err := l.Router.Exec(ctx, "nft", "add table inet "+table+
		" { chain lossy { type filter hook forward priority 0; policy accept; ip saddr 10.77.2.11 meta l4proto sctp drop; }; }"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			_, _ = l.Router.Exec(context.Background(), "nft", "delete", "table", "inet", table)
		}
	}
	t.Cleanup(lift)
	st = askState(t, srv, assoc, func(ev sctppeer.ServerEvent) bool { return ev.InFlight > 0 })
	if sctppeer.StalledInStack(stalled, &st) {
		t.Errorf("state %+v with an echo in flight completes a stall", st)
	}
	lift()
	if r, err := c.Wait(ctx); err != nil || !r.OK() {
		t.Errorf("client after the drop was lifted: %+v, %v", r, err)
	}
}

// upAssoc is the association ID of the server's one COMM_UP event.
func upAssoc(t *testing.T, srv *sctppeer.Server) uint32 {
	t.Helper()
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Event == "assoc" && ev.State == "COMM_UP" {
			return ev.Assoc
		}
	}
	t.Fatal("no COMM_UP event")
	return 0
}

// askState asks the server for its state reports until one of assoc
// satisfies want (within 8 s), and returns it.
func askState(t *testing.T, srv *sctppeer.Server, assoc uint32, want func(sctppeer.ServerEvent) bool) sctppeer.ServerEvent {
	t.Helper()
	var last []sctppeer.ServerEvent
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		before, err := srv.Events()
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.ReportState(); err != nil {
			t.Fatalf("report state: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		evs, err := srv.Events()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs[len(before):] {
			if ev.Event == "state" && ev.Assoc == assoc {
				last = append(last, ev)
				if want(ev) {
					return ev
				}
			}
		}
	}
	t.Fatalf("no state report of association %d as wanted within 8 s; reports %+v", assoc, last)
	return sctppeer.ServerEvent{}
}
