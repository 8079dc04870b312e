package figure

import (
	"fmt"
	"sort"
)

// Samples holds named series of one value per round, the rounds of every
// series aligned: value i of every series was measured in round i.
type Samples struct {
	series map[string][]float64
	rounds int
}

// NewSamples returns an empty set.
func NewSamples() *Samples { return &Samples{series: map[string][]float64{}} }

// AddRound appends one round: a value for every series. The first round
// fixes the series; a later round missing one, or adding one, is an error,
// because figures pair values by round.
func (s *Samples) AddRound(values map[string]float64) error {
	if s.series == nil {
		s.series = map[string][]float64{}
	}
	if s.rounds > 0 {
		if len(values) != len(s.series) {
			return fmt.Errorf("figure: round %d has series %v, earlier rounds %v", s.rounds, keys(values), s.Names())
		}
		for k := range values {
			if _, ok := s.series[k]; !ok {
				return fmt.Errorf("figure: round %d has series %q that earlier rounds lack", s.rounds, k)
			}
		}
	}
	for k, v := range values {
		s.series[k] = append(s.series[k], v)
	}
	s.rounds++
	return nil
}

// Rounds is the number of complete rounds.
func (s *Samples) Rounds() int { return s.rounds }

// Names lists the series, sorted.
func (s *Samples) Names() []string {
	return keys(s.series)
}

// Series returns a copy of a series' values by round (nil if unknown).
func (s *Samples) Series(name string) []float64 {
	return append([]float64(nil), s.series[name]...)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *Samples) get(names ...string) ([][]float64, error) {
	out := make([][]float64, len(names))
	for i, n := range names {
		v, ok := s.series[n]
		if !ok {
			return nil, fmt.Errorf("no series %q (have %v)", n, s.Names())
		}
		out[i] = v
	}
	return out, nil
}

// Measured is the series a as it was measured, round by round.
func (s *Samples) Measured(name, unit string, t Target, a string) Figure {
	f := Figure{Name: name, Unit: unit, Kind: Measured, Target: t}
	v, err := s.get(a)
	if err != nil {
		f.err = err
		return f
	}
	f.Rounds = append([]float64(nil), v[0]...)
	return f
}

// Ratio is a/b within each round (unit "ratio").
func (s *Samples) Ratio(name string, t Target, a, b string) Figure {
	return s.Combine(name, "ratio", Ratio, t, func(v []float64) float64 { return v[0] / v[1] }, a, b)
}

// Added is a-b within each round: what a adds over b.
func (s *Samples) Added(name, unit string, t Target, a, b string) Figure {
	return s.Combine(name, unit, Added, t, func(v []float64) float64 { return v[0] - v[1] }, a, b)
}

// Combine computes a figure of kind k from several series, round by round:
// fn gets the round's values of the named series in order. For figures
// that are neither a plain ratio nor a plain difference (a cost over a
// baseline, divided by another cost of the same round).
func (s *Samples) Combine(name, unit string, k Kind, t Target, fn func(round []float64) float64, series ...string) Figure {
	f := Figure{Name: name, Unit: unit, Kind: k, Target: t}
	v, err := s.get(series...)
	if err != nil {
		f.err = err
		return f
	}
	row := make([]float64, len(series))
	for r := 0; r < s.rounds; r++ {
		for i := range v {
			row[i] = v[i][r]
		}
		f.Rounds = append(f.Rounds, fn(row))
	}
	return f
}
