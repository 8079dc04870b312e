package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Config is one `make bench` run.
type Config struct {
	// Root is the module directory the benchmarks are found under and
	// `go test` runs in.
	Root string
	// Cache is where bench.txt (this run's figures), bench.prev.txt (the
	// run before), bench.log (every benchmark's full output) and
	// bench-summary.txt go; created when missing (a fresh clone has none).
	Cache string
	// Run selects benchmarks by test name (nil: all).
	Run *regexp.Regexp
	// Go is the go command.
	Go string
	// Timeout bounds each benchmark (go test -timeout).
	Timeout time.Duration
	// Env is added to the benchmarks' environment (TELCOLB_BENCH=1 always is).
	Env []string
	// Out receives progress, the BENCH lines as they come and the summary.
	Out io.Writer
}

// Benchmark is one TestBench* function.
type Benchmark struct {
	Pkg  string // "./dataplane"
	Name string // "TestBenchPerPacket"
}

// Outcome is how one benchmark run ended.
type Outcome struct {
	Benchmark
	Status   string // ok, FAIL, SKIPPED
	Duration time.Duration
	Figures  []figure.Result
	// Tail is the end of its output when it did not pass.
	Tail []string
}

var benchFunc = regexp.MustCompile(`(?m)^func (TestBench\w*)\(\w+ \*testing\.T\)`)

// Discover finds every TestBench* function in the _test.go files under
// root, skipping testdata, hidden directories, .cache and bin (what `go
// test ./...` would see), sorted by package then name.
func Discover(root string) ([]Benchmark, error) {
	var out []Benchmark
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if path != root && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "testdata" || n == "bin" || n == "vendor") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		for _, m := range benchFunc.FindAllStringSubmatch(string(b), -1) {
			out = append(out, Benchmark{Pkg: "./" + filepath.ToSlash(rel), Name: m[1]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: find benchmarks under %s: %w", root, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pkg != out[j].Pkg {
			return out[i].Pkg < out[j].Pkg
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Run runs the selected benchmarks one at a time (each its own `go test`
// of one package and one test, so no two ever share the machine), writes
// the figures to Cache/bench.txt and prints the summary. It returns an
// error when a benchmark failed, skipped or printed a malformed line; the
// figures of the others are still written.
func Run(ctx context.Context, c Config) error {
	if err := os.MkdirAll(c.Cache, 0o755); err != nil {
		return fmt.Errorf("bench: create %s: %w", c.Cache, err)
	}
	all, err := Discover(c.Root)
	if err != nil {
		return err
	}
	var benches []Benchmark
	for _, b := range all {
		if c.Run == nil || c.Run.MatchString(b.Name) {
			benches = append(benches, b)
		}
	}
	if len(benches) == 0 {
		return fmt.Errorf("bench: no TestBench* function under %s matches %v", c.Root, c.Run)
	}
	prev, err := readPrevious(filepath.Join(c.Cache, "bench.txt"))
	if err != nil {
		fmt.Fprintf(c.Out, "bench: previous run not compared: %v\n", err)
	}
	logf, err := os.Create(filepath.Join(c.Cache, "bench.log"))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer logf.Close()

	start := time.Now()
	var outcomes []Outcome
	for i, b := range benches {
		fmt.Fprintf(c.Out, "== [%d/%d] %s %s\n", i+1, len(benches), b.Pkg, b.Name)
		o := runOne(ctx, c, b, logf)
		fmt.Fprintf(c.Out, "== %s %s in %s\n", o.Status, b.Name, o.Duration.Round(time.Second))
		outcomes = append(outcomes, o)
		if ctx.Err() != nil {
			break
		}
	}

	var cur []figure.Result
	var lines []string
	for _, o := range outcomes {
		for _, r := range o.Figures {
			cur = append(cur, r)
			lines = append(lines, r.String())
		}
	}
	if err := writeResults(c.Cache, lines); err != nil {
		return err
	}
	summary := summarize(outcomes, cur, prev, time.Since(start))
	fmt.Fprint(c.Out, "\n", summary)
	if err := os.WriteFile(filepath.Join(c.Cache, "bench-summary.txt"), []byte(summary), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var bad []string
	for _, o := range outcomes {
		if o.Status != "ok" {
			bad = append(bad, o.Name+" "+o.Status)
		}
	}
	if len(outcomes) < len(benches) {
		bad = append(bad, fmt.Sprintf("%d benchmarks not run", len(benches)-len(outcomes)))
	}
	if len(bad) > 0 {
		return fmt.Errorf("bench: %s", strings.Join(bad, ", "))
	}
	return nil
}

func readPrevious(path string) ([]figure.Result, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rs, err := figure.ParseLines(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rs == nil {
		rs = []figure.Result{} // a previous run with no figures is still a previous run
	}
	return rs, nil
}

// writeResults replaces bench.txt, keeping the previous one (even one
// that could not be read) as bench.prev.txt.
func writeResults(cache string, lines []string) error {
	cur := filepath.Join(cache, "bench.txt")
	if err := os.Rename(cur, filepath.Join(cache, "bench.prev.txt")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bench: keep previous figures: %w", err)
	}
	text := strings.Join(lines, "\n")
	if text != "" {
		text += "\n"
	}
	if err := os.WriteFile(cur, []byte(text), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// runOne runs one benchmark, copying its output to log and its BENCH
// lines to c.Out as they come.
func runOne(ctx context.Context, c Config, b Benchmark, log io.Writer) Outcome {
	o := Outcome{Benchmark: b, Status: "ok"}
	args := []string{"test", "-count=1", "-p", "1", "-timeout", c.Timeout.String(), "-run", "^" + b.Name + "$", "-v", b.Pkg}
	cmd := exec.CommandContext(ctx, c.Go, args...)
	cmd.Dir = c.Root
	cmd.Env = append(append(os.Environ(), c.Env...), "TELCOLB_BENCH=1")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	fmt.Fprintf(log, "== %s %s: go %s\n", b.Pkg, b.Name, strings.Join(args, " "))

	var tail []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(log, line)
			tail = append(tail, line)
			if len(tail) > 30 {
				tail = tail[1:]
			}
			if strings.Contains(line, "--- SKIP: "+b.Name) {
				o.Status = "SKIPPED"
			}
			if !strings.HasPrefix(line, "BENCH ") {
				continue
			}
			r, err := figure.ParseLine(line)
			if err != nil {
				fmt.Fprintf(c.Out, "malformed: %v\n", err)
				o.Status = "FAIL"
				continue
			}
			fmt.Fprintln(c.Out, line)
			o.Figures = append(o.Figures, r)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	start := time.Now()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	o.Duration = time.Since(start)
	if err != nil {
		o.Status = "FAIL"
		fmt.Fprintf(log, "== %s: %v\n", b.Name, err)
	}
	if o.Status != "ok" {
		o.Tail = tail
	}
	return o
}

func summarize(outcomes []Outcome, cur, prev []figure.Result, took time.Duration) string {
	var b strings.Builder
	b.WriteString("Benchmarks (one at a time):\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, o := range outcomes {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%d figures\n", o.Status, o.Pkg, o.Name, o.Duration.Round(time.Second), len(o.Figures))
	}
	w.Flush()
	fmt.Fprintf(&b, "total %s\n\n", took.Round(time.Second))
	b.WriteString(figure.Summary(cur, prev))
	for _, o := range outcomes {
		if o.Status == "ok" {
			continue
		}
		fmt.Fprintf(&b, "\n%s %s (%s), end of its output (all of it in bench.log):\n", o.Name, o.Status, o.Pkg)
		for _, l := range o.Tail {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}
