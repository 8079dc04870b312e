package dataplane

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// crc32c_delta (bpf/lib/csum.h) updates an SCTP packet's CRC32c after a
// port rewrite from the xor of the old and new ports alone: per changed byte
// an 8-bit carry-less product with x^(8N) from crc_shift, reduced by one
// crc32c_tab lookup. It must equal a CRC32c computed from scratch (the
// expected frames' CRC is hash/crc32's over the whole rewritten packet) for
// any length (N, the bytes behind the ports), any port pair and either
// rewrite: fullnat changes both ports (mostly all four bytes of the xor),
// the default mode only the destination port (one or two bytes), the reply
// direction the reverse. Random associations of both families, each taken
// to ESTABLISHED so that its DATA goes through the fast path too, then DATA
// of random lengths both ways; the seed is fixed so that a failure repeats.
func TestSCTPChecksumDeltaMatchesFullCRC(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	rng := rand.New(rand.NewPCG(13, 0x5c7b))
	const assocs, packets = 24, 16
	for a := range assocs {
		mode := []Mode{ModeDefault, ModeFullNAT}[a%2]
		v6 := a%4 >= 2
		id := uint32(700 + a)
		vip, client := vipV4, clientV4
		if v6 {
			vip, client = vipV6, clientV6
		}
		// Distinct VIP ports (one service each); endpoint and client ports
		// anywhere, so that any byte of the port xor may be zero or not.
		vport := uint16(20000 + a*101)
		epPort := uint16(1 + rng.IntN(65535))
		cport := uint16(1 + rng.IntN(65535))
		t.Run(fmt.Sprintf("%s/v6=%v/%d->%d->%d", modeNames[mode], v6, cport, vport, epPort), func(t *testing.T) {
			e := e.sub(t)
			e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: ProtoSCTP, Mode: mode, Endpoints: testEndpoints(v6, 1, epPort)})
			ep := epAddr(v6, 0)
			first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: 132, sport: cport, dport: vport, ttl: 64}
			reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep, proto: 132, sport: epPort, ttl: 64}
			first, reply, second := openingPackets(ProtoSCTP, first, reply)
			if ret, out := e.run(first.frame()); ret != actRedirect {
				t.Fatalf("INIT: verdict %d, out %x", ret, out)
			}
			src, sport := client, cport
			if mode == ModeFullNAT {
				src, sport = vip, e.conn(id).Source.Port()
			}
			reply.dst, reply.dport = src, sport
			fwd := func(p pkt) []byte {
				p.srcMAC, p.dstMAC, p.ttl = lbMAC1, epMAC(0), 63
				p.src, p.sport, p.dst, p.dport = src, sport, ep, epPort
				return p.frame()
			}
			back := func(p pkt) []byte {
				p.srcMAC, p.dstMAC, p.ttl = lbMAC0, clientMAC, 63
				p.src, p.sport, p.dst, p.dport = vip, vport, client, cport
				return p.frame()
			}
			check := func(what string, fromClient bool, p pkt) {
				t.Helper()
				var ret uint32
				var out, want []byte
				if fromClient {
					ret, out = e.run(p.frame())
					want = fwd(p)
				} else {
					ret, out = e.runOn(e.d.objs.TcIngress, lb1, p.frame())
					want = back(p)
				}
				if ret != actRedirect {
					t.Fatalf("%s: verdict %d, want redirect", what, ret)
				}
				diffHex(t, what, out, want)
			}
			check("INIT-ACK", false, reply)
			echo, ack := second, reply
			echo.sctpChunks, ack.sctpChunks = sctpSimple(10), sctpSimple(11)
			ack.sctpVtag = 0x11111111
			check("COOKIE-ECHO", true, echo)
			check("COOKIE-ACK", false, ack)
			if st := e.conn(id).State; st != "ESTABLISHED" {
				t.Fatalf("state %s, want ESTABLISHED", st)
			}
			for i := range packets {
				n := 1 + rng.IntN(1400)
				if i%2 == 0 {
					p := second
					p.sctpChunks = sctpData(n)
					check(fmt.Sprintf("DATA %d from the client (%d bytes)", i, n), true, p)
				} else {
					p := ack
					p.sctpChunks = sctpData(n)
					check(fmt.Sprintf("DATA %d from the endpoint (%d bytes)", i, n), false, p)
				}
			}
		})
	}
}
