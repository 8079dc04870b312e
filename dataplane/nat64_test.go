package dataplane

import (
	"fmt"
	"github.com/telcolb/telcolb/bpf"
	"net/netip"
	"strings"
	"testing"
)

// NAT64: an IPv6 VIP with an IPv4 endpoint. Whatever the mode, the endpoint
// sees the LB's IPv4 address on the egress interface; replies go back to the
// client as IPv6 from the VIP. Expected frames are built from scratch by
// pkt.frame, so the IPv4 header checksum, the TCP/UDP checksums (pseudo
// headers of the new family) and the SCTP CRC32c are checked against full
// independent computations.
func TestNAT64TranslatesBothDirectionsByteExact(t *testing.T) {
	e := newEnv(t)
	id := uint32(500)
	for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
			t.Run(fmt.Sprintf("%s/%s", modeNames[mode], protoNames[proto]), func(t *testing.T) {
				e := e.sub(t)
				id++
				cport := uint16(40000 + id)
				// The first packet, the reply and the second packet, each
				// checked byte for byte.
				openNAT64Flow(t, e, id, mode, proto, cport)
				conn := e.conn(id)
				if conn.Source.Addr() != lbAddr1V4 || conn.Source.Port() < 1024 {
					t.Fatalf("conntrack source %s, want %s with a port >= 1024", conn.Source, lbAddr1V4)
				}
				ep := netip.AddrPortFrom(epAddr(false, 0), 8080)
				if conn.Backend != ep || conn.Client != netip.AddrPortFrom(clientV6, cport) {
					t.Fatalf("conntrack %s -> %s, want %s -> %s", conn.Client, conn.Backend, netip.AddrPortFrom(clientV6, cport), ep)
				}
			})
		}
	}
}

// An IPv4 endpoint must never learn the IPv6 client's addresses (nor any
// other address the client lists): every address parameter of a NAT64 INIT
// is removed, and Supported Address Types says IPv4 only, the family of the
// LB address the endpoint sees.
func TestNAT64SCTPInitCarriesNoClientAddress(t *testing.T) {
	e := newEnv(t)
	const id, vport, epPort, cport = 601, 3868, 3868, 40601
	e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: ProtoSCTP, Mode: ModeDefault,
		Endpoints: testEndpoints(false, 1, epPort)})
	c6, other6, other4 := clientV6.As16(), netip.MustParseAddr("fd00::99").As16(), netip.MustParseAddr("192.0.2.7").As4()
	cases := []struct {
		name      string
		in, want  [][]byte
		wantState string
	}{
		{"own address", [][]byte{param(6, c6[:])}, nil, "INIT"},
		{"second ipv6 address", [][]byte{param(6, c6[:]), param(6, other6[:])}, nil, "INIT"},
		{"ipv4 address of a dual-stack client", [][]byte{param(5, other4[:])}, nil, "INIT"},
		{"address types", [][]byte{param(6, c6[:]), param(12, []byte{0, 6, 0, 5, 0, 11})},
			[][]byte{param(12, []byte{0, 5})}, "INIT"},
		{"ipv6 only address types", [][]byte{param(12, []byte{0, 6}), param(6, c6[:])},
			[][]byte{param(12, []byte{0, 5})}, "INIT"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			tag := uint32(0x5000 + i)
			in := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132,
				sport: uint16(cport + i), dport: vport, ttl: 64, sctpChunks: sctpInitWith(1, tag, tc.in...)}
			ret, out := e.run(in.frame())
			if ret != actRedirect {
				t.Fatalf("verdict %d, want redirect", ret)
			}
			var conn Conn
			for _, c := range e.conns() {
				if c.ServiceID == id && c.Client.Port() == in.sport {
					conn = c
				}
			}
			if conn.State != tc.wantState {
				t.Fatalf("state %q, want %q", conn.State, tc.wantState)
			}
			want := in
			want.srcMAC, want.dstMAC, want.ttl, want.ipDF = lbMAC1, epMAC(0), 63, true
			want.src, want.sport, want.dst, want.dport = lbAddr1V4, conn.Source.Port(), epAddr(false, 0), epPort
			// Each INIT here loses its last parameter (or the tail of it):
			// the chunk then ends where the last one kept does, its padding
			// not counted (RFC 9260 3.2).
			want.sctpChunks = sctpInitUnpadded(1, tag, tc.want...)
			diffHex(t, "translated INIT", out, want.frame())
		})
	}
}

