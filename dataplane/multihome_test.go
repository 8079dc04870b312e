package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// SCTP INIT/INIT-ACK parameters as the tests write and expect them.

func sctpInitWith(typ uint8, tag uint32, params ...[]byte) []byte {
	c := sctpInit(tag)
	c[0] = typ
	for _, p := range params {
		c = append(c, p...)
	}
	binary.BigEndian.PutUint16(c[2:], uint16(len(c)))
	return c
}

func param(typ uint16, body []byte) []byte {
	b := make([]byte, 4, 4+len(body)+3)
	binary.BigEndian.PutUint16(b, typ)
	binary.BigEndian.PutUint16(b[2:], uint16(4+len(body)))
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func paramAddr(a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return param(5, v[:])
	}
	v := a.As16()
	return param(6, v[:])
}

// paramSkipped is what the LB leaves in place of an address it cannot carry
// when the chunk cannot be compacted.
func paramSkipped(a netip.Addr) []byte {
	p := paramAddr(a)
	binary.BigEndian.PutUint16(p, 0xbffe)
	clear(p[4:])
	return p
}

func paramHostname(name string) []byte { return param(11, append([]byte(name), 0)) }

func paramExt(types ...byte) []byte { return param(0x8008, types) }

// paramAddrTypes is a Supported Address Types parameter (RFC 9260 3.3.2.1).
func paramAddrTypes(types ...uint16) []byte {
	var b []byte
	for _, t := range types {
		b = binary.BigEndian.AppendUint16(b, t)
	}
	return param(12, b)
}

// addrType is the Supported Address Types entry for a's family.
func addrType(a netip.Addr) uint16 {
	if a.Is4() {
		return 5
	}
	return 6
}

// sctpInitUnpadded is sctpInitWith with the chunk length RFC 9260 asks
// for: the last parameter's padding not counted (sctpInitWith counts it,
// which receivers accept too).
func sctpInitUnpadded(typ uint8, tag uint32, params ...[]byte) []byte {
	c := sctpInitWith(typ, tag, params...)
	if len(params) > 0 {
		last := params[len(params)-1]
		pad := len(last) - int(binary.BigEndian.Uint16(last[2:]))
		binary.BigEndian.PutUint16(c[2:], uint16(len(c)-pad))
	}
	return c
}

var (
	client2V4 = netip.MustParseAddr("10.0.0.3")
	client2V6 = netip.MustParseAddr("fd00::3")
	vip2V4    = netip.MustParseAddr("10.9.1.1")
	vip2V6    = netip.MustParseAddr("fd09:1::1")
	ep2V4     = netip.MustParseAddr("10.1.0.50")
	ep2V6     = netip.MustParseAddr("fd01::50")
	ep3V4     = netip.MustParseAddr("10.1.0.51")
	ep3V6     = netip.MustParseAddr("fd01::51")
	ep2MAC    = mustMAC("02:00:00:00:01:50")
)

// mhAddrs are the addresses of one family used by the multi-homing tests.
type mhAddrs struct {
	c1, c2, vip, vip2, e1, e2, e3, other netip.Addr
}

func mhFamily(v6 bool) mhAddrs {
	if v6 {
		return mhAddrs{clientV6, client2V6, vipV6, vip2V6, epAddr(true, 0), ep2V6, ep3V6, netip.MustParseAddr("192.0.2.7")}
	}
	return mhAddrs{clientV4, client2V4, vipV4, vip2V4, epAddr(false, 0), ep2V4, ep3V4, netip.MustParseAddr("2001:db8::7")}
}

// mhNeighbours makes the second client and endpoint addresses resolvable so
// that path packets are redirected with known MACs.
func (e *env) mhNeighbours() {
	for _, a := range []netip.Addr{client2V4, client2V6} {
		run(e.t, "ip", "-n", e.ns, "neigh", "replace", a.String(), "lladdr", clientMAC.String(), "dev", "lb0", "nud", "permanent")
	}
	for _, a := range []netip.Addr{ep2V4, ep2V6} {
		run(e.t, "ip", "-n", e.ns, "neigh", "replace", a.String(), "lladdr", ep2MAC.String(), "dev", "lb1", "nud", "permanent")
	}
}

