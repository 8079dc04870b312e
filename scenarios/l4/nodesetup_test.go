package l4

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// TestNodeSetupTurnsRedirectsOff: `telcolb node-setup` (the DaemonSet's
// privileged init container) turns IPv4 ICMP redirects off on "all" and
// the named interfaces of the node it runs in, touches nothing of the
// datapath (no pin path, no attachment), and fails, naming the cause, on
// an interface that does not exist or a read-only /proc/sys (the pod must
// not start as if the node were set up).
func TestNodeSetupTurnsRedirectsOff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.New(t, lab.Config{Backends: 1})
	h := l.LB
	keys := []string{"net.ipv4.conf.all.send_redirects", "net.ipv4.conf.eth0.send_redirects"}
	for _, k := range keys {
		if err := h.Sysctl(k, "1"); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	pins := filepath.Join(dir, "pins")
	// args is the node-setup command line on the given interface.
	args := func(iface string) []string {
		return []string{bins.Telcolb, "node-setup", "--interfaces=" + iface, "--bpf-pin-path=" + pins, "--state-dir=" + filepath.Join(dir, "state")}
	}
	nodeSetup := func(iface string) ([]byte, error) {
		a := args(iface)
		return h.Command(ctx, a[0], a[1:]...).CombinedOutput()
	}

	if out, err := nodeSetup("eth0"); err != nil {
		t.Fatalf("node-setup: %v\n%s", err, out)
	}
	for _, k := range keys {
		if v, err := h.ReadSysctl(k); err != nil || v != "0" {
			t.Errorf("after node-setup %s = %q (%v), want 0", k, v, err)
		}
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Errorf("node-setup created the pin path %s (%v): it must not touch the datapath", pins, err)
	}
	if out, err := h.Exec(ctx, "tc", "filter", "show", "dev", "eth0", "ingress"); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("node-setup attached something to eth0:\n%s", out)
	}

	if out, err := nodeSetup("nosuch0"); err == nil || !strings.Contains(string(out), "nosuch0") {
		t.Errorf("node-setup on a missing interface: err %v, output %q; want a failure naming nosuch0", err, out)
	}

	// As in an unprivileged container: /proc/sys mounted read-only.
	if err := h.Sysctl(keys[1], "1"); err != nil {
		t.Fatal(err)
	}
	script := `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"`
	out, err := h.Command(ctx, "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh"}, args("eth0")...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "send_redirects") {
		t.Errorf("node-setup with /proc/sys read-only: err %v, output %q; want a failure naming send_redirects", err, out)
	}
}
