// Package vm runs qemu virtual machines as nodes of the namespace lab
// (scenarios/lab), so that tests reach what the test machine's own kernel
// lacks: kernel SCTP sockets, and a kernel without tcx (Debian 12's 6.1).
//
// A VM is software-emulated (TCG: no KVM needed), boots Debian's packaged
// kernel (unpacked by hack/install-deps.sh into .cache/vm/linux) with an
// initramfs built here: busybox, the kernel modules the test needs, static
// test binaries, lksctp-tools, and telcolb-vmagent, which runs the host's
// commands and returns their output and exit status over a serial port (so
// a test can cut every NIC of the VM and still talk to it).
//
// NICs are e1000 devices on tap interfaces created inside a lab namespace;
// Replace puts a VM in place of a lab host (its veths bridged to the taps,
// its addresses and routes moved into the guest). qemu runs inside the
// namespace, dies with the test process (parent-death signal) and is killed
// by Close; the taps and bridges go with the namespace, so a failed test
// leaves no process, tap or namespace behind.
package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/vm/agent"
)

// NIC is one network interface of a VM: an e1000 device backed by a tap in
// the VM's host namespace, optionally enslaved to a bridge there.
type NIC struct {
	Tap    string
	Bridge string
	MAC    net.HardwareAddr
}

// Config describes a VM.
type Config struct {
	Name  string
	Host  *lab.Host // namespace qemu and the taps live in
	Image *Image
	NICs  []NIC
	// MemoryMB defaults to 1024.
	MemoryMB int
	// Dir holds the console log and the agent socket (a temp dir if empty).
	Dir    string
	Logger *slog.Logger
}

// VM is a running virtual machine.
type VM struct {
	Name string
	cfg  Config
	log  *slog.Logger
	cmd  *exec.Cmd
	done chan struct{}
	werr error
	ag   *agent.Client
	dir  string
	tmp  bool

	// BootToReady is the time from starting qemu to the agent's hello;
	// GuestUptime is the guest's own uptime then (kernel start to ready).
	BootToReady time.Duration
	GuestUptime time.Duration
	Kernel      string
	// Ifaces are the guest NICs set up by Replace.
	Ifaces []GuestIface

	closeOnce sync.Once
	closeErr  error
}

// Require reports whether VM tests must fail rather than skip when a VM
// cannot start: in CI (CI=true) and with TELCOLB_REQUIRE_VM=1.
func Require() bool {
	return os.Getenv("TELCOLB_REQUIRE_VM") == "1" || os.Getenv("CI") == "true"
}

// Preflight checks the tools and kernel a VM needs and says which is missing.
func Preflight() error {
	var errs []error
	for _, tool := range []string{"qemu-system-x86_64", "ldd", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("vm: %s missing (hack/install-deps.sh installs qemu-system-x86): %w", tool, err))
		}
	}
	if _, err := FindKernel(); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		errs = append(errs, fmt.Errorf("vm: no /dev/net/tun for tap devices: %w", err))
	}
	return errors.Join(errs...)
}

