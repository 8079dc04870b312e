package dataplane

import (
	"fmt"
	"net/netip"
	"testing"
)

// A client's stack retransmits its INIT to another of the association's
// addresses when the first times out (usrsctp moves its primary to the
// alternate address at each T1-init expiry; RFC 9260 6.4 allows it), with
// the same initiate tag. In fullnat every INIT must reach the endpoint
// from the same SNAT port: the endpoint tells associations apart by their
// ports, so a second port would make a second association there (its own
// INIT-ACK, its own tag), and the paths the INIT-ACK adds carry one port
// only. Round robin gives a new flow another endpoint; the SNAT port is
// a hash of each tuple, so each path of the retransmitted INIT would get
// its own port. Onearm too (no secondary VIPs there, a multi-homed
// client): one LB address toward the endpoint, so the first INIT's reply
// tuple is every path's.
func TestSCTPINITRetransmittedToAnotherPathKeepsEndpointAndPort(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	id := uint32(60)
	for _, c := range []struct {
		mode Mode
		v6   bool
	}{{ModeFullNAT, false}, {ModeFullNAT, true}, {ModeOneArm, false}, {ModeOneArm, true}} {
		v6 := c.v6
		t.Run(fmt.Sprintf("%s/v6=%v", modeNames[c.mode], v6), func(t *testing.T) {
			e := e.sub(t)
			id++
			a := mhFamily(v6)
			const vport, eport, cport = 38412, 38413, 53100
			vips := []netip.Addr{a.vip2}
			paths := []struct{ client, vip netip.Addr }{{a.c1, a.vip}, {a.c1, a.vip2}, {a.c2, a.vip2}, {a.c2, a.vip}}
			if c.mode == ModeOneArm {
				vips, paths = nil, paths[:1]
				paths = append(paths, struct{ client, vip netip.Addr }{a.c2, a.vip})
			}
			e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: vips, PortStart: vport, Proto: ProtoSCTP,
				Mode: c.mode, Select: SelectRR, Endpoints: testEndpoints(v6, numTestEPs, eport)})
			t.Cleanup(func() { _ = e.d.DeleteService(id) })
			chunk := sctpInitWith(1, 0x2222, paramAddr(a.c1), paramAddr(a.c2))
			var ep0 netip.Addr
			var port0 uint16
			for i, path := range paths {
				init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: path.client, dst: path.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
					sctpChunks: chunk}
				ret, out := e.run(init.frame())
				if ret != actRedirect {
					t.Fatalf("INIT %s -> %s: verdict %d", path.client, path.vip, ret)
				}
				ep, port := natOut(t, out, v6)
				if i == 0 {
					ep0, port0 = ep, port
					continue
				}
				if ep != ep0 || port != port0 {
					t.Errorf("INIT retransmitted %s -> %s reached %s from port %d, the first INIT %s from port %d",
						path.client, path.vip, ep, port, ep0, port0)
				}
			}
		})
	}
}
