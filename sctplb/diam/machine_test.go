package diam_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

func vendorAVP(t *testing.T, b []byte) []byte {
	t.Helper()
	var out []byte
	_ = diameter.Walk(b[diameter.HeaderLen:], diameter.HeaderLen, func(a diameter.AVP) error {
		if a.Vendor == vendorX {
			out = b[diameter.HeaderLen+a.Off : diameter.HeaderLen+a.Off+a.Len]
		}
		return nil
	})
	return out
}

func TestSessionsStickSpreadAndEnd(t *testing.T) {
	w := newWorld(t, 3, nil)
	c := w.connect("pgw.client.example.org")
	if c.cea != diameter.Success {
		t.Fatalf("CEA result %d", c.cea)
	}
	const n = 300
	for i := range n {
		sid := fmt.Sprintf("pgw;%d", i)
		for _, typ := range []uint32{diameter.CCInitial, diameter.CCUpdate, diameter.CCTermination} {
			req, hbh := w.ccr(c, sid, typ, "")
			w.clientSends(c, req)
			a := w.answerOf(c, hbh)
			if a.ResultCode != diameter.Success || a.EndToEnd != hbh || string(a.SessionID) != sid {
				t.Fatalf("answer %+v", a)
			}
			// The unknown vendor AVP came back byte for byte.
			if !bytes.Equal(vendorAVP(t, c.answers[hbh][0]), vendorAVP(t, req)) {
				t.Fatal("vendor AVP changed on the way back")
			}
		}
		if s := w.serverOf(sid); s < 0 || w.servers[s].seen[sid] != 3 {
			t.Fatalf("session %s spread over servers (%d)", sid, s)
		}
	}
	for i, s := range w.servers {
		if len(s.got) != n {
			t.Errorf("server %d got %d requests, want %d (round robin)", i, len(s.got), n)
		}
		// What the server got: the client's bytes, with our hop-by-hop
		// and a Route-Record naming the client appended.
		m, _ := diameter.Parse(s.got[0])
		if !m.HasRouteRecord("pgw.client.example.org") || m.RouteRecords != 1 {
			t.Error("no Route-Record naming the client")
		}
	}
	for i, k := range w.m.Sessions() {
		if k != 0 {
			t.Errorf("server %d still holds %d bindings after CCR-T", i, k)
		}
	}
}

func TestForwardedRequestIsTheClientsBytes(t *testing.T) {
	w := newWorld(t, 1, nil)
	c := w.connect("pgw.client.example.org")
	req, hbh := w.ccr(c, "s;1", diameter.CCInitial, "")
	w.clientSends(c, req)
	got := w.servers[0].got[0]
	// Same bytes except the length, the hop-by-hop and the appended AVP.
	if !bytes.Equal(got[4:12], req[4:12]) || !bytes.Equal(got[16:len(req)], req[16:]) {
		t.Fatal("agent changed the request beyond hop-by-hop and Route-Record")
	}
	if !bytes.Equal(got[len(req):], diameter.RouteRecord("pgw.client.example.org")) {
		t.Fatalf("appended %x", got[len(req):])
	}
	if diameter.HopByHop(got) == hbh && w.answerOf(c, hbh).HopByHop != hbh {
		t.Fatal("hop-by-hop not restored")
	}
}

func TestDestinationHostPicksTheServer(t *testing.T) {
	w := newWorld(t, 3, nil)
	c := w.connect("pgw.client.example.org")
	for i := range 6 {
		req, hbh := w.ccr(c, fmt.Sprintf("dh;%d", i), diameter.CCInitial, w.servers[2].host)
		w.clientSends(c, req)
		w.answerOf(c, hbh)
	}
	if len(w.servers[2].got) != 6 {
		t.Fatalf("server 2 got %d of 6 requests naming it", len(w.servers[2].got))
	}
}

