package figure

import (
	"runtime"
	"time"
)

// Heap is a memory benchmark: n items of some state (UE contexts,
// Session-Id bindings, PFCP sessions) held in a fresh machine each round.
// One variant, so nothing is interleaved, but every round starts from a new
// machine and the spread shows what the heap figure is worth.
type Heap struct {
	Items int
	// Item names the items in the failure message ("UE contexts").
	Item string
	// The three figures: the heap the items take (target below 1 GiB
	// per million), the heap per item (below 1,073 bytes: the same bound)
	// and the steps' time per item.
	Total, PerItem, PerItemNs string
	// Fill builds a fresh machine holding Items items and returns the
	// heap it holds (MiB above what the process held before, HeapMiB)
	// and the time its steps took.
	Fill func() (mib float64, elapsed time.Duration, err error)
}

// HeapMiB is the live heap after two collections (the second also frees
// what the first's finalizers released).
func HeapMiB() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// Report runs 5 rounds, prints the three figures and fails t when the
// total's median misses its target: the heap bound is a requirement of the
// issues, not only a figure.
func (h Heap) Report(t Reporter) {
	t.Helper()
	n := float64(h.Items)
	figs, err := Interleave(Plan{MinRounds: 5, MaxRounds: 5}, []Variant{{
		Name: h.Item,
		Measure: func(int) (map[string]float64, error) {
			mib, elapsed, err := h.Fill()
			if err != nil {
				return nil, err
			}
			return map[string]float64{"mib": mib, "bytes": mib * (1 << 20) / n, "ns_per": float64(elapsed.Nanoseconds()) / n}, nil
		},
	}}, func(s *Samples) []Figure {
		return []Figure{
			s.Measured(h.Total, "MiB", Below(1024*n/1e6), "mib"),
			s.Measured(h.PerItem, "bytes", Below(1073), "bytes"),
			s.Measured(h.PerItemNs, "ns", Above(0), "ns_per"),
		}
	})
	if err != nil {
		t.Errorf("%s: %v", h.Total, err)
		return
	}
	Report(t, figs...)
	if st, err := figs[0].Stat(); err == nil {
		if met, _ := figs[0].Target.Met(st.Median); !met {
			t.Errorf("%d %s take %.0f MiB (median), target %s %g", h.Items, h.Item, st.Median, figs[0].Target.Op, figs[0].Target.Value)
		}
	}
}
