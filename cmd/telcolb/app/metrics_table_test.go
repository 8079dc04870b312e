package app

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha/sync"
	"github.com/telcolb/telcolb/monitoring/metricsdoc"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// TestMetricTableListsEveryDaemonMetric holds the daemon's own series to
// docs/metrics.md (names, labels and types, both ways) and its exposition
// to promlint, what `promtool check metrics` runs.
func TestMetricTableListsEveryDaemonMetric(t *testing.T) {
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	prober := &scriptedProber{}
	env := newEnv(t, func(c *Config) { c.EndpointTrafficMetrics = true; c.Prober = prober })
	svc := webService()
	svc.Probe = &api.Probe{Type: api.ProbeTCP}
	prober.set("10.0.0.2:8080", true)
	if err := env.client(t, "").ApplyService(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	env.dp.mu.Lock()
	env.dp.stats[1] = dataplane.ServiceStats{Packets: 10, Bytes: 1000,
		Endpoints: []dataplane.EndpointStats{{Packets: 4, Bytes: 400, Sessions: 2}, {Packets: 6, Bytes: 600, Sessions: 3}}}
	env.dp.drops = map[dataplane.DropReason]uint64{"no_endpoint": 7}
	env.dp.mu.Unlock()
	eventually(t, "a probe failure counted", func() bool {
		return testutil.CollectAndCount(&collector{s: env.srv}, "telcolb_probe_failures_total") > 0
	})

	ha := &haCollector{read: func() haSnapshot {
		return haSnapshot{peers: []string{"lb2"}, up: map[string]bool{"lb2": true}, synced: map[string]bool{},
			stats: sync.NodeStats{CertNotAfter: time.Now().Add(24 * time.Hour),
				Stats: sync.Stats{Peers: []sync.PeerStats{{Name: "lb2", RTO: 200 * time.Millisecond}}}}}
	}}
	if err := env.reg.Register(ha); err != nil {
		t.Fatal(err)
	}
	described, err := metricsdoc.Describe(collectors{&collector{s: env.srv}, &advCollector{a: env.srv.adv}, ha})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range metricsdoc.Compare(table, metricsdoc.SourceDaemon, described, metricsdoc.Types(mfs)) {
		t.Error(p)
	}
	problems, err := testutil.GatherAndLint(env.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestEndpointTrafficMetricsAreOptIn: per-endpoint packets and bytes cost
// two series per endpoint and are exported only when asked for; the
// service totals and per-endpoint sessions are always there.
func TestEndpointTrafficMetricsAreOptIn(t *testing.T) {
	for _, on := range []bool{false, true} {
		env := newEnv(t, func(c *Config) { c.EndpointTrafficMetrics = on })
		if err := env.client(t, "").ApplyService(context.Background(), webService()); err != nil {
			t.Fatal(err)
		}
		c := &collector{s: env.srv, endpointTraffic: on}
		want := 0
		if on {
			want = 2
		}
		for name, n := range map[string]int{"telcolb_endpoint_packets_total": want, "telcolb_endpoint_bytes_total": want,
			"telcolb_endpoint_sessions_total": 2, "telcolb_service_packets_total": 1, "telcolb_endpoint_up": 2} {
			if got := testutil.CollectAndCount(c, name); got != n {
				t.Errorf("endpoint traffic %v: %d %s series, want %d", on, got, name, n)
			}
		}
	}
}

// bulkGNB registers many UEs through the proxy, more at once than n2GNB.
func bulkGNB(t *testing.T, net *memory.Network, name string, ues int) {
	t.Helper()
	registeredGNB(t, n2.GNBConfig{Name: name, Transport: net, UEs: ues, SetID: 1, Parallel: 512, Wait: 30 * time.Second})
}

// countSeries gathers the registry and returns the series per family.
func countSeries(t *testing.T, env *testEnv) (int, map[string]int) {
	t.Helper()
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	total := 0
	for _, mf := range mfs {
		per[mf.GetName()] = len(mf.GetMetric())
		total += len(mf.GetMetric())
	}
	return total, per
}

// TestSeriesStayBoundedWith10000UEsAnd1000Services: 999 datapath services
// (TCP, UDP, SCTP; one endpoint each) and one N2 service with 3 AMFs, 10,000
// registered UEs: fewer than 5,000 series, and as many with 10,000 UEs as
// with 100 (no label grows with UEs).
func TestSeriesStayBoundedWith10000UEsAnd1000Services(t *testing.T) {
	const services, ues, budget = 1000, 10000, 5000
	dir := t.TempDir()
	st := store{stateDir: dir, maxID: services}
	if err := os.MkdirAll(st.dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	protos := []string{api.ProtocolTCP, api.ProtocolUDP, api.ProtocolSCTP}
	for i := 1; i < services; i++ {
		s := api.Service{Name: fmt.Sprintf("svc-%04d", i), VIP: fmt.Sprintf("10.100.%d.%d", i/256, i%256), Port: 80,
			Protocol: protos[i%3], Endpoints: []api.Endpoint{{Address: fmt.Sprintf("10.200.%d.%d", i/256, i%256), Port: 8080}}}
		raw, err := json.Marshal(serviceFile{Version: storeVersion, IDs: []uint32{uint32(i)}, Service: s})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(st.dir(), serviceFileName(s.Name)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env, net := n2Env(t, 3)
	env.stop()
	dp := newFakeDatapath()
	dp.maxID = services
	env = startEnv(t, Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t), N2: env.cfg.N2})
	ctx := context.Background()
	c := env.client(t, "")
	if err := c.ApplyService(ctx, n2Service("10.0.1.1", "10.0.1.2", "10.0.1.3")); err != nil {
		t.Fatal(err)
	}
	n2GNB(t, net, "gnb1", 100)
	eventually(t, "100 UEs", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && st.ActiveConnections == 100
	})
	few, _ := countSeries(t, env)
	bulkGNB(t, net, "gnb2", ues-100)
	eventually(t, "10,000 UEs", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && st.ActiveConnections == ues
	})
	many, per := countSeries(t, env)
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return per[names[i]] > per[names[j]] })
	for _, n := range names {
		t.Logf("%6d %s", per[n], n)
	}
	t.Logf("%d series with %d services and %d UEs (%d with 100 UEs)", many, services, ues, few)
	if many >= budget {
		t.Errorf("%d series with %d services and %d UEs, want < %d", many, services, ues, budget)
	}
	if many != few {
		t.Errorf("%d series with 100 UEs, %d with %d: a label grows with UEs", few, many, ues)
	}
}

// collectors describes and collects several collectors as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
