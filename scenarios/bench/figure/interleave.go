package figure

import (
	"errors"
	"fmt"
	"math"
)

// Plan says how many rounds a benchmark runs.
type Plan struct {
	// MinRounds is the number of rounds always run (0 means 5; fewer than
	// 5 is an error).
	MinRounds int
	// MaxRounds bounds the extra rounds run while the spread demands (0
	// means 3*MinRounds).
	MaxRounds int
	// Tolerance: after MinRounds, rounds continue until every figure's
	// median confidence interval (see Stat) lies within
	// median ± Tolerance*|median| (0 means 0.05). A figure that is still
	// impossible also asks for another round: noise may be what made it so.
	Tolerance float64
}

func (p Plan) normalize() (Plan, error) {
	if p.MinRounds == 0 {
		p.MinRounds = MinRounds
	}
	if p.MinRounds < MinRounds {
		return p, fmt.Errorf("figure: plan of %d rounds, need at least %d", p.MinRounds, MinRounds)
	}
	if p.MaxRounds == 0 {
		p.MaxRounds = 3 * p.MinRounds
	}
	if p.MaxRounds < p.MinRounds {
		return p, fmt.Errorf("figure: plan MaxRounds %d < MinRounds %d", p.MaxRounds, p.MinRounds)
	}
	if p.Tolerance == 0 {
		p.Tolerance = 0.05
	}
	if !(p.Tolerance > 0) {
		return p, fmt.Errorf("figure: plan Tolerance %g, want > 0", p.Tolerance)
	}
	return p, nil
}

// Variant is one side of a comparison, measured once per round.
type Variant struct {
	Name string
	// Measure runs the variant once and returns its values by series name
	// (the same names every round). round counts from 0.
	Measure func(round int) (map[string]float64, error)
}

// One is a variant that yields one value, recorded as the series name.
func One(name string, measure func(round int) (float64, error)) Variant {
	return Variant{Name: name, Measure: func(round int) (map[string]float64, error) {
		v, err := measure(round)
		if err != nil {
			return nil, err
		}
		return map[string]float64{name: v}, nil
	}}
}

// Order returns the order the variants run in during a round: rotated by
// one each round (A B C, B C A, C A B, ...), so every variant runs first,
// in the middle and last equally often.
func Order[T any](vs []T, round int) []T {
	if len(vs) == 0 {
		return nil
	}
	k := round % len(vs)
	return append(append([]T(nil), vs[k:]...), vs[:k]...)
}

// Interleave runs every variant once per round, in rotating order, for at
// least plan.MinRounds rounds and more (up to MaxRounds) while a figure's
// confidence interval is wider than the tolerance. figures computes the
// benchmark's figures from the samples so far; its result after the last
// round is returned. Two variants may not yield the same series name.
//
// The figures returned may still be impossible: Report (or Figure.Line)
// refuses to print those.
func Interleave(plan Plan, variants []Variant, figures func(*Samples) []Figure) ([]Figure, error) {
	plan, err := plan.normalize()
	if err != nil {
		return nil, err
	}
	if len(variants) == 0 {
		return nil, errors.New("figure: no variants to measure")
	}
	s := NewSamples()
	for round := 0; round < plan.MaxRounds; round++ {
		values := map[string]float64{}
		from := map[string]string{}
		for _, v := range Order(variants, round) {
			got, err := v.Measure(round)
			if err != nil {
				return nil, fmt.Errorf("round %d: %s: %w", round, v.Name, err)
			}
			for k, x := range got {
				if prev, dup := from[k]; dup {
					return nil, fmt.Errorf("round %d: series %q from both %s and %s", round, k, prev, v.Name)
				}
				from[k] = v.Name
				values[k] = x
			}
		}
		if err := s.AddRound(values); err != nil {
			return nil, err
		}
		if s.Rounds() >= plan.MinRounds && settled(figures(s), plan.Tolerance) {
			break
		}
	}
	return figures(s), nil
}

// settled says whether every figure is possible and its median known to
// within tol (relative).
func settled(figs []Figure, tol float64) bool {
	for _, f := range figs {
		st, err := f.Stat()
		if err != nil {
			return false
		}
		half := math.Max(st.Median-st.CILo, st.CIHi-st.Median)
		if half > tol*math.Abs(st.Median) {
			return false
		}
	}
	return true
}
