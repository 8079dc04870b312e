package dataplane

import (
	"fmt"
	"net/netip"
	"testing"
)

// An endpoint with fewer addresses than the service has VIPs still gets the
// client every VIP: the INIT-ACK toward the client grows by an address
// parameter per VIP no endpoint address maps to (after whatever the
// endpoint listed, padding included), with the chunk, IP length and
// CRC32c to match, and every (client address, VIP) path leads to the
// endpoint's address; the endpoint's packets to a client address keep
// coming from the first VIP.
func TestSCTPInitAckOffersEveryVIP(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	id := uint32(40)
	vip3 := map[bool]netip.Addr{false: netip.MustParseAddr("10.9.2.1"), true: netip.MustParseAddr("fd09:2::1")}
	type ackCase struct {
		name      string
		vips      int
		ackParams func(a mhAddrs) [][]byte // what the endpoint lists
		unpadded  bool                     // chunk length without the last parameter's padding
		want      func(a mhAddrs, vip3 netip.Addr) [][]byte
	}
	cases := []ackCase{
		{"single-homed endpoint lists nothing, two vips", 2,
			func(a mhAddrs) [][]byte { return nil },
			false, func(a mhAddrs, _ netip.Addr) [][]byte { return [][]byte{paramAddr(a.vip2)} }},
		{"single-homed endpoint lists itself, three vips", 3,
			func(a mhAddrs) [][]byte { return [][]byte{paramAddr(a.e1)} },
			false, func(a mhAddrs, v3 netip.Addr) [][]byte {
				return [][]byte{paramAddr(a.vip), paramAddr(a.vip2), paramAddr(v3)}
			}},
		{"two endpoint addresses, three vips", 3,
			func(a mhAddrs) [][]byte { return [][]byte{paramAddr(a.e1), paramAddr(a.e2)} },
			false, func(a mhAddrs, v3 netip.Addr) [][]byte {
				return [][]byte{paramAddr(a.vip), paramAddr(a.vip2), paramAddr(v3)}
			}},
		{"unpadded last parameter", 2,
			func(a mhAddrs) [][]byte { return [][]byte{paramExt(0x82)} },
			true, func(a mhAddrs, _ netip.Addr) [][]byte { return [][]byte{paramExt(0x82), paramAddr(a.vip2)} }},
	}
	for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("%s/v6=%v/%s", modeNames[mode], v6, tc.name), func(t *testing.T) {
					e := e.sub(t)
					id++
					a := mhFamily(v6)
					// One port per case: the VIPs are the same in every case.
					vport, eport := uint16(38000+id), uint16(38413)
					cport := uint16(51000 + id)
					secondary := []netip.Addr{a.vip2}
					if tc.vips == 3 {
						secondary = append(secondary, vip3[v6])
					}
					e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: secondary, PortStart: vport, Proto: ProtoSCTP,
						Mode: mode, Endpoints: []Endpoint{{Addr: a.e1, Port: eport, Weight: 1}}})
					init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
						sctpChunks: sctpInitWith(1, 0x1111, paramAddr(a.c1), paramAddr(a.c2))}
					if ret, _ := e.run(init.frame()); ret != actRedirect {
						t.Fatalf("INIT verdict %d", ret)
					}
					conn := e.conn(id)
					src, src2 := a.c1, a.c2
					if mode == ModeFullNAT {
						src, src2 = a.vip, a.vip2
					}
					sport := conn.Source.Port()

					chunks := sctpInitWith(2, 0x2222, tc.ackParams(a)...)
					if tc.unpadded {
						chunks = sctpInitUnpadded(2, 0x2222, tc.ackParams(a)...)
					}
					ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: a.e1, dst: src, proto: 132, sport: eport, dport: sport, ttl: 64,
						sctpVtag: 0x1111, sctpChunks: chunks}
					// Twice: a retransmitted INIT-ACK grows the same way.
					for try := 0; try < 2; try++ {
						ret, out := e.runOn(e.d.objs.TcIngress, lb1, ack.frame())
						if ret != actRedirect {
							t.Fatalf("INIT-ACK verdict %d", ret)
						}
						want := ack
						want.srcMAC, want.dstMAC, want.ttl = lbMAC0, clientMAC, 63
						want.src, want.sport, want.dst, want.dport = a.vip, vport, a.c1, cport
						want.sctpChunks = sctpInitWith(2, 0x2222, tc.want(a, vip3[v6])...)
						diffHex(t, fmt.Sprintf("INIT-ACK toward the client (try %d)", try), out, want.frame())
					}

					vips := []netip.Addr{a.vip, a.vip2, vip3[v6]}[:tc.vips]
					eps := map[netip.Addr]netip.Addr{a.vip: a.e1, a.vip2: a.e1, vip3[v6]: a.e1}
					macs := map[netip.Addr][]byte{a.e1: epMAC(0), a.e2: ep2MAC}
					if len(tc.ackParams(a)) == 2 {
						eps[a.vip2] = a.e2
					}
					for _, cl := range []struct{ client, src netip.Addr }{{a.c1, src}, {a.c2, src2}} {
						for _, vip := range vips {
							data := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: cl.client, dst: vip, proto: 132, sport: cport, dport: vport, ttl: 64,
								sctpVtag: 0x2222, sctpChunks: sctpData(30)}
							ret, out := e.run(data.frame())
							if ret != actRedirect {
								t.Fatalf("%s -> %s: verdict %d", cl.client, vip, ret)
							}
							w := data
							w.srcMAC, w.dstMAC, w.ttl = lbMAC1, macs[eps[vip]], 63
							w.src, w.sport, w.dst, w.dport = cl.src, sport, eps[vip], eport
							diffHex(t, fmt.Sprintf("%s -> %s", cl.client, vip), out, w.frame())
						}
						// The endpoint answers that client address from the first VIP.
						hb := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: a.e1, dst: cl.src, proto: 132, sport: eport, dport: sport, ttl: 64,
							sctpVtag: 0x1111, sctpChunks: sctpSimple(4)}
						ret, out := e.runOn(e.d.objs.TcIngress, lb1, hb.frame())
						if ret != actRedirect {
							t.Fatalf("endpoint -> %s: verdict %d", cl.src, ret)
						}
						w := hb
						w.srcMAC, w.dstMAC, w.ttl = lbMAC0, clientMAC, 63
						w.src, w.sport, w.dst, w.dport = a.vip, vport, cl.client, cport
						diffHex(t, fmt.Sprintf("endpoint -> %s", cl.src), out, w.frame())
					}
					if got := e.conn(id); len(got.Paths) != 2*tc.vips-1 {
						t.Fatalf("association with %d secondary paths, want %d: %+v", len(got.Paths), 2*tc.vips-1, got)
					}
				})
			}
		}
	}
}
