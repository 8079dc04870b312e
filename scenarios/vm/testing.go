package vm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireVM skips the test when not root and not in CI (namespaces and taps
// need root), and fails it with the reason when a VM cannot be started here
// (qemu, busybox, the guest kernel or /dev/net/tun missing): in CI a VM test
// never skips.
func RequireVM(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 && !Require() {
		t.Skip("VM tests need root (network namespaces, tap devices); set TELCOLB_REQUIRE_VM=1 to make this a failure")
	}
	if err := Preflight(); err != nil {
		t.Fatalf("VM lab cannot start: %v", err)
	}
}

var agentBuild struct {
	mu   sync.Mutex
	path string
	dir  string
}

// GoBinaries builds the agent plus pkgs (static) once per test process
// into a shared temp dir, returning paths by package base name.
func GoBinaries(ctx context.Context, pkgs ...string) (map[string]string, error) {
	agentBuild.mu.Lock()
	defer agentBuild.mu.Unlock()
	if agentBuild.dir == "" {
		d, err := os.MkdirTemp("", "telcolb-vmbin-")
		if err != nil {
			return nil, err
		}
		agentBuild.dir = d
	}
	all := append([]string{"github.com/telcolb/telcolb/scenarios/vm/cmd/telcolb-vmagent"}, pkgs...)
	var missing []string
	res := map[string]string{}
	for _, p := range all {
		b := filepath.Join(agentBuild.dir, filepath.Base(p))
		if _, err := os.Stat(b); err == nil {
			res[filepath.Base(p)] = b
			continue
		}
		missing = append(missing, p)
	}
	if len(missing) > 0 {
		built, err := BuildGo(ctx, agentBuild.dir, false, missing...)
		if err != nil {
			return nil, err
		}
		for k, v := range built {
			res[k] = v
		}
	}
	return res, nil
}

// TestImage builds binaries of pkgs and an image holding them under
// /usr/bin, plus files (guest path -> host path), for a test.
func TestImage(t testing.TB, modules []string, files map[string]string, pkgs ...string) *Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	bins, err := GoBinaries(ctx, pkgs...)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{}
	for name, p := range bins {
		if name != "telcolb-vmagent" {
			all["/usr/bin/"+name] = p
		}
	}
	for g, h := range files {
		all[g] = h
	}
	img, err := BuildImage(ctx, k, ImageConfig{Dir: t.TempDir(), Modules: modules, Files: all, Agent: bins["telcolb-vmagent"]})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestLogger sends VM logs to the test log.
func TestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// CloseOnCleanup closes v when the test ends, logging the guest console
// if the test failed.
func CloseOnCleanup(t testing.TB, v *VM) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vm %s console (tail):\n%s", v.Name, v.ConsoleTail(4000))
		}
		if err := v.Close(); err != nil {
			t.Errorf("vm close: %v", err)
		}
	})
}