func TestSCTPMultihomedAssociationIsRewrittenByteExact(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	id := uint32(10)
	for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", modeNames[mode], v6), func(t *testing.T) {
				e := e.sub(t)
				id++
				a := mhFamily(v6)
				const vport, eport = 38412, 38413
				cport := uint16(50000 + id)
				e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
					Mode: mode, Endpoints: []Endpoint{{Addr: a.e1, Port: eport, Weight: 1}}})

				// INIT: both client addresses, one of the other family, a host
				// name, every address type and ASCONF among the supported
				// extensions.
				init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
					sctpChunks: sctpInitWith(1, 0x1111, paramAddr(a.c1), paramAddr(a.c2), paramAddr(a.other),
						paramHostname("client.example"), paramAddrTypes(5, 6, 11), paramExt(0xc1, 0x80, 0x82, 0xc0))}
				ret, out := e.run(init.frame())
				if ret != actRedirect {
					t.Fatalf("INIT verdict %d", ret)
				}
				conns := e.conns()
				var conn Conn
				for _, c := range conns {
					if c.ServiceID == id {
						conn = c
					}
				}
				src, sport := a.c1, cport
				src2 := a.c2
				if mode == ModeFullNAT {
					src, sport, src2 = a.vip, conn.Source.Port(), a.vip2
				}
				if conn.Source != netip.AddrPortFrom(src, sport) {
					t.Fatalf("conntrack source %s, want %s", conn.Source, netip.AddrPortFrom(src, sport))
				}
				want := init
				want.srcMAC, want.dstMAC, want.ttl = lbMAC1, epMAC(0), 63
				want.src, want.sport, want.dst, want.dport = src, sport, a.e1, eport
				// The other family's address and the host name are gone, and
				// the endpoint may only use the association's family.
				want.sctpChunks = sctpInitWith(1, 0x1111, paramAddr(src), paramAddr(src2),
					paramAddrTypes(addrType(a.vip)), paramExt(0xff, 0xff, 0x82, 0xc0))
				diffHex(t, "INIT toward the endpoint", out, want.frame())

				// INIT-ACK: three endpoint addresses, one more than VIPs, and
				// one of the other family.
				ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: a.e1, dst: src, proto: 132, sport: eport, dport: sport, ttl: 64,
					sctpVtag: 0x1111,
					sctpChunks: sctpInitWith(2, 0x2222, paramAddr(a.e1), paramAddr(a.e2), paramAddr(a.e3), paramAddr(a.other),
						paramExt(0x80, 0xc1))}
				ret, out = e.runOn(e.d.objs.TcIngress, lb1, ack.frame())
				if ret != actRedirect {
					t.Fatalf("INIT-ACK verdict %d", ret)
				}
				wantAck := ack
				wantAck.srcMAC, wantAck.dstMAC, wantAck.ttl = lbMAC0, clientMAC, 63
				wantAck.src, wantAck.sport, wantAck.dst, wantAck.dport = a.vip, vport, a.c1, cport
				wantAck.sctpChunks = sctpInitWith(2, 0x2222, paramAddr(a.vip), paramAddr(a.vip2), paramExt(0xff, 0xff))
				diffHex(t, "INIT-ACK toward the client", out, wantAck.frame())

				// Every (client address, VIP) pair now reaches the endpoint
				// address behind that VIP, with the association's ports.
				paths := []struct {
					name           string
					client, vip    netip.Addr
					src, ep        netip.Addr
					epMAC          []byte
					reverseTo      netip.Addr
					reverseFromVIP netip.Addr
				}{
					{"c2 to vip2", a.c2, a.vip2, src2, a.e2, ep2MAC, a.c2, a.vip2},
					{"c1 to vip2", a.c1, a.vip2, src, a.e2, ep2MAC, a.c1, a.vip2},
					{"c2 to vip", a.c2, a.vip, src2, a.e1, epMAC(0), a.c2, a.vip},
				}
				for _, p := range paths {
					data := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: p.client, dst: p.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
						sctpVtag: 0x2222, sctpChunks: sctpData(50)}
					ret, out := e.run(data.frame())
					if ret != actRedirect {
						t.Fatalf("%s: verdict %d", p.name, ret)
					}
					w := data
					w.srcMAC, w.dstMAC, w.ttl = lbMAC1, p.epMAC, 63
					w.src, w.sport, w.dst, w.dport = p.src, sport, p.ep, eport
					diffHex(t, p.name, out, w.frame())

					hb := pkt{srcMAC: p.epMAC, dstMAC: lbMAC1, src: p.ep, dst: p.src, proto: 132, sport: eport, dport: sport, ttl: 64,
						sctpVtag: 0x1111, sctpChunks: sctpSimple(4)}
					ret, out = e.runOn(e.d.objs.TcIngress, lb1, hb.frame())
					if ret != actRedirect {
						t.Fatalf("%s reverse: verdict %d", p.name, ret)
					}
					w = hb
					w.srcMAC, w.dstMAC, w.ttl = lbMAC0, clientMAC, 63
					w.src, w.sport, w.dst, w.dport = p.reverseFromVIP, vport, p.reverseTo, cport
					diffHex(t, p.name+" reverse", out, w.frame())
				}

				got := e.conn(id)
				if len(got.Paths) != 3 {
					t.Fatalf("association with %d paths, want 3 secondary paths: %+v", len(got.Paths), got)
				}
				// The association record knows both client addresses (the
				// other family's was dropped): one association of 2 paths.
				if ap, err := e.d.AssocPaths(); err != nil || ap[id] != [MaxAssocPaths]uint64{0, 1, 0, 0} {
					t.Errorf("AssocPaths = %v (%v), want service %d: one association of 2 paths", ap, err, id)
				}
				for _, p := range got.Paths {
					if p.OrigPackets != 1 || p.ReplyPackets != 1 {
						t.Errorf("path %s->%s: %d/%d packets, want 1/1", p.Client, p.VIP, p.OrigPackets, p.ReplyPackets)
					}
				}

				// ABORT on a secondary path closes the whole association.
				abort := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c2, dst: a.vip2, proto: 132, sport: cport, dport: vport, ttl: 64,
					sctpVtag: 0x2222, sctpChunks: sctpSimple(6)}
				if ret, _ := e.run(abort.frame()); ret != actRedirect {
					t.Fatalf("ABORT verdict %d", ret)
				}
				for _, c := range e.conns() {
					if c.ServiceID == id && c.State != "CLOSED" {
						t.Fatalf("after ABORT on a secondary path: state %s", c.State)
					}
				}

				// A new INIT on a secondary path's tuple is a new association:
				// none of the old one's entries survive.
				reinit := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c2, dst: a.vip2, proto: 132, sport: cport, dport: vport, ttl: 64,
					sctpChunks: sctpInitWith(1, 0x3333)}
				if ret, _ := e.run(reinit.frame()); ret != actRedirect {
					t.Fatalf("re-INIT verdict %d", ret)
				}
				if c := e.conn(id); c.VTagClient != 0x3333 || c.Client.Addr() != a.c2 || c.VIP.Addr() != a.vip2 || len(c.Paths) != 0 {
					t.Errorf("after re-INIT: %+v", c)
				}
				if ap, err := e.d.AssocPaths(); err != nil || ap[id] != [MaxAssocPaths]uint64{1, 0, 0, 0} {
					t.Errorf("after re-INIT: AssocPaths = %v (%v), want service %d: one single-homed association", ap, err, id)
				}
				if err := e.d.DeleteService(id); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// An INIT lists more client addresses than the mode lets the endpoint see
