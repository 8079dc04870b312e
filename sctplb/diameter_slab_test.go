package sctplb

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// slabTestServer is a Diameter server on loopback: it answers CER and DWR,
// and hands every other request to answer (nil: no answer), recording it.
type slabTestServer struct {
	id     diameter.Identity
	ln     net.Listener
	answer func(m diameter.Msg) bool
	mu     sync.Mutex
	got    [][]byte
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startSlabTestServer(t *testing.T, host string, answer func(m diameter.Msg) bool) *slabTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slabTestServer{id: diameter.Identity{Host: host, Realm: "slab.example"}, ln: ln, answer: answer}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(s.kill)
	return s
}

func (s *slabTestServer) serve(c net.Conn) {
	defer c.Close()
	p := newTCPPeer(c)
	w := bufio.NewWriter(c)
	for {
		b, err := p.read()
		if err != nil {
			return
		}
		m, err := diameter.Parse(b)
		if err != nil || !m.IsRequest() {
			continue
		}
		var ans []byte
		switch m.Code {
		case diameter.CmdCapabilitiesExchange:
			ans = diameter.CEA(m.Header, diameter.Capabilities{Identity: s.id, AuthApps: []uint32{diameter.AppCC}}, diameter.Success)
		case diameter.CmdDeviceWatchdog, diameter.CmdDisconnectPeer:
			ans = diameter.Answer(m.Header, nil, s.id, diameter.Success)
		default:
			s.mu.Lock()
			s.got = append(s.got, append([]byte(nil), b...))
			s.mu.Unlock()
			if s.answer(m) {
				ans = diameter.Answer(m.Header, m.SessionID, s.id, diameter.Success)
			}
		}
		if ans != nil {
			_, _ = w.Write(ans)
		}
		if p.r.Buffered() == 0 && w.Flush() != nil {
			return
		}
	}
}

// kill closes the listener and every connection: the agent sees the
// server fail.
func (s *slabTestServer) kill() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *slabTestServer) requests() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...)
}

// slabTestRequest is CCR number i of the test's client: its Session-Id
// and a payload AVP name it, Destination-Host picks its server.
func slabTestRequest(i int, destHost string) []byte {
	payload := make([]byte, 120)
	for k := range payload {
		payload[k] = byte(i + k)
	}
	return diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, uint32(i+1), uint32(i+1),
		diameter.Str(diameter.AVPSessionID, fmt.Sprintf("pgw.slab.example;%d", i)), diameter.Str(diameter.AVPOriginHost, "pgw.slab.example"),
		diameter.Str(diameter.AVPOriginRealm, "client.example"), diameter.Str(diameter.AVPDestinationRealm, "slab.example"),
		diameter.Str(diameter.AVPDestinationHost, destHost), diameter.U32(diameter.AVPAuthAppID, diameter.AppCC),
		diameter.U32(diameter.AVPCCRequestType, diameter.CCUpdate), diameter.EncodeAVP(4242, diameter.AVPMandatory, 99999, payload))
}

