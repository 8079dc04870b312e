package dataplane

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// XDP verdicts (enum xdp_action).
const (
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// xdpCtx is struct xdp_md as BPF_PROG_TEST_RUN takes it: the frame's
// bounds and the interface it arrives on.
type xdpCtx struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runXDP runs xdp_ingress on a copy of frame as if it arrived on ifindex.
func (e *env) runXDP(ifindex int, frame []byte) (uint32, []byte) {
	e.t.Helper()
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out,
		Context: xdpCtx{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)}}
	ret, err := e.d.objs.XdpIngress.Run(opts)
	if err != nil {
		e.t.Fatalf("xdp run: %v", err)
	}
	return ret, opts.DataOut
}

// newXDPEnv is newEnv with xdp_ingress attached on lb0 and lb1 in native
// mode (veth has it), TC behind it as always.
func newXDPEnv(t *testing.T, lb1Hook Hook) *env {
	e := newEnv(t)
	if err := e.d.AttachHook("lb0", HookXDP); err != nil {
		t.Fatalf("attach xdp lb0: %v", err)
	}
	if err := e.d.AttachHook("lb1", lb1Hook); err != nil {
		t.Fatalf("attach %s lb1: %v", lb1Hook, err)
	}
	return e
}

func (e *env) xdpCarried() uint64 {
	e.t.Helper()
	n, _, err := e.d.XDPStats()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// connCounts is the orig and reply packets and bytes of service id's one
// connection.
func (e *env) connCounts(id uint32) [4]uint64 {
	c := e.conn(id)
	return [4]uint64{c.OrigPackets, c.OrigBytes, c.ReplyPackets, c.ReplyBytes}
}

// TestXDPFastPathMatchesTC: on interfaces attached in XDP mode, the packets
// of an established TCP, UDP or SCTP flow (v4 and v6, every mode that
// rewrites, the edges fastFlow.packets lists) leave xdp_ingress redirected
// and exactly as tc_ingress makes the same frame, in both directions. Each
// counts once in the connection and in what XDP carried, like a TC packet.
// A frame the XDP path leaves to TC comes back XDP_PASS, untouched and
// uncounted: the orig direction's first one (new_flow cached no next hop)
// and IPv6 extension headers.
func TestXDPFastPathMatchesTC(t *testing.T) {
	e := newXDPEnv(t, HookXDP)
	lb0, lb1 := e.ifindex0, e.ifindex("lb1")
	id := uint32(600)
	eachRewriteCase(t, func(t *testing.T, mode Mode, proto Proto, v6 bool) {
		e := e.sub(t)
		id++
		f := openFastFlow(t, e, id, mode, proto, v6, uint16(42000+id))
		for i := 0; i < 10; i++ {
			o, r := f.packets(t, i)
			e.checkXDPAgainstTC(t, fmt.Sprintf("packet %d", i), id, lb0, o.frame(), f.fwd(o), 0, xdpRedirect, i == 0 || o.ip6DstOpts)
			e.checkXDPAgainstTC(t, fmt.Sprintf("reply %d", i), id, lb1, r.frame(), f.back(r), 2, xdpRedirect, r.ip6DstOpts)
		}
	})
}

// TestXDPSendsOneArmTrafficBackOutWithXDPTX: with the client on the
// endpoints' segment (one arm: lb1 both ways), an established packet
// leaves xdp_ingress by the interface it came in on, XDP_TX, rewritten
// exactly as tc_ingress makes it (and as the flow says: SNAT to lb1's
// address in onearm, to the VIP in fullnat), in both directions, counted
// once like a redirected one. lb1 alone is in XDP mode: XDP_TX needs no
// other interface to take XDP frames.
func TestXDPSendsOneArmTrafficBackOutWithXDPTX(t *testing.T) {
	e := newXDPEnv(t, HookXDP)
	if err := e.d.AttachHook("lb0", HookTC); err != nil {
		t.Fatal(err)
	}
	lb1 := e.ifindex("lb1")
	id := uint32(800)
	for _, mode := range []Mode{ModeOneArm, ModeFullNAT} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
			for _, v6 := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/v6=%v", modeNames[mode], protoNames[proto], v6), func(t *testing.T) {
					e := e.sub(t)
					id++
					// The client is endpoint 1's address (a neighbour on lb1);
					// the service's one endpoint is endpoint 0.
					c := flowClient{addr: epAddr(v6, 1), mac: epMAC(1), lbMAC: lbMAC1, ifname: "lb1"}
					f := openFastFlowFrom(t, e, id, mode, proto, v6, uint16(44000+id), c)
					for i := 0; i < 8; i++ {
						o, r := f.packets(t, i)
						e.checkXDPAgainstTC(t, fmt.Sprintf("packet %d", i), id, lb1, o.frame(), f.fwd(o), 0, xdpTX, i == 0 || o.ip6DstOpts)
						e.checkXDPAgainstTC(t, fmt.Sprintf("reply %d", i), id, lb1, r.frame(), f.back(r), 2, xdpTX, r.ip6DstOpts)
					}
				})
			}
		}
	}
}

