package diam_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// TestRecycledBuffersHeldWhileTheyMayBeSent: every message the agent gets
// comes with a reference to its buffer, and a buffer is overwritten the
// moment its last reference is released (as a shell recycling its read
// slabs would reuse it). Through answers, a 3004 retry, a failover with
// the T flag, a client's duplicate, a timeout and a client gone before
// its answer, every request a server gets and every answer a client gets
// is the one sent, never the overwritten bytes; once nothing is pending,
// every reference is released (nothing kept for ever).
func TestRecycledBuffersHeldWhileTheyMayBeSent(t *testing.T) {
	w := newWorld(t, 3, nil)
	w.refs = map[*testRef]bool{}
	c := w.connect("pgw.client.example.org")
	sessionOf := func(b []byte) string {
		t.Helper()
		m, err := diameter.Parse(b)
		if err != nil {
			t.Fatalf("a server got a corrupted request: %v", err)
		}
		return string(m.SessionID)
	}
	send := func(session string) uint32 {
		b, hbh := w.ccr(c, session, diameter.CCUpdate, "")
		w.clientSends(c, b)
		return hbh
	}
	answered := func(hbh uint32, from int) {
		t.Helper()
		a := w.answerOf(c, hbh)
		if a.ResultCode != diameter.Success || !diameter.EqualIdentity(a.OriginHost, w.servers[from].host) {
			t.Fatalf("answer %d from %q, want success from %s", a.ResultCode, a.OriginHost, w.servers[from].host)
		}
	}
	// Bind 30 sessions over the three servers.
	for i := range 30 {
		answered(send(fmt.Sprintf("r;%d", i)), w.m.Bound(fmt.Sprintf("r;%d", i)))
	}

	// 3004: the request goes to another server, copied from the bytes the
	// agent holds, after the first copy was written (and released).
	w.servers[0].mode = "busy"
	var onZero string
	for i := range 30 {
		if s := fmt.Sprintf("r;%d", i); w.m.Bound(s) == 0 {
			onZero = s
			break
		}
	}
	hbh := send(onZero)
	if s := w.m.Bound(onZero); s == 0 || s < 0 {
		t.Fatalf("busy server's session bound to %d", s)
	}
	answered(hbh, w.m.Bound(onZero))
	w.servers[0].mode = ""

	// Failover: server 1 holds requests unanswered while other requests
	// come and go; then it fails, and each held request goes to another
	// server with the T flag, byte for byte the client's.
	w.servers[1].mode = "mute"
	held := map[string]uint32{}
	for i := range 30 {
		s := fmt.Sprintf("r;%d", i)
		if w.m.Bound(s) == 1 {
			held[s] = send(s)
		} else {
			answered(send(s), w.m.Bound(s))
		}
	}
	if len(held) == 0 || w.m.Pending() != len(held) {
		t.Fatalf("%d requests held, %d pending", len(held), w.m.Pending())
	}
	got := [3]int{len(w.servers[0].got), len(w.servers[1].got), len(w.servers[2].got)}
	w.servers[1].up = false
	w.step(agent.Closed{Conn: w.servers[1].conn})
	resent := 0
	for _, k := range []int{0, 2} {
		for _, b := range w.servers[k].got[got[k]:] {
			h, _ := diameter.ParseHeader(b)
			if _, ok := held[sessionOf(b)]; !ok || !h.IsRetransmit() {
				t.Fatalf("server %d got session %q (T flag %v), not one of the held requests", k, sessionOf(b), h.IsRetransmit())
			}
			resent++
		}
	}
	if resent != len(held) {
		t.Fatalf("%d of %d held requests re-sent", resent, len(held))
	}
	for s, hbh := range held {
		answered(hbh, w.m.Bound(s))
	}

	// A client's duplicate (T flag) of a pending request is dropped, and
	// the timeout's 3002 is built from the held bytes.
	w.servers[0].mode, w.servers[2].mode = "mute", "mute"
	b, hbh := w.ccr(c, "r;0", diameter.CCUpdate, "")
	w.clientSends(c, b)
	dup := append([]byte(nil), b...)
	diameter.SetRetransmit(dup)
	w.clientSends(c, dup)
	for i := 1; i < 10; i++ {
		send(fmt.Sprintf("r;%d", i)) // held too, then timed out
	}
	w.advance(6 * time.Second)
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.UnableToDeliver || string(a.SessionID) != "r;0" {
		t.Fatalf("timeout answer %d for session %q", a.ResultCode, a.SessionID)
	}

	// A client gone before its answers: the answers are dropped, and
	// nothing is kept.
	w.servers[0].mode, w.servers[2].mode = "", ""
	gone := w.connect("gone.client.example.org")
	w.servers[0].mode = "mute"
	for i := range 10 {
		b, _ := w.ccr(gone, fmt.Sprintf("g;%d", i), diameter.CCInitial, "")
		w.clientSends(gone, b)
	}
	w.step(agent.Closed{Conn: gone.conn})
	w.advance(6 * time.Second)
	w.servers[0].mode = ""
	answered(send("r;1"), w.m.Bound("r;1"))

	if w.m.Pending() != 0 {
		t.Fatalf("%d requests still pending", w.m.Pending())
	}
	if len(w.refs) != 0 {
		t.Fatalf("%d buffers never released", len(w.refs))
	}
}
