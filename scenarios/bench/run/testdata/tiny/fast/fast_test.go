package fast

import (
	"os"
	"testing"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"tiny"
)

// Two variants, interleaved: "lb" costs 2 units a round and "base" 1, with
// a little alternating noise.
func TestBenchTinyRatio(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1")
	}
	tiny.Stamp(t)
	noise := func(r int) float64 { return 0.01 * float64(r%2) }
	figs, err := figure.Interleave(figure.Plan{}, []figure.Variant{
		figure.One("lb", func(r int) (float64, error) { return 2 + noise(r), nil }),
		figure.One("base", func(r int) (float64, error) { return 1 + noise(r+1), nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("tiny_lb_ns", "ns", figure.Above(0), "lb"),
			s.Ratio("tiny_lb_vs_base_ratio", figure.AtMost(3), "lb", "base"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

// TINY_SKIP=1 makes this one skip, which a benchmark run must not take
// silently.
func TestBenchTinySkippable(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" || os.Getenv("TINY_SKIP") == "1" {
		t.Skip("not measured here")
	}
	tiny.Stamp(t)
	figs, err := figure.Interleave(figure.Plan{}, []figure.Variant{
		figure.One("x", func(r int) (float64, error) { return 7, nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{s.Measured("tiny_skippable_s", "s", figure.Below(30), "x")}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