// checkXDPAgainstTC runs frame through xdp_ingress on ifidx, then through
// tc_ingress: XDP_PASS untouched and uncounted when slow, else verdict
// (XDP_REDIRECT or XDP_TX), counted once in the connection's packets at index packet of connCounts
// (and its bytes at packet+1) and in xdp_stats, and equal to TC's frame;
// TC's frame equal to want.
func (e *env) checkXDPAgainstTC(t *testing.T, what string, id uint32, ifidx int, in, want []byte, packet int, verdict uint32, slow bool) {
	t.Helper()
	before, carried := e.connCounts(id), e.xdpCarried()
	ret, xout := e.runXDP(ifidx, in)
	after := e.connCounts(id)
	if slow {
		if ret != xdpPass || !bytes.Equal(xout, in) || after != before || e.xdpCarried() != carried {
			t.Fatalf("%s: XDP verdict %d, counts %v -> %v, out %x, want XDP_PASS untouched", what, ret, before, after, xout)
		}
	} else {
		if ret != verdict {
			t.Fatalf("%s: XDP verdict %d, want %d", what, ret, verdict)
		}
		w := before
		w[packet]++
		w[packet+1] += uint64(len(in))
		if after != w || e.xdpCarried() != carried+1 {
			t.Fatalf("%s: counts %v -> %v (XDP carried %d -> %d), want %v and one more", what, before, after, carried, e.xdpCarried(), w)
		}
	}
	tret, tout := e.runOn(e.d.objs.TcIngress, ifidx, in)
	if tret != actRedirect {
		t.Fatalf("%s: TC verdict %d", what, tret)
	}
	if !slow {
		diffHex(t, what+", XDP against TC", xout, tout)
	}
	diffHex(t, what, tout, want)
}

// establishedTCP opens a TCP connection to a new default-mode service
// through tc_ingress, with both directions' next hops cached, and returns
// the client's next data packet (an ACK).
func (e *env) establishedTCP(t *testing.T, id uint32, v6 bool) pkt {
	t.Helper()
	vip, client := vipV4, clientV4
	if v6 {
		vip, client = vipV6, clientV6
	}
	vport, epPort, cport := uint16(80+id), uint16(8080), uint16(43000+id)
	e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: ProtoTCP, Endpoints: testEndpoints(v6, 1, epPort)})
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(ProtoTCP),
		sport: cport, dport: vport, ttl: 64}
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(v6, 0), dst: client, dport: cport,
		proto: uint8(ProtoTCP), sport: epPort, ttl: 64}
	first, reply, second := openingPackets(ProtoTCP, first, reply)
	for _, s := range []struct {
		ifidx int
		p     pkt
	}{{e.ifindex0, first}, {e.ifindex("lb1"), reply}, {e.ifindex0, second}} {
		if ret, out := e.runOn(e.d.objs.TcIngress, s.ifidx, s.p.frame()); ret != actRedirect {
			t.Fatalf("opening packet: verdict %d, out %x", ret, out)
		}
	}
	second.payload = []byte("more data")
	return second
}