// (default: one per possible VIP; fullnat: one per VIP of the service): the
// extra ones are removed from the chunk.
func TestSCTPExcessClientAddressesAreRemoved(t *testing.T) {
	e := newEnv(t)
	var addrs []netip.Addr
	for i := 2; i < 8; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	cases := []struct {
		name      string
		mode      Mode
		secondary []netip.Addr
		want      func(src netip.Addr) []netip.Addr // address parameters the endpoint sees
	}{
		// The INIT's source and 3 more.
		{"default keeps four", ModeDefault, nil, func(netip.Addr) []netip.Addr { return addrs[:4] }},
		{"fullnat keeps one per vip", ModeFullNAT, []netip.Addr{vip2V4},
			func(src netip.Addr) []netip.Addr { return []netip.Addr{src, vip2V4} }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.sub(t)
			id, vport := uint32(5+i*100), uint16(38412+i)
			e.upsert(Service{ID: id, VIP: vipV4, SecondaryVIPs: c.secondary, PortStart: vport, Proto: ProtoSCTP, Mode: c.mode,
				Endpoints: testEndpoints(false, 1, vport)})
			var params [][]byte
			for _, a := range addrs {
				params = append(params, paramAddr(a))
			}
			init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 41000, dport: vport, ttl: 64,
				sctpChunks: sctpInitWith(1, 0x4444, params...)}
			ret, out := e.run(init.frame())
			if ret != actRedirect {
				t.Fatalf("verdict %d", ret)
			}
			want := init
			want.srcMAC, want.dstMAC, want.ttl, want.dst = lbMAC1, epMAC(0), 63, epAddr(false, 0)
			if c.mode == ModeFullNAT {
				src := e.conn(id).Source
				want.src, want.sport = src.Addr(), src.Port()
			}
			var wantParams [][]byte
			for _, a := range c.want(want.src) {
				wantParams = append(wantParams, paramAddr(a))
			}
			want.sctpChunks = sctpInitWith(1, 0x4444, wantParams...)
			diffHex(t, "INIT with 6 client addresses", out, want.frame())
		})
	}
}

