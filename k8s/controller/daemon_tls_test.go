package controller

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/internal/testpki"
)

const daemonServerName = "telcolb-daemon.telcolb-system.svc"

// startTLSDaemon serves a real daemon API over TLS as the daemon binary
// does (app.Options.APITLSConfig, certificate re-read on change).
func startTLSDaemon(t *testing.T, pair testpki.Pair, trust *testpki.CA) *testDaemon {
	t.Helper()
	s, err := app.NewServer(app.Config{
		Datapath: &fakeDatapath{services: map[uint32]dataplane.Service{}},
		StateDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
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
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { _ = hs.Close(); _ = s.Close() })
	url := "https://" + ln.Addr().String()
	// The test's own view of the daemon trusts its issuer.
	hc, err := api.ClientTLSConfig{CAFile: trust.File, ServerName: daemonServerName}.HTTPClient(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(api.ClientConfig{BaseURL: url, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return &testDaemon{URL: url, client: c}
}

// TestControllerVerifiesTheDaemonsCertificate: the controller reaches a
// daemon whose API certificate chains to the CA it was given and carries
// the expected name, and programs it; a daemon presenting a certificate of
// another CA (an impostor on a daemon's address) gets nothing, the
// bearer-token-carrying requests never complete, and the controller
// reports it down.
func TestControllerVerifiesTheDaemonsCertificate(t *testing.T) {
	needEnv(t)
	ca, rogue := testpki.NewCA(t, "api"), testpki.NewCA(t, "rogue")
	good := startTLSDaemon(t, ca.IssueValid(t, daemonServerName), ca)
	impostor := startTLSDaemon(t, rogue.IssueValid(t, daemonServerName), rogue)
	hc, err := api.ClientTLSConfig{CAFile: ca.File, ServerName: daemonServerName}.HTTPClient(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	tc := startController(t, ctrlOpts{pools: "defaultPool=10.215.0.0/29", daemons: []string{good.URL, impostor.URL}, reg: reg,
		dial: func(u string) (DaemonClient, error) {
			return api.NewClient(api.ClientConfig{BaseURL: u, Token: "secret", HTTPClient: hc})
		}})
	ns := makeNamespace(t)
	makeServedService(t, ns, "web", tc.class)
	waitIngress(t, ns, "web", 1)
	eventually(t, 20*time.Second, "the verified daemon holds the rule", func() error {
		if n := len(good.rules(t)); n != 1 {
			return fmt.Errorf("%d rules", n)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the impostor reported down", func() error {
		up := daemonUp(t, reg)
		if v, ok := up[impostor.URL]; !ok || v != 0 {
			return fmt.Errorf("daemon_up %v", up)
		}
		if up[good.URL] != 1 {
			return fmt.Errorf("daemon_up %v", up)
		}
		return nil
	})
	if rules := impostor.rules(t); len(rules) != 0 {
		t.Fatalf("the impostor was programmed: %v", rules)
	}
	if !strings.HasPrefix(good.URL, "https://") {
		t.Fatal("not over TLS")
	}
}

// daemonUp reads telcolb_controller_daemon_up per daemon URL; a daemon not
// health-checked yet has no series.
func daemonUp(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "telcolb_controller_daemon_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				out[l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
