package sctplb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// The Diameter throughput benchmark measures requests per CPU second of
// the middlebox alone (the agent, or the raw relay it is compared with),
// as the PFCP benchmark does: the middlebox runs in a child process (this
// test binary again, TestMain diverting it here) whose CPU time is read
// from /proc, so the client and the server, which run in the test
// process, are not counted.

const middleboxEnv = "TELCOLB_DIAMETER_MIDDLEBOX"

func TestMain(m *testing.M) {
	if mode := os.Getenv(middleboxEnv); mode != "" {
		if err := runMiddlebox(mode, os.Getenv(middleboxEnv+"_UPSTREAM"), os.Getenv(middleboxEnv+"_CPUPROFILE")); err != nil {
			fmt.Fprintln(os.Stderr, "middlebox:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMiddlebox listens on loopback, prints "listen <addr>" once it can
// carry traffic, and runs until its stdin closes.
func runMiddlebox(mode, upstream, profile string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	switch mode {
	case "relay":
		ln := ln
		go rawRelay(ln, upstream)
		close(done)
		defer ln.Close()
	case "agent":
		addr := netip.MustParseAddrPort(ln.Addr().String())
		ln.Close()
		a, err := NewDiameter(DiameterConfig{Listen: addr,
			Identity: diameter.Identity{Host: "dra.bench.example", Realm: "bench.example"},
			Servers:  []DiameterServer{{Name: "ocs", Addr: netip.MustParseAddrPort(upstream)}},
			Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			return err
		}
		if err := a.Open(); err != nil {
			return err
		}
		go func() { defer close(done); _ = a.Serve(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for s := a.Stats(); len(s.Servers) != 1 || !s.Servers[0].Up; s = a.Stats() {
			if time.Now().After(deadline) {
				return fmt.Errorf("server not up")
			}
			time.Sleep(20 * time.Millisecond)
		}
		defer func() { cancel(); <-done }()
	default:
		return fmt.Errorf("mode %q: agent or relay", mode)
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if mp := os.Getenv("TELCOLB_DIAMETER_MEMPROFILE"); mp != "" && mode == "agent" {
		// The agent's allocations over the whole run (go tool pprof
		// -sample_index=alloc_space): what the garbage collector works for.
		defer func() {
			if f, err := os.Create(mp); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	fmt.Printf("listen %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// middlebox is a running child.
type middlebox struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func startMiddlebox(t testing.TB, mode, upstream, profile string) *middlebox {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), middleboxEnv+"="+mode, middleboxEnv+"_UPSTREAM="+upstream, middleboxEnv+"_CPUPROFILE="+profile)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	mb := &middlebox{cmd: cmd, stdin: in}
	t.Cleanup(mb.stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listen ") {
		t.Fatalf("%s middlebox did not start: %q %v", mode, line, err)
	}
	mb.addr = strings.TrimSpace(strings.TrimPrefix(line, "listen "))
	return mb
}

// stop closes its stdin and waits for it (the agent sends its DPRs).
func (m *middlebox) stop() {
	if m.stdin != nil {
		_ = m.stdin.Close()
		m.stdin = nil
		done := make(chan struct{})
		go func() { _ = m.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = m.cmd.Process.Kill()
			<-done
		}
	}
}

// cpuSeconds is the CPU time the child used so far: the sum of its
// threads' run time in /proc/<pid>/task/*/schedstat (nanoseconds), where
// the kernel has it; else user+system time from /proc/<pid>/stat, in
// ticks of 10 ms, which is coarse against the relay's 30-50 ms a round.
func (m *middlebox) cpuSeconds(t testing.TB) float64 {
	t.Helper()
	if s, ok := schedstatSeconds(m.cmd.Process.Pid); ok {
		return s
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// schedstatSeconds sums the on-CPU time of every thread of pid; false if
// schedstat is not there. A Go process keeps its threads, so no exited
// thread's time goes missing between two readings.
func schedstatSeconds(pid int) (float64, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, false
	}
	var ns float64
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread just exited
			}
			return 0, false
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false
		}
		ns += v
	}
	return ns / 1e9, true
}
