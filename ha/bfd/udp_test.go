package bfd

import (
	"net"
	"net/netip"
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
