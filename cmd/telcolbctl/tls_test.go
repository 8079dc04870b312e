package main

import (
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/internal/testpki"
)

// gate is a ReadyGate the test opens.
type gate struct{ why atomic.Value }

func (g *gate) Waiting() string { s, _ := g.why.Load().(string); return s }

// startTLSDaemon serves the daemon API over TLS the way the daemon does.
func startTLSDaemon(t *testing.T, pair testpki.Pair, ready app.ReadyGate) string {
	t.Helper()
	srv, err := app.NewServer(app.Config{
		Datapath: &memDatapath{services: map[uint32]dataplane.Service{}}, StateDir: t.TempDir(), Token: "tok", Ready: ready,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := pair.WriteFiles(t, t.TempDir())
	o := app.Options{APITLSCertFile: certFile, APITLSKeyFile: keyFile}
	tc, err := o.APITLSConfig(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { _ = hs.Close(); srv.Close() })
	return "https://" + ln.Addr().String()
}

func TestCLIVerifiesTheDaemonOverTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "api"), testpki.NewCA(t, "other")
	const name = "telcolb-daemon.telcolb-system.svc"
	url := startTLSDaemon(t, ca.IssueValid(t, name), nil)
	tests := []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"right CA and name", []string{"--ca-file=" + ca.File, "--tls-server-name=" + name}, exitOK, ""},
		{"system roots", nil, exitFailure, "failed to verify certificate"},
		{"wrong CA", []string{"--ca-file", other.File, "--tls-server-name", name}, exitFailure, "unknown authority"},
		{"wrong name", []string{"--ca-file=" + ca.File, "--tls-server-name=elsewhere.example"}, exitFailure, "elsewhere.example"},
		{"skip verify", []string{"--insecure-skip-verify"}, exitOK, ""},
		{"CA and skip verify", []string{"--insecure-skip-verify", "--ca-file=" + ca.File}, exitUsage, "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, url, "", append(append([]string{"--token=tok"}, tt.args...), "health")...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.inStderr) {
				t.Fatalf("exit %d stderr %q, want %d and %q", r.code, r.stderr, tt.code, tt.inStderr)
			}
		})
	}
	// From the environment, as the DaemonSet's readiness probe runs it.
	var out, errb strings.Builder
	vars := map[string]string{"TELCOLB_SERVER": url, "TELCOLB_TOKEN": "tok", "TELCOLB_CA_FILE": ca.File, "TELCOLB_TLS_SERVER_NAME": name}
	if code := run([]string{"ready"}, env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}); code != exitOK {
		t.Fatalf("ready from the environment: exit %d, %s", code, errb.String())
	}
}

// TestCLIReadyFollowsTheHAGate: "ready" (the readiness probe) fails while
// the daemon waits for its HA peers' bulk resync, and succeeds after.
func TestCLIReadyFollowsTheHAGate(t *testing.T) {
	g := &gate{}
	g.why.Store("bulk resync from lb2")
	url, _ := startDaemonWithGate(t, g)
	r := runCLI(t, url, "", "--token=tok", "ready")
	if r.code == exitOK || !strings.Contains(r.stderr, "bulk resync from lb2") {
		t.Fatalf("syncing daemon: exit %d stderr %q, want a failure naming the reason", r.code, r.stderr)
	}
	g.why.Store("")
	if r := runCLI(t, url, "", "--token=tok", "ready"); r.code != exitOK || strings.TrimSpace(r.stdout) != "ready" {
		t.Fatalf("ready daemon: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, "http://127.0.0.1:1", "", "--token=tok", "ready"); r.code == exitOK {
		t.Fatal("unreachable daemon reported ready")
	}
}

func startDaemonWithGate(t *testing.T, g app.ReadyGate) (string, *memDatapath) {
	t.Helper()
	dp := &memDatapath{services: map[uint32]dataplane.Service{}}
	srv, err := app.NewServer(app.Config{Datapath: dp, StateDir: t.TempDir(), Token: "tok", Ready: g,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL, dp
}
