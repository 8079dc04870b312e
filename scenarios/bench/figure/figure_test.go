package figure

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestStatIsMedianWithMinAndMaxOfTheRounds(t *testing.T) {
	cases := []struct {
		name           string
		rounds         []float64
		med, min, max  float64
		ciLo, ciHi     float64
		kind           Kind
		impossibleText string
	}{
		{name: "odd count", rounds: []float64{5, 1, 3, 9, 7}, med: 5, min: 1, max: 9, ciLo: 1, ciHi: 9},
		{name: "even count is the mean of the middle two", rounds: []float64{4, 1, 3, 2, 6, 5}, med: 3.5, min: 1, max: 6, ciLo: 1, ciHi: 6},
		{name: "8 rounds: the interval drops the extremes", rounds: []float64{8, 1, 2, 3, 4, 5, 6, 7}, med: 4.5, min: 1, max: 8, ciLo: 2, ciHi: 7},
		{name: "added: one negative round is noise, shown in the spread", kind: Added, rounds: []float64{-2, 10, 12, 11, 9}, med: 10, min: -2, max: 12, ciLo: -2, ciHi: 12},
		{name: "cost ratio: one negative round is noise too", kind: CostRatio, rounds: []float64{0.49, 0.6, -0.98, 0.2, 0.3}, med: 0.3, min: -0.98, max: 0.6, ciLo: -0.98, ciHi: 0.6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]float64(nil), c.rounds...)
			st, err := Figure{Name: "x", Unit: "ns", Kind: c.kind, Target: Above(0), Rounds: in}.Stat()
			if err != nil {
				t.Fatal(err)
			}
			want := Stat{Median: c.med, Min: c.min, Max: c.max, N: len(c.rounds), CILo: c.ciLo, CIHi: c.ciHi}
			if st != want {
				t.Errorf("Stat = %+v, want %+v", st, want)
			}
			for i := range in {
				if in[i] != c.rounds[i] {
					t.Fatalf("Stat reordered the rounds: %v", in)
				}
			}
		})
	}
}

func TestImpossibleFiguresAreRejected(t *testing.T) {
	five := func(vs ...float64) []float64 { return append(vs, []float64{1, 1, 1, 1, 1}[:5-len(vs)]...) }
	cases := []struct {
		name string
		fig  Figure
		want string
	}{
		{"NaN round", Figure{Kind: Measured, Rounds: five(math.NaN())}, "NaN"},
		{"infinite round", Figure{Kind: Added, Rounds: five(math.Inf(1))}, "+Inf"},
		{"ratio of zero", Figure{Kind: Ratio, Rounds: five(0)}, "> 0"},
		{"negative ratio in one round", Figure{Kind: Ratio, Rounds: five(2, -0.5)}, "> 0"},
		{"measured zero", Figure{Kind: Measured, Rounds: five(0)}, "> 0"},
		{"negative added latency", Figure{Kind: Added, Rounds: []float64{-836, -900, 12, -40, -3}}, "negative added"},
		{"cost ratio of zero", Figure{Kind: CostRatio, Rounds: []float64{-0.5, 0, 0, 0.3, 0.2}}, "ratio of costs <= 0"},
		{"cost ratio NaN round", Figure{Kind: CostRatio, Rounds: five(math.NaN(), 0.2, 0.3)}, "NaN"},
		{"too few rounds", Figure{Kind: Measured, Rounds: []float64{1, 2, 3, 4}}, "at least 5"},
		{"no rounds", Figure{Kind: Ratio}, "at least 5"},
		{"unknown target operator", Figure{Kind: Measured, Rounds: five(), Target: Target{Op: "=="}}, "operator"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fig.Name, c.fig.Unit = "fig", "us"
			if c.fig.Target.Op == "" {
				c.fig.Target = AtMost(10)
			}
			_, err := c.fig.Stat()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Stat error %v, want one mentioning %q", err, c.want)
			}
			if line, err := c.fig.Line(); err == nil || line != "" {
				t.Fatalf("Line = %q, %v: an impossible figure must not be printed", line, err)
			}
		})
	}
}

