package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// tinyModule copies testdata/tiny into a fresh temporary directory (no
// .cache, as on a fresh clone) as a module that uses this repository's
// figure package.
func tinyModule(t *testing.T) (dir, repo string) {
	t.Helper()
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	src := "testdata/tiny"
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(gomod)
	mod := "module tiny\n\n" + string(goLine) + "\n\nrequire github.com/telcolb/telcolb v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/telcolb/telcolb => " + repo + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, repo
}

func goCommand(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no go command on PATH or in GOROOT: %v", err)
	}
	return p
}

// The driver on a fresh directory: it creates the cache, runs every
// benchmark one after the other, writes their figures in the harness's
// format and summarises them; on the next run it compares with the
// previous figures, and an impossible figure or a skipped benchmark fails
// the run without losing the other figures.
func TestDriverRunsTinyBenchmarksOneAtATimeFromAFreshDirectory(t *testing.T) {
	dir, _ := tinyModule(t)
	cache := filepath.Join(dir, ".cache")
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("fresh directory has a .cache: %v", err)
	}
	stamps := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// GOPROXY=off: the tiny module needs nothing beyond what building this
	// repository already put in the module cache.
	cfg := Config{Root: dir, Cache: cache, Go: goCommand(t), Timeout: 2 * time.Minute,
		Env: []string{"GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "TINY_LOG=" + stamps}}

	var out bytes.Buffer
	cfg.Out = &out
	if err := Run(ctx, cfg); err != nil {
		t.Fatalf("first run: %v\n%s", err, out.String())
	}
	t.Logf("first run:\n%s", out.String())
	first, err := os.ReadFile(filepath.Join(cache, "bench.txt"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := figure.ParseLines(string(first))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
		if !r.HasSpread || r.Rounds < figure.MinRounds {
			t.Errorf("%s: %+v: want a median with its spread over >= 5 rounds", r.Name, r)
		}
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "tiny_added_latency_us tiny_lb_ns tiny_lb_vs_base_ratio tiny_skippable_s" {
		t.Fatalf("figures %s", got)
	}
	if !strings.Contains(string(first), "BENCH tiny_lb_vs_base_ratio 1.98 ratio target <= 3 spread 1.98..2.01 rounds 5") {
		t.Errorf("ratio line not per-round pairs of the tiny variants:\n%s", first)
	}
	for _, want := range []string{"4 of 4 figures meet their target (no previous run to compare with)", "ok  ./fast  TestBenchTinyRatio"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	checkOneAtATime(t, stamps, 3)

	// Second run: the latency figure comes out impossible and one benchmark
	// skips. Both fail the run; the other figures are kept and compared
	// with the first run's.
	out.Reset()
	cfg.Env = append(cfg.Env, "TINY_IMPOSSIBLE=1", "TINY_SKIP=1")
	err = Run(ctx, cfg)
	t.Logf("second run:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "TestBenchTinyLatency FAIL") || !strings.Contains(err.Error(), "TestBenchTinySkippable SKIPPED") {
		t.Fatalf("second run: err %v, want the latency benchmark failed and the skippable one skipped", err)
	}
	second, err := os.ReadFile(filepath.Join(cache, "bench.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(second), "tiny_added_latency_us") || !strings.Contains(string(second), "tiny_lb_vs_base_ratio") {
		t.Errorf("second bench.txt:\n%s", second)
	}
	if prev, err := os.ReadFile(filepath.Join(cache, "bench.prev.txt")); err != nil || !bytes.Equal(prev, first) {
		t.Errorf("bench.prev.txt is not the first run's figures: %v\n%s", err, prev)
	}
	for _, want := range []string{
		"negative added cost is impossible",
		"tiny_added_latency_us  -", "NOT MEASURED",
		"+0.0% (within spread)",
		"FAIL     ./slow  TestBenchTinyLatency",
		"SKIPPED  ./fast  TestBenchTinySkippable",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("second run's output lacks %q", want)
		}
	}
	summary, err := os.ReadFile(filepath.Join(cache, "bench-summary.txt"))
	if err != nil || !strings.Contains(string(summary), "NOT MEASURED") {
		t.Errorf("bench-summary.txt: %v\n%s", err, summary)
	}
}

// checkOneAtATime reads the benchmarks' start/end stamps and fails if two
// ran at the same time.
func checkOneAtATime(t *testing.T, dir string, want int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type span struct {
		name       string
		start, end int64
	}
	var spans []span
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b))
		s, _ := strconv.ParseInt(f[0], 10, 64)
		en, _ := strconv.ParseInt(f[1], 10, 64)
		spans = append(spans, span{e.Name(), s, en})
	}
	if len(spans) != want {
		t.Fatalf("%d benchmarks left stamps, want %d", len(spans), want)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			t.Errorf("%s started %v before %s ended: benchmarks overlapped", spans[i].name,
				time.Duration(spans[i-1].end-spans[i].start), spans[i-1].name)
		}
	}
}

func TestDiscoverFindsBenchmarksOutsideTestdata(t *testing.T) {
	dir, _ := tinyModule(t)
	// A benchmark in testdata or in a nested module is not one of this
	// module's benchmarks.
	for _, p := range []string{"fast/testdata/x_test.go", "nested/x_test.go"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("package x\n\nfunc TestBenchHidden(t *testing.T) {}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "nested/go.mod"), []byte("module nested\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Benchmark{{"./fast", "TestBenchTinyRatio"}, {"./fast", "TestBenchTinySkippable"}, {"./slow", "TestBenchTinyLatency"}}
	if len(got) != len(want) {
		t.Fatalf("Discover = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Discover = %v, want %v", got, want)
		}
	}
}

// A previous bench.txt is kept as bench.prev.txt even when it cannot be
// read as figures (nothing of a run is thrown away), and a first run has
// nothing to keep.
func TestWriteResultsKeepsThePreviousFile(t *testing.T) {
	cache := t.TempDir()
	if err := writeResults(cache, []string{"BENCH a 1.00 ns target > 0 spread 1.00..1.00 rounds 5"}); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "bench.prev.txt")); !os.IsNotExist(err) {
		t.Fatalf("first run left a bench.prev.txt: %v", err)
	}
	garbage := []byte("BENCH broken\n")
	if err := os.WriteFile(filepath.Join(cache, "bench.txt"), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readPrevious(filepath.Join(cache, "bench.txt")); err == nil {
		t.Fatal("a malformed previous file was read without error")
	}
	if err := writeResults(cache, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "bench.prev.txt")); err != nil || !bytes.Equal(b, garbage) {
		t.Fatalf("bench.prev.txt = %q, %v; want the unreadable previous file", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "bench.txt")); err != nil || len(b) != 0 {
		t.Fatalf("bench.txt = %q, %v; want empty (no figures)", b, err)
	}
}