// conn is the one connection of service id.

// skipped is p with the skip-silently type the LB gives a parameter it
// cannot carry but cannot remove either (body kept: only addresses are
// zeroed).
func skipped(p []byte) []byte {
	p = append([]byte(nil), p...)
	binary.BigEndian.PutUint16(p, 0xbffe)
	return p
}

// Parameters the endpoint must not see are removed, whatever surrounds the
// chunk (VLAN tags, IPv6 extension headers) and wherever they sit in it;
// the chunk length, the IP length and the CRC32c of the expected frames are
// computed from scratch. When removal is impossible (packet too large to
// copy, a chunk bundled after the INIT) the INIT goes out as before:
// neutralised in place, same length, still valid. Each INIT is sent twice:
// the retransmission takes the conntrack path (mh_handshake), not new_flow.
func TestSCTPInitParametersTheEndpointCannotUseAreRemoved(t *testing.T) {
	e := newEnv(t)
	big := param(0x8005, make([]byte, 2100)) // padding parameter: the packet outgrows the copy buffer
	// Room for it on the endpoint side: the FIB refuses what exceeds the MTU.
	for _, l := range []string{"lb1", "lb1p"} {
		run(t, "ip", "-n", e.ns, "link", "set", l, "mtu", "4000")
	}
	cases := []struct {
		name     string
		v6       bool
		vlans    []uint16
		dstOpts  bool
		in, want func(a mhAddrs) []byte
	}{
		{name: "ipv6 address in an ipv4 association",
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddr(a.other), paramExt(0x82))
			},
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1), paramExt(0x82)) }},
		{name: "ipv4 address in an ipv6 association", v6: true,
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.other), paramAddr(a.c1), paramExt(0x82))
			},
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1), paramExt(0x82)) }},
		{name: "host name ending the chunk",
			in:   func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1), paramHostname("client.example")) },
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1)) }},
		{name: "only parameters to remove", v6: true,
			in:   func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.other), paramHostname("h")) },
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1) }},
		{name: "address types cut to ipv4",
			in:   func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1), paramAddrTypes(6, 5, 11)) },
			want: func(a mhAddrs) []byte { return sctpInitUnpadded(1, 1, paramAddr(a.c1), paramAddrTypes(5)) }},
		{name: "address types cut to ipv6 in place", v6: true,
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddrTypes(5, 6), paramExt(0x82))
			},
			want: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddrTypes(6), paramExt(0x82))
			}},
		{name: "address types ending a chunk whose length leaves out the padding",
			in: func(a mhAddrs) []byte {
				return sctpInitUnpadded(1, 1, paramAddr(a.c1), paramAddr(a.other), paramAddrTypes(6, 5, 11))
			},
			want: func(a mhAddrs) []byte { return sctpInitUnpadded(1, 1, paramAddr(a.c1), paramAddrTypes(5)) }},
		{name: "vlan tagged", vlans: []uint16{100, 200},
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddr(a.other), paramHostname("h"), paramExt(0x82))
			},
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1), paramExt(0x82)) }},
		{name: "ipv6 destination options", v6: true, dstOpts: true,
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddr(a.other), paramHostname("client.example"))
			},
			want: func(a mhAddrs) []byte { return sctpInitWith(1, 1, paramAddr(a.c1)) }},
		{name: "largest packet that is compacted",
			in: func(a mhAddrs) []byte {
				// 12 + 20 + 8 + 20 + 1988: exactly the copy buffer.
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddr(a.other), param(0x8005, make([]byte, 1984)))
			},
			want: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), param(0x8005, make([]byte, 1984)))
			}},
		{name: "too large to compact is neutralised in place",
			in: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramAddr(a.other), paramHostname("h"), paramAddrTypes(6, 5, 11), big)
			},
			want: func(a mhAddrs) []byte {
				return sctpInitWith(1, 1, paramAddr(a.c1), paramSkipped(a.other), skipped(paramHostname("h")),
					paramAddrTypes(5), param(0xbffe, nil), big)
			}},
		// The address types list ends the INIT: its split-off tail covers the
		// padding, which the chunk length then counts.
		{name: "chunk bundled after the init is kept, init neutralised in place", v6: true,
			in: func(a mhAddrs) []byte {
				c := sctpInitUnpadded(1, 1, paramAddr(a.c1), paramAddr(a.other), paramAddrTypes(6, 5, 11))
				return append(c, 0x84, 0, 0, 4)
			},
			want: func(a mhAddrs) []byte {
				c := sctpInitWith(1, 1, paramAddr(a.c1), paramSkipped(a.other), paramAddrTypes(6), param(0xbffe, nil))
				return append(c, 0x84, 0, 0, 4)
			}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.sub(t)
			a := mhFamily(c.v6)
			id, vport := uint32(200+i), uint16(39000+i)
			e.upsert(Service{ID: id, VIP: a.vip, PortStart: vport, Proto: ProtoSCTP, Endpoints: []Endpoint{{Addr: a.e1, Weight: 1}}})
			init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, vlans: c.vlans, src: a.c1, dst: a.vip, proto: 132, sport: 41000, dport: vport,
				ttl: 64, ip6DstOpts: c.dstOpts, sctpChunks: c.in(a)}
			want := init
			want.srcMAC, want.dstMAC, want.ttl, want.dst = lbMAC1, epMAC(0), 63, a.e1
			want.sctpChunks = c.want(a)
			for _, pass := range []string{"first INIT", "retransmitted INIT"} {
				ret, out := e.run(init.frame())
				if ret != actRedirect {
					t.Fatalf("%s: verdict %d", pass, ret)
				}
				diffHex(t, pass, out, want.frame())
			}
			if st := e.conn(id).State; st != "INIT" {
				t.Fatalf("state %s, want INIT", st)
			}
		})
	}
}