// Boot creates the taps, starts qemu in cfg.Host's namespace and waits for
// the guest agent. On error nothing it created is left.
func Boot(ctx context.Context, cfg Config) (_ *VM, err error) {
	if cfg.Host == nil || cfg.Image == nil {
		return nil, errors.New("vm: boot: Host and Image are required")
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v := &VM{Name: cfg.Name, cfg: cfg, log: cfg.Logger.With("vm", cfg.Name), done: make(chan struct{}), dir: cfg.Dir}
	if v.dir == "" {
		if v.dir, err = os.MkdirTemp("", "telcolb-vm-"); err != nil {
			return nil, fmt.Errorf("vm: %w", err)
		}
		v.tmp = true
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.Close())
		}
	}()
	for _, n := range cfg.NICs {
		if err := cfg.Host.IP(ctx, "tuntap", "add", "dev", n.Tap, "mode", "tap"); err != nil {
			return v, fmt.Errorf("vm %s: tap %s: %w", cfg.Name, n.Tap, err)
		}
		if n.Bridge != "" {
			if err := cfg.Host.AttachToBridge(ctx, n.Tap, n.Bridge); err != nil {
				return v, fmt.Errorf("vm %s: %w", cfg.Name, err)
			}
		}
		if err := cfg.Host.IP(ctx, "link", "set", "dev", n.Tap, "up"); err != nil {
			return v, fmt.Errorf("vm %s: tap %s up: %w", cfg.Name, n.Tap, err)
		}
	}
	sock := filepath.Join(v.dir, "agent.sock")
	args := []string{"netns", "exec", cfg.Host.NS, "qemu-system-x86_64",
		"-accel", "tcg", "-machine", "pc", "-cpu", "max", "-smp", "1", "-m", fmt.Sprint(cfg.MemoryMB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Image.Kernel.Image, "-initrd", cfg.Image.Initrd,
		// panic=-1 + -no-reboot: if /init dies, qemu exits instead of hanging.
		// no_timer_check: on a loaded host the emulated timer interrupt can
		// miss the kernel's early IO-APIC timer check, which then panics
		// ("IO-APIC + timer doesn't work!"; seen at load average 40+).
		"-append", "console=ttyS0 panic=-1 loglevel=4 net.ifnames=0 mitigations=off no_timer_check",
		"-serial", "file:" + filepath.Join(v.dir, "console.log"),
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-serial", "chardev:agent",
	}
	for i, n := range cfg.NICs {
		dev := fmt.Sprintf("e1000,netdev=n%d", i)
		if n.MAC != nil {
			dev += ",mac=" + n.MAC.String()
		}
		args = append(args, "-netdev", fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no", i, n.Tap), "-device", dev)
	}
	v.cmd = exec.Command("ip", args...)
	var stderr lockedBuf
	v.cmd.Stdout, v.cmd.Stderr = &stderr, &stderr
	// The VM must not outlive the test process, even one killed by a timeout.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := startOnLongLivedThread(v.cmd); err != nil {
		return v, fmt.Errorf("vm %s: start qemu: %w", cfg.Name, err)
	}
	go func() { v.werr = v.cmd.Wait(); close(v.done) }()

	conn, err := v.dialSocket(ctx, sock, &stderr)
	if err != nil {
		return v, err
	}
	ag, hello, err := agent.Dial(ctx, conn)
	if err != nil {
		return v, fmt.Errorf("vm %s: %w; qemu: %s; console: %s", cfg.Name, err, stderr.String(), v.ConsoleTail(2000))
	}
	v.ag = ag
	v.BootToReady = time.Since(start)
	v.GuestUptime = time.Duration(hello.UptimeMs) * time.Millisecond
	v.Kernel = hello.Kernel
	v.log.Info("vm: ready", "kernel", hello.Kernel, "bootToReady", v.BootToReady, "guestUptime", v.GuestUptime)
	return v, nil
}

func (v *VM) dialSocket(ctx context.Context, sock string, stderr *lockedBuf) (net.Conn, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
		select {
		case <-v.done:
			return nil, fmt.Errorf("vm %s: qemu exited (%v): %s", v.Name, v.werr, stderr.String())
		case <-ctx.Done():
			return nil, fmt.Errorf("vm %s: agent socket: %w", v.Name, ctx.Err())
		case <-t.C:
		}
	}
}

// Run runs argv in the guest and returns its output and exit status. A
// non-zero exit is not an error; failing to run (or ctx ending) is.
func (v *VM) Run(ctx context.Context, argv ...string) (agent.Result, error) {
	if v.ag == nil {
		return agent.Result{Exit: -1}, fmt.Errorf("vm %s: not running", v.Name)
	}
	return v.ag.Run(ctx, nil, nil, argv...)
}

