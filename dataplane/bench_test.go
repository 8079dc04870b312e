package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Per-packet cost of the established-flow path against tc_pass, through
// BPF_PROG_TEST_RUN with kernel-reported ns.
//
// BPF_PROG_TEST_RUN with Repeat re-runs the program on the same skb, so a
// rewritten packet would stop matching its flow after the first run. The
// benchmark therefore installs a mirror conntrack entry for the rewritten
// tuple that translates it back: every run does the full lookup, rewrite and
// FIB forward. The TTL still drops by one per run, so each syscall repeats
// benchRepeat (< 255) times from a fresh TTL-255 frame and the rounds add up
// to benchRuns (>= 100000) runs per program and round.
const (
	benchRepeat = 250
	benchRuns   = 100000
)

// benchPlan: rounds are cheap (tens of ms), so the median is pinned down to
// 3% when the machine lets it.
var benchPlan = figure.Plan{MinRounds: 7, MaxRounds: 21, Tolerance: 0.03}

// toLoopback readdresses a unicast frame to the all-zero MAC of the
// loopback device, which a test run without a context takes as its ingress
// device: any other unicast destination makes the frame PACKET_OTHERHOST,
// which tc_ingress passes before any work (the benchmark would measure
// nothing).
func toLoopback(frame []byte) []byte {
	if len(frame) < 6 || frame[0]&1 != 0 {
		return frame
	}
	return append(make([]byte, 6), frame[6:]...)
}

func benchNs(t *testing.T, prog *ebpf.Program, frame []byte, wantRet uint32) float64 {
	t.Helper()
	frame = toLoopback(frame)
	var total time.Duration
	calls := benchRuns / benchRepeat
	for i := 0; i < calls; i++ {
		ret, d, err := prog.Benchmark(frame, benchRepeat, nil)
		if err != nil {
			t.Fatalf("benchmark: %v", err)
		}
		if ret != wantRet {
			t.Fatalf("benchmark verdict %d, want %d", ret, wantRet)
		}
		total += d
	}
	return float64(total) / float64(calls)
}

// mirrorFlow adds the entry that maps the rewritten tuple of the flow keyed
// orig back to orig (see the comment above).
func mirrorFlow(t *testing.T, d *Datapath, orig bpf.LbCtKey) {
	t.Helper()
	var v bpf.LbCtVal
	if err := d.ct().lookup(&orig, &v); err != nil {
		t.Fatalf("lookup bench flow: %v", err)
	}
	mk := bpf.LbCtKey{Src: v.NatSrc, Dst: v.NatDst, Sport: v.NatSport, Dport: v.NatDport, Proto: orig.Proto}
	mv := v
	mv.NatSrc, mv.NatDst, mv.NatSport, mv.NatDport = orig.Src, orig.Dst, orig.Sport, orig.Dport
	if err := d.ct().put(&mk, &mv); err != nil {
		t.Fatalf("mirror entry: %v", err)
	}
}

// setupBenchFlow makes svc in x's datapath, sends first through
// tc_ingress (it must be redirected) and adds the flow's mirror entry:
// est's frame, TTL 255, is then an established packet for benchRepeat runs.
func setupBenchFlow(t *testing.T, x *env, svc Service, first, est pkt) []byte {
	t.Helper()
	x.upsert(svc)
	if ret, _ := x.run(first.frame()); ret != actRedirect {
		t.Fatalf("service %d: bench flow setup verdict %d", svc.ID, ret)
	}
	mirrorFlow(t, x.d, ctKeyOfPkt(first))
	est.ttl = 255
	return est.frame()
}

// benchFlow is the per-packet benchmark's flow of proto from client to
// vip's port dport: the packet that sets it up (an ACK for TCP, so no
// handshake is needed; a DATA chunk for SCTP) and an established one with
// 64 bytes of payload.
func benchFlow(proto Proto, client, vip netip.Addr, dport uint16) (first, est pkt) {
	first = pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(proto), sport: 33000, dport: dport}
	est = first
	switch proto {
	case ProtoTCP:
		first.tcpFlags = tcpACK
		est.tcpFlags = tcpACK | tcpPSH
		est.payload = make([]byte, 64)
	case ProtoUDP:
		est.payload = make([]byte, 64)
	case ProtoSCTP:
		first.sctpChunks = sctpData(64)
		est.sctpChunks = sctpData(64)
	}
	return first, est
}

