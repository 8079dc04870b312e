package sctplb

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
)

// loopAddr picks a loopback address per test process so parallel test
// runs on one machine do not share port 8805.
func loopAddr(host byte) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 86, byte(os.Getpid() % 250), host})
}

func udpOn(t *testing.T, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestN4ProxyOverUDP runs the shell on real sockets: an SMF simulator and
// three UPF simulators (all allocating the same SEIDs, each reporting on
// every session) on loopback; one UPF restarts between two rounds of
// modifications and must get its sessions replayed unnoticed.
func TestN4ProxyOverUDP(t *testing.T) {
	const sessions = 300
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vip := netip.AddrPortFrom(loopAddr(1), pfcp.Port)
	reg := prometheus.NewRegistry()
	cfg := N4Config{Listen: vip, Name: "n4test", Registerer: reg, T1: 500 * time.Millisecond, N1: 3,
		HeartbeatInterval: 300 * time.Millisecond, LossTimeout: 10 * time.Second, TickInterval: 20 * time.Millisecond}
	var upfs []*sims.UPFSim
	for i := range 3 {
		a := netip.AddrPortFrom(loopAddr(byte(10+i)), pfcp.Port)
		cfg.UPFs = append(cfg.UPFs, N4UPF{Name: fmt.Sprintf("upf%d", i), Addr: a})
		u := sims.NewUPFSim(a.Addr(), time.Now().Add(-time.Hour), 0x100)
		upfs = append(upfs, u)
		c := udpOn(t, a)
		go func() { _ = sims.ServeUPF(ctx, c, u, true, 500*time.Millisecond) }()
	}
	p, err := NewN4(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	waitN4(t, p, func(s N4Stats) bool { return len(s.UPFs) == 3 && s.UPFs[0].Up && s.UPFs[1].Up && s.UPFs[2].Up })

	smf := sims.NewSMFSim(loopAddr(2), time.Now().Add(-2*time.Hour))
	sc := udpOn(t, netip.AddrPortFrom(loopAddr(2), pfcp.Port))
	restarted := len(upfs[1].Sessions())
	st, err := sims.RunSMF(ctx, sc, vip, smf, sims.Load{Sessions: sessions, Window: 32, T1: time.Second, N1: 3,
		ReportWait: 10 * time.Second,
		Pause: func() {
			restarted = len(upfs[1].Sessions())
			upfs[1].Restart(time.Now())
			deadline := time.Now().Add(10 * time.Second)
			for len(upfs[1].Sessions()) < restarted && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	// The UPF sims report on every session they establish: replayed ones
	// report again, and those reports too must reach the SMF, each acted
	// on once. A report the proxy re-sends after its T1 (a slow SMF
	// answer on a loaded machine) is a retransmission with the same
	// sequence number, which the SMF answers again without acting on it:
	// allowed, and counted apart (DuplicateReports).
	if st.Established != sessions || st.Modified != 2*sessions || st.Deleted != sessions || st.Reports != sessions+restarted ||
		st.Rejected != 0 || st.Collisions != 0 || st.WrongSEID != 0 || st.RecoveryChanges != 0 {
		t.Fatalf("SMF saw %+v", st)
	}
	if st.DuplicateReports != 0 {
		t.Logf("%d report retransmissions reached the SMF (proxy T1 expired before its answer)", st.DuplicateReports)
	}
	if restarted != sessions/3 {
		t.Fatalf("restarted UPF held %d sessions, want %d", restarted, sessions/3)
	}
	for i, u := range upfs {
		s := u.Snapshot()
		if s.Unknown != 0 || len(u.Sessions()) != 0 {
			t.Fatalf("UPF %d: %+v, %d sessions left", i, s, len(u.Sessions()))
		}
	}
	if got := testutil.ToFloat64(p.met.replays.WithLabelValues("upf1")); got != float64(restarted) {
		t.Fatalf("replays metric %v, want %d", got, restarted)
	}
	time.Sleep(50 * time.Millisecond)
	stats := p.Stats()
	if !stats.Running || stats.SMFs != 1 || len(stats.UPFs) != 3 || !stats.UPFs[1].Up {
		t.Fatalf("stats %+v", stats)
	}
	if n := testutil.ToFloat64(p.met.messages.WithLabelValues("smf", "session-establishment-request")); n != sessions {
		t.Fatalf("establishment requests counted %v", n)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func waitN4(t *testing.T, p *N4Proxy, ok func(N4Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(p.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("N4 proxy state never reached: %+v", p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
