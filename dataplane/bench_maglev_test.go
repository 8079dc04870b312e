package dataplane

import (
	"os"
	"testing"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Share of flows that change endpoint when 1 of 10 endpoints goes, over
// 100,000 random tuples per round (another sample and another endpoint
// each round): maglev against the rr/hash slot table side by side. The
// tuples are mapped with the datapath's own hash (hashTupleGo, checked
// against the loaded datapath by TestMaglevNodesAgreeOnNewFlows), so the
// figure does not depend on the machine's load.
func TestBenchMaglevFlowsMoved(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the datapath benchmark")
	}
	eps := maglevEndpoints(10)
	// build gives the table of an endpoint set (entries index the set).
	moved := func(round int, build func([]Endpoint) []uint8) float64 {
		gone := round % len(eps)
		after := append(append([]Endpoint(nil), eps[:gone]...), eps[gone+1:]...)
		tb, ta := build(eps), build(after)
		n := 0
		ts := randomTuples(100000, uint64(100+round))
		for _, tu := range ts {
			h := hashTupleGo(tu.src, vipV4, tu.sport, tu.dport, 17)
			if eps[tb[h%uint32(len(tb))]] != after[ta[h%uint32(len(ta))]] {
				n++
			}
		}
		return 100 * float64(n) / float64(len(ts))
	}
	maglev := func(eps []Endpoint) []uint8 { return maglevTable(eps, MaglevTableSize) }
	slot := func(eps []Endpoint) []uint8 { sel := selectionTable(eps); return sel.Slot[:] }
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{
		figure.One("maglev", func(r int) (float64, error) { return moved(r, maglev), nil }),
		figure.One("hash", func(r int) (float64, error) { return moved(r, slot), nil }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("maglev_flows_moved_pct", "%", figure.AtMost(11), "maglev"),
			s.Measured("hash_flows_moved_pct", "%", figure.Above(0), "hash"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
