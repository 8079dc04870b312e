package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
)

// ICMP errors about NAT64 flows cross families with the flow (RFC 7915):
// an ICMPv4 error from the endpoint's network reaches the IPv6 client as
// ICMPv6 from the VIP, an ICMPv6 error from the client's network reaches
// the IPv4 endpoint as ICMPv4 from the LB's address. The embedded header
// is rebuilt in the other family with the flow's original addresses and
// ports, its TCP/UDP checksum fixed, the quote cut to the family's limit.
// Expected frames are built from scratch by pkt (every checksum summed
// whole), so the datapath's incremental sums are checked independently.
func TestNAT64ICMPErrorsCrossFamilies(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	router4, router6 := netip.MustParseAddr("10.1.0.254"), netip.MustParseAddr("fd00::fe")
	cases := []struct {
		name string
		// toClient: ICMPv4 error from the endpoint's side (about a packet the
		// LB forwarded); otherwise ICMPv6 from the client's side (about a
		// reply the LB translated).
		toClient     bool
		proto        uint8
		fromRouter   bool
		typ, code    uint8
		rest         uint32
		payload      int // bytes of L4 payload in the quoted datagram
		wantType     uint8
		wantCode     uint8
		wantRest     uint32
		wantQuoteCut int // L4 bytes left in the quote, 0: all
		wantDropped  bool
	}{
		{name: "port unreachable becomes icmpv6 port unreachable", toClient: true, proto: 17, typ: 3, code: 3, wantType: 1, wantCode: 4},
		{name: "host unreachable becomes no route", toClient: true, proto: 17, typ: 3, code: 1, wantType: 1},
		{name: "admin prohibited stays admin prohibited", toClient: true, proto: 6, typ: 3, code: 13, wantType: 1, wantCode: 1},
		{name: "protocol unreachable becomes unrecognised next header", toClient: true, proto: 17, typ: 3, code: 2, wantType: 4, wantCode: 1, wantRest: 6},
		{name: "fragmentation needed becomes packet too big plus 20", toClient: true, proto: 6, fromRouter: true, typ: 3, code: 4, rest: 1400, wantType: 2, wantRest: 1420},
		{name: "fragmentation needed without mtu uses the plateau below the datagram", toClient: true, proto: 17, fromRouter: true, typ: 3, code: 4, wantType: 2, wantRest: 296 + 20},
		{name: "time exceeded keeps its code", toClient: true, proto: 6, fromRouter: true, typ: 11, code: 1, wantType: 3, wantCode: 1},
		{name: "parameter problem pointer at ttl moves to hop limit", toClient: true, proto: 17, typ: 12, rest: 8 << 24, wantType: 4, wantRest: 7},
		{name: "long quote is cut to the ipv6 minimum mtu", toClient: true, proto: 17, typ: 3, code: 3, payload: 1400, wantType: 1, wantCode: 4, wantQuoteCut: 1280 - 88},
		{name: "source route failed has no counterpart beyond no route", toClient: true, proto: 17, typ: 3, code: 5, wantType: 1},
		{name: "icmpv4 code without counterpart is dropped", toClient: true, proto: 17, typ: 3, code: 14, wantDropped: true},

		{name: "icmpv6 port unreachable becomes port unreachable", proto: 17, typ: 1, code: 4, wantType: 3, wantCode: 3},
		{name: "icmpv6 no route becomes host unreachable", proto: 6, fromRouter: true, typ: 1, code: 0, wantType: 3, wantCode: 1},
		{name: "packet too big becomes fragmentation needed minus 20", proto: 6, fromRouter: true, typ: 2, rest: 1300, wantType: 3, wantCode: 4, wantRest: 1280},
		{name: "icmpv6 time exceeded keeps its code", proto: 17, fromRouter: true, typ: 3, code: 1, wantType: 11, wantCode: 1},
		{name: "parameter problem pointer at hop limit moves to ttl", proto: 17, typ: 4, rest: 7, wantType: 12, wantRest: 8 << 24},
		{name: "unrecognised next header becomes protocol unreachable", proto: 17, typ: 4, code: 1, rest: 6, wantType: 3, wantCode: 2},
		{name: "long icmpv6 quote is cut to 576 bytes", proto: 17, typ: 1, code: 4, payload: 1100, wantType: 3, wantCode: 3, wantQuoteCut: 576 - 48},
		{name: "icmpv6 code without counterpart is dropped", proto: 17, typ: 1, code: 5, wantDropped: true},
		{name: "parameter problem pointing at the flow label is dropped", proto: 17, typ: 4, rest: 2, wantDropped: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			id := uint32(800 + i)
			vport, epPort, cport := uint16(2000+i), uint16(53), uint16(42000+i)
			proto := ProtoUDP
			if tc.proto == 6 {
				proto = ProtoTCP
			}
			e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: proto, Mode: ModeDefault,
				Endpoints: testEndpoints(false, 1, epPort)})
			first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: tc.proto,
				sport: cport, dport: vport, ttl: 64, tcpFlags: tcpSYN}
			if ret, _ := e.run(first.frame()); ret != actRedirect {
				t.Fatalf("flow setup: verdict %d, want redirect", ret)
			}
			lbSrc := e.conn(id).Source
			ep := epAddr(false, 0)
			payload := bytes.Repeat([]byte{0xa5}, tc.payload)
			if len(payload) == 0 {
				payload = []byte("ping")
			}
			// The datagram the error is about, as the reporter saw it, and
			// the same datagram as the error's receiver knows it.
			var quoted, known pkt
			var errPkt, want pkt
			if tc.toClient {
				quoted = pkt{src: lbSrc.Addr(), dst: ep, proto: tc.proto, sport: lbSrc.Port(), dport: epPort, ttl: 63, ipDF: true, tcpFlags: tcpSYN, payload: payload}
				known = pkt{src: clientV6, dst: vipV6, proto: tc.proto, sport: cport, dport: vport, ttl: 63, tcpFlags: tcpSYN, payload: payload}
				reporter := ep
				if tc.fromRouter {
					reporter = router4
				}
				errPkt = pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: reporter, dst: lbSrc.Addr(), proto: 1, ttl: 64}
				want = pkt{srcMAC: lbMAC0, dstMAC: clientMAC, src: vipV6, dst: clientV6, proto: 58, ttl: 63}
			} else {
				quoted = pkt{src: vipV6, dst: clientV6, proto: tc.proto, sport: vport, dport: cport, ttl: 63, tcpFlags: tcpSYN | tcpACK, payload: payload}
				known = pkt{src: ep, dst: lbSrc.Addr(), proto: tc.proto, sport: epPort, dport: lbSrc.Port(), ttl: 63, ipDF: true, tcpFlags: tcpSYN | tcpACK, payload: payload}
				reporter := clientV6
				if tc.fromRouter {
					reporter = router6
				}
				errPkt = pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: reporter, dst: vipV6, proto: 58, ttl: 64}
				want = pkt{srcMAC: lbMAC1, dstMAC: epMAC(0), src: lbSrc.Addr(), dst: ep, proto: 1, ttl: 63}
			}
			errPkt.icmpType, errPkt.icmpCode, errPkt.icmpRest, errPkt.payload = tc.typ, tc.code, tc.rest, quoted.ip()
			want.icmpType, want.icmpCode, want.icmpRest, want.payload = tc.wantType, tc.wantCode, tc.wantRest, known.ip()
			if tc.wantQuoteCut > 0 {
				hl := 40
				if !tc.toClient {
					hl = 20
				}
				want.payload = want.payload[:hl+tc.wantQuoteCut]
			}

			prog, ifindex := e.d.objs.TcIngress, lb1
			if !tc.toClient {
				ifindex = e.ifindex("lb0")
			}
			before := e.dropCount(t, DropRewrite)
			ret, out := e.runOn(prog, ifindex, errPkt.frame())
			if tc.wantDropped {
				if ret != actShot {
					t.Fatalf("verdict %d, want drop", ret)
				}
				if after := e.dropCount(t, DropRewrite); after != before+1 {
					t.Fatalf("rewrite drops %d -> %d, want one more", before, after)
				}
				return
			}
			if ret != actRedirect {
				t.Fatalf("verdict %d, want redirect; out %x", ret, out)
			}
			diffHex(t, fmt.Sprintf("translated error (%d bytes)", len(out)), out, want.frame())
		})
	}
}