func TestPolicies(t *testing.T) {
	for _, c := range []struct {
		policy agent.Policy
		weight []int
		want   []int
	}{
		{agent.LeastSessions, nil, []int{10, 10, 10}},
		{agent.Weighted, []int{1, 2, 3}, []int{5, 10, 15}},
	} {
		t.Run(c.policy.String(), func(t *testing.T) {
			w := newWorld(t, 3, func(cfg *agent.Config) {
				cfg.Policy = c.policy
				for i, x := range c.weight {
					cfg.Servers[i].Weight = x
				}
			})
			cl := w.connect("pgw.client.example.org")
			for i := range 30 {
				req, _ := w.ccr(cl, fmt.Sprintf("p;%d", i), diameter.CCInitial, "")
				w.clientSends(cl, req)
			}
			for i, s := range w.servers {
				if len(s.got) != c.want[i] {
					t.Errorf("server %d got %d, want %d", i, len(s.got), c.want[i])
				}
			}
		})
	}
}

type snapshot struct {
	sessions []int
	pending  int
	clients  int
	states   []agent.State
}

func snap(m *agent.Machine) snapshot {
	return snapshot{m.Sessions(), m.Pending(), m.Clients(), m.States()}
}

func (a snapshot) equal(b snapshot) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestRefusalsAnswerAndChangeNothing(t *testing.T) {
	w := newWorld(t, 2, nil)
	c := w.connect("pgw.client.example.org")
	// one live session, so there is state to keep
	req, _ := w.ccr(c, "live;1", diameter.CCInitial, "")
	w.clientSends(c, req)
	setLen := func(b []byte, n int) { b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n) }
	for _, k := range []struct {
		name   string
		build  func() ([]byte, uint32)
		result uint32
		eflag  bool
	}{
		{"loop", func() ([]byte, uint32) {
			return w.ccr(c, "live;1", diameter.CCUpdate, "", func(m *diam.Message) {
				m.NewAVP(avp.RouteRecord, avp.Mbit, 0, datatype.DiameterIdentity(agentHost))
			})
		}, diameter.LoopDetected, true},
		{"realm not served", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			return bytes.Replace(b, []byte(srvRealm), []byte("xxx.example.org"), 1), h
		}, diameter.RealmNotServed, true},
		{"unknown destination host, realm routed elsewhere", nil, 0, false},
		{"addressed to the agent", func() ([]byte, uint32) { return w.ccr(c, "live;1", diameter.CCUpdate, agentHost) }, diameter.CommandUnsupported, true},
		{"bad AVP length", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			b[diameter.HeaderLen+7] = 3
			return b, h
		}, diameter.InvalidAVPLength, false},
		{"AVP overrunning the message", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			b[diameter.HeaderLen+6] = 0xff
			return b, h
		}, diameter.InvalidAVPLength, false},
		{"bad header bits", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			b[4] |= 0x02
			return b, h
		}, diameter.InvalidHdrBits, true},
		{"bad AVP bits", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			b[diameter.HeaderLen+4] |= 0x01
			return b, h
		}, diameter.InvalidAVPBits, true},
		{"bad message length", func() ([]byte, uint32) {
			b, h := w.ccr(c, "live;1", diameter.CCUpdate, "")
			setLen(b, len(b)+8)
			return b, h
		}, diameter.InvalidMessageLength, false},
	} {
		if k.build == nil {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			before := snap(w.m)
			got := len(w.servers[0].got) + len(w.servers[1].got)
			b, hbh := k.build()
			w.clientSends(c, b)
			a := w.answerOf(c, hbh)
			if a.ResultCode != k.result || a.IsError() != k.eflag || a.EndToEnd != binary.BigEndian.Uint32(b[16:]) {
				t.Fatalf("answer result %d E %v, want %d E %v", a.ResultCode, a.IsError(), k.result, k.eflag)
			}
			if !diameter.EqualIdentity(a.OriginHost, agentHost) {
				t.Fatalf("answer from %q", a.OriginHost)
			}
			if after := snap(w.m); !after.equal(before) || len(w.servers[0].got)+len(w.servers[1].got) != got {
				t.Fatalf("state changed: %+v -> %+v", before, after)
			}
		})
	}
	t.Run("no server up", func(t *testing.T) {
		for _, s := range w.servers {
			s.up = false
			w.step(agent.Closed{Conn: s.conn})
		}
		before := snap(w.m)
		b, hbh := w.ccr(c, "new;1", diameter.CCInitial, "")
		w.clientSends(c, b)
		if a := w.answerOf(c, hbh); a.ResultCode != diameter.UnableToDeliver || !a.IsError() {
			t.Fatalf("answer %d", a.ResultCode)
		}
		if after := snap(w.m); !after.equal(before) {
			t.Fatalf("state changed: %+v -> %+v", before, after)
		}
	})
}

