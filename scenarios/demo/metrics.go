package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/telcolb/telcolb/monitoring"
	"github.com/telcolb/telcolb/monitoring/dashboards"
	"github.com/telcolb/telcolb/scenarios/l4"
)

// metrics ends the demo: where the daemon's metrics are (scraped once here
// with the token, as Prometheus would), and the dashboards to import.
func metrics(ctx context.Context, env *l4.Env) error {
	step("metrics and dashboards")
	body, err := env.Daemon.Metrics(ctx)
	if err != nil {
		return fmt.Errorf("scrape the daemon: %w", err)
	}
	series := 0
	for _, l := range strings.Split(body, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			series++
		}
	}
	fmt.Printf("daemon metrics: http://%s/metrics in namespace %s, %d series now\n", l4.APIAddress, env.Lab.LB.NS, series)
	fmt.Printf("  every request needs Authorization: Bearer <token>; the token is %s (on a node: <state-dir>/api-token)\n", env.Daemon.TokenFile)
	fmt.Println("  controller metrics: --metrics-bind-address (default :8080)/metrics, no token")
	fmt.Println("  every metric: docs/metrics.md")
	fmt.Printf("alert rules: %s (Prometheus), %s (PrometheusRule)\n",
		filepath.Join(monitoring.Dir, monitoring.RuleFile), filepath.Join(monitoring.Dir, monitoring.PrometheusRule))
	fmt.Println("dashboards (Grafana: Dashboards > New > Import, upload the file; or the k8s/deploy/monitoring component):")
	for _, d := range dashboards.All() {
		fmt.Printf("  %-56s %s\n", filepath.Join(monitoring.Dir, monitoring.DashboardsDir, d.FileName()), d.Title)
	}
	return nil
}
