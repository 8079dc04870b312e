package vm

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// A VM boots Debian's 6.1 kernel with kernel SCTP loaded, runs commands and
// reports their output and exit status.
func TestVMBootsAndRunsCommands(t *testing.T) {
	RequireVM(t)
	img := TestImage(t, nil, nil)
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
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
}

// VM boot to ready (qemu start to the agent's hello) and the guest's own
// share of it (kernel start to ready), for `make bench`.
func TestBenchVMBootToReady(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	RequireVM(t)
	img := TestImage(t, nil, nil)
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, err := l.AddHost(ctx, "vmhost")
	if err != nil {
		t.Fatal(err)
	}
	var total, guest time.Duration
	const runs = 3
	for i := 0; i < runs; i++ {
		v, err := Boot(ctx, Config{Name: "bench", Host: h, Image: img})
		if err != nil {
			t.Fatal(err)
		}
		total += v.BootToReady
		guest += v.GuestUptime
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("BENCH vm_boot_to_ready_s %.2f s target < 10\n", (total / runs).Seconds())
	fmt.Printf("BENCH vm_guest_uptime_at_ready_s %.2f s target < 5\n", (guest / runs).Seconds())
}
