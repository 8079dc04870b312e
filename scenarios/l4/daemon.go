// Package l4 drives the telcolb daemon inside a lab: it builds the binaries,
// runs the daemon in the lab's lb namespace, talks to its API from outside
// the namespace, and runs real servers and clients (HTTP, UDP, SCTP) on the
// lab hosts. The end-to-end tests, `make demo` and the benchmarks share it.
package l4

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// APIAddress is where the daemon listens inside the lb namespace.
const APIAddress = "127.0.0.1:8091"

// Binaries are the paths of the built programs.
type Binaries struct {
	Telcolb, Telcolbctl string
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// Build compiles telcolb and telcolbctl once per process into dir and
// returns their paths. An empty dir means a cache directory per source tree
// (~/.cache/telcolb/bin-<hash of the module root>), reused by every test
// process instead of a temporary directory each that nothing removes.
func Build(ctx context.Context, dir string) (Binaries, error) {
	buildOnce.Do(func() {
		root, err := moduleRoot(ctx)
		if err != nil {
			buildErr = err
			return
		}
		if dir == "" {
			cache, err := os.UserCacheDir()
			if err != nil {
				cache = os.TempDir() // no $HOME: still one directory per tree
			}
			sum := sha256.Sum256([]byte(root))
			dir = filepath.Join(cache, "telcolb", "bin-"+hex.EncodeToString(sum[:6]))
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = fmt.Errorf("binary dir: %w", err)
			return
		}
		for _, p := range []struct{ pkg, out string }{
			{"./cmd/telcolb", "telcolb"},
			{"./cmd/telcolbctl", "telcolbctl"},
		} {
			// Built aside and renamed: another test process may be running
			// the previous binary (a rename leaves it intact).
			tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", p.out, os.Getpid()))
			cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, p.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				_ = os.Remove(tmp)
				buildErr = fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
				return
			}
			if err := os.Rename(tmp, filepath.Join(dir, p.out)); err != nil {
				_ = os.Remove(tmp)
				buildErr = fmt.Errorf("install %s: %w", p.out, err)
				return
			}
		}
		built = Binaries{Telcolb: filepath.Join(dir, "telcolb"), Telcolbctl: filepath.Join(dir, "telcolbctl")}
	})
	return built, buildErr
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the telcolb module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// DaemonConfig says how to run telcolb in the lab.
type DaemonConfig struct {
	Bin        Binaries
	Host       *lab.Host // the lb namespace
	Interfaces []string
	// StateDir and PinPath persist across Restart; both are removed by Destroy.
	StateDir string
	PinPath  string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// Env is added to the daemon's environment (NAME=value).
	Env []string
	// Log receives the daemon's stdout and stderr.
	Log *bytes.Buffer
}

// Daemon is a telcolb process in a lab namespace.
type Daemon struct {
	cfg    DaemonConfig
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	log    *syncBuffer
	Client *api.Client
	// TokenFile holds the API token (in the state dir).
	TokenFile string
}

// ensureToken reads the token file, writing a random token first when there
// is none.
func ensureToken(path string) (string, error) {
	if raw, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(raw)), nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tok := rand.Text()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token file: %w", err)
	}
	return tok, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartDaemon runs telcolb in cfg.Host's network namespace and waits until
// its API answers. It uses nsenter --net rather than `ip netns exec`, which
// would also give the daemon a private /sys without the host's bpffs, and the
// pinned maps would die with the process instead of surviving a restart.
func StartDaemon(ctx context.Context, cfg DaemonConfig) (*Daemon, error) {
	if cfg.StateDir == "" || cfg.PinPath == "" {
		return nil, errors.New("l4: DaemonConfig needs StateDir and PinPath")
	}
	d := &Daemon{cfg: cfg, log: &syncBuffer{}}
	// The API always wants its token: the test writes the file the daemon
	// would create (<state dir>/api-token, 0600) so its client knows it.
	token, err := ensureToken(filepath.Join(cfg.StateDir, "api-token"))
	if err != nil {
		return nil, err
	}
	d.TokenFile = filepath.Join(cfg.StateDir, "api-token")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       HostDialer(cfg.Host),
		DisableKeepAlives: true,
	}}
	c, err := api.NewClient(api.ClientConfig{BaseURL: "http://" + APIAddress, HTTPClient: hc, Token: token})
	if err != nil {
		return nil, err
	}
	d.Client = c
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Daemon) start(ctx context.Context) error {
	args := []string{"--net=/run/netns/" + d.cfg.Host.NS, d.cfg.Bin.Telcolb,
		"--api-address=" + APIAddress,
		"--interfaces=" + strings.Join(d.cfg.Interfaces, ","),
		"--state-dir=" + d.cfg.StateDir,
		"--bpf-pin-path=" + d.cfg.PinPath,
	}
	args = append(args, d.cfg.ExtraArgs...)
	cmd := exec.Command("nsenter", args...)
	if len(d.cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), d.cfg.Env...)
	}
	cmd.Stdout = d.log
	cmd.Stderr = d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start telcolb: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()

	// Generous: a daemon restoring 16,383 services on a loaded machine.
	deadline := time.Now().Add(90 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.Client.Health(hctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("telcolb exited during start-up: %s", d.log.String())
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("telcolb API not up after 90s: %v\n%s", err, d.log.String())
		}
	}
}