// The IPv6 client cannot use the IPv4 endpoint's addresses: the INIT-ACK
// reaches it without them, from the VIP it sent the INIT to.
func TestNAT64SCTPInitAckCarriesNoEndpointAddress(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	// With its association record evicted (LRU), the INIT-ACK is still
	// rewritten for the client's family, not the packet's.
	for i, evicted := range []bool{false, true} {
		t.Run(fmt.Sprintf("record evicted=%v", evicted), func(t *testing.T) {
			e := e.sub(t)
			id, vport, epPort, cport := uint32(602+i), uint16(3869+i), uint16(3869), uint16(40700+i)
			e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: ProtoSCTP, Endpoints: testEndpoints(false, 1, epPort)})
			init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132, sport: cport, dport: vport, ttl: 64,
				sctpChunks: sctpInitWith(1, 0x6001)}
			if ret, _ := e.run(init.frame()); ret != actRedirect {
				t.Fatalf("INIT verdict %d", ret)
			}
			if evicted {
				var k bpf.LbAssocKey
				var ks []bpf.LbAssocKey
				var v bpf.LbAssoc
				it := e.d.objs.Assocs.Iterate()
				for it.Next(&k, &v) {
					ks = append(ks, k)
				}
				for _, k := range ks {
					if err := e.d.objs.Assocs.Delete(&k); err != nil {
						t.Fatal(err)
					}
				}
				if len(ks) == 0 {
					t.Fatal("no association record to evict")
				}
			}
			sport := e.conn(id).Source.Port()
			ep, ep2 := epAddr(false, 0).As4(), ep2V4.As4()
			cookie := make([]byte, 40)
			for i := range cookie {
				cookie[i] = byte(i)
			}
			ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: lbAddr1V4, proto: 132, sport: epPort, dport: sport, ttl: 64,
				sctpVtag: 0x6001, sctpChunks: sctpInitWith(2, 0x6002, param(5, ep[:]), param(7, cookie), param(5, ep2[:]))}
			ret, out := e.runOn(e.d.objs.TcIngress, lb1, ack.frame())
			if ret != actRedirect {
				t.Fatalf("INIT-ACK verdict %d", ret)
			}
			want := ack
			want.srcMAC, want.dstMAC, want.ttl = lbMAC0, clientMAC, 63
			want.src, want.sport, want.dst, want.dport = vipV6, vport, clientV6, cport
			want.sctpChunks = sctpInitWith(2, 0x6002, param(7, cookie))
			diffHex(t, "translated INIT-ACK", out, want.frame())
		})
	}
}

// What the translation refuses is dropped and counted, never half-rewritten.
func TestNAT64UntranslatablePacketsAreDropped(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	const id, vport, epPort = 701, 5353, 5353
	e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: ProtoUDP, Mode: ModeDefault,
		Endpoints: testEndpoints(false, 1, epPort)})
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 17, sport: 41000, dport: vport, payload: []byte("q")}
	if ret, _ := e.run(first.frame()); ret != actRedirect {
		t.Fatalf("first packet: verdict %d, want redirect", ret)
	}
	sport := e.conn(id).Source.Port()
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: lbAddr1V4, proto: 17,
		sport: epPort, dport: sport, payload: []byte("a"), udpZeroCsum: true}
	before := e.dropCount(t, DropRewrite)
	ret, _ := e.runOn(e.d.objs.TcIngress, lb1, reply.frame())
	if ret != actShot {
		t.Fatalf("IPv4 UDP reply without checksum: verdict %d, want drop", ret)
	}
	if after := e.dropCount(t, DropRewrite); after != before+1 {
		t.Fatalf("rewrite drops %d -> %d, want one more", before, after)
	}
}

func (e *env) dropCount(t *testing.T, r DropReason) uint64 {
	t.Helper()
	m, err := e.d.DropStats()
	if err != nil {
		t.Fatal(err)
	}
	return m[r]
}