func TestProxyAgentServesItsApplicationsOnly(t *testing.T) {
	w := newWorld(t, 1, func(c *agent.Config) { c.Mode = agent.Proxy; c.Applications = []uint32{diameter.AppCC} })
	c := w.connect("pgw.client.example.org")
	if c.cea != diameter.Success {
		t.Fatalf("CEA %d", c.cea)
	}
	b, hbh := w.ccr(c, "x;1", diameter.CCInitial, "")
	binary.BigEndian.PutUint32(b[8:], 16777238) // Gx
	w.clientSends(c, b)
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.ApplicationUnsupported {
		t.Fatalf("answer %d, want 3007", a.ResultCode)
	}
}

func TestBusyServerMovesTheRequest(t *testing.T) {
	w := newWorld(t, 2, nil)
	c := w.connect("pgw.client.example.org")
	w.servers[0].mode = "busy"
	b, hbh := w.ccr(c, "busy;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.Success || !diameter.EqualIdentity(a.OriginHost, w.servers[1].host) {
		t.Fatalf("answer %d from %q", a.ResultCode, a.OriginHost)
	}
	if w.m.Bound("busy;1") != 1 {
		t.Fatalf("session bound to %d", w.m.Bound("busy;1"))
	}
	w.servers[1].mode = "busy"
	b, hbh = w.ccr(c, "busy;2", diameter.CCInitial, "")
	w.clientSends(c, b)
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.TooBusy {
		t.Fatalf("every server busy: answer %d, want the server's 3004", a.ResultCode)
	}
}

func TestFailedServerPendingResentWithTFlagOnce(t *testing.T) {
	w := newWorld(t, 2, nil)
	c := w.connect("pgw.client.example.org")
	w.servers[0].mode = "mute"
	b, hbh := w.ccr(c, "f;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	if w.m.Pending() != 1 || len(c.answers[hbh]) != 0 {
		t.Fatal("request not pending")
	}
	// Server 0 dies: its pending request goes to server 1 with T.
	w.servers[0].up = false
	w.step(agent.Closed{Conn: w.servers[0].conn})
	a := w.answerOf(c, hbh)
	if a.ResultCode != diameter.Success || !diameter.EqualIdentity(a.OriginHost, w.servers[1].host) {
		t.Fatalf("answer %d from %q", a.ResultCode, a.OriginHost)
	}
	if h, _ := diameter.ParseHeader(w.servers[1].got[0]); !h.IsRetransmit() {
		t.Fatal("re-sent request lacks the T flag")
	}
	if w.counts["retransmitted"] != 1 {
		t.Fatalf("retransmitted %d", w.counts["retransmitted"])
	}
	// Later requests of the session go to server 1.
	b, hbh = w.ccr(c, "f;1", diameter.CCUpdate, "")
	w.clientSends(c, b)
	w.answerOf(c, hbh)
	if w.servers[1].seen["f;1"] != 2 {
		t.Fatal("session not steered to the surviving server")
	}
	// The client re-sends with T while pending: absorbed, one answer.
	w.servers[1].mode = "mute"
	b, hbh = w.ccr(c, "f;1", diameter.CCUpdate, "")
	w.clientSends(c, b)
	tb := append([]byte(nil), b...)
	diameter.SetRetransmit(tb)
	w.clientSends(c, tb)
	if len(w.servers[1].got) != 3 || w.counts["rejected:duplicate"] != 1 {
		t.Fatalf("duplicate forwarded: server got %d", len(w.servers[1].got))
	}
	// Unanswered: 3002 after RequestTimeout, and a late answer is dropped.
	w.advance(6 * time.Second)
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.UnableToDeliver {
		t.Fatalf("timeout answer %d", a.ResultCode)
	}
}

