package l4

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

const sctpPort = 9999

// startSCTPServers runs one usrsctp echo server per backend (one stack per
// namespace), each bound to a single address so the associations stay
// single-homed and predictable.
func startSCTPServers(t *testing.T, e *Env, bind func(k int) netip.Addr) []*sctppeer.Server {
	t.Helper()
	var srvs []*sctppeer.Server
	for k, be := range e.Lab.Backends {
		s, err := sctppeer.StartServer(context.Background(), be, sctppeer.ServerOptions{
			Bind: []netip.Addr{bind(k)}, Port: sctpPort, ID: fmt.Sprintf("be%d", k+1)})
		if err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, s)
	}
	return srvs
}

func stopAll(srvs []*sctppeer.Server) {
	for _, s := range srvs {
		_ = s.Stop()
	}
}

// serverPeers returns, per server, the peer addresses of its associations.
func serverPeers(t *testing.T, srvs []*sctppeer.Server) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, s := range srvs {
		evs, err := s.Events()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Event == "assoc" && ev.State == "COMM_UP" {
				out[s.Opts.ID] = append(out[s.Opts.ID], ev.Peers...)
			}
		}
	}
	return out
}

// Real SCTP associations (usrsctp on both ends) through every mode, IPv4 and
// IPv6: each association completes, echoes every message, lands on the
// endpoints in round robin order, and the endpoint sees the promised source.
// Captures on both sides of the LB carry only valid checksums (CRC32c
// included) and the full handshake.
func TestSCTPAssociationsThroughEveryMode(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	for _, v6 := range []bool{false, true} {
		for _, mc := range modeCases {
			name := fmt.Sprintf("%s-sctp-%s", mc.mode, family(v6))
			t.Run(name, func(t *testing.T) {
				vip := mc.vip(v6)
				bind := func(k int) netip.Addr { return e.BackendAddr(k, v6) }
				if mc.mode == api.ModeDSR {
					bind = func(int) netip.Addr { return vip }
				}
				if mc.mode == api.ModeDSR && v6 {
					dsrSourceRoute(t, e, vip)
				}
				srvs := startSCTPServers(t, e, bind)
				defer stopAll(srvs)
				svc := api.Service{Name: name, VIP: vip.String(), Port: sctpPort, Protocol: api.ProtocolSCTP,
					Mode: mc.mode, Select: api.SelectRoundRobin, Endpoints: endpoints(e, sctpPort, v6)}
				if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })

				front, back := startLBCaptures(t, e)
				seen := map[string]int{}
				for i := 0; i < 4; i++ {
					res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
						Bind: []netip.Addr{e.ClientAddr(v6)}, Connect: []netip.Addr{vip}, Port: sctpPort,
						Count: 5, Size: 200, Streams: 2})
					if err != nil {
						t.Fatalf("client %d: %v", i, err)
					}
					if !res.OK() {
						t.Fatalf("client %d: %+v", i, res)
					}
					if got := res.PeerAddrs; len(got) != 1 || addrOf(got[0]) != vip {
						t.Errorf("client %d sees peer addresses %v, want only the VIP %s", i, got, vip)
					}
					seen[res.ServerID]++
				}
				if seen["be1"] != 2 || seen["be2"] != 2 {
					t.Errorf("round robin over 2 endpoints, 4 associations: %v", seen)
				}
				want := mc.source(e, vip, v6).String()
				for id, peers := range serverPeers(t, srvs) {
					for _, p := range peers {
						if addrOf(p).String() != want {
							t.Errorf("%s saw peer address %s, want %s", id, p, want)
						}
					}
				}
				handshake := []string{"INIT", "INIT_ACK", "COOKIE_ECHO", "COOKIE_ACK", "DATA", "SACK"}
				checkSCTPCapture(t, front, handshake)
				if mc.mode == api.ModeDSR {
					// Replies go straight to the client: only the client's
					// half of the handshake crosses the backend side.
					checkSCTPCapture(t, back, []string{"INIT", "COOKIE_ECHO", "DATA"})
				} else {
					checkSCTPCapture(t, back, handshake)
				}
			})
		}
	}
}

// addrOf takes the address out of "addr:port", "[v6]:port" or a bare address.
func addrOf(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(s)
	return a
}

// dsrSourceRoute makes the backends' replies toward the client leave from
// the VIP for the duration of a test. usrsctp sends IPv6 through a raw
// socket without a source, so the kernel picks one: the route's preferred
// source, which is how DSR backends are set up for protocols that do not
// bind their replies to the VIP themselves.
func dsrSourceRoute(t *testing.T, e *Env, vip netip.Addr) {
	t.Helper()
	ctx := context.Background()
	gw := e.LBBackendAddr(true).String()
	for k, be := range e.Lab.Backends {
		dev := e.Lab.BackendIface(k, 0).Name
		if err := be.IP(ctx, "-6", "route", "replace", "default", "via", gw, "dev", dev, "src", vip.String()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := be.IP(ctx, "-6", "route", "replace", "default", "via", gw, "dev", dev); err != nil {
				t.Errorf("restore route: %v", err)
			}
		})
	}
}

// checkSCTPCapture stops c and has tshark verify that every checksum in it
// (CRC32c included) is right and that it holds the chunk types in want.
func checkSCTPCapture(t *testing.T, c *capture.Capture, want []string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	rep, err := capture.Checksums(ctx, c.File)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) > 0 || rep.Good == 0 {
		t.Errorf("%s: %d bad checksum frames %v, %d good", c.Iface, len(rep.Bad), rep.Bad, rep.Good)
	}
	pkts, err := capture.SCTP(ctx, c.File)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for _, p := range pkts {
		chunks = append(chunks, p.Chunks...)
	}
	for _, ch := range want {
		if !slices.Contains(chunks, ch) {
			t.Errorf("%s: no %s chunk among %d packets", c.Iface, ch, len(pkts))
		}
	}
}

// startLBCaptures captures on the lb's client-side and backend-side
// interfaces of link 0 until the test ends (or checkSCTPCapture stops them).
func startLBCaptures(t *testing.T, e *Env) (front, back *capture.Capture) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	var caps []*capture.Capture
	for _, ifc := range []string{e.Lab.LBClientIface(0).Name, e.Lab.LBBackendIface(0).Name} {
		c, err := capture.Start(ctx, e.Lab.LB, ifc, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop() })
		caps = append(caps, c)
	}
	return caps[0], caps[1]
}
