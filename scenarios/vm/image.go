package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
)

// EnvKernelDir overrides where the guest kernel package is unpacked (the
// directory holding boot/vmlinuz-* and lib/modules/*).
const EnvKernelDir = "TELCOLB_VM_KERNEL_DIR"

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Image   string // boot/vmlinuz-<release>
	Release string // e.g. 6.1.0-57-amd64
	Modules string // lib/modules/<release>
}

// FindKernel locates the kernel hack/install-deps.sh unpacked into the
// repository's .cache/vm/linux (or $TELCOLB_VM_KERNEL_DIR). The error says
// what to run when it is missing.
func FindKernel() (Kernel, error) {
	dir := os.Getenv(EnvKernelDir)
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return Kernel{}, err
		}
		dir = filepath.Join(root, ".cache", "vm", "linux")
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(imgs) == 0 {
		return Kernel{}, fmt.Errorf("vm: no guest kernel under %s (run `bash hack/install-deps.sh` as root: it fetches linux-image-6.1.0-*-amd64 with apt-get download)", dir)
	}
	sort.Strings(imgs)
	img := imgs[len(imgs)-1]
	rel := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
	mods := filepath.Join(dir, "lib", "modules", rel)
	if _, err := os.Stat(filepath.Join(mods, "kernel")); err != nil {
		return Kernel{}, fmt.Errorf("vm: guest kernel %s has no modules: %w", rel, err)
	}
	return Kernel{Image: img, Release: rel, Modules: mods}, nil
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("vm: go.mod not found above the working directory; set " + EnvKernelDir)
		}
		dir = parent
	}
}

// SCTPModules are the modules every VM loads: the NIC qemu emulates and
// kernel SCTP. crc32c_generic is only a soft dependency of libcrc32c
// (through the crypto API), so it is named explicitly. sctp_diag (with
// inet_diag) is what the kernel transport reads the associations'
// verification tags from (sctplb/kdiag); the initramfs has no modprobe to
// load it on demand.
var SCTPModules = []string{"e1000", "crc32c_generic", "sctp", "sctp_diag"}

// DatapathModules add what telcolb's datapath and the namespace tests need
// on a kernel without tcx: clsact qdisc, cls_bpf filters, veth pairs.
var DatapathModules = []string{"sch_ingress", "cls_bpf", "veth", "bridge"}

// ImageConfig describes an initramfs.
type ImageConfig struct {
	// Dir receives initramfs.cpio.
	Dir string
	// Modules to load at boot, dependencies resolved from their .modinfo
	// (default SCTPModules).
	Modules []string
	// Files maps guest paths to host files. Dynamically linked programs
	// bring their shared libraries (found with ldd).
	Files map[string]string
	// Agent is the host path of telcolb-vmagent (static).
	Agent string
}

// Image is a bootable kernel + initramfs pair.
type Image struct {
	Kernel Kernel
	Initrd string
	// Modules in load order.
	Modules []string
}

// BuildImage writes an initramfs: busybox (applets installed at boot), the
// agent as the program /init execs, the modules (decompressed), the files
// and their libraries, lksctp-tools' programs.
func BuildImage(ctx context.Context, k Kernel, cfg ImageConfig) (*Image, error) {
	if cfg.Agent == "" {
		return nil, errors.New("vm: image: no agent binary")
	}
	busybox, err := findFile("/bin/busybox", "/usr/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("vm: image: busybox-static missing (hack/install-deps.sh): %w", err)
	}
	if out, err := exec.CommandContext(ctx, "ldd", busybox).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("not a dynamic")) {
		return nil, fmt.Errorf("vm: image: %s is dynamically linked; install busybox-static", busybox)
	}
	mods := cfg.Modules
	if len(mods) == 0 {
		mods = SCTPModules
	}
	order, err := moduleOrder(ctx, k.Modules, mods)
	if err != nil {
		return nil, err
	}
	w := newTree()
	w.dir("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/lib/modules", "/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/var/run")
	w.dev("/dev/console", 5, 1)
	if err := w.file("/bin/busybox", busybox, 0o755); err != nil {
		return nil, err
	}
	for _, sh := range []string{"/bin/sh"} {
		w.symlink(sh, "busybox")
	}
	if err := w.file("/bin/telcolb-vmagent", cfg.Agent, 0o755); err != nil {
		return nil, err
	}
	var names []string
	for _, rel := range order {
		name := modName(rel)
		data, err := readModule(ctx, filepath.Join(k.Modules, rel))
		if err != nil {
			return nil, err
		}
		w.data("/lib/modules/"+name+".ko", data, 0o644)
		names = append(names, name)
	}
	files := map[string]string{}
	for g, h := range cfg.Files {
		files[g] = h
	}
	// lksctp-tools: the kernel stack's own test programs.
	for _, p := range []string{"sctp_darn", "sctp_test", "checksctp"} {
		if hp, err := exec.LookPath(p); err == nil {
			files["/usr/bin/"+p] = hp
		} else {
			return nil, fmt.Errorf("vm: image: %s missing (lksctp-tools, hack/install-deps.sh)", p)
		}
	}
	guests := make([]string, 0, len(files))
	for g := range files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		if err := w.file(g, files[g], 0o755); err != nil {
			return nil, err
		}
		libs, err := sharedLibs(ctx, files[g])
		if err != nil {
			return nil, err
		}
		for _, lib := range libs {
			if !w.has(lib) {
				if err := w.file(lib, lib, 0o755); err != nil {
					return nil, err
				}
			}
		}
	}
	w.data("/init", []byte(initScript(names)), 0o755)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("vm: image: %w", err)
	}
	out := filepath.Join(cfg.Dir, "initramfs.cpio")
	if err := w.writeCPIO(out); err != nil {
		return nil, err
	}
	return &Image{Kernel: k, Initrd: out, Modules: names}, nil
}

