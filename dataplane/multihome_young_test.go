package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// natOut reads the destination address and source port of a translated
// frame (untagged, IPv4 without options or IPv6 without extension headers).
func natOut(t testing.TB, out []byte, v6 bool) (netip.Addr, uint16) {
	t.Helper()
	if v6 {
		return netip.AddrFrom16([16]byte(out[38:54])), binary.BigEndian.Uint16(out[54:])
	}
	return netip.AddrFrom4([4]byte(out[30:34])), binary.BigEndian.Uint16(out[34:])
}

// epIndex is the index of the test endpoint with address a.
func epIndex(t testing.TB, a netip.Addr) int {
	t.Helper()
	for i := 0; i < numTestEPs; i++ {
		if epAddr(a.Is6(), i) == a {
			return i
		}
	}
	t.Fatalf("%s is no test endpoint", a)
	return -1
}

// takenUpPath is one packet of a taken-up association: its path (client
// address to VIP) and its chunks.
type takenUpPath struct {
	name        string
	client, vip netip.Addr
	chunks      []byte
}

// A node that holds no entry of an association (an HA takeover before the
// sync sent it: no INIT seen here) takes it up from its next packets, one
// entry per path. Every path must reach the endpoint the first one reached
// with the SNAT port the first one got: the endpoint knows one port, and
// another path's packets to another endpoint, or from another port, are out
// of the blue there (RFC 9260 8.4) and draw an ABORT that kills the whole
// association. Round robin over four endpoints gives each new flow another
// endpoint, and the SNAT port hash of each path's own tuple another port.
func TestSCTPTakenUpAssociationKeepsOneEndpointAndPort(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	id := uint32(20)
	// Fullnat with one endpoint too, as in the HA lab: there only the port
	// can go wrong.
	for _, c := range []struct {
		mode Mode
		eps  int
	}{{ModeDefault, numTestEPs}, {ModeFullNAT, numTestEPs}, {ModeFullNAT, 1}} {
		for _, v6 := range []bool{false, true} {
			mode := c.mode
			t.Run(fmt.Sprintf("%s/%d-endpoints/v6=%v", modeNames[mode], c.eps, v6), func(t *testing.T) {
				e := e.sub(t)
				id++
				a := mhFamily(v6)
				const vport, eport = 38412, 38413
				e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
					Mode: mode, Select: SelectRR, Endpoints: testEndpoints(v6, c.eps, eport)})
				// Deleted even when the subtest fails: the next one uses the same VIPs.
				t.Cleanup(func() { _ = e.d.DeleteService(id) })
				// Two associations (their tags differ, their client port
				// too), interleaved: each keeps its own choice.
				for n, assoc := range []struct {
					cport uint16
					vtag  uint32
				}{{51000, 0x0a0b0c0d}, {51001, 0x1a1b1c1d}} {
					// The paths in the order their packets come: the
					// INIT's (DATA), the second client address to the
					// second VIP (HEARTBEAT), the first to the second
					// (SACK).
					paths := []takenUpPath{
						{"DATA c1 to vip", a.c1, a.vip, sctpData(40)},
						{"HEARTBEAT c2 to vip2", a.c2, a.vip2, sctpSimple(4)},
						{"SACK c1 to vip2", a.c1, a.vip2, sctpSimple(3)},
					}
					var ep netip.Addr
					var port uint16
					for i, p := range paths {
						in := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: p.client, dst: p.vip, proto: 132,
							sport: assoc.cport, dport: vport, ttl: 64, sctpVtag: assoc.vtag, sctpChunks: p.chunks}
						ret, out := e.run(in.frame())
						if ret != actRedirect {
							t.Fatalf("association %d, %s: verdict %d", n, p.name, ret)
						}
						if i == 0 {
							ep, port = natOut(t, out, v6)
							if mode == ModeDefault && port != assoc.cport {
								t.Fatalf("association %d: default mode changed the client port to %d", n, port)
							}
						}
						src := p.client
						if mode == ModeFullNAT {
							src = p.vip // the VIP of the path: the endpoint knows both as the client's
						}
						w := in
						w.srcMAC, w.dstMAC, w.ttl = lbMAC1, epMAC(epIndex(t, ep)), 63
						w.src, w.sport, w.dst, w.dport = src, port, ep, eport
						diffHex(t, fmt.Sprintf("association %d, %s toward %s port %d", n, p.name, ep, port), out, w.frame())

						// The endpoint's HEARTBEAT-ACK on that path finds its
						// way back to the client address of the path.
						back := pkt{srcMAC: epMAC(epIndex(t, ep)), dstMAC: lbMAC1, src: ep, dst: src, proto: 132,
							sport: eport, dport: port, ttl: 64, sctpVtag: 0x5a5a5a5a, sctpChunks: sctpSimple(5)}
						ret, out = e.runOn(e.d.objs.TcIngress, lb1, back.frame())
						if ret != actRedirect {
							t.Fatalf("association %d, %s reply: verdict %d", n, p.name, ret)
						}
						w = back
						w.srcMAC, w.dstMAC, w.ttl = lbMAC0, clientMAC, 63
						w.src, w.sport, w.dst, w.dport = p.vip, vport, p.client, assoc.cport
						diffHex(t, fmt.Sprintf("association %d, %s reply", n, p.name), out, w.frame())
					}
				}
				// Each association counts once toward its endpoint, active
				// and as a session, not once per path.
				st, err := e.d.ServiceStats(id, numTestEPs)
				if err != nil {
					t.Fatal(err)
				}
				var sessions uint64
				for _, ep := range st.Endpoints {
					sessions += ep.Sessions
				}
				if st.Active != 2 || st.Sessions != 2 || sessions != 2 {
					t.Errorf("%d active, %d sessions (%d over the endpoints), want 2 each (one per association): %+v",
						st.Active, st.Sessions, sessions, st.Endpoints)
				}
			})
		}
	}
}

