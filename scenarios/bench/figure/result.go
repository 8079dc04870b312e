package figure

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Result is one BENCH line as printed (or as read back from a previous
// run's .cache/bench.txt).
type Result struct {
	Name   string
	Median float64
	Unit   string
	Target Target
	// Min, Max and Rounds are only known for lines in the current format
	// (HasSpread); lines written before the harness carry one value.
	Min, Max  float64
	Rounds    int
	HasSpread bool
}

// String formats the line:
//
//	BENCH <name> <median> <unit> target <op> <value> spread <min>..<max> rounds <n>
func (r Result) String() string {
	s := fmt.Sprintf("BENCH %s %s %s target %s %s", r.Name, FormatValue(r.Median), r.Unit,
		r.Target.Op, strconv.FormatFloat(r.Target.Value, 'f', -1, 64))
	if r.HasSpread {
		s += fmt.Sprintf(" spread %s..%s rounds %d", FormatValue(r.Min), FormatValue(r.Max), r.Rounds)
	}
	return s
}

// Met says whether the median meets the target.
func (r Result) Met() bool {
	ok, _ := r.Target.Met(r.Median)
	return ok
}

// ParseLine reads a BENCH line in the current format, or the older
// "BENCH <name> <value> <unit> target <op> <value>" one.
func ParseLine(line string) (Result, error) {
	f := strings.Fields(line)
	if len(f) != 7 && len(f) != 11 {
		return Result{}, fmt.Errorf("figure: BENCH line %q: %d fields, want 7 or 11", line, len(f))
	}
	if f[0] != "BENCH" || f[4] != "target" {
		return Result{}, fmt.Errorf("figure: BENCH line %q: want BENCH <name> <value> <unit> target ...", line)
	}
	num := func(what, s string) (float64, error) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("figure: BENCH line %q: %s %q is not a finite number", line, what, s)
		}
		return v, nil
	}
	r := Result{Name: f[1], Unit: f[3], Target: Target{Op: f[5]}}
	var err error
	if r.Median, err = num("value", f[2]); err != nil {
		return Result{}, err
	}
	if _, err := r.Target.Met(0); err != nil {
		return Result{}, fmt.Errorf("figure: BENCH line %q: %w", line, err)
	}
	if r.Target.Value, err = num("target", f[6]); err != nil {
		return Result{}, err
	}
	if len(f) == 7 {
		return r, nil
	}
	if f[7] != "spread" || f[9] != "rounds" {
		return Result{}, fmt.Errorf("figure: BENCH line %q: want ... spread <min>..<max> rounds <n>", line)
	}
	lo, hi, ok := strings.Cut(f[8], "..")
	if !ok {
		return Result{}, fmt.Errorf("figure: BENCH line %q: spread %q is not <min>..<max>", line, f[8])
	}
	if r.Min, err = num("spread min", lo); err != nil {
		return Result{}, err
	}
	if r.Max, err = num("spread max", hi); err != nil {
		return Result{}, err
	}
	n, err := strconv.Atoi(f[10])
	if err != nil || n < 1 {
		return Result{}, fmt.Errorf("figure: BENCH line %q: rounds %q is not a positive count", line, f[10])
	}
	if r.Min > r.Median || r.Median > r.Max {
		return Result{}, fmt.Errorf("figure: BENCH line %q: median outside its spread", line)
	}
	r.Rounds, r.HasSpread = n, true
	return r, nil
}

// ParseLines reads every line starting with "BENCH " in text; other lines
// are ignored, malformed BENCH lines are errors.
func ParseLines(text string) ([]Result, error) {
	var out []Result
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "BENCH ") {
			continue
		}
		r, err := ParseLine(l)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
