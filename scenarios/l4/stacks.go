package l4

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// GoroutineSummary condenses the last goroutine dump in a Go program's
// output (SIGQUIT, a crash) into one line per kind of goroutine: how many,
// their state and their first frame in telcolb's code (else the first
// outside the runtime, else the first), most numerous first, at most max lines. A dump runs to
// thousands of lines; what a hung shutdown waits on is in a few kinds.
// "" when the output has no dump.
func GoroutineSummary(out string, max int) string {
	start := strings.LastIndex(out, "\ngoroutine ")
	if start < 0 {
		return ""
	}
	// The dump's first goroutine: walk back over the earlier ones.
	for {
		prev := strings.LastIndex(out[:start], "\n\ngoroutine ")
		if prev < 0 || strings.Contains(out[prev:start], "\n\n\n") {
			break
		}
		start = prev + 1
	}
	counts := map[string]int{}
	for _, block := range strings.Split(out[start+1:], "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		state := lines[0]
		if i, j := strings.Index(state, "["), strings.LastIndex(state, "]"); i >= 0 && j > i {
			state = state[i+1 : j]
			// "chan receive, 3 minutes": the kind, not how long.
			state, _, _ = strings.Cut(state, ",")
		}
		frame := ""
		for k := 1; k < len(lines); k += 2 {
			f := strings.TrimSpace(lines[k])
			if f == "" || strings.HasPrefix(f, "created by ") {
				continue
			}
			if frame == "" || (strings.HasPrefix(frame, "runtime.") && !strings.HasPrefix(f, "runtime.")) {
				frame = f
			}
			if strings.Contains(f, "telcolb/telcolb/") {
				frame = f
				break
			}
		}
		// Arguments differ per goroutine: the function only.
		if i := strings.LastIndex(frame, "("); i > 0 && strings.HasSuffix(frame, ")") {
			frame = frame[:i]
		}
		counts["["+state+"] "+frame]++
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	for i, k := range kinds {
		if i == max {
			fmt.Fprintf(&b, "... %d kinds more\n", len(kinds)-max)
			break
		}
		fmt.Fprintf(&b, "%4d %s\n", counts[k], k)
	}
	return b.String()
}
