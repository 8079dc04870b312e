package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The initramfs writer produces an archive cpio(1) lists with every entry,
// parents first, file content intact, symlinks and device nodes typed.
func TestCPIOArchiveReadsBack(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		if Require() {
			t.Fatal("cpio missing (hack/install-deps.sh)")
		}
		t.Skip("cpio missing")
	}
	dir := t.TempDir()
	host := filepath.Join(dir, "prog")
	if err := os.WriteFile(host, []byte("odd-length-content"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := newTree()
	tr.dir("/proc")
	tr.dev("/dev/console", 5, 1)
	if err := tr.file("/usr/bin/prog", host, 0o755); err != nil {
		t.Fatal(err)
	}
	tr.symlink("/bin/sh", "busybox")
	tr.data("/init", []byte("#!/bin/sh\n"), 0o755)
	out := filepath.Join(dir, "a.cpio")
	if err := tr.writeCPIO(out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = f
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, b)
	}
	list := string(b)
	for _, want := range []string{" bin\n", " bin/sh -> busybox\n", " dev/console\n", " init\n", " usr/bin/prog\n", " usr\n", " proc\n"} {
		if !strings.Contains(list, want) {
			t.Errorf("listing lacks %q:\n%s", want, list)
		}
	}
	if !strings.Contains(list, "crw-------") {
		t.Errorf("no character device in listing:\n%s", list)
	}
	ext := t.TempDir()
	f2, _ := os.Open(out)
	defer f2.Close()
	x := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames")
	x.Dir, x.Stdin = ext, f2
	if b, err := x.CombinedOutput(); err != nil && !strings.Contains(string(b), "console") {
		t.Fatalf("cpio -id: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(ext, "usr/bin/prog"))
	if err != nil || string(got) != "odd-length-content" {
		t.Errorf("extracted content %q, %v", got, err)
	}
}

// Modules resolve with their dependencies first, from .modinfo (Debian's
// package has no modules.dep): sctp needs libcrc32c and the UDP tunnels.
func TestModuleOrderFromModinfo(t *testing.T) {
	k, err := FindKernel()
	if err != nil {
		if Require() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	order, err := moduleOrder(t.Context(), k.Modules, SCTPModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, rel := range order {
		pos[modName(rel)] = i
	}
	for _, dep := range []string{"libcrc32c", "udp_tunnel", "ip6_udp_tunnel"} {
		p, ok := pos[dep]
		if !ok || p > pos["sctp"] {
			t.Errorf("order %v: %s missing or after sctp", order, dep)
		}
	}
	if _, err := moduleOrder(t.Context(), k.Modules, []string{"no_such_module"}); err == nil {
		t.Error("unknown module: no error")
	}
}

func TestParseSNMP(t *testing.T) {
	m, err := ParseSNMP("SctpCurrEstab                   \t1\nSctpChecksumErrors              \t0\n")
	if err != nil || m["SctpCurrEstab"] != 1 || m["SctpChecksumErrors"] != 0 || len(m) != 2 {
		t.Errorf("got %v %v", m, err)
	}
	if _, err := ParseSNMP("SctpCurrEstab x\n"); err == nil {
		t.Error("bad value: no error")
	}
}

func FuzzParseSNMP(f *testing.F) {
	f.Add("SctpCurrEstab 1\nSctpChecksumErrors 0\n")
	f.Add("SctpOutOfBlues\t-1\n\n")
	f.Add("a b c\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseSNMP(s)
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}
