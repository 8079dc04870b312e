package figure

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Summary is the table printed at the end of `make bench`: every figure of
// this run with its spread, its target and whether the median meets it,
// and its change against the same figure of the previous run (prev, nil
// when there was none). A previous value inside this run's spread is
// marked "within spread": the change is not distinguishable from noise.
// Figures of the previous run missing from this one are listed as such.
func Summary(cur, prev []Result) string {
	old := map[string]Result{}
	for _, p := range prev {
		old[p.Name] = p
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tmedian\tspread\trounds\ttarget\tmet\tprevious\tchange")
	met, seen := 0, map[string]bool{}
	for _, r := range cur {
		seen[r.Name] = true
		spread, rounds := "-", "-"
		if r.HasSpread {
			spread = FormatValue(r.Min) + ".." + FormatValue(r.Max)
			rounds = fmt.Sprint(r.Rounds)
		}
		verdict := "MISSED"
		if r.Met() {
			verdict = "met"
			met++
		}
		previous, change := "-", "-"
		if p, ok := old[r.Name]; ok {
			previous = FormatValue(p.Median)
			change = Change(p.Median, r.Median)
			if r.HasSpread && p.Median >= r.Min && p.Median <= r.Max {
				change += " (within spread)"
			}
		}
		fmt.Fprintf(w, "%s\t%s %s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", r.Name, FormatValue(r.Median), r.Unit,
			spread, rounds, r.Target.Op, targetValue(r.Target), verdict, previous, change)
	}
	for _, p := range prev {
		if !seen[p.Name] {
			fmt.Fprintf(w, "%s\t-\t-\t-\t%s %s\tNOT MEASURED\t%s\t-\n", p.Name, p.Target.Op, targetValue(p.Target), FormatValue(p.Median))
		}
	}
	w.Flush()
	fmt.Fprintf(&b, "%d of %d figures meet their target", met, len(cur))
	if prev == nil {
		b.WriteString(" (no previous run to compare with)")
	}
	b.WriteString("\n")
	return b.String()
}

// Change is the relative change from prev to cur, "+12.5%"; a previous
// value of 0 gives the absolute change.
func Change(prev, cur float64) string {
	if prev == 0 {
		return fmt.Sprintf("%+g", cur-prev)
	}
	return fmt.Sprintf("%+.1f%%", 100*(cur-prev)/abs(prev))
}

func targetValue(t Target) string { return strconv.FormatFloat(t.Value, 'f', -1, 64) }

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}