// Pid is the running daemon's process ID (nsenter execs it: no fork), 0
// when it is not running.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// PinPath is where the daemon pins its maps.
func (d *Daemon) PinPath() string { return d.cfg.PinPath }

// Log returns what the daemon printed so far.
func (d *Daemon) Log() string { return d.log.String() }

// stopGrace is how long Stop waits for the daemon to exit after SIGTERM.
const stopGrace = 30 * time.Second

// Stop sends SIGTERM and waits for the process to exit. The datapath stays
// programmed: that is the point of pinned maps.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	// 30 s: Kubernetes' default termination grace period, what a node's
	// daemon gets before SIGKILL. It also outlasts the usrsctp stack's own
	// 15 s wait for its associations to go (usrsctp.Stack.Close), whose
	// report of what remained is then in the log instead of cut off.
	select {
	case <-done:
	case <-time.After(stopGrace):
		// SIGQUIT makes the Go runtime print every goroutine's stack
		// and exit: what the shutdown waited on.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		return fmt.Errorf("telcolb did not exit within %v of SIGTERM; its goroutines at SIGQUIT, by state and first telcolb frame:\n%s", stopGrace, GoroutineSummary(d.Log(), 30))
	}
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
	return nil
}

// Restart stops the daemon and starts it again with the same state.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.Stop(); err != nil {
		return err
	}
	return d.start(ctx)
}

// RestartWith restarts the daemon with other extra arguments (kept for
// later restarts), e.g. another --max-conns.
func (d *Daemon) RestartWith(ctx context.Context, extraArgs ...string) error {
	if err := d.Stop(); err != nil {
		return err
	}
	d.cfg.ExtraArgs = extraArgs
	return d.start(ctx)
}

// Kill sends SIGKILL (a crash: nothing runs on the way out) and waits.
func (d *Daemon) Kill() error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil {
		return err
	}
	<-done
	return nil
}

// Start starts a daemon killed or stopped before.
func (d *Daemon) Start(ctx context.Context) error { return d.start(ctx) }

// RunAnother runs a second telcolb process with this daemon's settings
// changed by args (later flags win) and returns when it exits: for tests of
// what a second instance does.
func (d *Daemon) RunAnother(ctx context.Context, args ...string) (string, error) {
	full := []string{"--net=/run/netns/" + d.cfg.Host.NS, d.cfg.Bin.Telcolb,
		"--api-address=" + APIAddress,
		"--interfaces=" + strings.Join(d.cfg.Interfaces, ","),
		"--state-dir=" + d.cfg.StateDir,
		"--bpf-pin-path=" + d.cfg.PinPath,
	}
	out, err := exec.CommandContext(ctx, "nsenter", append(full, args...)...).CombinedOutput()
	return string(out), err
}

// Destroy stops the daemon and removes the datapath, pins and state.
func (d *Daemon) Destroy(ctx context.Context) error {
	errs := []error{d.Stop()}
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+d.cfg.Host.NS, d.cfg.Bin.Telcolb,
		"--cleanup", "--interfaces="+strings.Join(d.cfg.Interfaces, ","),
		"--state-dir="+d.cfg.StateDir, "--bpf-pin-path="+d.cfg.PinPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("telcolb --cleanup: %w: %s", err, out))
	}
	if err := os.RemoveAll(d.cfg.PinPath); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(d.cfg.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Ctl runs telcolbctl inside the daemon's namespace and returns its output.
func (d *Daemon) Ctl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--net=/run/netns/" + d.cfg.Host.NS, d.cfg.Bin.Telcolbctl, "--server=http://" + APIAddress, "--token-file=" + d.TokenFile}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("telcolbctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Metrics reads the daemon's /metrics (Prometheus text) from inside its
// namespace, with its token.
func (d *Daemon) Metrics(ctx context.Context) (string, error) {
	tok, err := os.ReadFile(d.TokenFile)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: HostDialer(d.cfg.Host), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+APIAddress+"/metrics", nil)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("metrics: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// HostDialer returns a DialContext that opens its sockets inside h's network
// namespace (a socket keeps the namespace it was created in).
func HostDialer(h *lab.Host) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// RequireLocalVIP fails the test unless vip is a local address of host on
// the daemon's local-VIP interface (telcolb0), where the daemon puts the
// VIPs of the services it terminates (N2, PFCP).
func RequireLocalVIP(t testing.TB, ctx context.Context, host *lab.Host, vip netip.Addr) {
	t.Helper()
	out, err := host.Exec(ctx, "ip", "-o", "addr", "show", "dev", "telcolb0")
	bits := 32
	if vip.Is6() {
		bits = 128
	}
	if err != nil || !strings.Contains(string(out), " "+netip.PrefixFrom(vip, bits).String()+" ") {
		t.Fatalf("VIP %v is not a local address on %s's telcolb0 (err %v):\n%s", vip, host.Name, err, out)
	}
}

// Signal sends sig to the running daemon: SIGSTOP freezes it (its timers,
// BFD included, stop; the pinned datapath keeps forwarding), SIGCONT thaws it.
func (d *Daemon) Signal(sig syscall.Signal) error {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		return errors.New("telcolb is not running")
	}
	return cmd.Process.Signal(sig)
}
