package sctppeer_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"dumpcap", "tshark", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func startCaptures(ctx context.Context, t *testing.T, h *lab.Host, ifaces ...string) []*capture.Capture {
	t.Helper()
	dir := t.TempDir()
	var caps []*capture.Capture
	for _, ifc := range ifaces {
		c, err := capture.Start(ctx, h, ifc, dir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	return caps
}

func stopAndDecode(ctx context.Context, t *testing.T, caps []*capture.Capture) (map[string]int, []capture.SCTPPacket) {
	t.Helper()
	var all []capture.SCTPPacket
	for _, c := range caps {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		pkts, err := capture.SCTP(ctx, c.File)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pkts...)
		rep, err := capture.Checksums(ctx, c.File)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) != 0 {
			t.Errorf("%s/%s: bad checksums in frames %+v", c.Host.Name, c.Iface, rep.Bad)
		}
		if len(pkts) > 0 && rep.Good == 0 {
			t.Errorf("%s/%s: no checksum verified", c.Host.Name, c.Iface)
		}
	}
	return capture.CountChunks(all), all
}

// A single-homed association from the client to a backend, forwarded by
// the lb namespace with plain kernel routing: handshake, data both ways,
// SACKs, PPIDs and checksums as tshark sees them.
func TestEchoThroughLBForwardingIsCapturedCleanly(t *testing.T) {
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11"), Port: 3868, ID: "be1", Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	caps := startCaptures(ctx, t, l.LB, "eth0", "eth1")

	res, err := sctppeer.RunClient(ctx, l.Client, sctppeer.ClientOptions{
		Bind: addrs("10.77.1.2"), Connect: addrs("10.77.2.11"), Port: 3868,
		Count: 20, Size: 100, Interval: 10 * time.Millisecond, Streams: 4, PPID: 46, Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatalf("client: %v (%+v)", err, res)
	}
	if res.ServerID != "be1" || res.Echoed != 20 {
		t.Errorf("result %+v, want 20 echoes from be1", res)
	}
	if len(res.PeerAddrs) != 1 || !strings.HasPrefix(res.PeerAddrs[0], "10.77.2.11:") {
		t.Errorf("peer addresses %v, want 10.77.2.11", res.PeerAddrs)
	}

	counts, pkts := stopAndDecode(ctx, t, caps)
	// Each capture sees the whole exchange once (eth0 client side, eth1 backend side).
	for chunk, want := range map[string]int{"INIT": 2, "INIT_ACK": 2, "COOKIE_ECHO": 2, "COOKIE_ACK": 2} {
		if counts[chunk] != want {
			t.Errorf("%s chunks: %d, want %d (all: %v)", chunk, counts[chunk], want, counts)
		}
	}
	if counts["DATA"] < 2*2*20 {
		t.Errorf("DATA chunks: %d, want at least %d", counts["DATA"], 2*2*20)
	}
	if counts["SACK"] == 0 || counts["ABORT"] != 0 {
		t.Errorf("chunks %v: want SACKs and no ABORT", counts)
	}
	for _, p := range pkts {
		for _, ppid := range p.PPIDs {
			if ppid != 46 {
				t.Fatalf("frame %d: PPID %d on the wire, want 46", p.Frame, ppid)
			}
		}
	}
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	up := false
	for _, ev := range evs {
		if ev.Event == "assoc" && ev.State == "COMM_UP" {
			up = true
		}
	}
	if !up {
		t.Errorf("server saw no COMM_UP: %+v", evs)
	}
}

// Two links per side through a router: the primary link is cut mid-stream;
// the association fails over to the second path without losing a message
// and without a new handshake.
func TestMultiHomedFailoverLosesNoMessage(t *testing.T) {
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1, Links: 2, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11", "10.77.12.11"), Port: 38412, ID: "be1", Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Router's lb-side interfaces of link 0 and link 1.
	caps := startCaptures(ctx, t, l.Router, "eth1", "eth3")

	const count = 60
	cl, err := sctppeer.StartClient(ctx, l.Client, sctppeer.ClientOptions{
		Bind: addrs("10.77.1.2", "10.77.11.2"), Connect: addrs("10.77.2.11", "10.77.12.11"), Port: 38412,
		Count: count, Size: 200, Interval: 50 * time.Millisecond, Streams: 2, PPID: 60,
		Wait: 15 * time.Second, Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cut link 0 once the association is up and data is flowing.
	if err := srv.WaitEvent(ctx, "assoc", "COMM_UP"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := l.RouterClientIface(0).SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	res, err := cl.Wait(ctx)
	if err != nil {
		t.Fatalf("client: %v (%+v)", err, res)
	}
	if res.Echoed != count || res.Lost != 0 {
		t.Errorf("echoed %d lost %d, want %d/0", res.Echoed, res.Lost, count)
	}
	if res.Failovers == 0 {
		t.Errorf("client reported no unreachable peer address; events %+v", res.Events)
	}
	if len(res.PeerAddrs) != 2 || len(res.LocalAddrs) != 2 {
		t.Errorf("peer %v local %v, want two each", res.PeerAddrs, res.LocalAddrs)
	}
	t.Logf("failover: max echo gap %d ms, events %+v", res.MaxGapMs, res.Events)

	counts, pkts := stopAndDecode(ctx, t, caps)
	if counts["INIT"] != 1 || counts["ABORT"] != 0 {
		t.Errorf("chunks %v: want exactly one INIT (no new association) and no ABORT", counts)
	}
	// After the cut, data must have used link 1 (router eth3 saw DATA).
	link1Data := 0
	for _, p := range pkts {
		if (strings.HasPrefix(p.Dst, "10.77.12.") || strings.HasPrefix(p.Src, "10.77.12.")) && contains(p.Chunks, "DATA") {
			link1Data++
		}
	}
	if link1Data == 0 {
		t.Errorf("no DATA over the second path")
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Fifty multi-homed associations from one client process (one usrsctp
// stack) through a router with two links per side: each its own local
// port, both local and both peer addresses, every message of each echoed
// on its stream. Then the same with one association's packets dropped by
// the client's namespace: the client fails, and only that association is
// reported broken, the others all echoed.
func TestManyAssociationsFromOneProcess(t *testing.T) {
	requireTools(t)
	l := lab.New(t, lab.Config{Backends: 1, Links: 2, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: addrs("10.77.2.11", "10.77.12.11"), Port: 38412, ID: "be1", Timers: sctppeer.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	const (
		n     = 50
		count = 20
		port  = 40000
	)
	opts := sctppeer.ClientOptions{
		Bind: addrs("10.77.1.2", "10.77.11.2"), Connect: addrs("10.77.2.11", "10.77.12.11"), Port: 38412,
		Count: count, Size: 100, Interval: 20 * time.Millisecond, Streams: 3, PPID: 60, Timers: sctppeer.FastTimers,
		Associations: n, LocalPort: port,
	}
	c, err := sctppeer.StartClient(ctx, l.Client, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitMany(ctx)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if len(m.Associations) != n || m.Total.OK != n || m.Total.Echoed != n*count || m.Total.Sent != n*count {
		t.Fatalf("total %+v, want %d associations all OK with %d echoes", m.Total, n, n*count)
	}
	for i, r := range m.Associations {
		if r.Echoed != count || r.ServerID != "be1" {
			t.Errorf("association %d: echoed %d from %q, want %d from be1", i, r.Echoed, r.ServerID, count)
		}
		wantPort := ":" + strconv.Itoa(port+i)
		if len(r.LocalAddrs) != 2 || len(r.PeerAddrs) != 2 {
			t.Errorf("association %d: local %v peer %v, want two each", i, r.LocalAddrs, r.PeerAddrs)
		}
		for _, a := range r.LocalAddrs {
			if !strings.HasSuffix(a, wantPort) {
				t.Errorf("association %d: local address %s, want port %s", i, a, wantPort)
			}
		}
	}
	t.Logf("%d associations: %d echoes, longest gap %d ms, %d ms", n, m.Total.Echoed, m.Total.MaxGapMs, m.Total.ElapsedMs)
	if up := countUp(t, srv); up != n {
		t.Errorf("server saw %d associations come up, want %d", up, n)
	}

	// One association's packets never leave the client: it cannot
	// associate, the 49 others are unaffected.
	const broken = 7
	for _, cmd := range []string{
		"add table inet tlb_test",
		"add chain inet tlb_test out { type filter hook output priority 0 ; }",
		fmt.Sprintf("add rule inet tlb_test out sctp sport %d drop", port+100+broken),
	} {
		if out, err := l.Client.Exec(ctx, "nft", cmd); err != nil {
			t.Fatalf("nft %s: %v: %s", cmd, err, out)
		}
	}
	opts.LocalPort = port + 100
	c, err = sctppeer.StartClient(ctx, l.Client, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err = c.WaitMany(ctx)
	if err == nil {
		t.Fatalf("client with association %d dropped reported success: %+v", broken, m.Total)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("association %d ", broken)) {
		t.Errorf("error does not name association %d: %v", broken, err)
	}
	if len(m.Associations) != n || m.Total.OK != n-1 || m.Associations[broken].Associated || m.Associations[broken].Error == "" {
		t.Errorf("total %+v, association %d %+v: want only it broken (not associated, with an error)", m.Total, broken, m.Associations[broken])
	}

	// One association's handshake is lost until the others are up and its
	// first attempt has timed out: dialled again from the same port
	// (DialAttempts), it comes up on a later attempt; set up 10 at a time
	// (DialConcurrency), the others come up on their first.
	const late = 3
	before := countUp(t, srv)
	for _, cmd := range []string{
		"flush chain inet tlb_test out",
		fmt.Sprintf("add rule inet tlb_test out sctp sport %d drop", port+200+late),
	} {
		if out, err := l.Client.Exec(ctx, "nft", cmd); err != nil {
			t.Fatalf("nft %s: %v: %s", cmd, err, out)
		}
	}
	opts.LocalPort = port + 200
	opts.DialConcurrency, opts.DialAttempts, opts.DialTimeout = 10, 3, time.Second
	c, err = sctppeer.StartClient(ctx, l.Client, opts)
	if err != nil {
		t.Fatal(err)
	}
	for countUp(t, srv)-before < n-1 {
		if ctx.Err() != nil {
			t.Fatalf("%d of the %d others up", countUp(t, srv)-before, n-1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(opts.DialTimeout)
	if out, err := l.Client.Exec(ctx, "nft", "flush chain inet tlb_test out"); err != nil {
		t.Fatalf("nft flush: %v: %s", err, out)
	}
	m, err = c.WaitMany(ctx)
	if err != nil {
		t.Fatalf("client with association %d's first handshake lost: %v", late, err)
	}
	for i, r := range m.Associations {
		switch {
		case i == late && (r.DialAttempts < 2 || !r.OK()):
			t.Errorf("association %d: %d dial attempts, OK %v, want a later attempt to come up: %+v", i, r.DialAttempts, r.OK(), r)
		case i != late && r.DialAttempts != 1:
			t.Errorf("association %d: %d dial attempts, want 1", i, r.DialAttempts)
		}
	}
}

func countUp(t *testing.T, srv *sctppeer.Server) int {
	t.Helper()
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	up := 0
	for _, ev := range evs {
		if ev.Event == "assoc" && ev.State == "COMM_UP" {
			up++
		}
	}
	return up
}
