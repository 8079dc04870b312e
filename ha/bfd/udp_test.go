package bfd

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

type stateLog struct {
	mu sync.Mutex
	st []State
	dg []Diag
}

func (l *stateLog) add(s State, d Diag) {
	l.mu.Lock()
	l.st = append(l.st, s)
	l.dg = append(l.dg, d)
	l.mu.Unlock()
}

func (l *stateLog) last() (State, Diag, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.st) == 0 {
		return 0, 0, false
	}
	return l.st[len(l.st)-1], l.dg[len(l.dg)-1], true
}

func waitState(t *testing.T, p *Peer, want State, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if p.Status().State == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("session to %s: state %s after %v, want %s (%+v)", p.cfg.Remote, p.Status().State, within, want, p.Status())
}

// TestUDPSessions runs two managers over loopback addresses: the sessions
// come Up at the fast interval; a peer that closes says AdminDown; a peer
// that goes silent is detected within the detection time.
func TestUDPSessions(t *testing.T) {
	// 127.0.0.21/22: addresses of its own, so a BFD daemon of the machine
	// on port 3784 of another address does not interfere.
	a1, a2 := netip.MustParseAddr("127.0.0.21"), netip.MustParseAddr("127.0.0.22")
	m1, m2 := NewManager(nil), NewManager(nil)
	t.Cleanup(m1.Close)
	t.Cleanup(m2.Close)
	cfg := func(local, remote netip.Addr) PeerConfig {
		return PeerConfig{Local: local, Remote: remote, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, DetectMult: 3}
	}
	var log1 stateLog
	p1, err := m1.Add(cfg(a1, a2), log1.add)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := m2.Add(cfg(a2, a1), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, p1, Up, 10*time.Second)
	waitState(t, p2, Up, 10*time.Second)
	// The poll sequence brings the 50 ms interval in.
	deadline := time.Now().Add(10 * time.Second)
	for p1.Status().TxInterval != 50*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := p1.Status(); st.TxInterval != 50*time.Millisecond || st.DetectTime != 150*time.Millisecond {
		t.Fatalf("fast timers not in force: %+v", st)
	}
	if src := p1.tx.LocalAddr().(*net.UDPAddr).Port; src < srcPortMin {
		t.Fatalf("source port %d outside the RFC 5881 range", src)
	}

	// A packet with TTL 64 is dropped (GTSM), whatever it says.
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: a2.AsSlice()}, &net.UDPAddr{IP: a1.AsSlice(), Port: Port})
	if err != nil {
		t.Fatal(err)
	}
	_ = ipv4.NewConn(c).SetTTL(64)
	bad := Packet{State: AdminDown, DetectMult: 3, MyDisc: p2.Status().LocalDiscr, YourDisc: p1.Status().LocalDiscr, DesiredMinTx: 1e6, RequiredMinRx: 1e6}
	if _, err := c.Write(bad.Marshal()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	if st := p1.Status(); st.State != Up || st.Dropped == 0 {
		t.Fatalf("a TTL 64 AdminDown was not dropped: %+v", st)
	}

	// Silence: stop p2's timers without telling p1 (what kill -9 does).
	m2.mu.Lock()
	p2.closed = true
	p2.txGen++
	m2.mu.Unlock()
	cut := time.Now()
	waitState(t, p1, Down, 5*time.Second)
	took := time.Since(cut)
	if _, d, _ := log1.last(); d != DiagDetectTimeExpired {
		t.Fatalf("diag %s, want detection time expired", d)
	}
	t.Logf("silent peer detected after %v (detection time 150ms)", took)
	m2.mu.Lock()
	p2.closed = false
	m2.mu.Unlock()
	p2.Close()

	// A peer that restarts comes back Up; a peer that closes tells AdminDown.
	p2, err = m2.Add(cfg(a2, a1), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, p1, Up, 10*time.Second)
	p2.Close()
	waitState(t, p1, Down, 5*time.Second)
	if _, d, _ := log1.last(); d != DiagNeighborDown {
		t.Fatalf("diag %s after the peer's AdminDown, want NeighborSignaledSessionDown", d)
	}
}

// TestUDPMultihop: RFC 5883 sessions on port 4784 over 127.0.0.23/24 next to
// a single-hop session between the same addresses (each mode has its own
// sockets and demultiplexing); a multihop session accepts a TTL below 255
// down to its minimum and drops packets under it (the sender's TTL is
// lowered to stand for routers between the peers).
func TestUDPMultihop(t *testing.T) {
	a1, a2 := netip.MustParseAddr("127.0.0.23"), netip.MustParseAddr("127.0.0.24")
	m1, m2 := NewManager(nil), NewManager(nil)
	t.Cleanup(m1.Close)
	t.Cleanup(m2.Close)
	cfg := func(local, remote netip.Addr, multihop bool, minTTL uint8) PeerConfig {
		return PeerConfig{Local: local, Remote: remote, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, DetectMult: 3, Multihop: multihop, MinTTL: minTTL}
	}
	add := func(m *Manager, c PeerConfig) *Peer {
		t.Helper()
		p, err := m.Add(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := m1.Add(cfg(a1, a2, false, 254), nil); err == nil {
		t.Fatal("a single-hop session accepted a minimum TTL below 255")
	}
	s1, s2 := add(m1, cfg(a1, a2, false, 0)), add(m2, cfg(a2, a1, false, 0))
	h1, h2 := add(m1, cfg(a1, a2, true, 0)), add(m2, cfg(a2, a1, true, 0))
	for _, p := range []*Peer{s1, s2, h1, h2} {
		waitState(t, p, Up, 10*time.Second)
	}
	if port := h1.tx.RemoteAddr().(*net.UDPAddr).Port; port != MultihopPort {
		t.Fatalf("multihop session sends to port %d", port)
	}
	if port := s1.tx.RemoteAddr().(*net.UDPAddr).Port; port != Port {
		t.Fatalf("single-hop session sends to port %d", port)
	}
	// One router between the peers: TTL 254 arrives, the default minimum.
	setTTL := func(p *Peer, v int) {
		t.Helper()
		if err := ipv4.NewConn(p.tx).SetTTL(v); err != nil {
			t.Fatal(err)
		}
	}
	setTTL(h2, 254)
	time.Sleep(500 * time.Millisecond) // > 3 detection times
	if st := h1.Status(); st.State != Up || st.Dropped != 0 {
		t.Fatalf("multihop session with TTL 254 packets: %+v", st)
	}
	// Two routers: under the default minimum, dropped, and the session
	// times out; the single-hop session between the same addresses stays Up.
	setTTL(h2, 253)
	waitState(t, h1, Down, 5*time.Second)
	if st := h1.Status(); st.LocalDiag != DiagDetectTimeExpired || !strings.Contains(st.LastDropReason, "at least 254") {
		t.Fatalf("multihop session after TTL 253 packets: %+v", st)
	}
	if st := s1.Status(); st.State != Up {
		t.Fatalf("single-hop session disturbed by the multihop one: %+v", st)
	}
	// A session configured for peers further away accepts them.
	h1.Close()
	h1 = add(m1, cfg(a1, a2, true, 200))
	waitState(t, h1, Up, 10*time.Second)
	if st := h1.Status(); st.Dropped != 0 {
		t.Fatalf("multihop session with minimum TTL 200: %+v", st)
	}
	// Single hop still requires 255.
	setTTL(s2, 254)
	waitState(t, s1, Down, 5*time.Second)
}