// TestDiameterSlabHeldUntilFailoverResend: requests held by a server that
// then fails are re-sent with the T flag from the agent's read slabs, after
// many more messages went through (and their slabs were recycled): each
// re-sent request must be byte for byte the one the client sent (but for
// the hop-by-hop identifier, the T flag and the Route-Record), never the
// bytes of a later message that reused its memory.
func TestDiameterSlabHeldUntilFailoverResend(t *testing.T) {
	holder := startSlabTestServer(t, "holder.slab.example", func(diameter.Msg) bool { return false })
	other := startSlabTestServer(t, "other.slab.example", func(diameter.Msg) bool { return true })
	cfg := DiameterConfig{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)),
		Identity: diameter.Identity{Host: "agent.slab.example", Realm: "agent.example"}, Tw: 30 * time.Second, Tc: time.Minute,
		RequestTimeout: time.Minute, TickInterval: 50 * time.Millisecond, Name: "slab",
		Servers: []DiameterServer{{Name: "holder", Addr: netip.MustParseAddrPort(holder.ln.Addr().String())},
			{Name: "other", Addr: netip.MustParseAddrPort(other.ln.Addr().String())}}}
	a := startDiameterAgent(t, cfg)
	waitFor(t, 20*time.Second, func() bool {
		s := a.Stats().Servers
		return len(s) == 2 && s[0].Up && s[1].Up
	})

	c, err := net.Dial("tcp", cfg.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	p := newTCPPeer(c)
	if _, err := c.Write(diameter.CER(diameter.Capabilities{Identity: diameter.Identity{Host: "pgw.slab.example", Realm: "client.example"},
		AuthApps: []uint32{diameter.AppCC}}, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if b, err := p.read(); err != nil {
		t.Fatal(err)
	} else if m, err := diameter.Parse(b); err != nil || m.ResultCode != diameter.Success {
		t.Fatalf("CEA %d, %v", m.ResultCode, err)
	}
	readAnswers := func(n int) map[uint32]diameter.Msg {
		t.Helper()
		got := map[uint32]diameter.Msg{}
		for len(got) < n {
			b, err := p.read()
			if err != nil {
				t.Fatalf("%d of %d answers: %v", len(got), n, err)
			}
			m, err := diameter.Parse(b)
			if err != nil {
				t.Fatalf("answer: %v", err)
			}
			got[m.EndToEnd] = m
		}
		return got
	}

	// The held requests first, then enough answered traffic to fill and
	// recycle many slabs on both sides (about 100 requests a slab).
	const held, filler = 20, 2000
	sent := map[uint32][]byte{}
	var stream []byte
	for i := range held {
		r := slabTestRequest(i, holder.id.Host)
		sent[uint32(i+1)] = r
		stream = append(stream, r...)
	}
	if _, err := c.Write(stream); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return len(holder.requests()) == held })
	for k := 0; k < filler; k += 100 {
		stream = stream[:0]
		for i := held + k; i < held+k+100; i++ {
			stream = append(stream, slabTestRequest(i, other.id.Host)...)
		}
		if _, err := c.Write(stream); err != nil {
			t.Fatal(err)
		}
		readAnswers(100)
	}

	// The holder fails: its requests go to the other server with T.
	before := len(other.requests())
	holder.kill()
	// A held request whose bytes were overwritten no longer parses: the
	// agent can neither re-send nor answer it, and its answer never comes.
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	answers := readAnswers(held)
	for e2e := range sent {
		if m, ok := answers[e2e]; !ok || m.ResultCode != diameter.Success || !diameter.EqualIdentity(m.OriginHost, other.id.Host) {
			t.Fatalf("request %d: answer %d from %q, want success from %s", e2e, m.ResultCode, m.OriginHost, other.id.Host)
		}
	}
	resent := other.requests()[before:]
	if len(resent) != held {
		t.Fatalf("other server got %d re-sent requests, want %d", len(resent), held)
	}
	for _, b := range resent {
		m, err := diameter.Parse(b)
		if err != nil {
			t.Fatalf("re-sent request does not parse: %v", err)
		}
		want, ok := sent[m.EndToEnd]
		if !ok || !m.IsRetransmit() {
			t.Fatalf("re-sent request end-to-end %d, T flag %v: not a held request", m.EndToEnd, m.IsRetransmit())
		}
		// The client's bytes but for the flags' T bit and the hop-by-hop
		// identifier; the Route-Record after them.
		got := append([]byte(nil), b[:len(want)]...)
		got[1], got[2], got[3] = want[1], want[2], want[3] // length: the Route-Record's
		got[4] &^= diameter.FlagRetransmit
		copy(got[12:16], want[12:16])
		if string(got) != string(want) {
			t.Fatalf("re-sent request %d is not the client's (session %q)", m.EndToEnd, m.SessionID)
		}
	}
}
