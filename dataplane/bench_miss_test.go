package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Cost of a packet that is none of the LB's business (addressed to no VIP,
// part of no tracked flow) against tc_pass: every other packet crossing the
// node pays it. One BENCH line per protocol and family.
func TestBenchMissPerPacket(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	e := newEnv(t)
	// Services exist, so the maps are populated as in production.
	e.upsert(Service{ID: 300, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Mode: ModeDefault, Endpoints: testEndpoints(false, 2, 8080)})
	e.upsert(Service{ID: 301, VIP: vipV6, PortStart: 80, Proto: ProtoUDP, Mode: ModeDefault, Endpoints: testEndpoints(true, 2, 8080)})
	other4, other6 := netip.MustParseAddr("10.5.0.9"), netip.MustParseAddr("fd05::9")
	for _, c := range []struct {
		proto Proto
		v6    bool
	}{{ProtoTCP, false}, {ProtoUDP, false}, {ProtoTCP, true}, {ProtoUDP, true}} {
		p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: other4, proto: uint8(c.proto), sport: 40000, dport: 443, ttl: 64, payload: make([]byte, 64)}
		fam := "v4"
		if c.v6 {
			p.src, p.dst, fam = clientV6, other6, "v6"
		}
		if c.proto == ProtoTCP {
			p.tcpFlags = tcpACK | tcpPSH
		}
		f := p.frame()
		name := fmt.Sprintf("bpf_miss_%s_%s_ratio", protoNames[c.proto], fam)
		// tc_pass and tc_ingress on the same frame in interleaved rounds,
		// the ratio taken within each round.
		figs, err := figure.Interleave(benchPlan, []figure.Variant{
			figure.One("tc_pass", func(int) (float64, error) { return benchNs(t, e.d.objs.TcPass, f, actOK), nil }),
			figure.One("tc_ingress", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, f, actOK), nil }),
		}, func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{s.Ratio(name, figure.AtMost(1.5), "tc_ingress", "tc_pass")}
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		figure.Report(t, figs...)
	}
}
