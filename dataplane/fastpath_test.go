package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// frameL4CsumOffset is where the TCP or UDP checksum of an untagged frame
// built by pkt.frame lies, read from the frame itself: a NAT64 builder's
// frame is of the other family than the packet it was given.
func frameL4CsumOffset(f []byte, proto uint8) int {
	off := 14 + 20
	if binary.BigEndian.Uint16(f[12:]) == 0x86dd {
		off = 14 + 40
		if f[14+6] == 60 { // Destination Options, 8 bytes
			off += 8
		}
	}
	if proto == uint8(ProtoTCP) {
		return off + 16
	}
	return off + 6
}

// zeroingPayload changes the first payload word of p so that the frame out
// builds (the translated packet, same payload) carries the checksum 0x0000:
// the one's-complement edge where an incremental update could write 0xffff
// instead.
func zeroingPayload(t *testing.T, p pkt, out func(pkt) []byte) pkt {
	t.Helper()
	return csumEdgePayload(t, p, out, 0)
}

// csumEdgePayload is zeroingPayload for a checksum that frame writes as
// want when it computes 0 (UDP: 0xffff, RFC 768).
func csumEdgePayload(t *testing.T, p pkt, out func(pkt) []byte, want uint16) pkt {
	t.Helper()
	p.payload = append([]byte(nil), p.payload...)
	f := out(p)
	off := frameL4CsumOffset(f, p.proto)
	c := binary.BigEndian.Uint16(f[off:])
	w := uint32(binary.BigEndian.Uint16(p.payload)) + uint32(c)
	w = w&0xffff + w>>16
	binary.BigEndian.PutUint16(p.payload, uint16(w))
	if got := binary.BigEndian.Uint16(out(p)[off:]); got != want {
		t.Fatalf("crafted payload gives checksum %#04x, want %#04x", got, want)
	}
	return p
}

// fastFlow is one flow through a new one-endpoint service, opened through
// tc_ingress (its first packet and the endpoint's reply, checked byte for
// byte), with the frames its later packets must leave as.
type fastFlow struct {
	second, reply pkt
	// fwd and back build what the client's and the endpoint's packet p
	// must leave the LB as.
	fwd, back func(p pkt) []byte
}

func openFastFlow(t *testing.T, e *env, id uint32, mode Mode, proto Proto, v6 bool, cport uint16) fastFlow {
	t.Helper()
	client := clientV4
	if v6 {
		client = clientV6
	}
	return openFastFlowFrom(t, e, id, mode, proto, v6, cport, flowClient{addr: client, mac: clientMAC, lbMAC: lbMAC0, ifname: "lb0"})
}

// flowClient is where a fastFlow's client is: its address and MAC, the
// LB interface it sends to and that interface's MAC.
type flowClient struct {
	addr       netip.Addr
	mac, lbMAC net.HardwareAddr
	ifname     string
}

// openFastFlowFrom is openFastFlow with the client at c (the endpoint is
// behind lb1).
func openFastFlowFrom(t *testing.T, e *env, id uint32, mode Mode, proto Proto, v6 bool, cport uint16, c flowClient) fastFlow {
	t.Helper()
	vip, client, lbAddr := vipV4, c.addr, lbAddr1V4
	if v6 {
		vip, lbAddr = vipV6, lbAddr1V6
	}
	vport, epPort := uint16(80+id), uint16(8080)
	e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: proto, Mode: mode,
		Endpoints: testEndpoints(v6, 1, epPort)})
	ep := epAddr(v6, 0)
	first := pkt{srcMAC: c.mac, dstMAC: c.lbMAC, src: client, dst: vip, proto: uint8(proto),
		sport: cport, dport: vport, ttl: 64}
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep, proto: uint8(proto), sport: epPort, ttl: 64}
	first, reply, second := openingPackets(proto, first, reply)
	if ret, out := e.runOn(e.d.objs.TcIngress, e.ifindex(c.ifname), first.frame()); ret != actRedirect {
		t.Fatalf("first packet: verdict %d, out %x", ret, out)
	}
	conn := e.conn(id)
	src, sport := client, cport
	switch mode {
	case ModeOneArm:
		src, sport = lbAddr, conn.Source.Port()
	case ModeFullNAT:
		src, sport = vip, conn.Source.Port()
	}
	reply.dst, reply.dport = src, sport
	f := fastFlow{second: second, reply: reply,
		fwd: func(p pkt) []byte {
			p.srcMAC, p.dstMAC, p.ttl = lbMAC1, epMAC(0), p.ttl-1
			p.src, p.sport, p.dst, p.dport = src, sport, ep, epPort
			return p.frame()
		},
		back: func(p pkt) []byte {
			p.srcMAC, p.dstMAC, p.ttl = c.lbMAC, c.mac, p.ttl-1
			p.src, p.sport, p.dst, p.dport = vip, vport, client, cport
			return p.frame()
		}}
	if ret, out := e.runOn(e.d.objs.TcIngress, e.ifindex("lb1"), reply.frame()); ret != actRedirect {
		t.Fatalf("reply: verdict %d, out %x", ret, out)
	} else {
		diffHex(t, "reply", out, f.back(reply))
	}
	return f
}

