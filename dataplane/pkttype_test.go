package dataplane

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// arpRequest is a broadcast ARP who-has for target from the client.
func arpRequest(target [4]byte) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, clientMAC...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1)
	f = append(f, clientMAC...)
	c := clientV4.As4()
	f = append(f, c[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	return append(f, target[:]...)
}

// TestFramesForAnotherHostPassUntouched: a frame whose destination MAC is
// not the interface's (PACKET_OTHERHOST, a bridge flooding unknown unicast)
// is passed as it came, creates no state and counts nowhere, even when it
// is addressed to a VIP; broadcast and multicast frames keep working.
func TestFramesForAnotherHostPassUntouched(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 8080)})
	e.upsert(Service{ID: 2, VIP: vipV6, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(true, 2, 8080)})
	other := mustMAC("02:00:00:00:99:99")
	elsewhere := func(p pkt) pkt { p.dstMAC = other; return p }

	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"udp to a vip", elsewhere(udpTo(clientV4, vipV4, 1000, 80)).frame()},
		{"tcp syn to a v6 vip", elsewhere(tcpTo(clientV6, vipV6, 1000, 80, tcpSYN)).frame()},
		{"icmp echo to a vip", elsewhere(pkt{srcMAC: clientMAC, src: clientV4, dst: vipV4, proto: 1, icmpType: 8}).frame()},
		{"arp broadcast for a vip", arpRequest(vipV4.As4())},
		{"ipv6 multicast to all nodes", pkt{srcMAC: clientMAC, dstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1},
			src: clientV6, dst: netip.MustParseAddr("ff02::1"), proto: 17, sport: 1, dport: 5353, payload: []byte("mdns")}.frame()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			ret, out := e.run(tc.frame)
			if ret != actOK {
				t.Fatalf("verdict %d, want %d (pass)", ret, actOK)
			}
			if !bytes.Equal(out, tc.frame) {
				t.Fatalf("frame changed:\n got %x\nwant %x", out, tc.frame)
			}
			if n := e.ctEntries(); n != 0 {
				t.Fatalf("%d conntrack entries created", n)
			}
		})
	}
	st, err := e.d.ServiceStats(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 0 {
		t.Fatalf("service 1 counted %d packets of frames for another host", st.Packets)
	}

	// The same datagram sent to this host's MAC is balanced.
	if ret, _ := e.run(udpTo(clientV4, vipV4, 1000, 80).frame()); ret != actRedirect {
		t.Fatalf("frame for this host: verdict %d, want redirect", ret)
	}
}