// An IPv4 packet of a NAT64 flow that would not fit the IPv6 route once
// translated (20 bytes more) is not forwarded: its sender gets ICMP
// fragmentation needed with the MTU that fits (route MTU - 20), quoting the
// packet as it sent it, from the LB address it sent it to; packets that fit
// go through, also after the flow's route is cached.
func TestNAT64ReplyTooBigForIPv6TellsTheEndpoint(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	for i, proto := range []uint8{17, 6} {
		t.Run(fmt.Sprintf("proto %d", proto), func(t *testing.T) {
			e := e.sub(t)
			id := uint32(900 + i)
			vport, epPort, cport := uint16(3000+i), uint16(7000), uint16(43000+i)
			sp := ProtoUDP
			if proto == 6 {
				sp = ProtoTCP
			}
			e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: sp, Endpoints: testEndpoints(false, 1, epPort)})
			first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: proto,
				sport: cport, dport: vport, tcpFlags: tcpSYN}
			if ret, _ := e.run(first.frame()); ret != actRedirect {
				t.Fatalf("flow setup: verdict %d", ret)
			}
			lbSrc := e.conn(id).Source
			ep := epAddr(false, 0)
			l4hdr := 8
			if proto == 6 {
				l4hdr = 20
			}
			reply := func(tot int) pkt {
				return pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep, dst: lbSrc.Addr(), proto: proto, sport: epPort,
					dport: lbSrc.Port(), ttl: 64, ipDF: true, tcpFlags: tcpACK, seq: 0x01020304,
					payload: bytes.Repeat([]byte{0x5a}, tot-20-l4hdr)}
			}
			// 1480 bytes of IPv4 are the 1500 of IPv6 the client link carries.
			for n := 0; n < 2; n++ {
				if ret, out := e.runOn(e.d.objs.TcIngress, lb1, reply(1480).frame()); ret != actRedirect || len(out) != 14+1500 {
					t.Fatalf("reply that fits, try %d: verdict %d, %d bytes out; want redirect, 1514", n, ret, len(out))
				}
			}
			before := e.dropCount(t, DropNAT64TooBig)
			big := reply(1500)
			ret, out := e.runOn(e.d.objs.TcIngress, lb1, big.frame())
			if ret != actRedirect {
				t.Fatalf("reply too big: verdict %d, want redirect (of the ICMP error)", ret)
			}
			if after := e.dropCount(t, DropNAT64TooBig); after != before+1 {
				t.Fatalf("nat64_too_big drops %d -> %d, want one more", before, after)
			}
			// The quote: the endpoint's IP header and first 8 L4 bytes, whose
			// checksum the translation had already updated (nobody checks it).
			quote := big.ip()[:28]
			translated := big
			translated.src, translated.dst, translated.sport, translated.dport = vipV6, clientV6, vport, cport
			if proto == 17 {
				copy(quote[26:28], translated.l4()[6:8])
			}
			want := pkt{srcMAC: lbMAC1, dstMAC: epMAC(0), src: lbSrc.Addr(), dst: ep, proto: 1, ttl: 64,
				icmpType: 3, icmpCode: 4, icmpRest: 1480, payload: quote}
			diffHex(t, "fragmentation needed", out, want.frame())
		})
	}
}
