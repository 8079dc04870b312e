// Package figure is the harness every telcolb benchmark reports through, so
// that `make bench` prints figures people can trust on a shared machine.
//
// The rules it enforces:
//
//   - A comparison is measured side by side: the variants (telcolb and its
//     baseline) run in interleaved rounds, their order rotating every round
//     (A B, B A, A B, ...) so neither always runs first on cold caches or
//     last on a warmer machine. At least 5 rounds; more, up to the plan's
//     maximum, while the median's confidence interval is wider than the
//     plan's tolerance.
//   - Ratios and differences are computed within each round from that
//     round's paired samples (A_r / B_r, A_r - B_r), and the figure is the
//     median of those per-round values with their min and max. Never the
//     difference of two independently measured percentiles: drift between
//     rounds hits both sides of a pair alike and cancels.
//   - An impossible figure fails the benchmark instead of being printed: a
//     NaN or infinite round, a ratio or measured quantity <= 0 in any round,
//     an added cost (latency, CPU) whose median is negative, a ratio of two
//     added costs whose median is <= 0, or fewer than 5 rounds (see Kind).
//
// Every figure is one line:
//
//	BENCH <name> <median> <unit> target <op> <value> spread <min>..<max> rounds <n>
//
// collected by `make bench` (scenarios/bench/run), which runs the
// benchmarks one at a time and ends with a summary table comparing each
// figure with its target and with the previous run's .cache/bench.txt.
//
// Adopting it in a benchmark (a TestBenchX that skips unless
// TELCOLB_BENCH=1):
//
//	figs, err := figure.Interleave(figure.Plan{}, []figure.Variant{
//		figure.One("relay", func(round int) (float64, error) { return measureRelay() }),
//		figure.One("proxy", func(round int) (float64, error) { return measureProxy() }),
//	}, func(s *figure.Samples) []figure.Figure {
//		return []figure.Figure{
//			s.Measured("n2_proxy_msgs_per_core", "msgs/s", figure.Above(0), "proxy"),
//			s.Ratio("n2_proxy_vs_relay_ratio", figure.AtLeast(0.5), "proxy", "relay"),
//		}
//	})
//	if err != nil {
//		t.Fatal(err)
//	}
//	figure.Report(t, figs...)
//
// A variant that yields several values per run (throughput and latency
// percentiles of one load, say) returns them as named series with
// Variant.Measure; figures then combine series of the same round.
// Benchmarks that cannot interleave (one quantity, no baseline) still run
// at least 5 rounds and report a Measured figure with its spread.
package figure
