package l4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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
// tshark verifies every checksum captured on both sides of the LB, most
// TCP packets translated by the NAT64 fast path.
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
				// TCP: once a direction's first established packet has
				// cached its next hop, the NAT64 fast path translates the
				// rest (request, response, closing): most of a connection's
				// packets. A one-question UDP flow has none after its reply.
				if proto == api.ProtocolTCP {
					st, err := e.Daemon.Client.GetService(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					if st.Packets == 0 || 2*st.SlowPathPackets >= st.Packets {
						t.Errorf("%d of %d packets took the datapath's slow path, want fewer than half", st.SlowPathPackets, st.Packets)
					}
					t.Logf("%d of %d packets on the slow path", st.SlowPathPackets, st.Packets)
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

// ICMP errors cross families with their NAT64 flow. A datagram to an IPv4
// endpoint port nobody listens on comes back to the IPv6 client as ICMPv6
// port unreachable from the VIP (its connected socket reports
// ECONNREFUSED); the IPv6 client's own port unreachable, for a reply to a
// port it does not listen on, reaches the endpoint as ICMPv4 from the LB's
// address about the datagram the endpoint sent. tshark checks what crossed
// the LB: the embedded headers and every checksum, inner ones included.
func TestNAT64ICMPErrorsCrossFamilies(t *testing.T) {
	e := up(t, 1)
	ctx := context.Background()
	const closedPort = UDPPort + 77
	vip := lab.VIP(0, 46, true)
	for _, s := range []api.Service{
		{Name: "nat64-icmp-closed", VIP: vip.String(), Port: closedPort, Protocol: api.ProtocolUDP,
			Mode: api.ModeDefault, Endpoints: endpoints(e, closedPort, false)},
		{Name: "nat64-icmp-reply", VIP: vip.String(), Port: UDPPort, Protocol: api.ProtocolUDP,
			Mode: api.ModeDefault, Endpoints: endpoints(e, UDPPort, false)},
	} {
		if err := e.Daemon.Client.ApplyService(ctx, s); err != nil {
			t.Fatalf("apply %s: %v", s.Name, err)
		}
		name := s.Name
		t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })
	}
	front, back := startLBCaptures(t, e)
	client6, lb4, be4 := e.ClientAddr(true), e.LBBackendAddr(false), e.BackendAddr(0, false)

	// Toward the client.
	c, err := HostDialer(e.Lab.Client)(ctx, "udp", hostPort(vip, closedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cport := netip.MustParseAddrPort(c.LocalAddr().String()).Port()
	refused := false
	buf := make([]byte, 64)
	for try := 0; try < 5 && !refused; try++ {
		if _, err := c.Write([]byte("anyone?\n")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		_, err := c.Read(buf)
		refused = errors.Is(err, syscall.ECONNREFUSED)
	}
	if !refused {
		t.Fatal("the IPv6 client's socket never reported the closed IPv4 port (no ICMPv6 port unreachable)")
	}

	// Toward the endpoint: a datagram from a port the client does not
	// listen on, sent over a raw socket so no UDP socket ever owns it.
	const ghostPort = 47001
	err = e.Lab.Client.Do(func() error {
		rc, err := net.ListenPacket("ip6:udp", client6.String())
		if err != nil {
			return err
		}
		defer rc.Close()
		for try := 0; try < 3; try++ {
			if _, err := rc.WriteTo(udp6Datagram(client6, vip, ghostPort, UDPPort, []byte("ask\n")), &net.IPAddr{IP: vip.AsSlice()}); err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw send from the client: %v", err)
	}

	for _, cp := range []*capture.Capture{front, back} {
		if err := cp.Stop(); err != nil {
			t.Fatal(err)
		}
		rep, err := capture.Checksums(ctx, cp.File)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) > 0 || rep.Good == 0 {
			t.Errorf("%s: frames with bad checksums %v (%d good)", cp.Iface, rep.Bad, rep.Good)
		}
	}
	// Outer then embedded values, as tshark lists them.
	rows, err := capture.Fields(ctx, front.File, "icmpv6.type == 1 && icmpv6.code == 4",
		"ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport", "icmpv6.checksum.status")
	if err != nil {
		t.Fatal(err)
	}
	wantV6 := []string{vip.String() + "," + client6.String(), client6.String() + "," + vip.String(),
		fmt.Sprint(cport), fmt.Sprint(closedPort), "1"}
	if len(rows) == 0 || !slices.Equal(rows[0], wantV6) {
		t.Errorf("ICMPv6 port unreachable toward the client: %v, want a row %v", rows, wantV6)
	}
	rows, err = capture.Fields(ctx, back.File, "icmp.type == 3 && icmp.code == 3",
		"ip.src", "ip.dst", "udp.srcport", "icmp.checksum.status")
	if err != nil {
		t.Fatal(err)
	}
	wantV4 := []string{lb4.String() + "," + be4.String(), be4.String() + "," + lb4.String(), fmt.Sprint(UDPPort), "1"}
	found := false
	for _, r := range rows {
		found = found || slices.Equal(r, wantV4)
	}
	if !found {
		t.Errorf("ICMPv4 port unreachable toward the endpoint: %v, want a row %v", rows, wantV4)
	}
}

// udp6Datagram is a UDP header and payload with the checksum over the IPv6
// pseudo header, for a raw IPv6 socket.
func udp6Datagram(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	var sum uint32
	add := func(p []byte) {
		for i := 0; i < len(p); i += 2 {
			w := uint32(p[i]) << 8
			if i+1 < len(p) {
				w |= uint32(p[i+1])
			}
			sum += w
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(b)) + 17
	add(b)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], c)
	return b
}

// A reply that would outgrow the client's IPv6 link once translated is not
// lost silently: the IPv4 endpoint gets ICMP fragmentation needed from the
// LB address it replied to and lowers its path MTU (its route cache shows
// 1480, the 1500-byte IPv6 link minus the 20 bytes translation adds).
func TestNAT64TooBigReplyLowersTheEndpointsPathMTU(t *testing.T) {
	e := up(t, 1)
	ctx := context.Background()
	const port = 9555
	vip := lab.VIP(0, 47, true)
	be := e.Lab.Backends[0]
	be4, lb4 := e.BackendAddr(0, false), e.LBBackendAddr(false)
	var srv net.PacketConn
	err := be.Do(func() error {
		var err error
		srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(be4, port).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(make([]byte, 1472), from) // 1500 bytes of IPv4
		}
	}()
	svc := api.Service{Name: "nat64-too-big", VIP: vip.String(), Port: port, Protocol: api.ProtocolUDP,
		Mode: api.ModeDefault, Endpoints: endpoints(e, port, false)}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, svc.Name) })
	_, back := startLBCaptures(t, e)

	c, err := HostDialer(e.Lab.Client)(ctx, "udp", hostPort(vip, port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mtu := ""
	for try := 0; try < 5 && !strings.Contains(mtu, "mtu 1480"); try++ {
		if _, err := c.Write([]byte("big one please\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		out, err := be.Exec(ctx, "ip", "-4", "route", "get", lb4.String())
		if err != nil {
			t.Fatal(err)
		}
		mtu = string(out)
	}
	if !strings.Contains(mtu, "mtu 1480") {
		t.Fatalf("the endpoint's route to the LB after a too-big reply: %q, want a cached mtu 1480", mtu)
	}
	if err := back.Stop(); err != nil {
		t.Fatal(err)
	}
	rows, err := capture.Fields(ctx, back.File, "icmp.type == 3 && icmp.code == 4",
		"ip.src", "icmp.mtu", "icmp.checksum.status", "ip.checksum.status")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{lb4.String() + "," + be4.String(), "1480", "1", "1,1"}
	if len(rows) == 0 || !slices.Equal(rows[0], want) {
		t.Errorf("fragmentation needed toward the endpoint: %v, want a row %v", rows, want)
	}
}
