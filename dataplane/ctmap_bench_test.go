package dataplane

import (
	"os"
	"testing"
	"time"

	"github.com/telcolb/telcolb/bpf"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// A whole-table walk of conntrack (the ageing round does two under the
// datapath's lock, the HA refresh and bulk resync one each): the batched
// walk of ctMaps.each against the per-entry Iterate it replaced, and an
// ageing round against the walk, on the same 20,000 entries, in
// interleaved rounds.
func TestBenchConntrackWalk(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	const entries = 20_000
	e := newEnvConns(t, 1<<16)
	fillConntrack(t, e.d, entries)
	timed := func(walk func(count *int) error) (float64, error) {
		n := 0
		start := time.Now()
		if err := walk(&n); err != nil {
			return 0, err
		}
		d := time.Since(start)
		if n < entries {
			t.Fatalf("walk saw %d entries, want at least %d", n, entries)
		}
		return float64(d.Microseconds()) / 1000, nil
	}
	batch := func(count *int) error {
		return e.d.ct().each(func(bpf.LbCtKey, *bpf.LbCtVal) { *count++ })
	}
	iterate := func(count *int) error {
		var (
			k4 bpf.LbCtKey4
			k  bpf.LbCtKey
			v  bpf.LbCtVal
		)
		it := e.d.objs.Conntrack4.Iterate()
		for it.Next(&k4, &v) {
			*count++
		}
		if err := it.Err(); err != nil {
			return err
		}
		it = e.d.objs.Conntrack.Iterate()
		for it.Next(&k, &v) {
			*count++
		}
		return it.Err()
	}
	// An ageing round that expires nothing: its walks and the snapshot it
	// judges from, the part of its cost every round pays.
	ageing := func(count *int) error {
		_, err := e.d.ageOnce(e.d.now())
		*count = entries
		return err
	}
	figs, err := figure.Interleave(benchPlan, []figure.Variant{
		figure.One("batch", func(int) (float64, error) { return timed(batch) }),
		figure.One("iterate", func(int) (float64, error) { return timed(iterate) }),
		figure.One("ageing", func(int) (float64, error) { return timed(ageing) }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("conntrack_walk_20k_entries_ms", "ms", figure.Above(0), "batch"),
			s.Ratio("conntrack_walk_batch_vs_iterate_ratio", figure.AtMost(0.5), "batch", "iterate"),
			// One walk for the snapshot, one for the active counts, and
			// the snapshot's map: about 4 walks' time.
			s.Ratio("conntrack_ageing_round_vs_walk_ratio", figure.AtMost(5), "ageing", "batch"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
