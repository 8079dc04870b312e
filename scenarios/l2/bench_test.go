package l2

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// TestBenchL2Failover measures the L2 failover blackout when the owner's
// link goes down: a client probing the IPv4 VIP every 10 ms through three
// nodes; each round takes the owner's link down, measures the longest gap
// between answers until service is back on another node, then brings the
// link up and lets the owner take its VIP back. Detection is 3 x 100 ms
// heartbeats, so the figure is about 300 ms plus the gratuitous ARP's way.
func TestBenchL2Failover(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	x := Build(t, ctx, BuildL2Node(t, ctx), 3)
	for i := range x.Nodes {
		x.Start(ctx, i)
	}
	p, err := x.StartProber(x.VIP4, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if _, err := p.WaitAnswered(ctxT(ctx, 20*time.Second), time.Now()); err != nil {
		t.Fatal(err)
	}
	round := func(int) (float64, error) {
		time.Sleep(1500 * time.Millisecond) // the owner's burst and failback settled
		if err := x.WaitClientUses(ctx, x.VIP4, 0, 5*time.Second); err != nil {
			return 0, err
		}
		tFail := time.Now()
		if err := x.Nodes[0].IP(ctx, "link", "set", "eth0", "down"); err != nil {
			return 0, err
		}
		if _, err := p.WaitAnswered(ctxT(ctx, 15*time.Second), tFail.Add(50*time.Millisecond)); err != nil {
			return 0, fmt.Errorf("service did not resume: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
		gap := p.Blackout(tFail, time.Now())
		if err := x.Nodes[0].IP(ctx, "link", "set", "eth0", "up"); err != nil {
			return 0, err
		}
		if gap <= 0 {
			return 0, fmt.Errorf("no answers around the failure")
		}
		return float64(gap.Milliseconds()), nil
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 7}, []figure.Variant{figure.One("linkdown", round)},
		func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{s.Measured("l2_failover_blackout_link_down", "ms", figure.Below(500), "linkdown")}
		})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
