package bgp

import (
	"context"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	gapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
)

// sessionMark is what a BGP session reset would change on the router side:
// the number of times the session went down and when it last came up.
func sessionMark(t *testing.T, r *server.BgpServer) string {
	t.Helper()
	var out []string
	err := r.ListPeer(context.Background(), &gapi.ListPeerRequest{}, func(p *gapi.Peer) {
		out = append(out, p.State.SessionState.String()+" flops="+strconv.Itoa(int(p.State.Flops))+" up="+p.Timers.State.Uptime.AsTime().String())
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, ",")
}

func prefixes(m map[string]ribEntry) []string {
	var out []string
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// TestPerPeerExport: two routers; an advertisement naming one peer reaches
// that router only; changing the peers an advertisement names moves the
// route (update to the peer that gains it, withdrawal to the one that
// loses it) without resetting either session; the marker communities that
// choose the peers never reach a router; Announced lists only the peers a
// VIP goes to.
func TestPerPeerExport(t *testing.T) {
	portA, portB := freePort(t), freePort(t)
	ra := routerAt(t, "127.0.0.1", portA, 65000, "127.0.0.2")
	rb := routerAt(t, "127.0.0.4", portB, 65000, "127.0.0.2")
	ctx := context.Background()
	s, err := New(ctx, api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{
		{Name: "a", Address: "127.0.0.1", ASN: 65000, Port: uint16(portA), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9},
		{Name: "b", Address: "127.0.0.4", ASN: 65000, Port: uint16(portB), SourceAddress: "127.0.0.2", HoldTimeSeconds: 9},
	}}, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	adv := func(name string, peers ...string) api.Advertisement {
		return api.Advertisement{Name: name, Mode: api.AdvertiseBGP, Prefixes: []string{"10.9.0.0/16"}, Peers: peers, Communities: []string{"65000:7:8"}}
	}
	v := func(a string, ad api.Advertisement) ha.VIP {
		return ha.VIP{Addr: netip.MustParseAddr(a), Advertisement: ad}
	}
	expect := func(step string, wantA, wantB []string) {
		t.Helper()
		for _, x := range []struct {
			name string
			r    *server.BgpServer
			want []string
		}{{"a", ra, wantA}, {"b", rb, wantB}} {
			m := waitRIB(t, x.r, step+": router "+x.name+" with "+strings.Join(x.want, " "), func(m map[string]ribEntry) bool {
				return reflect.DeepEqual(prefixes(m), x.want)
			})
			for p, e := range m {
				if e.attrs != "large=65000:7:8" || e.nexthop != "127.0.0.2" {
					t.Errorf("%s: router %s got %s with %q via %s, want only the advertisement's community (no marker) via 127.0.0.2", step, x.name, p, e.attrs, e.nexthop)
				}
			}
		}
	}
	// Both sessions up before the first routes, so that the marks taken
	// below are those of the sessions that must survive every change.
	waitRIB(t, ra, "session", func(map[string]ribEntry) bool { return strings.HasPrefix(sessionMark(t, ra), "ESTABLISHED") })
	waitRIB(t, rb, "session", func(map[string]ribEntry) bool { return strings.HasPrefix(sessionMark(t, rb), "ESTABLISHED") })
	markA, markB := sessionMark(t, ra), sessionMark(t, rb)

	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1", adv("only-a", "a")), v("10.9.0.2", adv("all")), v("10.9.0.3", adv("only-b", "b")), v("10.9.0.4", adv("both", "a", "b"))}); err != nil {
		t.Fatal(err)
	}
	expect("initial", []string{"10.9.0.1/32", "10.9.0.2/32", "10.9.0.4/32"}, []string{"10.9.0.2/32", "10.9.0.3/32", "10.9.0.4/32"})
	ann := s.Announced()
	for vip, want := range map[string][]string{"10.9.0.1": {"bgp/a"}, "10.9.0.2": {"bgp/a", "bgp/b"}, "10.9.0.3": {"bgp/b"}, "10.9.0.4": {"bgp/a", "bgp/b"}} {
		if got := ann[netip.MustParseAddr(vip)].Via; !reflect.DeepEqual(got, want) {
			t.Errorf("Announced %s via %v, want %v", vip, got, want)
		}
	}

	// .1 moves from a to b; .2 narrows from all to a; .3 widens from b to all.
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.1", adv("only-b", "b")), v("10.9.0.2", adv("only-a", "a")), v("10.9.0.3", adv("all")), v("10.9.0.4", adv("both", "a", "b"))}); err != nil {
		t.Fatal(err)
	}
	expect("changed", []string{"10.9.0.2/32", "10.9.0.3/32", "10.9.0.4/32"}, []string{"10.9.0.1/32", "10.9.0.3/32", "10.9.0.4/32"})
	if got := sessionMark(t, ra); got != markA {
		t.Errorf("session with router a reset: %s, then %s", markA, got)
	}
	if got := sessionMark(t, rb); got != markB {
		t.Errorf("session with router b reset: %s, then %s", markB, got)
	}
	// Withdrawn everywhere.
	if err := s.Set(ctx, []ha.VIP{v("10.9.0.3", adv("only-b", "b"))}); err != nil {
		t.Fatal(err)
	}
	expect("withdrawn", nil, []string{"10.9.0.3/32"})
}

// TestMarkersOnlyForSomePeers: naming every peer, or none, marks nothing
// (the path goes to all peers unfiltered); naming only peers that are not
// configured (VIPs set under an earlier configuration) sends it nowhere.
func TestMarkersOnlyForSomePeers(t *testing.T) {
	s := &Speaker{cfg: api.BGPConfig{ASN: 65001, Peers: []api.BGPPeer{{Name: "a"}, {Name: "b"}, {Name: "c"}}}}
	if m, ok := s.markers(api.Advertisement{}); m != nil || !ok {
		t.Errorf("no peers named: %v %v", m, ok)
	}
	if m, ok := s.markers(api.Advertisement{Peers: []string{"c", "a", "b"}}); m != nil || !ok {
		t.Errorf("every peer named: %v %v", m, ok)
	}
	got, ok := s.markers(api.Advertisement{Peers: []string{"c", "a"}})
	want := [][3]uint32{{65001, MarkerLocalData1, 1}, {65001, MarkerLocalData1, 3}}
	if !reflect.DeepEqual(got, want) || !ok {
		t.Errorf("markers = %v %v, want %v", got, ok, want)
	}
	if m, ok := s.markers(api.Advertisement{Peers: []string{"gone"}}); ok {
		t.Errorf("only an unknown peer named: %v, ok", m)
	}
}
