package dataplane

import (
	"fmt"
	"testing"
)

// openNAT64Flow opens a flow from clientV6 to a new NAT64 service (IPv6
// VIP, one IPv4 endpoint) through tc_ingress, its first packet and the
// endpoint's reply checked byte for byte, and returns it as a fastFlow
// whose builders translate: the endpoint sees the LB's IPv4 address (DF
// set), the client the VIP. The client's second packet is sent too: both
// directions' next hops are cached then.
func openNAT64Flow(t *testing.T, e *env, id uint32, mode Mode, proto Proto, cport uint16) fastFlow {
	t.Helper()
	vport, epPort := uint16(80+id), uint16(8080)
	e.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: proto, Mode: mode,
		Endpoints: testEndpoints(false, 1, epPort)})
	ep := epAddr(false, 0)
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: uint8(proto),
		sport: cport, dport: vport, ttl: 64}
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep, proto: uint8(proto), sport: epPort, ttl: 64}
	first, reply, second := openingPackets(proto, first, reply)
	ret, first4 := e.run(first.frame())
	if ret != actRedirect {
		t.Fatalf("first packet: verdict %d, out %x", ret, first4)
	}
	sport := e.conn(id).Source.Port()
	reply.dst, reply.dport = lbAddr1V4, sport
	f := fastFlow{second: second, reply: reply,
		fwd: func(p pkt) []byte {
			p.srcMAC, p.dstMAC, p.ttl, p.ipDF, p.ip6DstOpts = lbMAC1, epMAC(0), p.ttl-1, true, false
			p.src, p.sport, p.dst, p.dport = lbAddr1V4, sport, ep, epPort
			return p.frame()
		},
		back: func(p pkt) []byte {
			p.srcMAC, p.dstMAC, p.ttl, p.ipDF = lbMAC0, clientMAC, p.ttl-1, false
			p.src, p.sport, p.dst, p.dport = vipV6, vport, clientV6, cport
			return p.frame()
		}}
	diffHex(t, "translated first packet", first4, f.fwd(first))
	ret, out := e.runOn(e.d.objs.TcIngress, e.ifindex("lb1"), reply.frame())
	if ret != actRedirect {
		t.Fatalf("reply: verdict %d, out %x", ret, out)
	}
	diffHex(t, "translated reply", out, f.back(reply))
	// The first established packet of each direction caches its next hop
	// (the flow's first packet and its reply found none cached).
	if ret, out = e.run(second.frame()); ret != actRedirect {
		t.Fatalf("second packet: verdict %d, out %x", ret, out)
	}
	diffHex(t, "second packet", out, f.fwd(second))
	return f
}

func (e *env) slowPackets(t *testing.T, id uint32) uint64 {
	t.Helper()
	st, err := e.d.ServiceStats(id, 1)
	if err != nil {
		t.Fatal(err)
	}
	return st.SlowPathPackets
}

// TestNAT64EstablishedFastPathIsByteExact: once a NAT64 flow's next hops
// are cached, its TCP and UDP packets are translated by the NAT64 fast
// path (bpf/lib/fastpath64.h) in both directions and every mode, each
// leaving exactly as the translation built from scratch (the IPv4 header
// and its checksum, the L4 checksum over the other family's pseudo
// header, traffic class <-> TOS, TTL), checksum edges included (a
// translated TCP checksum of 0x0000, a UDP one computing to 0, sent as
// 0xffff), and none of them counted on the slow path. The slow path keeps
// what the fast one must not take: an IPv4 packet that grows past the IPv6
// minimum MTU (its route's MTU is looked up), an IPv4 UDP datagram without
// checksum (dropped: IPv6 needs one).
//
// Both ways of writing the L4 checksum are run: directly where the kernel
// has bpf_cast_to_kern_ctx, and through bpf_l4_csum_replace (a datapath
// loaded with HelperL4Csum, what 5.15 and 6.1 run).
func TestNAT64EstablishedFastPathIsByteExact(t *testing.T) {
	base := newEnv(t)
	lb1 := base.ifindex("lb1")
	id := uint32(560)
	variants := []string{"helpers"}
	if base.d.DirectL4Csum() {
		variants = []string{"direct", "helpers"}
	} else {
		t.Logf("no %s on this kernel: direct checksum writes not run", castKfunc)
	}
	for _, csum := range variants {
		if csum == "helpers" && base.d.DirectL4Csum() {
			base.reload(Config{MaxConns: 4096, HelperL4Csum: true})
			if base.d.DirectL4Csum() {
				t.Fatal("HelperL4Csum: direct checksum writes still on")
			}
		}
		for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT} {
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				t.Run(fmt.Sprintf("%s/%s/%s", csum, modeNames[mode], protoNames[proto]), func(t *testing.T) {
					e := base.sub(t)
					id++
					f := openNAT64Flow(t, e, id, mode, proto, uint16(42000+id))
					slow := e.slowPackets(t, id)
					const n = 12
					sent := 0
					for i := 0; i < n; i++ {
						if i == 5 {
							continue // an IPv6 extension header: not translated (TestNAT64UntranslatablePacketsAreDropped)
						}
						o, r := f.packets(t, i)
						o.tos, r.tos = uint8(i*37), uint8(0xff-i*21)
						f.exchange(t, e, lb1, i, o, r)
						sent++
					}
					if got := e.slowPackets(t, id); got != slow {
						t.Errorf("%d of %d established packets took the slow path, want none", got-slow, 2*sent)
					}

					// An IPv4 datagram of 1,260 bytes is 1,280 once IPv6: the
					// minimum MTU, fast. One byte more and the slow path's route
					// lookup decides (its MTU could be the minimum).
					for _, c := range []struct {
						v4len int
						slow  uint64
					}{{1260, 0}, {1261, 1}} {
						_, big := f.packets(t, 1)
						hdrs := 20 + 8
						if proto == ProtoTCP {
							hdrs = 20 + 20
						}
						big.payload = make([]byte, c.v4len-hdrs)
						what := fmt.Sprintf("reply of %d bytes once IPv6", c.v4len+20)
						ret, out := e.runOn(e.d.objs.TcIngress, lb1, big.frame())
						if ret != actRedirect {
							t.Fatalf("%s: verdict %d, want redirect (the test route's MTU is 1,500)", what, ret)
						}
						diffHex(t, what, out, f.back(big))
						if got := e.slowPackets(t, id); got != slow+c.slow {
							t.Errorf("%s: slow path packets %d, want %d", what, got, slow+c.slow)
						}
					}
					if proto == ProtoUDP {
						_, nock := f.packets(t, 2)
						nock.udpZeroCsum = true
						before := e.dropCount(t, DropRewrite)
						if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, nock.frame()); ret != actShot {
							t.Fatalf("IPv4 UDP reply without checksum: verdict %d, want drop", ret)
						}
						if after := e.dropCount(t, DropRewrite); after != before+1 {
							t.Fatalf("rewrite drops %d -> %d, want one more", before, after)
						}
					}
				})
			}
		}
	}
}
