package dataplane

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Per-packet cost of rewriting a multi-homed INIT-ACK (address parameters,
// their CRC32c update and the path entries), against tc_pass on the same
// frame. Each run starts from a fresh copy of the frame, so every run does
// the full rewrite.
func TestBenchSCTPInitAckRewrite(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	e := newEnv(t)
	e.mhNeighbours()
	lb1 := e.ifindex("lb1")
	a := mhFamily(false)
	vips := []netip.Addr{vip2V4, netip.MustParseAddr("10.9.2.1"), netip.MustParseAddr("10.9.3.1")}
	eps := []netip.Addr{a.e1, a.e2, a.e3, netip.MustParseAddr("10.1.0.52")}
	// Benchmark copies the frame in for every call: with repeat 1 each run
	// rewrites a fresh packet (it carries no ingress device, so the verdict
	// may be pass rather than redirect; never drop).
	per := func(prog *ebpf.Program, frame []byte) float64 {
		frame = toLoopback(frame)
		var total time.Duration
		const runs = 2000
		for i := 0; i < runs; i++ {
			ret, d, err := prog.Benchmark(frame, 1, nil)
			if err != nil || ret == actShot {
				t.Fatalf("run: %d, %v", ret, err)
			}
			total += d
		}
		return float64(total) / runs
	}
	// tc_ingress and tc_pass on the same frame in interleaved rounds, the
	// difference taken within each round.
	report := func(name string, frame []byte) {
		figs, err := figure.Interleave(benchPlan, []figure.Variant{
			figure.One("tc_ingress", func(int) (float64, error) { return per(e.d.objs.TcIngress, frame), nil }),
			figure.One("tc_pass", func(int) (float64, error) { return per(e.d.objs.TcPass, frame), nil }),
		}, func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{s.Added(name, "ns", figure.AtMost(5000), "tc_ingress", "tc_pass")}
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		figure.Report(t, figs...)
	}
	cases := []struct {
		name     string
		vips     int
		epAddrs  int  // addresses the endpoint lists (fewer than vips: the INIT-ACK grows)
		hostname bool // the client lists a host name (the INIT is compacted)
	}{
		{"bpf_sctp_initack_rewrite_2addrs_ns", 2, 2, false},
		{"bpf_sctp_initack_rewrite_4addrs_ns", 4, 4, false},
		{"bpf_sctp_initack_grow_1to4vips_ns", 4, 1, false},
		{"bpf_sctp_init_compact_ns", 2, 2, true},
	}
	for i, c := range cases {
		id, port := uint32(30+i), uint16(1000+i)
		e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: vips[:c.vips-1], PortStart: port, Proto: ProtoSCTP,
			Endpoints: []Endpoint{{Addr: a.e1, Port: 38412, Weight: 1}}})
		var cp, ep [][]byte
		for i := 0; i < c.vips; i++ {
			cp = append(cp, paramAddr(netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + i)})))
		}
		for i := 0; i < c.epAddrs; i++ {
			ep = append(ep, paramAddr(eps[i]))
		}
		if c.hostname {
			cp = append(cp, paramHostname("client.example"))
		}
		init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: 44000, dport: port,
			sctpChunks: sctpInitWith(1, 0x8888, cp...)}
		if ret, _ := e.run(init.frame()); ret != actRedirect {
			t.Fatalf("INIT verdict %d", ret)
		}
		if c.hostname {
			// A retransmitted INIT is rewritten (and compacted) again.
			report(c.name, init.frame())
			continue
		}
		ack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: a.e1, dst: a.c1, proto: 132, sport: 38412, dport: 44000, ttl: 64,
			sctpVtag: 0x8888, sctpChunks: sctpInitWith(2, 0x9999, append(ep, paramExt(0x80, 0xc1, 0x82, 0xc0))...)}
		frame := ack.frame()
		if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, frame); ret != actRedirect {
			t.Fatalf("INIT-ACK verdict %d", ret)
		}
		report(c.name, frame)
	}
}
