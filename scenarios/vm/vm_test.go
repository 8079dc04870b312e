package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// A VM boots Debian's 6.1 kernel with kernel SCTP loaded, runs commands and
// reports their output and exit status; the kernel transport's tests
// (sctplb/transport/kernel) pass there, none skipped.
func TestVMBootsAndRunsCommands(t *testing.T) {
	RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The kernel transport's own tests need kernel SCTP: they run here.
	ktest := filepath.Join(t.TempDir(), "kernel.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", ktest, "github.com/telcolb/telcolb/sctplb/transport/kernel")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c ./sctplb/transport/kernel: %v\n%s", err, out)
	}
	img := TestImage(t, nil, map[string]string{"/usr/bin/kernel.test": ktest})
	l := lab.NewEmpty(t)
	h, err := l.AddHost(ctx, "vmhost")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Boot(ctx, Config{Name: "guest", Host: h, Image: img, Logger: TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	CloseOnCleanup(t, v)
	if !strings.HasPrefix(v.Kernel, "6.1.") {
		t.Errorf("guest kernel %q, want Debian's 6.1", v.Kernel)
	}
	r, err := v.Run(ctx, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("run: exit %d stdout %q stderr %q, want 3 \"out\\n\" \"err\\n\"", r.Exit, r.Stdout, r.Stderr)
	}
	out, err := v.Sh(ctx, "cat /proc/net/sctp/snmp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "SctpChecksumErrors") {
		t.Errorf("/proc/net/sctp/snmp: %q", out)
	}
	t.Logf("boot to ready %v (guest uptime %v)", v.BootToReady, v.GuestUptime)

	kr, err := v.Run(ctx, "/bin/sh", "-c", "TELCOLB_REQUIRE_KERNEL_SCTP=1 kernel.test -test.v -test.count=1 -test.timeout=3m 2>&1")
	if err != nil {
		t.Fatal(err)
	}
	if kr.Exit != 0 || strings.Contains(kr.Stdout, "--- SKIP") || !strings.Contains(kr.Stdout, "--- PASS: TestCloseWhileInUseReleasesTheDescriptorSafely") ||
		!strings.Contains(kr.Stdout, "--- PASS: TestAbortTargetEndsThePeersAssociation") {
		t.Errorf("sctplb/transport/kernel tests on kernel SCTP: exit %d\n%s", kr.Exit, kr.Stdout)
	}
	// What the ABORT test read from sctp_diag and how the association ended.
	for _, line := range strings.Split(kr.Stdout, "\n") {
		if strings.Contains(line, "target") || strings.Contains(line, "after the ABORT") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// VM boot to ready (qemu start to the agent's hello) and the guest's own
// share of it (kernel start to ready), for `make bench`: 5 boots of the
// same image, one after the other, each a round of the figure harness.
// Under TCG emulation on a shared machine the figures follow the load.
func TestBenchVMBootToReady(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	RequireVM(t)
	img := TestImage(t, nil, nil)
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	h, err := l.AddHost(ctx, "vmhost")
	if err != nil {
		t.Fatal(err)
	}
	boot := figure.Variant{Name: "boot", Measure: func(round int) (map[string]float64, error) {
		v, err := Boot(ctx, Config{Name: "bench", Host: h, Image: img})
		if err != nil {
			return nil, err
		}
		t.Logf("round %d: boot to ready %v, guest uptime %v", round, v.BootToReady, v.GuestUptime)
		if err := v.Close(); err != nil {
			return nil, err
		}
		return map[string]float64{"ready": v.BootToReady.Seconds(), "guest": v.GuestUptime.Seconds()}, nil
	}}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{boot}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("vm_boot_to_ready_s", "s", figure.Below(10), "ready"),
			s.Measured("vm_guest_uptime_at_ready_s", "s", figure.Below(5), "guest"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
