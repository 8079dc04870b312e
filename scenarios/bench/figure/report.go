package figure

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Reporter is what Report needs of a test (testing.TB has it).
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// Report prints the BENCH line of every possible figure to stdout (where
// `make bench` collects them) and fails the test for every impossible
// one, printing nothing for it. It also logs each figure's rounds, so a
// verbose run shows what the median came from.
func Report(t Reporter, figs ...Figure) {
	t.Helper()
	report(t, os.Stdout, figs...)
}

func report(t Reporter, w io.Writer, figs ...Figure) {
	t.Helper()
	for _, f := range figs {
		line, err := f.Line()
		if err != nil {
			t.Errorf("impossible figure, not reported: %v (rounds %s)", err, formatRounds(f.Rounds))
			continue
		}
		t.Logf("%s rounds: %s", f.Name, formatRounds(f.Rounds))
		fmt.Fprintln(w, line)
	}
}

func formatRounds(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = FormatValue(v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
