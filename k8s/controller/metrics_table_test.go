package controller

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/monitoring/metricsdoc"
)

// TestMetricTableListsEveryControllerMetric holds the controller's series
// to docs/metrics.md (names, labels, types, both ways) and to promlint.
func TestMetricTableListsEveryControllerMetric(t *testing.T) {
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	described, err := metricsdoc.Describe(m.collectors()...)
	if err != nil {
		t.Fatal(err)
	}
	types, err := metricsdoc.CollectorTypes(m.collectors()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range metricsdoc.Compare(table, metricsdoc.SourceController, described, types) {
		t.Error(p)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
