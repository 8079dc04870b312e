package l4

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// The longest echo gap after the client's primary link is cut, the endpoint
// on usrsctp's default timers, with LB-assisted path failover and without
// (the same service with sctpPathFailover off), in interleaved rounds, each
// run on a fresh lab. Without the LB's help the client waits out the
// endpoint's T3 backoff; the run waits up to 45 s for it, which covers the
// backoff up to the endpoint marking the dead address unreachable (1+2+4+8+16 s).
// Both on the service's defaults (hold-down 1 s; the LB steers 200 ms after
// the client moved its traffic): the gap with the LB is mostly the usrsctp
// client's own failover (about 0.9 s with sctppeer.FastTimers).
func TestBenchSCTPPathFailoverGap(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmark")
	}
	gap := func(failover string, wait time.Duration) func(int) (float64, error) {
		return func(round int) (float64, error) {
			var ms int64
			var err error
			p := pathCut{c: mhCase{n: 2, mode: api.ModeDefault, host: 90}, failover: failover, wait: wait}
			ok := t.Run(fmt.Sprintf("round%d-%s", round, p.name()), func(t *testing.T) {
				r := p.run(t)
				if r.res.Echoed == 0 {
					err = fmt.Errorf("%s: no echo at all (%+v)", p.name(), r.res)
				}
				ms = r.res.MaxGapMs
			})
			if !ok && err == nil {
				err = fmt.Errorf("%s: run failed", p.name())
			}
			return float64(ms) / 1000, err
		}
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{
		figure.One("on", gap(api.SCTPPathFailoverOn, 0)),
		figure.One("off", gap(api.SCTPPathFailoverOff, 45*time.Second)),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("sctp_path_cut_gap_failover_s", "s", figure.Below(1), "on"),
			s.Measured("sctp_path_cut_gap_endpoint_timers_s", "s", figure.Above(0), "off"),
			s.Ratio("sctp_path_cut_gap_failover_vs_endpoint_timers_ratio", figure.Below(0.5), "on", "off"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