func TestWatchdogSuspectDownReopen(t *testing.T) {
	w := newWorld(t, 2, func(c *agent.Config) { c.RequestTimeout = time.Minute })
	c := w.connect("pgw.client.example.org")
	s := w.servers[0]
	s.mode = "drop" // answers neither requests nor watchdogs
	b, hbh := w.ccr(c, "w;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	w.advance(7 * time.Second) // Tw: DWR sent
	if s.dwrs == 0 || w.m.States()[0] != agent.Okay {
		t.Fatalf("after Tw: %d DWRs, state %s", s.dwrs, w.m.States()[0])
	}
	w.advance(6 * time.Second) // second Tw: SUSPECT, failover with T
	if st := w.m.States()[0]; st != agent.Suspect {
		t.Fatalf("state %s, want suspect", st)
	}
	if a := w.answerOf(c, hbh); a.ResultCode != diameter.Success || !diameter.EqualIdentity(a.OriginHost, w.servers[1].host) {
		t.Fatalf("failed-over answer %d from %q", a.ResultCode, a.OriginHost)
	}
	s.up = false
	w.advance(6 * time.Second) // third Tw: DOWN, connection closed
	if st := w.m.States()[0]; st != agent.Down && st != agent.Connecting {
		t.Fatalf("state %s, want down", st)
	}
	s.up, s.mode = true, ""
	w.advance(3 * time.Second) // Tc: redial, CEA -> REOPEN
	if st := w.m.States()[0]; st != agent.Reopen {
		t.Fatalf("state %s, want reopen", st)
	}
	w.advance(20 * time.Second) // 3 DWAs
	if st := w.m.States()[0]; st != agent.Okay {
		t.Fatalf("state %s after 3 watchdogs, want okay", st)
	}
}

func TestDuplicateClientConnectionElection(t *testing.T) {
	w := newWorld(t, 1, nil)
	a := w.connect("pgw.client.example.org")
	b := w.connect("pgw.client.example.org")
	if a.cea != diameter.Success || b.cea != diameter.ElectionLost || b.open || !a.open {
		t.Fatalf("first CEA %d open %v, second CEA %d open %v", a.cea, a.open, b.cea, b.open)
	}
}

func TestServerInitiatedRequestReachesTheClient(t *testing.T) {
	w := newWorld(t, 1, nil)
	c := w.connect("pgw.client.example.org")
	rar := diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdReAuth, diameter.AppCC, 77, 78,
		diameter.Str(diameter.AVPSessionID, "s;9"), diameter.Str(diameter.AVPOriginHost, w.servers[0].host),
		diameter.Str(diameter.AVPOriginRealm, srvRealm), diameter.Str(diameter.AVPDestinationRealm, "client.example.org"),
		diameter.Str(diameter.AVPDestinationHost, "pgw.client.example.org"), diameter.U32(diameter.AVPAuthAppID, diameter.AppCC))
	var answered []byte
	w.byConn[w.servers[0].conn] = w.servers[0]
	w.step(agent.Message{Conn: w.servers[0].conn, Data: rar})
	if len(c.got) != 1 {
		t.Fatalf("client got %d requests", len(c.got))
	}
	h, _ := diameter.ParseHeader(c.got[0])
	ans := diameter.Answer(h, []byte("s;9"), diameter.Identity{Host: c.host, Realm: "client.example.org"}, diameter.Success)
	// capture what the server gets back
	srv := w.servers[0]
	before := len(srv.got)
	w.step(agent.Message{Conn: c.conn, Data: ans})
	_ = answered
	if len(srv.got) != before {
		t.Fatal("answer counted as a request")
	}
	if w.m.Pending() != 0 {
		t.Fatal("RAA did not complete the pending RAR")
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	w := newWorld(t, 1, func(c *agent.Config) { c.SessionIdle = 10 * time.Second })
	c := w.connect("pgw.client.example.org")
	b, _ := w.ccr(c, "idle;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	if w.m.Bound("idle;1") != 0 {
		t.Fatal("not bound")
	}
	// the watchdogs keep the connections up meanwhile
	w.advance(12 * time.Second)
	if w.m.Bound("idle;1") != -1 {
		t.Fatal("binding survived its idle timeout")
	}
}

func TestShutdownSendsDPR(t *testing.T) {
	w := newWorld(t, 2, nil)
	c := w.connect("pgw.client.example.org")
	w.step(agent.Shutdown{})
	if len(c.got) != 1 {
		t.Fatalf("client got %d requests, want a DPR", len(c.got))
	}
	if h, _ := diameter.ParseHeader(c.got[0]); h.Code != diameter.CmdDisconnectPeer {
		t.Fatalf("got command %d", h.Code)
	}
	for _, s := range w.servers {
		if w.byConn[s.conn] != nil {
			t.Fatal("server connection not closed after its DPA")
		}
	}
	w.advance(10 * time.Second)
	if c.open {
		t.Fatal("client connection not closed")
	}
}

// The End-to-End index keys a request on its client's host number: a
// copy re-sent with the T flag on the client's new connection is still
// recognised, another client's request with the same End-to-End is not
// taken for it, and the numbers are let go of once no connection or
// pending request holds them (CheckInvariants, after every step).
func TestDuplicateRecognisedAcrossReconnect(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.servers[0].mode = "mute"
	c := w.connect("pgw.client.example.org")
	b, _ := w.ccr(c, "d;1", diameter.CCInitial, "")
	w.clientSends(c, b)
	c.open = false
	w.step(agent.Closed{Conn: c.conn})
	if w.m.Pending() != 1 {
		t.Fatalf("%d pending after the client left", w.m.Pending())
	}
	c2 := w.connect("pgw.client.example.org")
	tb := append([]byte(nil), b...)
	diameter.SetRetransmit(tb)
	w.clientSends(c2, tb)
	if len(w.servers[0].got) != 1 || w.counts["rejected:duplicate"] != 1 {
		t.Fatalf("copy on the new connection forwarded: server got %d, duplicates %d", len(w.servers[0].got), w.counts["rejected:duplicate"])
	}
	other := w.connect("other.client.example.org")
	ob, _ := w.ccr(other, "d;2", diameter.CCInitial, "")
	h, _ := diameter.ParseHeader(b)
	binary.BigEndian.PutUint32(ob[16:], h.EndToEnd)
	diameter.SetRetransmit(ob)
	w.clientSends(other, ob)
	if len(w.servers[0].got) != 2 || w.counts["rejected:duplicate"] != 1 {
		t.Fatalf("another client's request taken for a duplicate: server got %d", len(w.servers[0].got))
	}
	// Both time out; then the clients leave: nothing holds a number.
	w.advance(6 * time.Second)
	if w.m.Pending() != 0 {
		t.Fatalf("%d pending after the timeout", w.m.Pending())
	}
	for _, cl := range []*fakeClient{c2, other} {
		cl.open = false
		w.step(agent.Closed{Conn: cl.conn})
	}
	// A new client reuses a freed number: the old requests left no key.
	n := w.connect("new.client.example.org")
	nb, _ := w.ccr(n, "d;3", diameter.CCInitial, "")
	binary.BigEndian.PutUint32(nb[16:], h.EndToEnd)
	diameter.SetRetransmit(nb)
	w.clientSends(n, nb)
	if len(w.servers[0].got) != 3 {
		t.Fatalf("new client's request not forwarded: server got %d", len(w.servers[0].got))
	}
}
