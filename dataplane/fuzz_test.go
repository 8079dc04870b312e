package dataplane

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// FuzzTCIngress feeds arbitrary frames to the datapath's packet parser and
// state machine: the program must always return a TC verdict it is allowed
// to return (the verifier already rules out crashes; this checks logic).
func FuzzTCIngress(f *testing.F) {
	requireRoot(f)
	d, err := Load(Config{PinPath: testPinPath(f), MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = d.Destroy() })
	for i, s := range []Service{
		{VIP: vipV4, Proto: ProtoTCP}, {VIP: vipV4, Proto: ProtoUDP, Mode: ModeFullNAT}, {VIP: vipV4, Proto: ProtoSCTP, Mode: ModeOneArm},
		{VIP: vipV6, Proto: ProtoTCP, Mode: ModeDSR}, {VIP: vipV6, Proto: ProtoUDP},
		{VIP: vipV6, SecondaryVIPs: []netip.Addr{vip2V6}, Proto: ProtoSCTP, Mode: ModeFullNAT},
	} {
		s.ID, s.PortStart = uint32(i+1), 80
		s.Endpoints = testEndpoints(s.VIP.Is6(), 2, 8080)
		if s.Mode == ModeDSR {
			s.Endpoints = testEndpoints(s.VIP.Is6(), 2, 0)
		}
		if err := d.UpsertService(s); err != nil {
			f.Fatal(err)
		}
	}
	// NAT64 (IPv6 VIP, IPv4 endpoints) on port 81: header translation both ways.
	for i, p := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
		s := Service{ID: uint32(20 + i), VIP: vipV6, PortStart: 81, Proto: p, Endpoints: testEndpoints(false, 2, 8081)}
		if err := d.UpsertService(s); err != nil {
			f.Fatal(err)
		}
	}
	// NAT64 multi-homing (secondary VIP, IPv4 endpoint) on port 82: INIT
	// learning, INIT-ACK growth and replies following the client's path.
	if err := d.UpsertService(Service{ID: 23, VIP: vipV6, SecondaryVIPs: []netip.Addr{vip2V6}, PortStart: 82, Proto: ProtoSCTP,
		Endpoints: testEndpoints(false, 1, 8082)}); err != nil {
		f.Fatal(err)
	}
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132, sport: 4, dport: 82,
		sctpChunks: sctpInitWith(1, 12, paramAddr(clientV6), paramAddr(client2V6))}.frame())
	f.Add(pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: lbAddr1V4, proto: 132, sport: 8082, dport: 1024, sctpVtag: 12,
		sctpChunks: sctpInitWith(2, 13, paramAddr(epAddr(false, 0)))}.frame())
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client2V6, dst: vip2V6, proto: 132, sport: 4, dport: 82, sctpVtag: 13,
		sctpChunks: sctpData(10)}.frame())
	f.Add(tcpTo(clientV6, vipV6, 3, 81, tcpSYN).frame())
	f.Add(udpTo(clientV6, vipV6, 3, 81).frame())
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132, sport: 3, dport: 81,
		sctpChunks: sctpInitWith(1, 11, paramAddr(clientV6), paramAddr(clientV4))}.frame())
	f.Add(tcpTo(clientV4, vipV4, 1, 80, tcpSYN).frame())
	f.Add(udpTo(clientV6, vipV6, 1, 80).frame())
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 1, dport: 80, sctpChunks: sctpInit(9)}.frame())
	// Multi-homed INIT / INIT-ACK with address, host name and extension
	// parameters: the parameter walk and its rewrites.
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132, sport: 2, dport: 80,
		sctpChunks: sctpInitWith(1, 9, paramAddr(clientV6), paramAddr(client2V6), paramAddr(clientV4), paramHostname("h"), paramExt(0xc1, 0x80))}.frame())
	f.Add(pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(true, 0), dst: vipV6, proto: 132, sport: 8080, dport: 2, sctpVtag: 9,
		sctpChunks: sctpInitWith(2, 10, paramAddr(epAddr(true, 0)), paramAddr(ep2V6), paramAddr(ep3V6))}.frame())
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 58, icmpType: 128}.frame())
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 1, icmpType: 3, payload: udpTo(vipV4, clientV4, 80, 1).ip()}.frame())
	// ICMP errors about the NAT64 flows above, both families: the rebuild
	// and resize of icmp_x64.
	f.Add(pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 58, icmpType: 2, icmpRest: 1300,
		payload: udpTo(vipV6, clientV6, 81, 3).ip()}.frame())
	f.Add(pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: lbAddr1V4, proto: 1, icmpType: 3, icmpCode: 4,
		icmpRest: 1400, payload: udpTo(lbAddr1V4, epAddr(false, 0), 1024, 8081).ip()}.frame())
	// IP fragments of UDP datagrams to the VIPs: first fragments note
	// their ports, later ones follow them (lib/frag.h).
	for _, v6 := range []bool{false, true} {
		vip, client := vipV4, clientV4
		if v6 {
			vip, client = vipV6, clientV6
		}
		p := udpTo(client, vip, 7, 80)
		p.payload = make([]byte, 600)
		for _, fr := range fragment(p.ip(), 0x77, 256, clientMAC, lbMAC0) {
			f.Add(fr)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		// Without a context the test run takes the loopback device, whose
		// MAC is all zeros: any other unicast destination would make the
		// frame PACKET_OTHERHOST, passed before parsing. Address unicast
		// frames to it so the parser and state machine see them.
		if len(frame) >= 6 && frame[0]&1 == 0 {
			frame = append([]byte{0, 0, 0, 0, 0, 0}, frame[6:]...)
		}
		out := make([]byte, len(frame)+256)
		ret, err := d.objs.TcIngress.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
		if errors.Is(err, unix.EINVAL) {
			return // the kernel refuses frames too short for their ethertype
		}
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		switch ret {
		case actOK, actShot, actRedirect:
		default:
			t.Fatalf("verdict %d", ret)
		}
	})
}
