package l4

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// SCTP DATA throughput (usrsctp echo, both directions) through the LB's VIP
// against the same endpoint reached directly (the lb namespace forwarding
// it as plain routed traffic), alternating rounds, medians compared.
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
	var lb, direct []float64
	for r := 0; r < 5; r++ {
		lb = append(lb, run(c.vips()[0]))
		direct = append(direct, run(c.endpointAddrs(e)[0]))
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	t.Logf("through the LB %v Mbit/s, direct %v Mbit/s", lb, direct)
	fmt.Printf("BENCH sctp_throughput_lb_mbps %.0f Mbit/s target >= 0\n", med(lb))
	fmt.Printf("BENCH sctp_throughput_direct_mbps %.0f Mbit/s target >= 0\n", med(direct))
	fmt.Printf("BENCH sctp_throughput_lb_vs_direct_ratio %.2f x target >= 0.9\n", med(lb)/med(direct))
}
