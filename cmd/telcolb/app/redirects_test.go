package app

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func sysctlTree(t *testing.T, vals map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for dev, v := range vals {
		d := filepath.Join(root, "net", "ipv4", "conf", dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "send_redirects"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readRedirects(t *testing.T, root, dev string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "net", "ipv4", "conf", dev, "send_redirects"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The daemon turns ICMP redirects off for "all" and every attached
// interface (the kernel ORs them), says which it changed, and leaves the
// other interfaces alone.
func TestDisableSendRedirects(t *testing.T) {
	root := sysctlTree(t, map[string]string{"all": "1", "eth0": "1", "eth1": "0", "eth2": "1"})
	changed, err := DisableSendRedirects(root, []string{"eth0", "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"net.ipv4.conf.all.send_redirects", "net.ipv4.conf.eth0.send_redirects"}; !slices.Equal(changed, want) {
		t.Errorf("changed %v, want %v", changed, want)
	}
	for dev, want := range map[string]string{"all": "0", "eth0": "0", "eth1": "0\n", "eth2": "1\n"} {
		if got := readRedirects(t, root, dev); got != want {
			t.Errorf("%s: send_redirects %q, want %q", dev, got, want)
		}
	}
	// Nothing left to change the second time.
	if changed, err := DisableSendRedirects(root, []string{"eth0", "eth1"}); err != nil || len(changed) != 0 {
		t.Errorf("second run: changed %v, %v", changed, err)
	}
}

// An interface the kernel does not know, or a name that is a path, is an
// error naming it; nothing outside net.ipv4.conf is written.
func TestDisableSendRedirectsRefusesBadInterfaces(t *testing.T) {
	for _, ifname := range []string{"nope0", "../../x", "", ".."} {
		root := sysctlTree(t, map[string]string{"all": "0"})
		if _, err := DisableSendRedirects(root, []string{ifname}); err == nil {
			t.Errorf("interface %q: no error", ifname)
		}
	}
}