func TestNAT64ServiceValidation(t *testing.T) {
	v4ep := []Endpoint{{Addr: netip.MustParseAddr("10.2.0.10"), Weight: 1}}
	v6ep := []Endpoint{{Addr: netip.MustParseAddr("fd02::10"), Weight: 1}}
	base := Service{ID: 1, VIP: vipV6, PortStart: 80, Proto: ProtoTCP}
	cases := []struct {
		name    string
		mutate  func(*Service)
		wantErr string
	}{
		{"ipv6 vip with ipv4 endpoints", func(s *Service) { s.Endpoints = v4ep }, ""},
		{"mixed endpoint families", func(s *Service) { s.Endpoints = append(append([]Endpoint{}, v4ep...), v6ep...) }, ""},
		{"dsr cannot translate", func(s *Service) { s.Endpoints, s.Mode = v4ep, ModeDSR }, "dsr cannot translate IPv6 to IPv4"},
		{"ipv4 vip with ipv6 endpoint", func(s *Service) { s.VIP, s.Endpoints = vipV4, v6ep }, "is IPv6 but the VIP is IPv4"},
		{"secondary vips are paths of a multi-homed client", func(s *Service) {
			s.Proto, s.Endpoints, s.SecondaryVIPs = ProtoSCTP, v4ep, []netip.Addr{netip.MustParseAddr("fd09::2")}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.mutate(&s)
			err := validate(s)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// NAT64 with secondary VIPs: the IPv6 client is multi-homed toward the VIPs
// (the INIT-ACK grows by the VIPs, the endpoint's IPv4 addresses removed)
// while the IPv4 endpoint sees one LB address; its packets go back on the
// path the client last used, from the VIP that path targets.
func TestNAT64SCTPMultihomedClientRepliesFollowItsPath(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	const id, vport, epPort, cport = 610, 3880, 3880, 40880
	ep4 := epAddr(false, 0)
	e.upsert(Service{ID: id, VIP: vipV6, SecondaryVIPs: []netip.Addr{vip2V6}, PortStart: vport, Proto: ProtoSCTP,
		Endpoints: []Endpoint{{Addr: ep4, Port: epPort, Weight: 1}}})
	init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 132, sport: cport, dport: vport, ttl: 64,
		sctpChunks: sctpInitWith(1, 0x7001, paramAddr(clientV6), paramAddr(client2V6))}
	ret, out := e.run(init.frame())
	if ret != actRedirect {
		t.Fatalf("INIT verdict %d", ret)
	}
	sport := e.conn(id).Source.Port()
	wantInit := init
	wantInit.srcMAC, wantInit.dstMAC, wantInit.ttl, wantInit.ipDF = lbMAC1, epMAC(0), 63, true
	wantInit.src, wantInit.sport, wantInit.dst, wantInit.dport = lbAddr1V4, sport, ep4, epPort
	wantInit.sctpChunks = sctpInitWith(1, 0x7001)
	diffHex(t, "INIT toward the IPv4 endpoint", out, wantInit.frame())

	ep4b := ep4.As4()
	ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep4, dst: lbAddr1V4, proto: 132, sport: epPort, dport: sport, ttl: 64,
		sctpVtag: 0x7001, sctpChunks: sctpInitWith(2, 0x7002, param(5, ep4b[:]))}
	ret, out = e.runOn(e.d.objs.TcIngress, lb1, ack.frame())
	if ret != actRedirect {
		t.Fatalf("INIT-ACK verdict %d", ret)
	}
	wantAck := ack
	wantAck.srcMAC, wantAck.dstMAC, wantAck.ttl = lbMAC0, clientMAC, 63
	wantAck.src, wantAck.sport, wantAck.dst, wantAck.dport = vipV6, vport, clientV6, cport
	wantAck.sctpChunks = sctpInitWith(2, 0x7002, paramAddr(vip2V6))
	diffHex(t, "INIT-ACK toward the IPv6 client", out, wantAck.frame())

	for _, step := range []struct{ client, vip netip.Addr }{
		{client2V6, vip2V6}, {clientV6, vipV6}, {clientV6, vip2V6}, {client2V6, vipV6},
	} {
		name := fmt.Sprintf("%s -> %s", step.client, step.vip)
		data := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: step.client, dst: step.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
			sctpVtag: 0x7002, sctpChunks: sctpData(30)}
		ret, out := e.run(data.frame())
		if ret != actRedirect {
			t.Fatalf("%s: verdict %d", name, ret)
		}
		w := data
		w.srcMAC, w.dstMAC, w.ttl, w.ipDF = lbMAC1, epMAC(0), 63, true
		w.src, w.sport, w.dst, w.dport = lbAddr1V4, sport, ep4, epPort
		diffHex(t, name, out, w.frame())

		sack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep4, dst: lbAddr1V4, proto: 132, sport: epPort, dport: sport, ttl: 64,
			sctpVtag: 0x7001, sctpChunks: sctpSimple(4)}
		ret, out = e.runOn(e.d.objs.TcIngress, lb1, sack.frame())
		if ret != actRedirect {
			t.Fatalf("%s reply: verdict %d", name, ret)
		}
		w = sack
		w.srcMAC, w.dstMAC, w.ttl = lbMAC0, clientMAC, 63
		w.src, w.sport, w.dst, w.dport = step.vip, vport, step.client, cport
		diffHex(t, name+": the endpoint's reply follows", out, w.frame())
	}
	if got := e.conn(id); len(got.Paths) != 3 {
		t.Fatalf("association with %d secondary paths, want 3: %+v", len(got.Paths), got)
	}
}