// TestXDPLeavesToTCWhatItMustNot: xdp_ingress passes, untouched and
// uncounted, every frame that is not an established packet it may carry:
// no flow, a TCP FIN (a state change), a fragment, an expiring TTL, a
// frame for another host's MAC. The same flow's plain data packet, sent
// last, is carried: the passes are the path's choice, not a setup fault.
func TestXDPLeavesToTCWhatItMustNot(t *testing.T) {
	e := newXDPEnv(t, HookXDP)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			e := e.sub(t)
			id := uint32(700)
			if v6 {
				id++
			}
			data := e.establishedTCP(t, id, v6)
			noFlow := data
			noFlow.sport++
			fin := data
			fin.tcpFlags = tcpFIN | tcpACK
			ttl := data
			ttl.ttl = 1
			other := data
			other.dstMAC = mustMAC("02:00:00:00:99:99")
			cases := map[string][]byte{"no flow": noFlow.frame(), "FIN": fin.frame(), "TTL 1": ttl.frame(),
				"another host's MAC": other.frame()}
			if !v6 {
				frag := data.frame()
				frag[14+6] |= 0x20 // more fragments: the first fragment
				cases["fragment"] = frag
			}
			for name, in := range cases {
				before, carried := e.connCounts(id), e.xdpCarried()
				ret, out := e.runXDP(e.ifindex0, in)
				if ret != xdpPass || !bytes.Equal(out, in) {
					t.Errorf("%s: verdict %d, out %x, want XDP_PASS untouched", name, ret, out)
				}
				if after := e.connCounts(id); after != before || e.xdpCarried() != carried {
					t.Errorf("%s: counted (%v -> %v, XDP carried %d -> %d)", name, before, after, carried, e.xdpCarried())
				}
			}
			if ret, _ := e.runXDP(e.ifindex0, data.frame()); ret != xdpRedirect {
				t.Fatalf("data packet: verdict %d, want XDP_REDIRECT", ret)
			}
		})
	}
}

// TestXDPRedirectsOnlyToXDPInterfaces: an XDP frame can only be redirected
// to an interface that takes XDP frames. With lb1 attached in TC mode the
// flow's packets toward it are passed to TC; attaching lb1 in XDP mode (in
// place, no detach) lets XDP carry them; back to TC mode removes lb1's XDP
// program, its pinned link and its xdp_ifaces entry, and XDP passes again.
// auto attaches XDP only where frames come off a wire: a veth's (or tap's)
// frames come from a local stack and may hold only the pseudo-header
// checksum, which XDP cannot see, so auto leaves it on TC, and an explicit
// xdp still attaches there (the labs' choice, with checksum offload off).
func TestAutoLeavesVirtualInterfacesOnTC(t *testing.T) {
	e := newXDPEnv(t, HookTC)
	if err := e.d.AttachHook("lb0", HookAuto); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.d.XDPInterfaces()); got != "[]" {
		t.Fatalf("XDP interfaces after auto on veths: %s, want none", got)
	}
	l, err := netlink.LinkByName("lb0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Fatalf("auto left an XDP program on veth lb0: %+v", x)
	}
	if err := e.d.AttachHook("lb0", HookXDP); err != nil {
		t.Fatalf("explicit xdp on a veth: %v", err)
	}
	if got := fmt.Sprint(e.d.XDPInterfaces()); got != "[lb0]" {
		t.Fatalf("XDP interfaces after an explicit xdp: %s, want [lb0]", got)
	}
}

func TestXDPRedirectsOnlyToXDPInterfaces(t *testing.T) {
	e := newXDPEnv(t, HookTC)
	data := e.establishedTCP(t, 710, false)
	verdict := func() uint32 {
		ret, _ := e.runXDP(e.ifindex0, data.frame())
		return ret
	}
	if v := verdict(); v != xdpPass {
		t.Fatalf("lb1 in TC mode: verdict %d, want XDP_PASS", v)
	}
	if err := e.d.AttachHook("lb1", HookXDP); err != nil {
		t.Fatal(err)
	}
	if v := verdict(); v != xdpRedirect {
		t.Fatalf("lb1 in XDP mode: verdict %d, want XDP_REDIRECT", v)
	}
	if got := fmt.Sprint(e.d.XDPInterfaces()); got != "[lb0 lb1]" {
		t.Fatalf("XDP interfaces %s", got)
	}
	if err := e.d.AttachHook("lb1", HookTC); err != nil {
		t.Fatal(err)
	}
	if v := verdict(); v != xdpPass {
		t.Fatalf("lb1 back in TC mode: verdict %d, want XDP_PASS", v)
	}
	if got := fmt.Sprint(e.d.XDPInterfaces()); got != "[lb0]" {
		t.Fatalf("XDP interfaces %s, want [lb0]", got)
	}
	if _, err := os.Stat(e.d.xdpLinkPin("lb1")); !os.IsNotExist(err) {
		t.Fatalf("lb1's XDP link pin: %v, want gone", err)
	}
	l, err := netlink.LinkByName("lb1")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Fatalf("lb1 still has an XDP program: %+v", x)
	}
}
