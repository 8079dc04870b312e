// Package tiny holds two tiny benchmarks the driver's test runs from a
// fresh directory: they record when they ran (to prove the driver runs
// them one at a time) and report through the figure harness.
package tiny

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Stamp records the benchmark's start now and its end at cleanup in
// $TINY_LOG/<name> as "<start ns> <end ns>", and makes it last at least
// 300 ms so two benchmarks run at once would overlap.
func Stamp(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() {
		time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
		line := fmt.Sprintf("%d %d\n", start.UnixNano(), time.Now().UnixNano())
		if err := os.WriteFile(filepath.Join(os.Getenv("TINY_LOG"), t.Name()), []byte(line), 0o644); err != nil {
			t.Error(err)
		}
	})
}
