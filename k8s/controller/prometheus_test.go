package controller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telcolb/telcolb/monitoring/dashboards"
	"github.com/telcolb/telcolb/monitoring/metricsdoc"
	"github.com/telcolb/telcolb/monitoring/promtest"
)

// TestControllerDashboardAndAlertsAgainstPrometheus: a real Prometheus
// scrapes the controller (envtest API server, a real daemon server and one
// daemon URL where nothing answers) after a 4-address pool is filled and a
// fifth Service finds it full. Every panel query of the Controller dashboard
// and the controller's alert expressions must return series through
// Prometheus's HTTP API; `promtool check metrics` passes on the exposition.
func TestControllerDashboardAndAlertsAgainstPrometheus(t *testing.T) {
	needEnv(t)
	promtest.RequireTools(t, "prometheus", "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	reg := prometheus.NewPedanticRegistry()
	metricsSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(metricsSrv.Close)
	d := startDaemon(t)
	// Nothing listens on the discard port: that daemon is down.
	c := startController(t, ctrlOpts{pools: "defaultPool=10.63.0.1-10.63.0.4", daemons: []string{d.URL, "http://127.0.0.1:9"}, reg: reg})
	ns := makeNamespace(t)
	for i := 1; i <= 4; i++ {
		makeServedService(t, ns, fmt.Sprintf("s%d", i), c.class)
	}
	for i := 1; i <= 4; i++ {
		waitIngress(t, ns, fmt.Sprintf("s%d", i), 1)
	}
	makeServedService(t, ns, "s5", c.class)

	// Prometheus on a free loopback port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	args, err := promtest.WriteConfig(dir, listen, []promtest.Job{{Name: "telcolb-controller", Targets: []string{strings.TrimPrefix(metricsSrv.URL, "http://")}}})
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "prometheus", args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pc := promtest.Client{Base: "http://" + listen, HTTP: &http.Client{Timeout: 20 * time.Second}}
	if err := pc.WaitReady(ctx); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	// The failures and the pool filling are scraped; wait until the
	// allocation failure counter has two samples for rate().
	eventually(t, 60*time.Second, "allocation failures and a down daemon in Prometheus", func() error {
		for _, q := range []string{`telcolb_controller_allocation_failures_total`, `telcolb_controller_daemon_up == 0`, `count_over_time(telcolb_controller_allocation_failures_total[10s]) >= 2`} {
			res, err := pc.Query(ctx, q)
			if err != nil {
				return err
			}
			if len(res) == 0 {
				return fmt.Errorf("%s: no series", q)
			}
		}
		return nil
	})

	resp, err := http.Get(metricsSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	check := exec.CommandContext(ctx, "promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on the controller's /metrics: %v\n%s", err, out)
	}
	// Every telcolb family served is in docs/metrics.md with its type.
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	known := metricsdoc.Names(table)
	for _, l := range strings.Split(string(body), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[1] != "TYPE" || !strings.HasPrefix(f[2], "telcolb_") {
			continue
		}
		if m, ok := known[f[2]]; !ok || m.Type != f[3] {
			t.Errorf("the controller exports %s (%s): %s lists %+v", f[2], f[3], metricsdoc.Path, m)
		}
	}

	var ds []dashboards.Spec
	for _, s := range dashboards.All() {
		if s.File == "controller" {
			ds = append(ds, s)
		}
	}
	checks, problems := promtest.PanelChecks(ctx, pc, ds)
	checks = append(checks, promtest.AlertChecks()...)
	const daemonLab = "daemon metric: scenarios/metrics TestDashboardsAndAlertsAgainstPrometheus evaluates it"
	p, notes := promtest.Evaluate(ctx, pc, checks, promtest.Unexercised{
		"alert TelcolbEndpointDown":             daemonLab,
		"alert TelcolbAMFAssociationDown":       daemonLab,
		"alert TelcolbN2SteeringFailuresRising": daemonLab,
		"alert TelcolbBGPSessionDown":           daemonLab,
		"alert TelcolbBFDSessionDown":           daemonLab,
		"alert TelcolbDiameterPeerDown":         daemonLab,
		"alert TelcolbHASyncCertificateExpiring": "HA sync metric: no HA group here; its promtool rule test (monitoring/alerts/testdata) evaluates it, " +
			"cmd/telcolb/app TestHATLSMetricsFollowRenewal checks the gauge",
	})
	for _, n := range notes {
		t.Log(n)
	}
	for _, p := range append(problems, p...) {
		t.Error(p)
	}
	t.Logf("%d queries evaluated", len(checks))
}
