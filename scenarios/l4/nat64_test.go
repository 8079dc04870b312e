package l4

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// NAT64 modes: the IPv4 endpoint cannot see an IPv6 client, so whatever the
// mode it sees the LB's IPv4 address on the backend segment.
var nat64Modes = []string{api.ModeDefault, api.ModeOneArm, api.ModeFullNAT}

// An IPv6 client reaches IPv4 endpoints through an IPv6 VIP over TCP (HTTP)
// and UDP, in round robin; the endpoints see the LB's IPv4 address and the
// client's answers come from the VIP (its sockets are connected to it).
// tshark verifies every checksum captured on both sides of the LB.
func TestNAT64IPv6ClientsReachIPv4Endpoints(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	checkCapturedChecksums(t, e)
	for i, mode := range nat64Modes {
		for _, proto := range []string{api.ProtocolTCP, api.ProtocolUDP} {
			name := fmt.Sprintf("nat64-%s-%s", mode, proto)
			t.Run(name, func(t *testing.T) {
				vip := lab.VIP(0, 40+i, true)
				port := HTTPPort
				if proto == api.ProtocolUDP {
					port = UDPPort
				}
				svc := api.Service{Name: name, VIP: vip.String(), Port: uint16(port), Protocol: proto,
					Mode: mode, Select: api.SelectRoundRobin, Endpoints: endpoints(e, port, false)}
				if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
					t.Fatalf("apply: %v", err)
				}
				t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })
				want := e.LBBackendAddr(false)
				seen := map[string]int{}
				for n := 0; n < 4; n++ {
					var r Reply
					var err error
					if proto == api.ProtocolTCP {
						r, err = HTTPGet(ctx, e.Lab.Client, "http://"+hostPort(vip, port)+"/")
					} else {
						r, err = UDPAsk(ctx, e.Lab.Client, hostPort(vip, port))
					}
					if err != nil {
						t.Fatalf("request %d: %v", n, err)
					}
					if r.Source.Addr() != want {
						t.Errorf("request %d: endpoint %s saw source %s, want the LB's IPv4 %s", n, r.Server, r.Source.Addr(), want)
					}
					seen[r.Server]++
				}
				if seen["be1"] != 2 || seen["be2"] != 2 {
					t.Errorf("round robin over 2 endpoints, 4 flows: got %v, want 2 each", seen)
				}
			})
		}
	}
}

// SCTP through NAT64: associations from an IPv6 client to IPv4 usrsctp
// endpoints carry data both ways; the endpoint's peer is the LB's IPv4
// address, the client's only peer is the VIP, no INIT reaching an endpoint
// lists an IPv6 address (the client's are removed, not left as skipped
// parameters) or offers anything but IPv4 as an address type, and every
// CRC32c/checksum captured (on resized INITs too) is valid.
func TestNAT64SCTPAssociations(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	vip := lab.VIP(0, 45, true)
	const name = "nat64-sctp"
	srvs := startSCTPServers(t, e, func(k int) netip.Addr { return e.BackendAddr(k, false) })
	defer stopAll(srvs)
	svc := api.Service{Name: name, VIP: vip.String(), Port: sctpPort, Protocol: api.ProtocolSCTP,
		Mode: api.ModeDefault, Select: api.SelectRoundRobin, Endpoints: endpoints(e, sctpPort, false)}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })

	front, back := startLBCaptures(t, e)

	// A second client address makes usrsctp list both in its INIT: the
	// endpoint must see neither.
	second := netip.MustParsePrefix("fd77:1::3/64")
	if err := e.Lab.Client.AddAddr(ctx, e.Lab.ClientIface(0).Name, second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Lab.Client.IP(ctx, "-6", "addr", "del", second.String(), "dev", e.Lab.ClientIface(0).Name)
	})

	seen := map[string]int{}
	for n := 0; n < 2; n++ {
		res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
			Bind: []netip.Addr{e.ClientAddr(true), second.Addr()}, Connect: []netip.Addr{vip}, Port: sctpPort,
			Count: 5, Size: 200, Streams: 2})
		if err != nil {
			t.Fatalf("client %d: %v", n, err)
		}
		if !res.OK() {
			t.Fatalf("client %d: %+v", n, res)
		}
		if got := res.PeerAddrs; len(got) != 1 || addrOf(got[0]) != vip {
			t.Errorf("client %d sees peer addresses %v, want only the VIP %s", n, got, vip)
		}
		seen[res.ServerID]++
	}
	if seen["be1"] != 1 || seen["be2"] != 1 {
		t.Errorf("round robin over 2 endpoints, 2 associations: %v", seen)
	}
	want := e.LBBackendAddr(false).String()
	for id, peers := range serverPeers(t, srvs) {
		for _, p := range peers {
			if addrOf(p).String() != want {
				t.Errorf("%s saw peer address %s, want the LB's IPv4 %s", id, p, want)
			}
		}
	}
	for _, c := range []*capture.Capture{front, back} {
		checkSCTPCapture(t, c, []string{"INIT", "INIT_ACK", "COOKIE_ECHO", "COOKIE_ACK", "DATA", "SACK"})
	}
	inits, err := InitAddresses(ctx, back.File, "INIT")
	if err != nil {
		t.Fatal(err)
	}
	if len(inits) == 0 {
		t.Fatal("no INIT captured toward the endpoints")
	}
	fromClient, err := InitAddresses(ctx, front.File, "INIT")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("address parameters of the INITs: from the client %v, toward the endpoints %v", fromClient, inits)
	listed := 0
	for _, addrs := range fromClient {
		listed += len(addrs)
	}
	if listed == 0 {
		t.Fatal("the client's INITs list no address: nothing to remove, the checks below prove nothing")
	}
	for _, addrs := range inits {
		for _, a := range addrs {
			if a.Is6() {
				t.Errorf("an INIT toward an IPv4 endpoint lists the IPv6 address %s", a)
			}
		}
	}
	params, err := InitParams(ctx, back.File, "INIT")
	if err != nil {
		t.Fatal(err)
	}
	clientParams, err := InitParams(ctx, front.File, "INIT")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("parameters of the INITs: from the client %+v, toward the endpoints %+v", clientParams, params)
	offered6 := false
	for _, p := range clientParams {
		offered6 = offered6 || slices.Contains(p.AddrTypes, 6)
	}
	if !offered6 {
		t.Errorf("the client's INITs offer no IPv6 address type: the address type check below proves nothing")
	}
	for _, p := range params {
		if p.HasSkipped() {
			t.Errorf("an INIT toward an IPv4 endpoint keeps skipped parameters (types %#04x) instead of losing them", p.Types)
		}
		for _, at := range p.AddrTypes {
			if at != 5 {
				t.Errorf("an INIT toward an IPv4 endpoint offers address type %d (types %v), want only IPv4 (5)", at, p.AddrTypes)
			}
		}
	}
}