// initScript mounts what the tests use (bpffs for pinned maps, debugfs for
// the verifier log paths some tools read), loads the modules and hands over
// to the agent. The console is ttyS0 (a log file on the host); the agent
// talks on ttyS1.
func initScript(mods []string) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /sys/fs/bpf
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ln -sf /proc/self/fd /dev/fd
ip link set lo up
`)
	for _, m := range mods {
		fmt.Fprintf(&b, "insmod /lib/modules/%s.ko || echo 'telcolb-vm: insmod %s failed'\n", m, m)
	}
	b.WriteString("echo telcolb-vm: modules loaded\nexec /bin/telcolb-vmagent --port /dev/ttyS1\n")
	return b.String()
}

func findFile(paths ...string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %v exists", paths)
}

var lddLib = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the libraries (and the dynamic loader) a program needs.
func sharedLibs(ctx context.Context, prog string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", prog).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic")) {
			return nil, nil
		}
		return nil, fmt.Errorf("vm: ldd %s: %w: %s", prog, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "not found") {
			return nil, fmt.Errorf("vm: %s: %s", prog, strings.TrimSpace(sc.Text()))
		}
		if m := lddLib.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

func modName(rel string) string {
	b := path.Base(rel)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(b, ".ko"), "-", "_")
}

// moduleOrder resolves wanted module names into a load order (dependencies
// first, each once). Debian's package ships no modules.dep (depmod runs at
// install), so dependencies come from each module's .modinfo "depends=".
func moduleOrder(ctx context.Context, modDir string, wanted []string) ([]string, error) {
	byName := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(modDir, p)
			byName[modName(rel)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vm: modules: %w", err)
	}
	var order []string
	seen := map[string]bool{}
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		rel, ok := byName[name]
		if !ok {
			return fmt.Errorf("vm: module %q (wanted by %s) not in %s (built in, or absent from this kernel)", name, from, modDir)
		}
		if seen[rel] {
			return nil
		}
		seen[rel] = true
		data, err := readModule(ctx, filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("vm: module %s: %w", rel, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		order = append(order, rel)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, "the test"); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads "depends=" from a module's .modinfo section.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

func readModule(ctx context.Context, p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("vm: module: %w", err)
		}
		return b, nil
	case strings.HasSuffix(p, ".ko.xz"):
		out, err := exec.CommandContext(ctx, "xz", "-dc", p).Output()
		if err != nil {
			return nil, fmt.Errorf("vm: module: xz -dc %s: %w", p, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("vm: module %s: unsupported compression", p)
}

// BuildGo builds static (CGO_ENABLED=0) binaries of the given packages into
// dir and returns their paths by package base name.
func BuildGo(ctx context.Context, dir string, cgo bool, pkgs ...string) (map[string]string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if cgo {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: go build %v: %w: %s", pkgs, err, out)
	}
	res := map[string]string{}
	for _, p := range pkgs {
		res[path.Base(p)] = filepath.Join(dir, path.Base(p))
	}
	return res, nil
}
