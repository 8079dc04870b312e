package diam_test

import (
	"fmt"
	"testing"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// A service change reaches the machine as Reconfigure: servers kept keep
// their connection and bindings, a removed server's pending requests go
// to another server with the T flag (one answer each) and its sessions are
// bound anew, a new server is dialled and takes new sessions, and the
// clients never notice.
func TestReconfigureKeepsBindingsAndConnections(t *testing.T) {
	w := newWorld(t, 3, nil)
	c := w.connect("pgw.client.example.org")
	s0, s1, s2 := w.servers[0], w.servers[1], w.servers[2]
	conns := []agent.ConnID{s0.conn, s1.conn, s2.conn}
	for i := range 30 {
		b, h := w.ccr(c, fmt.Sprintf("r;%d", i), diameter.CCInitial, "")
		w.clientSends(c, b)
		w.answerOf(c, h)
	}
	before := map[string]int{}
	for i := range 30 {
		sid := fmt.Sprintf("r;%d", i)
		before[sid] = w.m.Bound(sid)
	}
	// Server 1 holds requests when it is removed.
	s1.mode = "mute"
	var pend []uint32
	for i := range 30 {
		sid := fmt.Sprintf("r;%d", i)
		b, h := w.ccr(c, sid, diameter.CCUpdate, "")
		w.clientSends(c, b)
		if before[sid] == 1 {
			pend = append(pend, h)
		}
	}
	if len(pend) != 10 || w.m.Pending() != 10 {
		t.Fatalf("%d requests pending on server 1, want 10", w.m.Pending())
	}
	s3 := w.newServer("srv3")
	// New order: server 2 first, server 0, then the new one; server 1 gone.
	w.reconfigure(agent.LeastSessions, s2, s0, s3)

	if !c.open || c.cea != diameter.Success {
		t.Fatal("the client's connection did not survive the change")
	}
	if s0.conn != conns[0] || s2.conn != conns[2] {
		t.Fatal("a kept server was reconnected")
	}
	if s1.dprs != 1 {
		t.Fatalf("removed server got %d DPRs, want 1", s1.dprs)
	}
	if s3.conn == 0 {
		t.Fatal("new server not dialled")
	}
	retrans := 0
	for _, h := range pend {
		a := w.answerOf(c, h)
		if a.ResultCode != diameter.Success {
			t.Fatalf("pending request answered %d", a.ResultCode)
		}
	}
	for _, s := range []*fakeServer{s0, s2, s3} {
		for _, b := range s.got {
			if h, _ := diameter.ParseHeader(b); h.IsRetransmit() {
				retrans++
			}
		}
	}
	if retrans != 10 || w.counts["retransmitted"] != 10 {
		t.Fatalf("%d requests re-sent with T (counted %d), want 10", retrans, w.counts["retransmitted"])
	}
	// Bindings of the kept servers follow their server to its new index.
	newIndex := map[int]int{0: 1, 2: 0}
	for sid, old := range before {
		got := w.m.Bound(sid)
		if old == 1 {
			if got == -1 || got == 3 {
				t.Fatalf("session %s of the removed server bound to %d", sid, got)
			}
			continue
		}
		if got != newIndex[old] {
			t.Fatalf("session %s moved from server %d to %d (want %d)", sid, old, got, newIndex[old])
		}
	}
	// Every later request of a kept session reaches its old server.
	for sid, old := range before {
		if old == 1 {
			continue
		}
		srv := map[int]*fakeServer{0: s0, 2: s2}[old]
		n := srv.seen[sid]
		b, h := w.ccr(c, sid, diameter.CCUpdate, "")
		w.clientSends(c, b)
		w.answerOf(c, h)
		if srv.seen[sid] != n+1 {
			t.Fatalf("session %s left its server after the change", sid)
		}
	}
	// New sessions go by the new policy: the new server holds the fewest.
	for i := range 5 {
		sid := fmt.Sprintf("new;%d", i)
		b, h := w.ccr(c, sid, diameter.CCInitial, "")
		w.clientSends(c, b)
		w.answerOf(c, h)
		if s3.seen[sid] != 1 {
			t.Fatalf("new session %s not on the new server (fewest sessions)", sid)
		}
	}
	// A message arriving late on the removed server's connection is dropped.
	w.step(agent.Message{Conn: conns[1], Data: diameter.DWR(diameter.Identity{Host: s1.host, Realm: srvRealm}, 1, 7, 7)})
	if w.m.Pending() != 0 {
		t.Fatalf("%d requests still pending", w.m.Pending())
	}
}

func TestReconfigureRejectsAnInvalidServerList(t *testing.T) {
	w := newWorld(t, 2, nil)
	c := w.connect("pgw.client.example.org")
	b, h := w.ccr(c, "x;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	w.answerOf(c, h)
	s := w.m.Bound("x;1")
	w.step(agent.Reconfigure{Servers: []agent.Server{{Name: "srv0"}, {Name: "srv0"}}})
	if w.counts["rejected:invalid-reconfiguration"] != 1 || w.m.Bound("x;1") != s || len(w.m.ServerNames()) != 2 {
		t.Fatal("an invalid server list changed the machine")
	}
}
