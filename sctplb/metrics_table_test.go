package sctplb

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/monitoring/metricsdoc"
)

// TestMetricTableListsEveryProxyMetric holds the N2 and N4 proxies'
// series to docs/metrics.md: names, labels and types, both ways, and
// promlint (what `promtool check metrics` runs) on their exposition.
func TestMetricTableListsEveryProxyMetric(t *testing.T) {
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := newMetrics(nil, "amf")
	if err != nil {
		t.Fatal(err)
	}
	n4, err := newN4Metrics(nil, "n4")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		source string
		cs     []prometheus.Collector
	}{{metricsdoc.SourceN2, n2.collectors()}, {metricsdoc.SourcePFCP, n4.collectors()}} {
		described, err := metricsdoc.Describe(c.cs...)
		if err != nil {
			t.Fatal(err)
		}
		types, err := metricsdoc.CollectorTypes(c.cs...)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range metricsdoc.Compare(table, c.source, described, types) {
			t.Error(p)
		}
		reg := prometheus.NewPedanticRegistry()
		for _, col := range c.cs {
			reg.MustRegister(col)
		}
		problems, err := testutil.GatherAndLint(reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}