func TestBenchPerPacket(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	e := newEnv(t)
	// The mirror entries send every other run toward the VIP: give it a route.
	run(t, "ip", "-n", e.ns, "route", "add", "10.9.0.0/24", "via", clientV4.String())
	run(t, "ip", "-n", e.ns, "route", "add", "fd09::/64", "via", clientV6.String())
	id := uint32(100)
	setup := func(proto Proto, v6 bool, mode Mode, epPort uint16, first, est pkt) []byte {
		id++
		vip := vipV4
		if v6 {
			vip = vipV6
		}
		return setupBenchFlow(t, e, Service{ID: id, VIP: vip, PortStart: first.dport, Proto: proto, Mode: mode, Endpoints: testEndpoints(v6, 1, epPort)}, first, est)
	}
	type item struct {
		name  string
		frame []byte
		// The target: 3x tc_pass, 4x for SCTP (its CRC32c update).
		target float64
	}
	var items []item
	for _, proto := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
		for _, v6 := range []bool{false, true} {
			client, vip, fam := clientV4, vipV4, "v4"
			if v6 {
				client, vip, fam = clientV6, vipV6, "v6"
			}
			first, est := benchFlow(proto, client, vip, uint16(200+id))
			f := setup(proto, v6, ModeDefault, 8080, first, est)
			target := 3.0
			if proto == ProtoSCTP {
				target = 4
			}
			items = append(items, item{fmt.Sprintf("bpf_established_%s_%s_ratio", protoNames[proto], fam), f, target})
		}
	}
	// NAT64 (IPv6 VIP, IPv4 endpoint): the mirror entry translates the IPv4
	// tuple back to IPv6, so runs alternate 6->4 and 4->6 and the figure is
	// the mean of both directions.
	for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
		id++
		first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: uint8(proto), sport: 33001, dport: uint16(200 + id)}
		if proto == ProtoTCP {
			first.tcpFlags = tcpACK
		}
		est := first
		est.payload = make([]byte, 64)
		if proto == ProtoTCP {
			est.tcpFlags = tcpACK | tcpPSH
		}
		f := setupBenchFlow(t, e, Service{ID: id, VIP: vipV6, PortStart: first.dport, Proto: proto, Mode: ModeDefault, Endpoints: testEndpoints(false, 1, 8080)}, first, est)
		items = append(items, item{fmt.Sprintf("bpf_established_nat64_%s_ratio", protoNames[proto]), f, 3})
	}
	// Each item: tc_pass, tc_floor and tc_ingress on the same frame in
	// interleaved rounds, the ratios taken within each round. tc_floor
	// (bpf/lb.c) parses, finds the flow and redirects, no more: its ratio
	// is the part of the figure no rewrite makes cheaper.
	for _, it := range items {
		if o := os.Getenv("TELCOLB_BENCH_ONLY"); o != "" && !strings.Contains(it.name, o) {
			continue
		}
		floorName := strings.Replace(it.name, "bpf_established_", "bpf_established_floor_", 1)
		var samples *figure.Samples
		figs, err := figure.Interleave(benchPlan, []figure.Variant{
			figure.One("tc_pass", func(int) (float64, error) { return benchNs(t, e.d.objs.TcPass, it.frame, actOK), nil }),
			figure.One("tc_floor", func(int) (float64, error) { return benchNs(t, e.d.objs.TcFloor, it.frame, actRedirect), nil }),
			figure.One("tc_ingress", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, it.frame, actRedirect), nil }),
		}, func(s *figure.Samples) []figure.Figure {
			samples = s
			return []figure.Figure{
				s.Ratio(it.name, figure.AtMost(it.target), "tc_ingress", "tc_pass"),
				s.Ratio(floorName, figure.Above(0), "tc_floor", "tc_pass"),
			}
		})
		if err != nil {
			t.Fatalf("%s: %v", it.name, err)
		}
		// Each side in ns, so a moved ratio says which side moved (the
		// datapath, or the kernel's fixed cost of a test run).
		pass, _ := figure.Median(samples.Series("tc_pass"))
		floor, _ := figure.Median(samples.Series("tc_floor"))
		ing, _ := figure.Median(samples.Series("tc_ingress"))
		t.Logf("%s: tc_pass %.1f ns, tc_floor %.1f ns, tc_ingress %.1f ns (medians of %d rounds)", it.name, pass, floor, ing, samples.Rounds())
		figure.Report(t, figs...)
	}

	// What the checksum helpers cost against the direct writes (kernels
	// with bpf_cast_to_kern_ctx, l4csum.go): the same flow in this datapath
	// and in one loaded with HelperL4Csum, interleaved in each round.
	if os.Getenv("TELCOLB_BENCH_ONLY") != "" {
		return // one per-packet figure asked for (profiling)
	}
	if e.d.DirectL4Csum() {
		h := e.peerWith(Config{MaxConns: 4096, HelperL4Csum: true})
		for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
			for _, v6 := range []bool{false, true} {
				id++
				client, vip, fam := clientV4, vipV4, "v4"
				if v6 {
					client, vip, fam = clientV6, vipV6, "v6"
				}
				first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(proto), sport: 35000, dport: uint16(200 + id)}
				est := first
				est.payload = make([]byte, 64)
				if proto == ProtoTCP {
					first.tcpFlags = tcpACK
					est.tcpFlags = tcpACK | tcpPSH
				}
				var frame []byte // the same in both datapaths
				for _, x := range []*env{e, h} {
					frame = setupBenchFlow(t, x, Service{ID: id, VIP: vip, PortStart: first.dport, Proto: proto, Mode: ModeDefault, Endpoints: testEndpoints(v6, 1, 8080)}, first, est)
				}
				figs, err := figure.Interleave(benchPlan, []figure.Variant{
					figure.One("direct", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, frame, actRedirect), nil }),
					figure.One("helpers", func(int) (float64, error) { return benchNs(t, h.d.objs.TcIngress, frame, actRedirect), nil }),
				}, func(s *figure.Samples) []figure.Figure {
					return []figure.Figure{s.Added(fmt.Sprintf("bpf_l4csum_helpers_%s_%s_ns", protoNames[proto], fam), "ns", figure.Above(0), "helpers", "direct")}
				})
				if err != nil {
					t.Fatalf("checksum %s %s: %v", protoNames[proto], fam, err)
				}
				figure.Report(t, figs...)
			}
		}
	}

	// SCTP CRC32c cost: a fullnat flow (ports rewritten, incremental CRC)
	// minus a default-mode flow with unchanged ports (CRC untouched), same
	// size, the difference taken within each round.
	for _, size := range []int{100, 500, 1400} {
		data := (size-14-20-12)&^3 - 16 // chunks are padded to 4 bytes: nearest size below
		mk := func(mode Mode, epPort, dport uint16) []byte {
			first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 34000, dport: dport, sctpVtag: 7, sctpChunks: sctpData(data)}
			return setup(ProtoSCTP, false, mode, epPort, first, first)
		}
		withCRC := mk(ModeFullNAT, 9000, uint16(3000+size))
		noCRC := mk(ModeDefault, uint16(4000+size), uint16(4000+size))
		if len(withCRC) > size || len(withCRC) < size-3 {
			t.Fatalf("frame size %d, want about %d", len(withCRC), size)
		}
		figs, err := figure.Interleave(benchPlan, []figure.Variant{
			figure.One("crc", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, withCRC, actRedirect), nil }),
			figure.One("no_crc", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, noCRC, actRedirect), nil }),
		}, func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{s.Added(fmt.Sprintf("bpf_sctp_crc_%d_ns", size), "ns", figure.AtMost(300), "crc", "no_crc")}
		})
		if err != nil {
			t.Fatalf("crc %d: %v", size, err)
		}
		figure.Report(t, figs...)
	}
}
