package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
)

// countRoutes is the number of IPv4 paths in r's table.
func countRoutes(r *server.BgpServer) int {
	n := 0
	_ = r.ListPath(context.Background(), &gapi.ListPathRequest{TableType: gapi.TableType_GLOBAL, Family: family(netip.MustParseAddr("1.1.1.1"))}, func(d *gapi.Destination) { n += len(d.Paths) })
	return n
}

// waitRoutes waits until each router holds its wanted number of routes
// and the speaker's sessions named in up are established.
func waitRoutes(t *testing.T, s *Speaker, what string, want map[*server.BgpServer]int, up ...string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // 10,000 routes, loaded machine
	for {
		ok := true
		var got, wantN []int
		for r, n := range want {
			c := countRoutes(r)
			got, wantN = append(got, c), append(wantN, n)
			ok = ok && c == n
		}
		st := map[string]string{}
		for _, p := range s.PeerStatus(context.Background()) {
			st[p.Name] = p.State
		}
		for _, name := range up {
			ok = ok && st[name] == "established"
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: routers hold %v routes, want %v; sessions %v", what, got, wantN, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSpeakerRestartKeepsMemoryBounded: configuration changes restart the
// speaker's sessions on its one gobgp server. After each restart every
// route is back at the routers, through the new configuration's peers and
// export policy, and the goroutines and the heap stay where they were:
// with a new gobgp server per change (what the daemon did before) each
// change left a Serve goroutine and about 8 MiB of tables (10,000 routes)
// behind.
func TestSpeakerRestartKeepsMemoryBounded(t *testing.T) {
	const nVIPs = 10000
	const restarts = 4
	port1, port2 := freePort(t), freePort(t)
	r1 := router(t, port1, 65000, "127.0.0.2")
	r2 := routerAt(t, "127.0.0.4", port2, 65000, "127.0.0.2")
	ctx := context.Background()
	p1 := api.BGPPeer{Name: "r1", Address: "127.0.0.1", ASN: 65000, Port: uint16(port1), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9}
	p2 := api.BGPPeer{Name: "r2", Address: "127.0.0.4", ASN: 65000, Port: uint16(port2), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9}
	// Config one: r1 alone. Config two: r1 and r2, the advertisement naming
	// r1 only, so the export policy (defined again at each start) must keep
	// every route from r2.
	one := api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{p1}}
	two := api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{p1, p2}}
	s, err := New(ctx, one, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	adv := api.Advertisement{Name: "a", Mode: api.AdvertiseBGP, Prefixes: []string{"10.20.0.0/16"}, Peers: []string{"r1"}}
	vips := make([]ha.VIP, 0, nVIPs)
	for i := range nVIPs {
		vips = append(vips, ha.VIP{Addr: netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}), Advertisement: adv})
	}
	if err := s.Set(ctx, vips); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "first start", map[*server.BgpServer]int{r1: nVIPs}, "r1")
	baseG, baseHeap := runtime.NumGoroutine(), heapAfterGC()
	t.Logf("baseline: %d goroutines, heap %.1f MiB", baseG, float64(baseHeap)/(1<<20))
	for i := 1; i <= restarts; i++ {
		cfg, want, up := two, map[*server.BgpServer]int{r1: nVIPs, r2: 0}, []string{"r1", "r2"}
		if i%2 == 0 {
			cfg, want, up = one, map[*server.BgpServer]int{r1: nVIPs}, []string{"r1"}
		}
		cfg.Peers = append([]api.BGPPeer(nil), cfg.Peers...)
		cfg.Peers[0].HoldTimeSeconds = uint32(9 + i) // a change in every restart
		if err := s.Restart(ctx, cfg); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		waitRoutes(t, s, fmt.Sprintf("restart %d", i), want, up...)
		if a := s.Announced()[netip.MustParseAddr("10.20.0.1")]; len(a.Via) != 1 || a.Via[0] != "bgp/r1" {
			t.Fatalf("restart %d: 10.20.0.1 announced via %v, want bgp/r1", i, a.Via)
		}
		if i%2 == 1 {
			// r2 must have the session and nothing else.
			time.Sleep(200 * time.Millisecond)
			if n := countRoutes(r2); n != 0 {
				t.Fatalf("restart %d: r2, not named by the advertisement, got %d routes", i, n)
			}
		}
	}
	// Back in configuration one, as at the baseline: the goroutines settle
	// back (a session's goroutines end shortly after it closes).
	var g int
	for deadline := time.Now().Add(20 * time.Second); ; {
		if g = runtime.NumGoroutine(); g <= baseG+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	heap := heapAfterGC()
	growth := (float64(heap) - float64(baseHeap)) / (1 << 20)
	t.Logf("after %d restarts: %d goroutines (baseline %d), heap %.1f MiB (%+.1f MiB)", restarts, g, baseG, float64(heap)/(1<<20), growth)
	if g > baseG+3 {
		t.Errorf("goroutines grew from %d to %d over %d restarts", baseG, g, restarts)
	}
	// A leaked server holds about 8 MiB here; the bound leaves room for
	// the allocator's noise, not for one leaked server per restart.
	if growth > 6 {
		t.Errorf("heap grew by %.1f MiB over %d restarts (bound 6 MiB)", growth, restarts)
	}
}