// The figure of a difference is the median of the per-round differences
// of paired samples, not the difference of the two medians: here the
// rounds drift (the machine got busier and quieter) and B's median round
// is not A's.
func TestAddedPairsSamplesOfTheSameRound(t *testing.T) {
	s := NewSamples()
	b := []float64{100, 10, 50, 30, 70}
	a := []float64{104, 16, 53, 37, 72}
	for i := range a {
		if err := s.AddRound(map[string]float64{"proxy": a[i], "relay": b[i]}); err != nil {
			t.Fatal(err)
		}
	}
	f := s.Added("added_us", "us", Below(200), "proxy", "relay")
	if want := []float64{4, 6, 3, 7, 2}; fmt.Sprint(f.Rounds) != fmt.Sprint(want) {
		t.Fatalf("rounds %v, want %v", f.Rounds, want)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ma, _ := Median(a)
	mb, _ := Median(b)
	if st.Median != 4 || ma-mb == 4 {
		t.Fatalf("median %g (difference of medians %g): want 4, from pairs", st.Median, ma-mb)
	}
	r := s.Ratio("ratio", AtLeast(1), "proxy", "relay")
	if want := fmt.Sprint([]float64{1.04, 1.6, 1.06, 37.0 / 30, 72.0 / 70}); fmt.Sprint(r.Rounds) != want {
		t.Fatalf("ratio rounds %v, want %v", r.Rounds, want)
	}
	c := s.Combine("cost_ratio", "ratio", Ratio, AtMost(1), func(v []float64) float64 { return (v[0] - v[1]) / v[1] }, "proxy", "relay")
	if c.Rounds[0] != 0.04 {
		t.Fatalf("combined round 0 = %g, want (104-100)/100", c.Rounds[0])
	}
}

func TestSamplesRefuseRoundsThatCannotBePaired(t *testing.T) {
	s := NewSamples()
	if err := s.AddRound(map[string]float64{"a": 1, "b": 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRound(map[string]float64{"a": 1}); err == nil {
		t.Fatal("round missing series b accepted")
	}
	if err := s.AddRound(map[string]float64{"a": 1, "c": 2}); err == nil {
		t.Fatal("round with a new series accepted")
	}
	if s.Rounds() != 1 || len(s.Series("a")) != 1 {
		t.Fatalf("a refused round was kept: %d rounds, a=%v", s.Rounds(), s.Series("a"))
	}
	f := s.Ratio("r", AtLeast(1), "a", "nope")
	if _, err := f.Stat(); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("figure over an unknown series: %v", err)
	}
}

func TestCIRank(t *testing.T) {
	// Coverage 1-2*P(Bin(n,1/2) <= k) >= 90%: checked against a table.
	want := map[int]int{1: 0, 5: 0, 7: 0, 8: 1, 10: 1, 11: 2, 13: 3, 16: 4, 18: 5, 30: 10}
	for n, k := range want {
		if got := ciRank(n); got != k {
			t.Errorf("ciRank(%d) = %d, want %d", n, got, k)
		}
	}
}

func TestOrderRotatesEveryRound(t *testing.T) {
	vs := []string{"A", "B", "C"}
	var got []string
	for r := 0; r < 4; r++ {
		got = append(got, strings.Join(Order(vs, r), ""))
	}
	if strings.Join(got, " ") != "ABC BCA CAB ABC" {
		t.Fatalf("orders %v", got)
	}
}

// fake is a variant whose value comes from a list, recording when it ran.
type fake struct {
	name string
	vals []float64
	log  *[]string
}

func (f fake) variant() Variant {
	return One(f.name, func(round int) (float64, error) {
		*f.log = append(*f.log, fmt.Sprintf("%s%d", f.name, round))
		return f.vals[round%len(f.vals)], nil
	})
}

func TestInterleaveAlternatesVariantsAndStopsWhenSettled(t *testing.T) {
	var log []string
	a := fake{"A", []float64{10}, &log}
	b := fake{"B", []float64{5}, &log}
	figs, err := Interleave(Plan{}, []Variant{a.variant(), b.variant()}, func(s *Samples) []Figure {
		return []Figure{s.Ratio("a_vs_b", AtLeast(1), "A", "B")}
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "A0 B0 B1 A1 A2 B2 B3 A3 A4 B4"; strings.Join(log, " ") != want {
		t.Fatalf("ran %v, want %s", log, want)
	}
	line, err := figs[0].Line()
	if err != nil || line != "BENCH a_vs_b 2.00 ratio target >= 1 spread 2.00..2.00 rounds 5" {
		t.Fatalf("line %q, %v", line, err)
	}
}

func TestInterleaveRunsMoreRoundsWhileTheSpreadIsWide(t *testing.T) {
	var log []string
	// Rounds alternate 1 and 3 for A: the median's interval stays wide, so
	// the plan's maximum is reached.
	a := fake{"A", []float64{1, 3}, &log}
	b := fake{"B", []float64{1}, &log}
	figs, err := Interleave(Plan{MinRounds: 5, MaxRounds: 9, Tolerance: 0.1}, []Variant{a.variant(), b.variant()}, func(s *Samples) []Figure {
		return []Figure{s.Measured("a", "ns", Above(0), "A"), s.Measured("b", "ns", Above(0), "B")}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(figs[0].Rounds); n != 9 {
		t.Fatalf("%d rounds, want the maximum 9", n)
	}
	// An impossible figure also asks for more rounds, and stays impossible.
	log = nil
	figs, err = Interleave(Plan{MaxRounds: 6}, []Variant{b.variant(), fake{"C", []float64{2}, &log}.variant()}, func(s *Samples) []Figure {
		return []Figure{s.Added("b_minus_c", "ns", Below(1), "B", "C")}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := figs[0].Stat(); err == nil || len(figs[0].Rounds) != 6 {
		t.Fatalf("negative added cost after %d rounds: %v", len(figs[0].Rounds), err)
	}
}

func TestInterleaveErrors(t *testing.T) {
	var log []string
	ok := fake{"A", []float64{1}, &log}.variant()
	boom := One("B", func(round int) (float64, error) {
		if round == 2 {
			return 0, errors.New("peer died")
		}
		return 1, nil
	})
	none := func(*Samples) []Figure { return nil }
	if _, err := Interleave(Plan{MinRounds: 3}, []Variant{ok}, none); err == nil {
		t.Error("a plan of 3 rounds was accepted")
	}
	if _, err := Interleave(Plan{MinRounds: 6, MaxRounds: 5}, []Variant{ok}, none); err == nil {
		t.Error("MaxRounds < MinRounds accepted")
	}
	if _, err := Interleave(Plan{}, nil, none); err == nil {
		t.Error("no variants accepted")
	}
	if _, err := Interleave(Plan{}, []Variant{ok, boom}, none); err == nil || !strings.Contains(err.Error(), "round 2: B: peer died") {
		t.Errorf("measure error: %v", err)
	}
	dup := Variant{Name: "A2", Measure: func(int) (map[string]float64, error) { return map[string]float64{"A": 1}, nil }}
	if _, err := Interleave(Plan{}, []Variant{ok, dup}, none); err == nil || !strings.Contains(err.Error(), `series "A"`) {
		t.Errorf("series from two variants: %v", err)
	}
}

func TestLineParsesBack(t *testing.T) {
	cases := []struct {
		fig  Figure
		want string
	}{
		{Figure{Name: "lab_lb_cost_ratio_telcolb_vs_nftables_1", Unit: "ratio", Kind: Ratio, Target: AtMost(0.33), Rounds: []float64{0.2512, 0.3, 0.21, 0.25, 0.26}},
			"BENCH lab_lb_cost_ratio_telcolb_vs_nftables_1 0.251 ratio target <= 0.33 spread 0.210..0.300 rounds 5"},
		{Figure{Name: "lab_cpu_ns_per_pkt_plain_1024", Unit: "ns", Kind: Measured, Target: Above(0), Rounds: []float64{1901.4, 1890, 2000, 1950, 1800}},
			"BENCH lab_cpu_ns_per_pkt_plain_1024 1901 ns target > 0 spread 1800..2000 rounds 5"},
		{Figure{Name: "n2_added_latency_vs_relay_p50_us", Unit: "us", Kind: Added, Target: Below(200), Rounds: []float64{-5, 30, 41.5, 38, 36}},
			"BENCH n2_added_latency_vs_relay_p50_us 36.00 us target < 200 spread -5.00..41.50 rounds 5"},
	}
	for _, c := range cases {
		line, err := c.fig.Line()
		if err != nil || line != c.want {
			t.Errorf("Line = %q, %v; want %q", line, err, c.want)
			continue
		}
		r, err := ParseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := c.fig.Stat()
		if r.Name != c.fig.Name || r.Unit != c.fig.Unit || r.Target != c.fig.Target || r.Rounds != st.N || !r.HasSpread ||
			math.Abs(r.Median-st.Median) > 0.01*math.Abs(st.Median) {
			t.Errorf("ParseLine(%q) = %+v", line, r)
		}
	}
}

func TestParseLine(t *testing.T) {
	old, err := ParseLine("BENCH n2_proxy_vs_relay_per_core_ratio 0.61 ratio target >= 0.5")
	if err != nil || old.HasSpread || old.Median != 0.61 || old.Target != AtLeast(0.5) || !old.Met() {
		t.Fatalf("old format: %+v, %v", old, err)
	}
	for _, bad := range []string{
		"BENCH x 1 ns target",
		"BENCH x one ns target > 0",
		"BENCH x NaN ns target > 0",
		"BENCH x 1 ns goal > 0",
		"BENCH x 1 ns target => 0",
		"BENCH x 1 ns target > 0 spread 0..2 rounds",
		"BENCH x 1 ns target > 0 spread 0-2 rounds 5",
		"BENCH x 1 ns target > 0 spread 2..3 rounds 5",
		"BENCH x 1 ns target > 0 spread 0..2 rounds 0",
		"BENCH x 1 ns target > 0 range 0..2 rounds 5",
	} {
		if r, err := ParseLine(bad); err == nil {
			t.Errorf("ParseLine(%q) = %+v, want error", bad, r)
		}
	}
	rs, err := ParseLines("=== RUN TestBenchX\nBENCH a 1.00 ns target > 0 spread 1.00..1.00 rounds 5\n--- PASS\n  BENCH b 2 x target <= 3\n")
	if err != nil || len(rs) != 2 || rs[1].Name != "b" {
		t.Fatalf("ParseLines = %+v, %v", rs, err)
	}
}

func TestSummaryComparesWithTargetAndPreviousRun(t *testing.T) {
	cur := []Result{
		{Name: "ratio_a", Median: 0.25, Unit: "ratio", Target: AtMost(0.33), Min: 0.2, Max: 0.3, Rounds: 5, HasSpread: true},
		{Name: "latency_b", Median: 300, Unit: "us", Target: Below(200), Min: 250, Max: 900, Rounds: 7, HasSpread: true},
		{Name: "new_c", Median: 10, Unit: "s", Target: Below(30), Min: 9, Max: 11, Rounds: 5, HasSpread: true},
	}
	prev := []Result{
		{Name: "ratio_a", Median: 0.5, Unit: "ratio", Target: AtMost(0.33)},
		{Name: "latency_b", Median: 280, Unit: "us", Target: Below(200)},
		{Name: "gone_d", Median: 3, Unit: "x", Target: AtMost(3)},
	}
	got := Summary(cur, prev)
	for _, want := range []string{
		"ratio_a    0.250 ratio  0.200..0.300  5       <= 0.33  met           0.500     -50.0%\n",
		"latency_b  300 us       250..900      7       < 200    MISSED        280       +7.1% (within spread)\n",
		"new_c      10.00 s      9.00..11.00   5       < 30     met           -         -\n",
		"gone_d     -            -             -       <= 3     NOT MEASURED  3.00      -\n",
		"2 of 3 figures meet their target\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if first := Summary(cur, nil); !strings.Contains(first, "no previous run") {
		t.Errorf("first run summary:\n%s", first)
	}
}

type fakeT struct {
	errs, logs []string
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Errorf(format string, a ...any) { f.errs = append(f.errs, fmt.Sprintf(format, a...)) }
func (f *fakeT) Logf(format string, a ...any)   { f.logs = append(f.logs, fmt.Sprintf(format, a...)) }

func TestReportFailsImpossibleFiguresInsteadOfPrintingThem(t *testing.T) {
	var out bytes.Buffer
	ft := &fakeT{}
	report(ft, &out,
		Figure{Name: "good", Unit: "x", Kind: Ratio, Target: AtLeast(0.9), Rounds: []float64{1, 1, 1, 1, 1}},
		Figure{Name: "n2_added_latency_vs_relay_p99_us", Unit: "us", Kind: Added, Target: Below(1000), Rounds: []float64{-836, -800, -900, 10, -1}},
	)
	if out.String() != "BENCH good 1.00 x target >= 0.9 spread 1.00..1.00 rounds 5\n" {
		t.Errorf("printed %q", out.String())
	}
	if len(ft.errs) != 1 || !strings.Contains(ft.errs[0], "n2_added_latency_vs_relay_p99_us") {
		t.Errorf("errors %q, want one naming the impossible figure", ft.errs)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"BENCH a 1.00 ns target > 0 spread 1.00..1.00 rounds 5",
		"BENCH b 0.61 ratio target >= 0.5",
		"BENCH c -3 us target < 200 spread -9..4 rounds 11",
		"BENCH", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseLine(s)
		if err != nil {
			return
		}
		if r.HasSpread && !(r.Min <= r.Median && r.Median <= r.Max && r.Rounds > 0) {
			t.Fatalf("accepted %q as %+v", s, r)
		}
		// What was accepted formats to a line that parses again.
		if _, err := ParseLine(r.String()); err != nil {
			t.Fatalf("%q parsed to %+v, which formats to an unparsable %q: %v", s, r, r.String(), err)
		}
	})
}
