package figure

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A heap benchmark passes while the items stay under 1 GiB per million and
// fails, naming the items, when their median heap is over it; a failing
// fill fails it too.
func TestHeapFailsWhenTheMedianMissesTheBound(t *testing.T) {
	run := func(mib float64, fillErr error) *fakeT {
		ft := &fakeT{}
		Heap{Items: 1000, Item: "widgets", Total: "w_mib", PerItem: "w_bytes", PerItemNs: "w_ns",
			Fill: func() (float64, time.Duration, error) { return mib, time.Millisecond, fillErr }}.Report(ft)
		return ft
	}
	if ft := run(0.5, nil); len(ft.errs) != 0 { // bound 1.024 MiB for 1,000 items
		t.Errorf("0.5 MiB for 1,000 items failed: %v", ft.errs)
	}
	if ft := run(2, nil); len(ft.errs) == 0 || !strings.Contains(strings.Join(ft.errs, "\n"), "1000 widgets take 2 MiB") {
		t.Errorf("2 MiB for 1,000 items: errors %v, want one naming the widgets", ft.errs)
	}
	if ft := run(0.5, errors.New("fill failed")); len(ft.errs) == 0 {
		t.Errorf("a failing fill passed")
	}
}