func TestSCTPUnrewritableInitIsDropped(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 6, VIP: vipV4, PortStart: 38412, Proto: ProtoSCTP, Endpoints: testEndpoints(false, 1, 38412)})
	many := make([][]byte, 40)
	for i := range many {
		many[i] = param(0x8005, nil) // padding parameters: harmless, but too many to walk
	}
	longExt := make([]byte, 40)
	cases := []struct {
		name  string
		chunk []byte
	}{
		{"parameter longer than the chunk", func() []byte {
			c := sctpInitWith(1, 1, paramAddr(clientV4))
			binary.BigEndian.PutUint16(c[22:], 200)
			return c
		}()},
		{"parameter length below 4", func() []byte {
			c := sctpInitWith(1, 1, paramAddr(clientV4))
			binary.BigEndian.PutUint16(c[22:], 2)
			return c
		}()},
		{"IPv4 address parameter of 12 bytes", sctpInitWith(1, 1, param(5, make([]byte, 8)))},
		{"IPv6 address parameter of 8 bytes", sctpInitWith(1, 1, param(6, make([]byte, 4)))},
		{"more parameters than walked", sctpInitWith(1, 1, many...)},
		{"supported extensions too long to inspect", sctpInitWith(1, 1, paramExt(longExt...))},
		{"address types with half an entry", sctpInitWith(1, 1, param(12, []byte{0, 5, 0}))},
		{"address types without an entry", sctpInitWith(1, 1, param(12, nil))},
		{"address types too long to rewrite", sctpInitWith(1, 1, paramAddrTypes(5, 6, 11, 5, 6, 11, 5, 6, 11))},
	}
	before := e.drops()[DropSCTPParams]
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.sub(t)
			chunk := c.chunk
			p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: uint16(42000 + i), dport: 38412,
				sctpChunks: chunk}
			if ret, _ := e.run(p.frame()); ret != actShot {
				t.Fatalf("verdict %d, want drop", ret)
			}
			for _, cn := range e.conns() {
				if cn.Client.Port() == uint16(42000+i) {
					t.Fatalf("dropped INIT left state: %+v", cn)
				}
			}
		})
	}
	if got := e.drops()[DropSCTPParams] - before; got != uint64(len(cases)) {
		t.Fatalf("%s drops %d, want %d", DropSCTPParams, got, len(cases))
	}
}

