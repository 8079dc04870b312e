package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// router is a passive gobgp peer standing in for the router: it listens on
// 127.0.0.1:port and accepts the speaker under test from 127.0.0.2.
func router(t *testing.T, port int, asn uint32, peers ...string) *server.BgpServer {
	t.Helper()
	return routerAt(t, "127.0.0.1", port, asn, peers...)
}

// routerAt is router listening on listen (an address of lo).
func routerAt(t *testing.T, listen string, port int, asn uint32, peers ...string) *server.BgpServer {
	t.Helper()
	r := server.NewBgpServer(server.LoggerOption(&logAdapter{log: discardLog()}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &gapi.StartBgpRequest{Global: &gapi.Global{Asn: asn, RouterId: "10.255.0.1", ListenPort: int32(port), ListenAddresses: []string{listen}}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		err := r.AddPeer(ctx, &gapi.AddPeerRequest{Peer: &gapi.Peer{
			Conf:      &gapi.PeerConf{NeighborAddress: p, PeerAsn: 65001},
			Transport: &gapi.Transport{PassiveMode: true},
			AfiSafis:  []*gapi.AfiSafi{{Config: &gapi.AfiSafiConfig{Family: family(netip.MustParseAddr(p)), Enabled: true}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(r.Stop)
	return r
}

type ribEntry struct {
	prefix  string
	nexthop string
	attrs   string
}

// rib lists the router's IPv4 routes with their attributes.
func rib(t *testing.T, r *server.BgpServer) map[string]ribEntry {
	t.Helper()
	out := map[string]ribEntry{}
	err := r.ListPath(context.Background(), &gapi.ListPathRequest{TableType: gapi.TableType_GLOBAL, Family: family(netip.MustParseAddr("1.1.1.1"))}, func(d *gapi.Destination) {
		for _, p := range d.Paths {
			e := ribEntry{prefix: d.Prefix}
			var attrs []string
			for _, a := range p.Pattrs {
				m, err := a.UnmarshalNew()
				if err != nil {
					continue
				}
				switch v := m.(type) {
				case *gapi.NextHopAttribute:
					e.nexthop = v.NextHop
				case *gapi.CommunitiesAttribute:
					attrs = append(attrs, fmt.Sprintf("comm=%v", v.Communities))
				case *gapi.LargeCommunitiesAttribute:
					for _, l := range v.Communities {
						attrs = append(attrs, fmt.Sprintf("large=%d:%d:%d", l.GlobalAdmin, l.LocalData1, l.LocalData2))
					}
				case *gapi.MultiExitDiscAttribute:
					attrs = append(attrs, fmt.Sprintf("med=%d", v.Med))
				}
			}
			sort.Strings(attrs)
			e.attrs = strings.Join(attrs, " ")
			out[d.Prefix] = e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitRIB(t *testing.T, r *server.BgpServer, what string, ok func(map[string]ribEntry) bool) map[string]ribEntry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := rib(t, r)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("router RIB never got %s: %v", what, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func u32(v uint32) *uint32 { return &v }

// TestSpeakerAnnouncesAndWithdraws checks the routes a router receives:
// per-VIP /32 with next hop self, communities (standard and large), MED, an
// aggregate, replacement when attributes change, withdrawal on Set and on
// Close.
func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	port := freePort(t)
	r := router(t, port, 65000, "127.0.0.2")
	ctx := context.Background()
	s, err := New(ctx, api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{{
		Name: "r1", Address: "127.0.0.1", ASN: 65000, Port: uint16(port), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9,
	}}}, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	adv := api.Advertisement{Name: "a", Mode: api.AdvertiseBGP, Prefixes: []string{"10.9.0.0/16"}, Communities: []string{"65000:100", "65000:1:2"}, MED: u32(50)}
	agg := api.Advertisement{Name: "agg", Mode: api.AdvertiseBGP, Prefixes: []string{"10.8.0.0/16"}, AggregationLength: 24}
	v := func(a string, ad api.Advertisement) ha.VIP {
		return ha.VIP{Addr: netip.MustParseAddr(a), Advertisement: ad}
	}
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1", adv), v("10.9.0.2", adv), v("10.8.0.5", agg), v("10.8.0.6", agg)}); err != nil {
		t.Fatal(err)
	}
	m := waitRIB(t, r, "3 routes", func(m map[string]ribEntry) bool { return len(m) == 3 })
	for _, p := range []string{"10.9.0.1/32", "10.9.0.2/32"} {
		e := m[p]
		if e.nexthop != "127.0.0.2" || e.attrs != "comm=[4259840100] large=65000:1:2 med=50" {
			t.Errorf("%s: %+v", p, e)
		}
	}
	if e, ok := m["10.8.0.0/24"]; !ok || e.nexthop != "127.0.0.2" {
		t.Errorf("aggregate: %+v", m)
	}
	if a := s.Announced(); len(a) != 4 || len(a[netip.MustParseAddr("10.9.0.1")].Via) != 1 || a[netip.MustParseAddr("10.9.0.1")].Via[0] != "bgp/r1" {
		t.Errorf("Announced: %+v", a)
	}
	st := s.PeerStatus(ctx)
	if len(st) != 1 || st[0].State != "established" || st[0].PrefixesSent != 3 {
		t.Errorf("peer status %+v", st)
	}
	// MED changes: the route is replaced; 10.9.0.2 and one aggregate member go.
	adv2 := adv
	adv2.MED = u32(10)
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1", adv2), v("10.8.0.6", agg)}); err != nil {
		t.Fatal(err)
	}
	waitRIB(t, r, "10.9.0.1 with med 10, no 10.9.0.2", func(m map[string]ribEntry) bool {
		_, two := m["10.9.0.2/32"]
		_, ag := m["10.8.0.0/24"]
		return len(m) == 2 && !two && ag && strings.Contains(m["10.9.0.1/32"].attrs, "med=10")
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitRIB(t, r, "nothing after Close", func(m map[string]ribEntry) bool { return len(m) == 0 })
}

// TestTwoSpeakersOneProcess: listen port 0 lets several speakers share a
// process (and a namespace); both announce the same VIP (ECMP at the router).
func TestTwoSpeakersOneProcess(t *testing.T) {
	port := freePort(t)
	r := router(t, port, 65000, "127.0.0.2", "127.0.0.3")
	ctx := context.Background()
	adv := api.Advertisement{Name: "a", Mode: api.AdvertiseBGP, Prefixes: []string{"10.9.0.0/16"}}
	for i, src := range []string{"127.0.0.2", "127.0.0.3"} {
		s, err := New(ctx, api.BGPConfig{ASN: 65001, RouterID: fmt.Sprintf("10.255.0.%d", 2+i), Peers: []api.BGPPeer{{
			Name: "r1", Address: "127.0.0.1", ASN: 65000, Port: uint16(port), SourceAddress: src,
		}}}, Options{Logger: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.Set(ctx, []ha.VIP{{Addr: netip.MustParseAddr("10.9.0.1"), Advertisement: adv}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		_ = r.ListPath(ctx, &gapi.ListPathRequest{TableType: gapi.TableType_GLOBAL, Family: family(netip.MustParseAddr("1.1.1.1"))}, func(d *gapi.Destination) { n += len(d.Paths) })
		if n == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router has %d paths for the VIP, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestParseCommunities(t *testing.T) {
	std, large, err := parseCommunities([]string{"65000:100", "1:2:3"})
	if err != nil || len(std) != 1 || std[0] != 65000<<16|100 || len(large) != 1 || large[0] != [3]uint32{1, 2, 3} {
		t.Fatalf("%v %v %v", std, large, err)
	}
	for _, bad := range []string{"65536:1", "a:b", "1", "1:2:3:4", "1:4294967296:1"} {
		if _, _, err := parseCommunities([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestMultihopPeerGetsMultihopBFD: a BFD session to an ebgpMultihop peer, or
// with bfd.multihop, runs per RFC 5883 (port 4784, the profile's minimum
// TTL); a directly connected peer keeps single-hop BFD.
func TestMultihopPeerGetsMultihopBFD(t *testing.T) {
	ctx := context.Background()
	prof := func(multihop bool, minTTL uint32) *api.BFDProfile {
		return &api.BFDProfile{Multihop: multihop, MinimumTTL: minTTL}
	}
	s, err := New(ctx, api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{
		{Name: "ebgp-mh", Address: "127.0.0.31", ASN: 65000, Port: 9, EBGPMultihop: true, BFD: prof(false, 0)},
		{Name: "ibgp-loopback", Address: "127.0.0.32", ASN: 65001, Port: 9, BFD: prof(true, 250)},
		{Name: "direct", Address: "127.0.0.33", ASN: 65000, Port: 9, BFD: prof(false, 0)},
	}}, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]struct {
		multihop bool
		minTTL   uint8
		mode     string
	}{"ebgp-mh": {true, 0, "multihop"}, "ibgp-loopback": {true, 250, "multihop"}, "direct": {false, 0, "single-hop"}}
	deadline := time.Now().Add(10 * time.Second)
	for name, w := range want {
		var p *peer
		for {
			s.mu.Lock()
			p = s.peers[name]
			started := p.bfd != nil
			s.mu.Unlock()
			if started {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no BFD session for %s", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if c := p.bfd.Config(); c.Multihop != w.multihop || c.MinTTL != w.minTTL {
			t.Errorf("%s: BFD multihop=%v minTTL=%d, want %v %d", name, c.Multihop, c.MinTTL, w.multihop, w.minTTL)
		}
	}
	for _, st := range s.BFDStatus() {
		if st.Mode != want[st.Peer].mode {
			t.Errorf("%s: mode %q, want %q", st.Peer, st.Mode, want[st.Peer].mode)
		}
	}
}
