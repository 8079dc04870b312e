// Command run is `make bench`: it runs every TestBench* function of the
// module one at a time (one `go test` per benchmark, TELCOLB_BENCH=1),
// collects their BENCH lines (format: scenarios/bench/figure) into
// .cache/bench.txt, and ends with a summary table of each figure, its
// target, met or missed, and its change against the previous run.
//
//	go run ./scenarios/bench/run [--cache DIR] [--run REGEXP] [--timeout 30m]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

func main() {
	var (
		root    = flag.String("root", ".", "module directory holding the benchmarks")
		cache   = flag.String("cache", "", "directory for bench.txt, bench.log and the summary (default <root>/.cache)")
		run     = flag.String("run", "", "run only the benchmarks whose test name matches this regular expression")
		timeout = flag.Duration("timeout", 30*time.Minute, "limit for each benchmark")
	)
	flag.Parse()
	if err := mainErr(*root, *cache, *run, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func mainErr(root, cache, run string, timeout time.Duration) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	c := Config{Root: root, Cache: cache, Timeout: timeout, Out: os.Stdout}
	if run != "" {
		if c.Run, err = regexp.Compile(run); err != nil {
			return fmt.Errorf("--run: %w", err)
		}
	}
	if c.Go, err = exec.LookPath("go"); err != nil {
		return fmt.Errorf("bench: the go command is needed to run the benchmarks: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, c)
}