func (e *env) drops() map[DropReason]uint64 {
	e.t.Helper()
	d, err := e.d.DropStats()
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func TestSecondaryVIPValidation(t *testing.T) {
	e := newEnv(t)
	base := Service{ID: 20, VIP: vipV4, PortStart: 38412, Proto: ProtoSCTP, Endpoints: testEndpoints(false, 1, 0)}
	e.upsert(Service{ID: 21, VIP: netip.MustParseAddr("10.9.7.7"), PortStart: 38412, Proto: ProtoSCTP, Endpoints: testEndpoints(false, 1, 0)})
	cases := []struct {
		name    string
		mutate  func(*Service)
		wantErr string
	}{
		{"four secondary VIPs", func(s *Service) {
			s.SecondaryVIPs = []netip.Addr{vip2V4, netip.MustParseAddr("10.9.2.1"), netip.MustParseAddr("10.9.3.1"), netip.MustParseAddr("10.9.4.1")}
		}, "at most 3"},
		{"other family", func(s *Service) { s.SecondaryVIPs = []netip.Addr{vip2V6} }, "not the VIP's family"},
		{"repeats the primary", func(s *Service) { s.SecondaryVIPs = []netip.Addr{vipV4} }, "repeats another VIP"},
		{"onearm", func(s *Service) { s.SecondaryVIPs = []netip.Addr{vip2V4}; s.Mode = ModeOneArm }, "needs mode default or fullnat"},
		{"overlaps another service", func(s *Service) { s.SecondaryVIPs = []netip.Addr{netip.MustParseAddr("10.9.7.7")} }, "already belongs to service 21"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base
			c.mutate(&s)
			err := e.d.UpsertService(s)
			if err == nil || !contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// usrsctp may answer an INIT from any of its bound addresses: the INIT-ACK
// of a multi-homed endpoint can come from an address no entry knows yet. It
// is translated like one from the address the INIT went to.
func TestSCTPInitAckFromAnotherEndpointAddressIsTranslated(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	a := mhFamily(false)
	e.upsert(Service{ID: 7, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: 38412, Proto: ProtoSCTP,
		Endpoints: []Endpoint{{Addr: a.e1, Port: 38412, Weight: 1}}})
	init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: 43000, dport: 38412,
		sctpChunks: sctpInitWith(1, 0x5555, paramAddr(a.c1), paramAddr(a.c2))}
	if ret, _ := e.run(init.frame()); ret != actRedirect {
		t.Fatalf("INIT verdict %d", ret)
	}
	ack := pkt{srcMAC: ep2MAC, dstMAC: lbMAC1, src: a.e2, dst: a.c1, proto: 132, sport: 38412, dport: 43000, ttl: 64,
		sctpVtag: 0x5555, sctpChunks: sctpInitWith(2, 0x6666, paramAddr(a.e1), paramAddr(a.e2))}
	ret, out := e.runOn(e.d.objs.TcIngress, lb1, ack.frame())
	if ret != actRedirect {
		t.Fatalf("INIT-ACK verdict %d", ret)
	}
	want := ack
	want.srcMAC, want.dstMAC, want.ttl, want.src = lbMAC0, clientMAC, 63, a.vip
	want.sctpChunks = sctpInitWith(2, 0x6666, paramAddr(a.vip), paramAddr(a.vip2))
	diffHex(t, "INIT-ACK from the second endpoint address", out, want.frame())

	// A stray INIT-ACK with another tag finds nothing and is not translated.
	stray := ack
	stray.sctpVtag = 0x7777
	ret, out = e.runOn(e.d.objs.TcIngress, lb1, stray.frame())
	if ret == actRedirect && netip.AddrFrom4([4]byte(out[26:30])) == a.vip {
		t.Fatalf("INIT-ACK with a foreign tag was translated to the VIP")
	}
	var paths int
	for _, c := range e.conns() {
		if c.ServiceID == 7 {
			paths = len(c.Paths)
		}
	}
	if paths != 3 {
		t.Fatalf("%d secondary paths after the INIT-ACK, want 3", paths)
	}
}

// The handshake may use any address pair: an INIT retransmitted from the
// client's second address reaches the endpoint the first went to, and a
// COOKIE-ACK on a secondary path establishes the whole association.
func TestSCTPHandshakeOverAnyPathKeepsOneAssociation(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	a := mhFamily(false)
	e.upsert(Service{ID: 8, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: 38412, Proto: ProtoSCTP,
		Endpoints: testEndpoints(false, 2, 38412)})
	chunk := sctpInitWith(1, 0xa1, paramAddr(a.c1), paramAddr(a.c2))
	for _, src := range []netip.Addr{a.c1, a.c2} {
		init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: a.vip, proto: 132, sport: 45000, dport: 38412, sctpChunks: chunk}
		ret, out := e.run(init.frame())
		if ret != actRedirect {
			t.Fatalf("INIT from %s: verdict %d", src, ret)
		}
		if got := netip.AddrFrom4([4]byte(out[30:34])); got != epAddr(false, 0) {
			t.Fatalf("INIT from %s went to %s, want the first INIT's endpoint %s", src, got, epAddr(false, 0))
		}
	}
	ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: a.c2, proto: 132, sport: 38412, dport: 45000,
		sctpVtag: 0xa1, sctpChunks: sctpInitWith(2, 0xb2, paramAddr(epAddr(false, 0)), paramAddr(a.e2))}
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, ack.frame()); ret != actRedirect {
		t.Fatalf("INIT-ACK verdict %d", ret)
	}
	cookieAck := pkt{srcMAC: ep2MAC, dstMAC: lbMAC1, src: a.e2, dst: a.c1, proto: 132, sport: 38412, dport: 45000,
		sctpVtag: 0xa1, sctpChunks: sctpSimple(11)}
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, cookieAck.frame()); ret != actRedirect {
		t.Fatalf("COOKIE-ACK on a secondary path: verdict %d", ret)
	}
	var states []string
	for _, c := range e.conns() {
		if c.ServiceID == 8 {
			states = append(states, c.State)
		}
	}
	if len(states) != 1 || states[0] != "ESTABLISHED" {
		t.Fatalf("associations %v, want one ESTABLISHED", states)
	}
}