// The first path's SNAT port is not taken at any price: when its reply
// tuple on another path belongs to another flow (here: planted), that path
// gets a free port of its own rather than steal the other flow's replies.
func TestSCTPTakenUpPathLeavesAnotherFlowsPort(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	a := mhFamily(false)
	const id, vport, eport, cport, vtag = 30, 38412, 38413, 52000, 0x0badcafe
	e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
		Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, eport)})
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
		sctpVtag: vtag, sctpChunks: sctpData(20)}
	ret, out := e.run(first.frame())
	if ret != actRedirect {
		t.Fatalf("first path: verdict %d", ret)
	}
	ep, port := natOut(t, out, false)

	// Another flow's reply entry on (endpoint, vip2, that port).
	other := bpf.LbCtKey{Src: addr16(ep), Dst: addr16(a.vip2), Sport: htons(eport), Dport: htons(port), Proto: uint8(ProtoSCTP)}
	ov := bpf.LbCtVal{NatSrc: addr16(a.vip2), NatDst: addr16(netip.MustParseAddr("10.0.0.99")), NatSport: htons(vport),
		NatDport: htons(40000), Svc: id, Flags: ctFReply, Family: 2, Mode: uint8(ModeFullNAT), VtagEp: 0x12345678}
	if err := e.d.ct().put(&other, &ov); err != nil {
		t.Fatal(err)
	}

	second := first
	second.dst, second.sctpChunks = a.vip2, sctpSimple(4)
	ret, out = e.run(second.frame())
	if ret != actRedirect {
		t.Fatalf("second path: verdict %d", ret)
	}
	if ep2, port2 := natOut(t, out, false); ep2 != ep || port2 == port {
		t.Fatalf("second path toward %s port %d; want %s and a port other than the taken %d", ep2, port2, ep, port)
	}
	var got bpf.LbCtVal
	if err := e.d.ct().lookup(&other, &got); err != nil || got.NatDst != ov.NatDst {
		t.Fatalf("the other flow's reply entry: %+v (%v), want it untouched", got, err)
	}
}

// A node holding only an association's INIT entry (the HA sync imported it,
// not yet the paths its INIT-ACK adds) takes up its other paths with that
// entry's endpoint and SNAT port, which the endpoint knows: found from the
// same client address through the service's other VIP, then noted for the
// association's other client addresses, also through the INIT's VIP, whose
// reply tuple the INIT's entry holds with no endpoint tag yet (fullnat).
func TestSCTPTakenUpPathJoinsTheINITsEntry(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	id := uint32(40)
	for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", modeNames[mode], v6), func(t *testing.T) {
				e := e.sub(t)
				id++
				a := mhFamily(v6)
				const vport, eport, cport, etag = 38412, 38413, 53000, 0x3c3c3c3c
				e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
					Mode: mode, Select: SelectRR, Endpoints: testEndpoints(v6, numTestEPs, eport)})
				t.Cleanup(func() { _ = e.d.DeleteService(id) })
				init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
					sctpChunks: sctpInitWith(1, 0x1111, paramAddr(a.c1), paramAddr(a.c2))}
				ret, out := e.run(init.frame())
				if ret != actRedirect {
					t.Fatalf("INIT verdict %d", ret)
				}
				ep, port := natOut(t, out, v6)
				for _, p := range []takenUpPath{
					{"DATA c1 to vip2", a.c1, a.vip2, sctpData(30)},
					{"HEARTBEAT c2 to vip2", a.c2, a.vip2, sctpSimple(4)},
					// Fullnat: the INIT entry's reply tuple (VIP, port) is
					// this path's too, its endpoint tag still unknown.
					{"HEARTBEAT c2 to vip", a.c2, a.vip, sctpSimple(4)},
				} {
					in := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: p.client, dst: p.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
						sctpVtag: etag, sctpChunks: p.chunks}
					ret, out := e.run(in.frame())
					if ret != actRedirect {
						t.Fatalf("%s: verdict %d", p.name, ret)
					}
					src := p.client
					if mode == ModeFullNAT {
						src = p.vip
					}
					w := in
					w.srcMAC, w.dstMAC, w.ttl = lbMAC1, epMAC(epIndex(t, ep)), 63
					w.src, w.sport, w.dst, w.dport = src, port, ep, eport
					diffHex(t, fmt.Sprintf("%s toward the INIT's %s port %d", p.name, ep, port), out, w.frame())
				}
				st, err := e.d.ServiceStats(id, numTestEPs)
				if err != nil {
					t.Fatal(err)
				}
				if st.Active != 1 || st.Sessions != 1 {
					t.Errorf("%d active, %d sessions, want 1 each: %+v", st.Active, st.Sessions, st.Endpoints)
				}
			})
		}
	}
}
