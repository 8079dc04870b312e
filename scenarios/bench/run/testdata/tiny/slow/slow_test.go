package slow

import (
	"os"
	"testing"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"tiny"
)

// An added latency: positive, unless TINY_IMPOSSIBLE=1 makes the proxy
// look faster than the relay it adds work to (the figure must then fail
// the benchmark, not be printed).
func TestBenchTinyLatency(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1")
	}
	tiny.Stamp(t)
	added := 5.0
	if os.Getenv("TINY_IMPOSSIBLE") == "1" {
		added = -800
	}
	figs, err := figure.Interleave(figure.Plan{}, []figure.Variant{
		figure.One("relay", func(r int) (float64, error) { return 1000, nil }),
		figure.One("proxy", func(r int) (float64, error) { return 1000 + added, nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{s.Added("tiny_added_latency_us", "us", figure.Below(200), "proxy", "relay")}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
