package figure

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// MinRounds is the fewest rounds a figure may rest on: with 5 rounds the
// sample minimum and maximum bracket the median with about 94% confidence,
// whatever the distribution.
const MinRounds = 5

// Kind says what a figure is, which decides what values are impossible.
type Kind int

const (
	// Measured is a quantity measured directly (CPU ns per packet, MiB,
	// messages per second, seconds): every round finite and > 0.
	Measured Kind = iota
	// Ratio is A/B of two positive quantities measured in the same round:
	// every round finite and > 0.
	Ratio
	// Added is A-B of paired samples of the same round, the cost A adds
	// over B (latency, CPU per packet): every round finite, and the median
	// >= 0. A single round may come out negative (noise larger than the
	// effect shows in the spread), a negative median may not: adding work
	// cannot make a path cheaper, so the instrument failed to resolve it.
	Added
	// CostRatio is a ratio of two added costs of the same round (telcolb's
	// LB-side CPU per packet over nftables', each a paired difference):
	// every round finite, the median > 0. A round may come out <= 0 when
	// the noise exceeds the costs (the spread then says so), the median
	// may not.
	CostRatio
)

func (k Kind) String() string {
	switch k {
	case Measured:
		return "measured"
	case Ratio:
		return "ratio"
	case Added:
		return "added"
	case CostRatio:
		return "cost ratio"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Target is the goal a figure is held to: median <Op> Value.
type Target struct {
	Op    string // one of < <= > >=
	Value float64
}

// AtMost is median <= v.
func AtMost(v float64) Target { return Target{"<=", v} }

// AtLeast is median >= v.
func AtLeast(v float64) Target { return Target{">=", v} }

// Below is median < v.
func Below(v float64) Target { return Target{"<", v} }

// Above is median > v.
func Above(v float64) Target { return Target{">", v} }

// Met says whether v meets the target.
func (t Target) Met(v float64) (bool, error) {
	switch t.Op {
	case "<":
		return v < t.Value, nil
	case "<=":
		return v <= t.Value, nil
	case ">":
		return v > t.Value, nil
	case ">=":
		return v >= t.Value, nil
	}
	return false, fmt.Errorf("figure: target operator %q, want one of < <= > >=", t.Op)
}

// Figure is one reported number: a value per round, and what it is held to.
type Figure struct {
	Name   string
	Unit   string
	Kind   Kind
	Target Target
	// Rounds holds one value per round, in round order.
	Rounds []float64
	// err is set by the Samples constructors when the series cannot be
	// paired (a missing series, rounds misaligned).
	err error
}

// Stat is what a figure's rounds come to.
type Stat struct {
	Median, Min, Max float64
	N                int
	// CILo..CIHi is a distribution-free confidence interval of the median
	// (order statistics, at least 90%); Interleave runs more rounds until
	// it is narrow enough.
	CILo, CIHi float64
}

// Stat validates the rounds (see Kind) and summarises them. An error means
// the figure is impossible and must not be printed.
func (f Figure) Stat() (Stat, error) {
	if f.err != nil {
		return Stat{}, fmt.Errorf("figure %s: %w", f.Name, f.err)
	}
	if _, err := f.Target.Met(0); err != nil {
		return Stat{}, fmt.Errorf("figure %s: %w", f.Name, err)
	}
	if len(f.Rounds) < MinRounds {
		return Stat{}, fmt.Errorf("figure %s: %d rounds, need at least %d", f.Name, len(f.Rounds), MinRounds)
	}
	for i, v := range f.Rounds {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Stat{}, fmt.Errorf("figure %s: round %d is %v: impossible", f.Name, i, v)
		}
		if (f.Kind == Measured || f.Kind == Ratio) && v <= 0 {
			return Stat{}, fmt.Errorf("figure %s: round %d is %g, a %s must be > 0: impossible", f.Name, i, v, f.Kind)
		}
	}
	s := append([]float64(nil), f.Rounds...)
	sort.Float64s(s)
	st := Stat{Median: median(s), Min: s[0], Max: s[len(s)-1], N: len(s)}
	k := ciRank(len(s))
	st.CILo, st.CIHi = s[k], s[len(s)-1-k]
	if f.Kind == Added && st.Median < 0 {
		return st, fmt.Errorf("figure %s: median %g %s over %d rounds (spread %g..%g): a negative added cost is impossible, the noise exceeds the effect",
			f.Name, st.Median, f.Unit, st.N, st.Min, st.Max)
	}
	if f.Kind == CostRatio && st.Median <= 0 {
		return st, fmt.Errorf("figure %s: median %g over %d rounds (spread %g..%g): a ratio of costs <= 0 is impossible, the noise exceeds the costs",
			f.Name, st.Median, st.N, st.Min, st.Max)
	}
	return st, nil
}

// Line is the figure's BENCH line, or the reason it is impossible.
func (f Figure) Line() (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	return Result{Name: f.Name, Median: st.Median, Unit: f.Unit, Target: f.Target,
		Min: st.Min, Max: st.Max, Rounds: st.N, HasSpread: true}.String(), nil
}

// median of sorted s (mean of the middle two for an even count).
func median(s []float64) float64 {
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Median of xs without reordering them; empty input is an error.
func Median(xs []float64) (float64, error) {
	if len(xs) == 0 {
		return 0, errors.New("figure: median of no values")
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return median(s), nil
}

// ciRank returns the 0-based rank k such that sorted[k]..sorted[n-1-k]
// covers the median with at least 90% confidence (coverage is
// 1 - 2*P(Binomial(n, 1/2) <= k)): the largest k with P(B <= k) <= 5%.
// It is 0 (min..max) up to 7 rounds, 1 from 8, 2 from 11.
func ciRank(n int) int {
	k, cum := 0, 0.0
	for j := 0; j < n; j++ {
		cum += binomHalf(n, j)
		if cum > 0.05 {
			break
		}
		k = j
	}
	return min(k, (n-1)/2)
}

// binomHalf is P(Binomial(n, 1/2) = j), in logs to stay finite for large n.
func binomHalf(n, j int) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x + 1)); return v }
	return math.Exp(lg(n) - lg(j) - lg(n-j) - float64(n)*math.Ln2)
}

// FormatValue prints a figure's number: whole numbers from 100 up, two
// decimals from 1, three below (ratios near 0.1 keep their precision).
func FormatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
