package l4

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// The LB, not the endpoint, is the client's multi-homed peer: an endpoint
// with fewer addresses than the service has VIPs still gets the client
// every VIP (the INIT-ACK grows by the VIPs it lacks, which lead to the
// endpoint's own address), so a multi-homed client keeps its association
// when its primary link fails, without a new INIT. tshark checks the
// grown INIT-ACK's CRC32c and addresses.
func TestSCTPSingleHomedEndpointGetsTheClientEveryVIP(t *testing.T) {
	for _, c := range []mhCase{{n: 2, mode: api.ModeDefault, host: 50, singleHomed: true},
		{n: 3, v6: true, mode: api.ModeFullNAT, host: 51, singleHomed: true}} {
		t.Run(c.name(), func(t *testing.T) {
			e := upLinks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv := c.apply(t, e)
			front, back := startCaps(t, e)
			res := failover(t, e, srv, c.clientAddrs(e), c.vips()[0], func() { c.checkOneAssociation(t, e) },
				e.Lab.ClientIface(0))
			if got, want := addrSet(res.PeerAddrs), sorted(c.vips()); !slices.Equal(got, want) {
				t.Errorf("client sees peer addresses %v, want every VIP %v", got, want)
			}
			peers := serverPeers(t, []*sctppeer.Server{srv})["be1"]
			if got, want := addrSet(peers), sorted(c.seenBy(e)); !slices.Equal(got, want) {
				t.Errorf("endpoint sees peer addresses %v, want %v", got, want)
			}
			stopCaps(t, front, back)
			caps := append(slices.Clone(front), back...)
			checkChecksums(t, caps...)
			counts, _ := sctpChunks(t, caps...)
			if counts["ABORT"] != 0 || counts["INIT_ACK"] == 0 {
				t.Errorf("chunks %v: want no ABORT", counts)
			}
			if n := countInits(t, front, "INIT"); n != 1 {
				t.Errorf("%d INITs from the client, want 1 (no new association)", n)
			}
			var acks [][]netip.Addr
			for _, cp := range front {
				got, err := InitAddresses(ctx, cp.File, "INIT_ACK")
				if err != nil {
					t.Fatal(err)
				}
				acks = append(acks, got...)
			}
			// The INIT-ACK comes from the primary VIP, which it may or may
			// not list; with its source it must name every VIP.
			if len(acks) != 1 || !slices.Equal(addrSet(addrStrs(append(acks[0], c.vips()[0]))), sorted(c.vips())) {
				t.Errorf("INIT-ACKs toward the client list %v, want one naming (with its source) every VIP %v", acks, c.vips())
			}
			checkInitAddresses(t, front, back, c.vips(), c.seenBy(e))
		})
	}
}

func addrStrs(a []netip.Addr) []string {
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = x.String()
	}
	return out
}

// NAT64 multi-homing: an IPv6 client with two links reaches an IPv4
// endpoint through two IPv6 VIPs. The endpoint sees one LB address; the
// client sees both VIPs and, when its primary link fails, carries on over
// the other one (the endpoint's packets follow it) without a new INIT.
func TestNAT64SCTPMultihomedClientFailsOver(t *testing.T) {
	e := upLinks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := mhCase{n: 2, v6: true, mode: api.ModeDefault, host: 52}
	vips := c.vips()
	ep4 := ifaceAddr(e.Lab.BackendIface(0, 0), false)
	svc := api.Service{Name: "nat64-multihomed", VIP: vips[0].String(), SecondaryVIPs: []string{vips[1].String()},
		Port: mhPort, Protocol: api.ProtocolSCTP, Endpoints: []api.Endpoint{{Address: ep4.String(), Port: mhPort}}}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(context.Background(), svc.Name) })
	srv, err := sctppeer.StartServer(ctx, e.Lab.Backends[0], sctppeer.ServerOptions{
		Bind: []netip.Addr{ep4}, Port: mhPort, ID: "be1", Timers: sctppeer.FastTimers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	front, back := startCaps(t, e)

	res := failover(t, e, srv, c.clientAddrs(e), vips[0], nil, e.Lab.ClientIface(0))
	if got, want := addrSet(res.PeerAddrs), sorted(vips); !slices.Equal(got, want) {
		t.Errorf("client sees peer addresses %v, want both VIPs %v", got, want)
	}
	want := e.LBBackendAddr(false)
	for _, p := range serverPeers(t, []*sctppeer.Server{srv})["be1"] {
		if addrOf(p) != want {
			t.Errorf("endpoint saw peer address %s, want only the LB's IPv4 %s", p, want)
		}
	}
	stopCaps(t, front, back)
	checkChecksums(t, append(slices.Clone(front), back...)...)
	if n := countInits(t, front, "INIT"); n != 1 {
		t.Errorf("%d INITs from the client, want 1 (no new association)", n)
	}
	// Toward the endpoint nothing may be listed but IPv4 (its address types too).
	checkInitAddresses(t, front, back, vips, []netip.Addr{want})
}

// The endpoint's primary link is cut mid-transfer: the client's path to the
// VIP that leads to the endpoint's first address fails, the client moves to
// the second VIP (the endpoint's second address), the endpoint answers from
// that address, and the association carries on without a new INIT. In
// fullnat the endpoint's peers are the VIPs, so, as an operator would, the
// endpoint is given a route to each VIP range over the link it belongs to
// (the lab routes everything but link-local subnets over link 0).
func TestSCTPMultihomedEndpointLinkFailover(t *testing.T) {
	for _, c := range []mhCase{{n: 2, mode: api.ModeDefault, host: 53}, {n: 2, v6: true, mode: api.ModeFullNAT, host: 54}} {
		t.Run(c.name(), func(t *testing.T) {
			e := upLinks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if c.mode == api.ModeFullNAT {
				for i := 1; i < c.n; i++ {
					gw := ifaceAddr(e.Lab.LBBackendIface(i), c.v6)
					if err := e.Lab.Backends[0].AddRoute(ctx, lab.VIPRange(i, c.v6), gw); err != nil {
						t.Fatal(err)
					}
				}
			}
			srv := c.apply(t, e)
			front, back := startCaps(t, e)
			failover(t, e, srv, c.clientAddrs(e), c.vips()[0], nil, e.Lab.BackendIface(0, 0))
			stopCaps(t, front, back)
			counts, dataOn := sctpChunks(t, append(slices.Clone(front), back...)...)
			if counts["ABORT"] != 0 {
				t.Errorf("chunks %v: want no ABORT", counts)
			}
			if n := countInits(t, front, "INIT"); n != 1 {
				t.Errorf("%d INITs from the client, want 1 (no new association)", n)
			}
			if dataOn[e.Lab.LBBackendIface(1).Name] == 0 {
				t.Errorf("no DATA crossed the LB on the endpoint's second link")
			}
		})
	}
}
