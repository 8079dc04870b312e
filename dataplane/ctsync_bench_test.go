package dataplane

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Cost of the conntrack change events (bpf/lib/ct_events.h): the same
// object loaded twice side by side, events on and off
// (Config.DisableConntrackEvents), new flows and established packets run
// on both in interleaved rounds, the ratio taken within each round.
func TestBenchConntrackEvents(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	const flowsPerRound = 2000
	e := newEnvConns(t, 1<<18)
	off := e.peerWith(Config{MaxConns: 1 << 18, DisableConntrackEvents: true})
	// The ring buffer is drained between rounds (outside the timing), so
	// every event of a round finds room, as with a live reader.
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	run(t, "ip", "-n", e.ns, "route", "add", "10.9.0.0/24", "via", clientV4.String())
	for _, x := range []*env{e, off} {
		x.upsert(Service{ID: 60, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 8080)})
		x.upsert(Service{ID: 61, VIP: vipV4, PortStart: 81, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 8080)})
	}
	syn := func(port uint16) []byte {
		return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 6, sport: port, dport: 80, ttl: 64, tcpFlags: tcpSYN}.frame()
	}
	// Every run a SYN of a flow not seen before (each round its own ports,
	// the same on both datapaths): the full new-flow path with its event.
	newFlows := func(prog *ebpf.Program, round int) float64 {
		var total time.Duration
		for i := 0; i < flowsPerRound; i++ {
			port := uint16(1024 + (round*flowsPerRound+i)%60000)
			ret, d, err := prog.Benchmark(syn(port), 1, nil)
			if err != nil || ret == actShot {
				t.Fatalf("new flow run: %d, %v", ret, err)
			}
			total += d
		}
		if _, err := rd.Poll(); err != nil {
			t.Fatalf("drain events: %v", err)
		}
		return float64(total) / flowsPerRound
	}
	figs, err := figure.Interleave(benchPlan, []figure.Variant{
		figure.One("events", func(r int) (float64, error) { return newFlows(e.d.objs.TcIngress, r), nil }),
		figure.One("no_events", func(r int) (float64, error) { return newFlows(off.d.objs.TcIngress, r), nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{s.Ratio("bpf_new_flow_ct_events_ratio", figure.AtMost(1.5), "events", "no_events")}
	})
	if err != nil {
		t.Fatalf("new flows: %v", err)
	}
	figure.Report(t, figs...)

	// Established packets (no state change): no event, the same cost.
	est := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 6, sport: 65000, dport: 81, tcpFlags: tcpACK}
	first := est
	for _, x := range []*env{e, off} {
		if ret, _ := x.run(first.frame()); ret != actRedirect {
			t.Fatalf("established flow setup verdict %d", ret)
		}
		mirrorFlow(t, x.d, ctKeyOfPkt(est))
	}
	est.ttl, est.tcpFlags, est.payload = 255, tcpACK|tcpPSH, make([]byte, 64)
	frame := est.frame()
	figs, err = figure.Interleave(benchPlan, []figure.Variant{
		figure.One("events", func(int) (float64, error) { return benchNs(t, e.d.objs.TcIngress, frame, actRedirect), nil }),
		figure.One("no_events", func(int) (float64, error) { return benchNs(t, off.d.objs.TcIngress, frame, actRedirect), nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{s.Ratio("bpf_established_ct_events_ratio", figure.AtMost(1.1), "events", "no_events")}
	})
	if err != nil {
		t.Fatalf("established: %v", err)
	}
	figure.Report(t, figs...)
	if n, err := e.d.ConntrackEventsLost(); err != nil || n != 0 {
		t.Fatalf("events lost during the benchmark: %d, %v", n, err)
	}
}