// TestSpeakerRestartAfterAFailedStart: a restart refused by gobgp (a router
// ID that is no address) leaves the speaker stopped, with its routes
// withdrawn and Set refusing; the next good restart announces the VIPs of
// the last Set.
func TestSpeakerRestartAfterAFailedStart(t *testing.T) {
	port := freePort(t)
	r := router(t, port, 65000, "127.0.0.2")
	ctx := context.Background()
	cfg := api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{{
		Name: "r1", Address: "127.0.0.1", ASN: 65000, Port: uint16(port), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9,
	}}}
	s, err := New(ctx, cfg, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	adv := api.Advertisement{Name: "a", Mode: api.AdvertiseBGP, Prefixes: []string{"10.9.0.0/16"}}
	v := func(a string) ha.VIP { return ha.VIP{Addr: netip.MustParseAddr(a), Advertisement: adv} }
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1")}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "start", map[*server.BgpServer]int{r: 1}, "r1")
	bad := cfg
	bad.RouterID = "not-an-address"
	if err := s.Restart(ctx, bad); err == nil {
		t.Fatal("restart with router ID not-an-address accepted")
	}
	waitRoutes(t, s, "after the refused restart", map[*server.BgpServer]int{r: 0})
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1"), v("10.9.0.2")}); err == nil {
		t.Fatal("Set on a stopped speaker reported no error")
	}
	if st := s.PeerStatus(ctx); len(st) != 0 {
		t.Errorf("stopped speaker reports sessions %+v", st)
	}
	if err := s.Restart(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "restart", map[*server.BgpServer]int{r: 2}, "r1")
	// Stop forgets the VIPs: the restarted speaker announces what the next
	// Set says (the daemon's advertiser reconciles after a restart).
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "stop", map[*server.BgpServer]int{r: 0})
	if err := s.Restart(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "restart after Stop", map[*server.BgpServer]int{r: 0}, "r1")
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.3")}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "Set after the restart", map[*server.BgpServer]int{r: 1}, "r1")
	// A VIP whose advertisement names only a peer the new configuration
	// lacks goes nowhere after a restart (not to every peer).
	named := adv
	named.Peers = []string{"r1"}
	if err := s.Set(ctx, []ha.VIP{{Addr: netip.MustParseAddr("10.9.0.4"), Advertisement: named}}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "10.9.0.4 to r1", map[*server.BgpServer]int{r: 1}, "r1")
	renamed := cfg
	renamed.Peers = append([]api.BGPPeer(nil), cfg.Peers...)
	renamed.Peers[0].Name = "r1-renamed"
	if err := s.Restart(ctx, renamed); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, s, "restart with the peer renamed", map[*server.BgpServer]int{r: 0}, "r1-renamed")
	if a := s.Announced(); len(a) != 0 {
		t.Errorf("announced after the rename: %+v", a)
	}
}
