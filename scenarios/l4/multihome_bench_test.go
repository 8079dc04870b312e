package l4

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// SCTP DATA throughput (usrsctp echo, both directions) through the LB's VIP
// against the same endpoint reached directly (the lb namespace forwarding
// it as plain routed traffic), interleaved rounds, the ratio taken within
// each round.
func TestBenchSCTPThroughputThroughTheLB(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmark")
	}
	e := upLinks(t)
	ctx := context.Background()
	c := mhCase{n: 2, mode: api.ModeDefault, host: 60}
	c.apply(t, e)
	// Unpaced: the client sends as fast as the association takes messages
	// (SCTP flow and congestion control), so the figure is where the path
	// saturates, not an offered load.
	const count, size = 3000, 30000
	run := func(dst netip.Addr) float64 {
		res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
			Bind: c.clientAddrs(e)[:1], Connect: []netip.Addr{dst}, Port: mhPort,
			Count: count, Size: size, Unpaced: true, Streams: 4, PPID: 60, Wait: 60 * time.Second})
		if err != nil || !res.OK() || res.ElapsedMs <= 0 {
			t.Fatalf("client to %s: %v (%+v)", dst, err, res)
		}
		// Echoed bytes both ways, in Mbit/s.
		return float64(2*count*size*8) / (float64(res.ElapsedMs) / 1000) / 1e6
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 9}, []figure.Variant{
		figure.One("lb", func(int) (float64, error) { return run(c.vips()[0]), nil }),
		figure.One("direct", func(int) (float64, error) { return run(c.endpointAddrs(e)[0]), nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("sctp_throughput_lb_mbps", "Mbit/s", figure.Above(0), "lb"),
			s.Measured("sctp_throughput_direct_mbps", "Mbit/s", figure.Above(0), "direct"),
			s.Ratio("sctp_throughput_lb_vs_direct_ratio", figure.AtLeast(0.9), "lb", "direct"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
