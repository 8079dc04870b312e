package vm

import (
	"context"
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