// Sh runs a busybox shell script in the guest and fails unless it exits 0;
// it returns stdout.
func (v *VM) Sh(ctx context.Context, script string) (string, error) {
	r, err := v.Run(ctx, "/bin/sh", "-c", script)
	if err != nil {
		return r.Stdout, fmt.Errorf("vm %s: %w", v.Name, err)
	}
	if r.Exit != 0 {
		return r.Stdout, fmt.Errorf("vm %s: `%s` exited %d: %s%s", v.Name, shorten(script), r.Exit, r.Stdout, r.Stderr)
	}
	return r.Stdout, nil
}

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// ConsoleTail returns the last n bytes of the guest console (kernel log,
// /init's messages): what a failure report should show.
func (v *VM) ConsoleTail(n int) string {
	b, err := os.ReadFile(filepath.Join(v.dir, "console.log"))
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Running reports whether qemu is still running.
func (v *VM) Running() bool {
	select {
	case <-v.done:
		return false
	default:
		return v.cmd != nil && v.cmd.Process != nil
	}
}

// Close kills qemu, waits for it, deletes the taps and the temp dir.
// Idempotent.
func (v *VM) Close() error {
	v.closeOnce.Do(func() {
		var errs []error
		if v.ag != nil {
			// Kill first: closing the socket while qemu runs is harmless,
			// but waiting on the agent of a dying guest is not needed.
			defer v.ag.Close()
		}
		if v.cmd != nil && v.cmd.Process != nil {
			_ = syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-v.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("vm %s: qemu (pid %d) did not exit", v.Name, v.cmd.Process.Pid))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range v.cfg.NICs {
			// Gone already when the namespace was deleted first.
			if err := v.cfg.Host.IP(ctx, "link", "del", "dev", n.Tap); err != nil && !strings.Contains(err.Error(), "Cannot find device") && !strings.Contains(err.Error(), "No such file") {
				errs = append(errs, fmt.Errorf("vm %s: delete tap %s: %w", v.Name, n.Tap, err))
			}
		}
		if v.tmp {
			_ = os.RemoveAll(v.dir)
		}
		v.closeErr = errors.Join(errs...)
	})
	return v.closeErr
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// Bg is a command running in the guest in the background (Start).
type Bg struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    agent.Result
	err    error
}

// Start runs argv in the guest without waiting; Stop kills it, Wait waits.
// Close of the VM ends it too.
func (v *VM) Start(argv ...string) *Bg {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bg{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.res, b.err = v.Run(ctx, argv...)
	}()
	return b
}

// Wait waits for the command to end and returns what Run would have.
func (b *Bg) Wait(ctx context.Context) (agent.Result, error) {
	select {
	case <-b.done:
		return b.res, b.err
	case <-ctx.Done():
		return agent.Result{Exit: -1}, ctx.Err()
	}
}

// Stop kills the command (if still running) and returns its output so far.
func (b *Bg) Stop() agent.Result {
	b.cancel()
	<-b.done
	return b.res
}

// SCTPCounters reads the guest kernel's /proc/net/sctp/snmp.
func (v *VM) SCTPCounters(ctx context.Context) (map[string]int64, error) {
	out, err := v.Sh(ctx, "cat /proc/net/sctp/snmp")
	if err != nil {
		return nil, err
	}
	return ParseSNMP(out)
}

// ParseSNMP reads "Name value" lines (/proc/net/sctp/snmp).
func ParseSNMP(s string) (map[string]int64, error) {
	m := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("vm: snmp line %q: want name and value", line)
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("vm: snmp line %q: %w", line, err)
		}
		m[f[0]] = n
	}
	return m, nil
}

// The parent-death signal fires when the *thread* that forked the child
// exits, not the process; Go ends a thread when a goroutine exits while
// locked to it (namespace helpers do that on errors), which killed a VM
// mid-test. So qemu is forked from one thread that is locked for the life of
// the test process and never exits.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func startOnLongLivedThread(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
