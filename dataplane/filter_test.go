package dataplane

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// filterFlows sets up one TCP and one UDP connection per mode and family
// (NAT64 included) and returns nothing: the connections are in conntrack.
func filterFlows(t *testing.T, e *env) {
	t.Helper()
	id := uint32(400)
	for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT, ModeDSR} {
		for _, fam := range []string{"v4", "v6", "nat64"} {
			if fam == "nat64" && mode == ModeDSR {
				continue // refused by validation
			}
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				id++
				client, vip, epV6 := clientV4, vipV4, false
				if fam != "v4" {
					client, vip, epV6 = clientV6, vipV6, fam == "v6"
				}
				port, epPort := uint16(1000+id), uint16(8080)
				if mode == ModeDSR {
					epPort = 0 // DSR keeps the port
				}
				e.upsert(Service{ID: id, VIP: vip, PortStart: port, Proto: proto, Mode: mode, Endpoints: testEndpoints(epV6, 1, epPort)})
				p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(proto), sport: 33000, dport: port, ttl: 64}
				if proto == ProtoTCP {
					p.tcpFlags = tcpSYN
				}
				if ret, _ := e.run(p.frame()); ret != actRedirect {
					t.Fatalf("%v %s %d: first packet verdict %d", mode, fam, proto, ret)
				}
			}
		}
	}
}

// The invariant the miss path rests on: every packet of a tracked flow, in
// either direction, has an address in the filter, so it reaches conntrack.
// Checked by sending a packet with every tuple conntrack holds: none may be
// passed untouched.
func TestEveryTrackedTupleReachesConntrack(t *testing.T) {
	e := newEnv(t)
	filterFlows(t, e)
	ct, err := e.d.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) < 40 {
		t.Fatalf("%d conntrack entries, want the flows of every mode", len(ct))
	}
	var dp, dm bpf.LbFilterBits
	if err := e.d.objs.AddrFilter.Lookup(uint32(filterDatapath), &dp); err != nil {
		t.Fatal(err)
	}
	if err := e.d.objs.AddrFilter.Lookup(uint32(filterDaemon), &dm); err != nil {
		t.Fatal(err)
	}
	for k, v := range ct {
		name := fmt.Sprintf("%v:%d -> %v:%d proto %d flags %#x", netip.AddrFrom16(k.Src).Unmap(), htons(k.Sport),
			netip.AddrFrom16(k.Dst).Unmap(), htons(k.Dport), k.Proto, v.Flags)
		in := func(a [16]byte) bool { return filterHas(&dp, a) || filterHas(&dm, a) }
		if !in(k.Src) && !in(k.Dst) {
			t.Errorf("%s: neither address in the filter", name)
			continue
		}
		src, dst := netip.AddrFrom16(k.Src).Unmap(), netip.AddrFrom16(k.Dst).Unmap()
		// Addressed to lb0, the device e.run runs on: a frame for another
		// MAC would be passed as PACKET_OTHERHOST before the filter.
		p := pkt{srcMAC: epMAC(0), dstMAC: lbMAC0, src: src, dst: dst, proto: k.Proto, sport: htons(k.Sport), dport: htons(k.Dport), ttl: 64}
		if k.Proto == uint8(ProtoTCP) {
			p.tcpFlags = tcpACK
		}
		f := p.frame()
		if ret, out := e.run(f); ret == actOK && string(out[:len(f)]) == string(f) {
			t.Errorf("%s: packet passed untouched", name)
		}
	}
}

// A filter created next to an older conntrack (an upgrade keeps the pinned
// connections) starts empty: Load refills it from conntrack, and the
// connections' replies are translated again.
func TestFilterIsRefilledFromConntrackOnLoad(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 450, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 8080)})
	first := udpTo(clientV4, vipV4, 4000, 80)
	if ret, _ := e.run(first.frame()); ret != actRedirect {
		t.Fatalf("first packet verdict %d", ret)
	}
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: clientV4, proto: uint8(ProtoUDP), sport: 8080, dport: 4000, ttl: 64}
	lb1 := e.ifindex("lb1")
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, reply.frame()); ret != actRedirect {
		t.Fatalf("reply verdict %d, want redirect", ret)
	}
	var zero bpf.LbFilterBits
	for _, i := range []uint32{filterDatapath, filterDaemon} {
		if err := e.d.objs.AddrFilter.Put(i, &zero); err != nil {
			t.Fatal(err)
		}
	}
	// The filter decides: with it empty the reply is taken for a miss.
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, reply.frame()); ret != actOK {
		t.Fatalf("reply with an empty filter: verdict %d, want pass", ret)
	}
	d, err := Load(Config{PinPath: e.d.cfg.PinPath, MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	e.d = d
	ret, out := e.runOn(e.d.objs.TcIngress, lb1, reply.frame())
	if ret != actRedirect {
		t.Fatalf("reply after reload: verdict %d, want redirect", ret)
	}
	want := reply
	want.src, want.sport = vipV4, 80
	want.srcMAC, want.dstMAC = lbMAC0, clientMAC
	want.ttl = 63
	diffHex(t, "reply after reload", out[:len(want.frame())], want.frame())
}