// exchange sends o from the client and r from the endpoint (lb1: the
// endpoint side's interface) through tc_ingress, the flow's i-th pair, and
// checks each leaves as fwd and back build it.
func (f fastFlow) exchange(t *testing.T, e *env, lb1 int, i int, o, r pkt) {
	t.Helper()
	ret, out := e.run(o.frame())
	if ret != actRedirect {
		t.Fatalf("packet %d: verdict %d", i, ret)
	}
	diffHex(t, fmt.Sprintf("packet %d", i), out, f.fwd(o))
	ret, out = e.runOn(e.d.objs.TcIngress, lb1, r.frame())
	if ret != actRedirect {
		t.Fatalf("reply %d: verdict %d", i, ret)
	}
	diffHex(t, fmt.Sprintf("reply %d", i), out, f.back(r))
}

// packets is the flow's i-th pair of later packets (client's, endpoint's):
// payloads of odd and even length, checksums swept by the sequence number,
// and at fixed i the edges: a translated TCP checksum of 0x0000 (3), a
// UDP/IPv4 datagram without checksum (4), an IPv6 Destination Options
// header (5), a translated UDP checksum computing to 0, sent as 0xffff
// (0 and 6); SCTP DATA chunks of several sizes.
func (f fastFlow) packets(t *testing.T, i int) (o, r pkt) {
	t.Helper()
	o, r = f.second, f.reply
	proto := Proto(o.proto)
	o.tcpFlags, r.tcpFlags = 0, 0
	if proto == ProtoTCP {
		o.tcpFlags, r.tcpFlags = tcpACK|tcpPSH, tcpACK
	}
	o.seq, r.seq = uint32(i)*0x9e3779b9, uint32(i)*0x7f4a7c15
	o.ttl, r.ttl = uint8(64-i), uint8(200-i)
	o.payload = make([]byte, 4+i*7) // 4+: the fast paths read 12 bytes of L4
	r.payload = make([]byte, 5+i*5)
	for j := range o.payload {
		o.payload[j] = byte(i*31 + j)
	}
	for j := range r.payload {
		r.payload[j] = byte(i*17 + j*3)
	}
	if proto == ProtoSCTP {
		o.payload, r.payload = nil, nil
		o.sctpChunks, r.sctpChunks = sctpData(1+i*13), sctpData(4+i*9)
	}
	v6 := o.src.Is6()
	switch {
	case i == 3 && proto == ProtoTCP:
		o = zeroingPayload(t, o, f.fwd)
		r = zeroingPayload(t, r, f.back)
	case i == 4 && proto == ProtoUDP && !v6:
		o.udpZeroCsum, r.udpZeroCsum = true, true
	case i == 5 && v6:
		o.ip6DstOpts, r.ip6DstOpts = true, true
	case (i == 0 || i == 6) && proto == ProtoUDP:
		o = csumEdgePayload(t, o, f.fwd, 0xffff)
		r = csumEdgePayload(t, r, f.back, 0xffff)
	}
	return o, r
}

// TestEstablishedFastPathIsByteExact: once the first packet of an
// established flow has cached its next hop, the flow's TCP, UDP and SCTP
// packets take the fast path (bpf/lib/fastpath.h: direct packet access,
// the L4 checksum updated at once, the CRC32c by its delta). Each must
// leave exactly as the helper-based path makes it, in both directions and
// every mode that rewrites (the edges fastFlow.packets lists), and the
// counters of every packet; none of them counted on the slow path once
// both directions' next hops are cached, but for IPv6 extension headers.
func TestEstablishedFastPathIsByteExact(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	id := uint32(400)
	eachRewriteCase(t, func(t *testing.T, mode Mode, proto Proto, v6 bool) {
		e := e.sub(t)
		id++
		f := openFastFlow(t, e, id, mode, proto, v6, uint16(41000+id))
		const n = 12
		var slow uint64
		for i := 0; i < n; i++ {
			o, r := f.packets(t, i)
			f.exchange(t, e, lb1, i, o, r)
			if i == 0 {
				// The client's first established packet cached its
				// next hop (the reply's was cached opening the flow).
				slow = e.slowPackets(t, id)
			}
		}
		// IPv6 with a Destination Options header (pair 5) is the slow
		// path's: its headers are not at the fast path's offsets.
		want := uint64(0)
		if v6 {
			want = 2
		}
		if got := e.slowPackets(t, id) - slow; got != want {
			t.Errorf("%d of %d established packets after the first took the slow path, want %d", got, 2*(n-1), want)
		}
		for _, c := range e.conns() {
			if c.ServiceID != id {
				continue
			}
			if c.OrigPackets != n+1 || c.ReplyPackets != n+1 {
				t.Errorf("packets %d orig, %d reply, want %d each", c.OrigPackets, c.ReplyPackets, n+1)
			}
		}
	})
}

// eachRewriteCase runs a subtest per mode that rewrites (default, onearm,
// fullnat), protocol (TCP, UDP, SCTP) and family.
func eachRewriteCase(t *testing.T, run func(t *testing.T, mode Mode, proto Proto, v6 bool)) {
	for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
			for _, v6 := range []bool{false, true} {
				fam := "v4"
				if v6 {
					fam = "v6"
				}
				t.Run(fmt.Sprintf("%s/%s/%s", modeNames[mode], protoNames[proto], fam), func(t *testing.T) { run(t, mode, proto, v6) })
			}
		}
	}
}
