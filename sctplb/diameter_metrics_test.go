package sctplb

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/sctplb/diam"
)

// TestDiameterMetricLabelsAreBounded: a peer sending requests of a
// thousand applications, commands and result codes makes at most
// maxLabelValues+1 values of each label, the rest counted as "other",
// nothing lost from the totals.
func TestDiameterMetricLabelsAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newDiamMetrics(reg, "a")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		m.action(diam.Action{Kind: diam.Request, Side: diam.ClientSide, App: uint32(100 + i), Cmd: uint32(5000 + i)}, nil)
		m.action(diam.Action{Kind: diam.Answer, Side: diam.ServerSide, App: uint32(100 + i), Cmd: uint32(5000 + i), Result: uint32(2001 + i)}, nil)
	}
	for name, c := range map[string]prometheus.Collector{"requests": m.requests, "answers": m.answers, "results": m.results} {
		if got := testutil.CollectAndCount(c); got > maxLabelValues+1 {
			t.Errorf("%s: %d series from %d distinct values, want at most %d", name, got, n, maxLabelValues+1)
		}
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("client", "other", "other")); got != n-maxLabelValues {
		t.Errorf("requests counted as other: %v, want %d", got, n-maxLabelValues)
	}
}
