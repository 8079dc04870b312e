package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// mustGauge finds one sample of a metric family by its label text.
func mustGauge(t *testing.T, env *testEnv, name, labels string) prometheus.Collector {
	t.Helper()
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelText(m) == labels {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sample"})
				g.Set(v)
				return g
			}
		}
	}
	t.Fatalf("no %s{%s}", name, labels)
	return nil
}

func labelText(m *dto.Metric) string {
	var parts []string
	for _, lp := range m.GetLabel() {
		parts = append(parts, lp.GetName()+`="`+lp.GetValue()+`"`)
	}
	// Prometheus sorts labels by name; the tests write them service-first.
	if len(parts) == 2 && strings.HasPrefix(parts[0], "endpoint=") {
		parts[0], parts[1] = parts[1], parts[0]
	}
	return strings.Join(parts, ",")
}

func TestMetricsReadTheDatapathOnScrape(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.EndpointTrafficMetrics = true })
	c := env.client(t, "")
	ctx := context.Background()
	if err := c.ApplyService(ctx, webService()); err != nil {
		t.Fatal(err)
	}
	udp := webService()
	udp.Name, udp.Protocol = "dns", api.ProtocolUDP
	udp.Endpoints = udp.Endpoints[:1]
	if err := c.ApplyService(ctx, udp); err != nil {
		t.Fatal(err)
	}
	env.dp.mu.Lock()
	env.dp.stats[1] = dataplane.ServiceStats{Packets: 10, Bytes: 1000, Active: 3, SlowPathPackets: 4,
		Endpoints: []dataplane.EndpointStats{{Packets: 4, Bytes: 400, Sessions: 2, Active: 1}, {Packets: 6, Bytes: 600, Sessions: 3, Active: 2}}}
	env.dp.stats[2] = dataplane.ServiceStats{Packets: 1, Bytes: 80, Active: 1,
		Endpoints: []dataplane.EndpointStats{{Packets: 1, Bytes: 80, Sessions: 1, Active: 1}}}
	env.dp.drops = map[dataplane.DropReason]uint64{"no_endpoint": 7}
	env.dp.mu.Unlock()

	want := `
# HELP telcolb_active_connections Live conntrack entries, by protocol.
# TYPE telcolb_active_connections gauge
telcolb_active_connections{protocol="sctp"} 0
telcolb_active_connections{protocol="tcp"} 3
telcolb_active_connections{protocol="udp"} 1
# HELP telcolb_drops_total Packets the datapath dropped, by reason.
# TYPE telcolb_drops_total counter
telcolb_drops_total{reason="no_endpoint"} 7
# HELP telcolb_endpoint_bytes_total Bytes to and from an endpoint (only with --endpoint-traffic-metrics).
# TYPE telcolb_endpoint_bytes_total counter
telcolb_endpoint_bytes_total{endpoint="10.0.0.1:8080",service="dns"} 80
telcolb_endpoint_bytes_total{endpoint="10.0.0.1:8080",service="web"} 400
telcolb_endpoint_bytes_total{endpoint="10.0.0.2:8080",service="web"} 600
# HELP telcolb_endpoint_packets_total Packets to and from an endpoint (only with --endpoint-traffic-metrics).
# TYPE telcolb_endpoint_packets_total counter
telcolb_endpoint_packets_total{endpoint="10.0.0.1:8080",service="dns"} 1
telcolb_endpoint_packets_total{endpoint="10.0.0.1:8080",service="web"} 4
telcolb_endpoint_packets_total{endpoint="10.0.0.2:8080",service="web"} 6
# HELP telcolb_endpoint_sessions_total Connections (SCTP: associations) created toward an endpoint.
# TYPE telcolb_endpoint_sessions_total counter
telcolb_endpoint_sessions_total{endpoint="10.0.0.1:8080",protocol="udp",service="dns"} 1
telcolb_endpoint_sessions_total{endpoint="10.0.0.1:8080",protocol="tcp",service="web"} 2
telcolb_endpoint_sessions_total{endpoint="10.0.0.2:8080",protocol="tcp",service="web"} 3
# HELP telcolb_endpoint_up 1 when the endpoint passes its probe (or has none), 0 when it is down.
# TYPE telcolb_endpoint_up gauge
telcolb_endpoint_up{endpoint="10.0.0.1:8080",service="dns"} 1
telcolb_endpoint_up{endpoint="10.0.0.1:8080",service="web"} 1
telcolb_endpoint_up{endpoint="10.0.0.2:8080",service="web"} 1
# HELP telcolb_service_bytes_total Bytes of a service, both directions.
# TYPE telcolb_service_bytes_total counter
telcolb_service_bytes_total{protocol="udp",service="dns"} 80
telcolb_service_bytes_total{protocol="tcp",service="web"} 1000
# HELP telcolb_service_packets_total Packets of a service, both directions.
# TYPE telcolb_service_packets_total counter
telcolb_service_packets_total{protocol="udp",service="dns"} 1
telcolb_service_packets_total{protocol="tcp",service="web"} 10
# HELP telcolb_services Number of configured services.
# TYPE telcolb_services gauge
telcolb_services 2
# HELP telcolb_slow_path_packets_total Established packets of datapath services that took the datapath's slow path, not a fast one (DSR, SCTP path failover, fragments, a next hop not cached yet), by protocol; per service in the REST status (slowPathPackets).
# TYPE telcolb_slow_path_packets_total counter
telcolb_slow_path_packets_total{protocol="sctp"} 0
telcolb_slow_path_packets_total{protocol="tcp"} 4
telcolb_slow_path_packets_total{protocol="udp"} 0
# HELP telcolb_state_files_damaged State files set aside (moved to <state dir>/damaged) at this start because they could not be loaded.
# TYPE telcolb_state_files_damaged gauge
telcolb_state_files_damaged 0
# HELP telcolb_vip_announcement_changes_total VIPs that started or stopped being announced (or changed mode) on this node.
# TYPE telcolb_vip_announcement_changes_total counter
telcolb_vip_announcement_changes_total 0
# HELP telcolb_vips_announced VIPs this node hands to an announcer, by mode.
# TYPE telcolb_vips_announced gauge
telcolb_vips_announced{mode="bgp"} 0
telcolb_vips_announced{mode="l2"} 0
`
	if err := testutil.GatherAndCompare(env.reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The same text is served at /metrics.
	r := env.do(t, "GET", "/metrics", "", nil)
	if r.code != 200 || !strings.Contains(r.body, `telcolb_service_packets_total{protocol="tcp",service="web"} 10`) {
		t.Errorf("/metrics = %d %s", r.code, r.body)
	}
	if err := c.DeleteService(ctx, "dns"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(&collector{s: env.srv}, "telcolb_endpoint_up"); n != 2 {
		t.Errorf("endpoint_up series after deleting dns = %d, want 2", n)
	}
}

// SCTP path failover reaches the datapath rule as the service asks (on by
// default with secondary VIPs, hold-down in ms), and the datapath's
// steering count is exported per SCTP service.
func TestSCTPPathFailoverReachesRuleAndMetrics(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	ctx := context.Background()
	amf := api.Service{Name: "amf", VIP: "10.96.0.20", SecondaryVIPs: []string{"10.96.1.20"}, Port: 38412,
		Protocol: api.ProtocolSCTP, Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 38412}}, SCTPPathHoldDownMillis: 300}
	off := amf
	off.Name, off.VIP, off.SecondaryVIPs, off.SCTPPathFailover = "smf", "10.96.0.21", []string{"10.96.1.21"}, api.SCTPPathFailoverOff
	for _, s := range []api.Service{amf, off} {
		if err := c.ApplyService(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	env.dp.mu.Lock()
	rules := map[string]dataplane.Service{}
	for id, r := range env.dp.services {
		rules[r.VIP.String()] = r
		env.dp.stats[id] = dataplane.ServiceStats{PathSteerings: uint64(id) * 2}
	}
	env.dp.mu.Unlock()
	if r := rules["10.96.0.20"]; !r.SCTPPathFailover || r.SCTPPathHoldDown != 300*time.Millisecond {
		t.Errorf("amf rule: failover %v hold-down %s, want on, 300ms", r.SCTPPathFailover, r.SCTPPathHoldDown)
	}
	if r := rules["10.96.0.21"]; r.SCTPPathFailover {
		t.Errorf("smf rule: failover on, want off")
	}
	for _, name := range []string{"amf", "smf"} {
		id := uint32(1)
		if name == "smf" {
			id = 2
		}
		if got := testutil.ToFloat64(mustGauge(t, env, "telcolb_sctp_path_steerings_total", `service="`+name+`"`)); got != float64(id*2) {
			t.Errorf("%s steerings %v, want %d", name, got, id*2)
		}
	}
}
