// Package lab builds reproducible network topologies out of Linux network
// namespaces for end-to-end tests, `make demo` and benchmarks.
//
// A Lab owns a set of namespaces ("hosts") joined by veth pairs and, for
// shared L2 segments, Linux bridges living in a switch namespace. Everything
// a Lab creates lives inside its own namespaces, so deleting the namespaces
// (Close) removes every veth, bridge, address, route and nftables rule with
// them: nothing is left in the root namespace even when a test fails midway.
//
// Namespace names are "tlb<pid>-<id>-<host>", so Sweep (and
// hack/sweep-namespaces.sh) can remove the namespaces of test processes that
// died without cleaning up, while keeping those of live runs.
//
// Use New in tests (cleanup registered with t.Cleanup) and Build elsewhere
// (the caller must Close). Both build the default L4 topology described in
// Config; Empty plus AddHost/Connect/AddBridge build custom ones.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Lab is a set of namespaces built for one run. Its fields are set by Build
// for the default topology; custom topologies built from Empty only fill ID.
type Lab struct {
	// ID prefixes every namespace name: "tlb<pid>-<random>".
	ID string

	// Default-topology hosts (nil when absent or for custom labs).
	Client   *Host
	Router   *Host // only with Config.Router
	LB       *Host
	Switch   *Host // holds the bridges of the backend segments
	Backends []*Host

	// Links is the number of parallel links per side (Config.Links).
	Links int

	log *slog.Logger

	mu     sync.Mutex
	hosts  []*Host
	closed bool
	macSeq uint16
}

// Empty creates a lab with no hosts, for custom topologies. Call Close when
// done (or use NewEmpty in tests). Stale namespaces of dead runs are swept
// first so a crashed earlier run cannot exhaust resources.
func Empty(ctx context.Context, logger *slog.Logger) (*Lab, error) {
	if err := checkTools(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	if _, err := Sweep(ctx, logger); err != nil {
		logger.Warn("lab: sweeping stale namespaces failed", "err", err)
	}
	id := fmt.Sprintf("tlb%d-%04x", os.Getpid(), rand.Uint32()&0xffff)
	return &Lab{ID: id, log: logger.With("lab", id)}, nil
}

// NewEmpty is Empty for tests: it fails the test on error and closes the lab
// with t.Cleanup.
func NewEmpty(t testing.TB) *Lab {
	t.Helper()
	requireRoot(t)
	l, err := Empty(context.Background(), nil)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}

// New builds the default topology for a test and registers its teardown
// with t.Cleanup. It skips the test when not run as root (namespaces need
// CAP_SYS_ADMIN) and fails it when building fails.
func New(t testing.TB, cfg Config) *Lab {
	t.Helper()
	requireRoot(t)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Build(ctx, cfg)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab needs root (network namespaces)")
	}
}

// testWriter sends lab logs to the test log, so they show only on failure
// or with -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func checkTools() error {
	for _, tool := range []string{"ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("lab needs %q (iproute2): %w", tool, err)
		}
	}
	return nil
}

// Hosts returns every host of the lab in creation order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Host returns the host with the given logical name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

var hostNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// AddHost creates a namespace for a host named name (lower-case letters and
// digits, starting with a letter), with lo up.
func (l *Lab) AddHost(ctx context.Context, name string) (*Host, error) {
	if !hostNameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: host name %q: want [a-z][a-z0-9]{0,15}", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab: closed")
	}
	for _, h := range l.hosts {
		if h.Name == name {
			l.mu.Unlock()
			return nil, fmt.Errorf("lab: host %q already exists", name)
		}
	}
	h := &Host{Name: name, NS: l.ID + "-" + name, lab: l}
	// Registered before creation so Close removes it even if a later step fails.
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	if err := run(ctx, "ip", "netns", "add", h.NS); err != nil {
		return nil, fmt.Errorf("lab: add host %s: %w", name, err)
	}
	h.created = true
	if err := run(ctx, "ip", "-n", h.NS, "link", "set", "lo", "up"); err != nil {
		return nil, fmt.Errorf("lab: host %s lo up: %w", name, err)
	}
	l.log.Debug("lab: host added", "host", name, "netns", h.NS)
	return h, nil
}

// nextMAC returns a locally administered MAC unique within the lab, so L2
// expectations (neighbour entries, captures) are reproducible run to run.
func (l *Lab) nextMAC() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.macSeq++
	return fmt.Sprintf("02:77:00:00:%02x:%02x", l.macSeq>>8, l.macSeq&0xff)
}

// Close stops every process started through the lab's hosts and deletes its
// namespaces (which removes their veths and bridges). It is idempotent and
// keeps going after errors, returning them joined.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	hosts := append([]*Host(nil), l.hosts...)
	l.mu.Unlock()

	var errs []error
	for _, h := range hosts {
		h.stopProcs()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(hosts) - 1; i >= 0; i-- {
		h := hosts[i]
		if !h.created {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", h.NS); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", h.NS, err))
		}
	}
	l.log.Debug("lab: closed")
	return errors.Join(errs...)
}

var staleNSRE = regexp.MustCompile(`^tlb([0-9]+)-`)

// Sweep deletes lab namespaces whose creating process no longer exists
// (names "tlb<pid>-..."), e.g. after a test binary was killed by a timeout.
// It returns the names it removed.
func Sweep(ctx context.Context, logger *slog.Logger) ([]string, error) {
	if logger == nil {
		logger = slog.Default()
	}
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		m := staleNSRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pidAlive(pid) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		logger.Info("lab: removed stale namespace", "netns", e.Name())
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// run executes a command in the current (root) namespace and returns an
// error carrying its output.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}
