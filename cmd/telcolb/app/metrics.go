package app

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

var (
	descServices = prometheus.NewDesc("telcolb_services",
		"Number of configured services.", nil, nil)
	descEndpointUp = prometheus.NewDesc("telcolb_endpoint_up",
		"1 when the endpoint passes its probe (or has none), 0 when it is down.", []string{"service", "endpoint"}, nil)
	descActive = prometheus.NewDesc("telcolb_active_connections",
		"Live conntrack entries, by protocol.", []string{"protocol"}, nil)
	descSvcPackets = prometheus.NewDesc("telcolb_service_packets_total",
		"Packets of a service, both directions.", []string{"service", "protocol"}, nil)
	descSvcBytes = prometheus.NewDesc("telcolb_service_bytes_total",
		"Bytes of a service, both directions.", []string{"service", "protocol"}, nil)
	descEpPackets = prometheus.NewDesc("telcolb_endpoint_packets_total",
		"Packets to and from an endpoint (only with --endpoint-traffic-metrics).", []string{"service", "endpoint"}, nil)
	descEpBytes = prometheus.NewDesc("telcolb_endpoint_bytes_total",
		"Bytes to and from an endpoint (only with --endpoint-traffic-metrics).", []string{"service", "endpoint"}, nil)
	descEpSessions = prometheus.NewDesc("telcolb_endpoint_sessions_total",
		"Connections (SCTP: associations) created toward an endpoint.", []string{"service", "endpoint", "protocol"}, nil)
	descDrops = prometheus.NewDesc("telcolb_drops_total",
		"Packets the datapath dropped, by reason.", []string{"reason"}, nil)
	descAssocPaths = prometheus.NewDesc("telcolb_sctp_associations",
		"Live SCTP associations of a datapath service by the number of client addresses (paths) the LB knows for them; a series per path count that has associations.", []string{"service", "paths"}, nil)
	descPathSteerings = prometheus.NewDesc("telcolb_sctp_path_steerings_total",
		"SCTP path failover: times the LB began sending an association's endpoint packets on the client's live path instead of the address they were sent to.", []string{"service"}, nil)
	descSlowPath = prometheus.NewDesc("telcolb_slow_path_packets_total",
		"Established packets of datapath services that took the datapath's slow path, not a fast one (DSR, SCTP path failover, fragments, a next hop not cached yet), by protocol; per service in the REST status (slowPathPackets).", []string{"protocol"}, nil)
	descProbeFailures = prometheus.NewDesc("telcolb_probe_failures_total",
		"Failed probes of an endpoint.", []string{"service", "endpoint"}, nil)
	descDamagedFiles = prometheus.NewDesc("telcolb_state_files_damaged",
		"State files set aside (moved to <state dir>/damaged) at this start because they could not be loaded.", nil, nil)
	descCTNotMigrated = prometheus.NewDesc("telcolb_conntrack_not_migrated_entries",
		"Conntrack entries (connection directions) this start could not carry over from the previous conntrack layout or size.", nil, nil)
	descXDPPackets = prometheus.NewDesc("telcolb_xdp_packets_total",
		"Packets of established flows the XDP hook carried itself (they never reached TC); the rest of the traffic is TC's.", nil, nil)
	descXDPBytes = prometheus.NewDesc("telcolb_xdp_bytes_total",
		"Bytes of the packets the XDP hook carried itself.", nil, nil)
)

// collector reads the datapath on every scrape, so the metrics never lag
// the maps and the daemon keeps no second copy of the counters.
//
// Series are bounded by configuration, never by traffic: 2 per service
// (packets, bytes) and 2 per endpoint (up, sessions), plus 2 per endpoint
// with endpointTraffic. The budget is a test (TestSeriesStayBounded...).
type collector struct {
	s *Server
	// endpointTraffic adds per-endpoint packet and byte counters.
	endpointTraffic bool
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServices, descEndpointUp, descActive, descSvcPackets, descSvcBytes,
		descEpPackets, descEpBytes, descEpSessions, descDrops, descPathSteerings, descSlowPath, descAssocPaths, descProbeFailures, descDamagedFiles, descCTNotMigrated, descXDPPackets, descXDPBytes} {
		ch <- d
	}
}

func endpointLabel(ep api.Endpoint) string {
	if a, err := netip.ParseAddr(ep.Address); err == nil {
		return netip.AddrPortFrom(a, ep.Port).String()
	}
	return fmt.Sprintf("%s:%d", ep.Address, ep.Port)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	list := make([]storedService, 0, len(s.services))
	for _, ss := range s.services {
		list = append(list, cloneStored(ss))
	}
	s.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(len(list)))
	active := map[string]uint64{api.ProtocolTCP: 0, api.ProtocolUDP: 0, api.ProtocolSCTP: 0}
	slow := map[string]uint64{}
	for _, ss := range list {
		name := ss.Service.Name
		st, err := s.status(ss)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descSvcPackets, err)
			continue
		}
		// N2, PFCP and Diameter services have no datapath rule: their traffic is in
		// the proxies' own series (telcolb_n2_*, telcolb_pfcp_*), and
		// datapath counters that are always zero would only mislead. Their
		// UEs and sessions are not conntrack entries either.
		proxied := ss.Service.N2 || ss.Service.PFCP || ss.Service.Diameter != nil
		if !proxied {
			active[ss.Service.Protocol] += st.ActiveConnections
			slow[ss.Service.Protocol] += st.SlowPathPackets
			ch <- prometheus.MustNewConstMetric(descSvcPackets, prometheus.CounterValue, float64(st.Packets), name, ss.Service.Protocol)
			ch <- prometheus.MustNewConstMetric(descSvcBytes, prometheus.CounterValue, float64(st.Bytes), name, ss.Service.Protocol)
			if ss.Service.Protocol == api.ProtocolSCTP {
				ch <- prometheus.MustNewConstMetric(descPathSteerings, prometheus.CounterValue, float64(st.SCTPPathSteerings), name)
			}
		}
		for i, ep := range ss.Service.Endpoints {
			label := endpointLabel(ep)
			es := st.Endpoints[i]
			up := 0.0
			if es.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descEndpointUp, prometheus.GaugeValue, up, name, label)
			if proxied {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descEpSessions, prometheus.CounterValue, float64(es.Sessions), name, label, ss.Service.Protocol)
			if c.endpointTraffic {
				ch <- prometheus.MustNewConstMetric(descEpPackets, prometheus.CounterValue, float64(es.Packets), name, label)
				ch <- prometheus.MustNewConstMetric(descEpBytes, prometheus.CounterValue, float64(es.Bytes), name, label)
			}
		}
	}
	for proto, n := range active {
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(n), proto)
		// By protocol, not per service: one series more per service
		// would take a node of 1,000 services past its series budget
		// (TestSeriesStayBoundedWith10000UEsAnd1000Services).
		ch <- prometheus.MustNewConstMetric(descSlowPath, prometheus.CounterValue, float64(slow[proto]), proto)
	}
	drops, err := s.dp.DropStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descDrops, fmt.Errorf("datapath drop stats: %w", err))
	} else {
		for reason, n := range drops {
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), string(reason))
		}
	}
	ch <- prometheus.MustNewConstMetric(descDamagedFiles, prometheus.GaugeValue, float64(s.damagedFiles))
	if m, ok := s.dp.(migrationReporter); ok {
		ch <- prometheus.MustNewConstMetric(descCTNotMigrated, prometheus.GaugeValue, float64(m.ConntrackNotMigrated()))
	}
	if x, ok := s.dp.(xdpReporter); ok {
		// Exported in TC mode too (zero): a dashboard's XDP share needs
		// the series to exist before the first interface moves to XDP.
		if p, b, err := x.XDPStats(); err != nil {
			ch <- prometheus.NewInvalidMetric(descXDPPackets, fmt.Errorf("datapath xdp stats: %w", err))
		} else {
			ch <- prometheus.MustNewConstMetric(descXDPPackets, prometheus.CounterValue, float64(p))
			ch <- prometheus.MustNewConstMetric(descXDPBytes, prometheus.CounterValue, float64(b))
		}
	}
	if ap, ok := s.dp.(assocPathCounter); ok {
		c.assocPaths(ch, ap, list)
	}
	for k, n := range s.probes.failureCounts() {
		ch <- prometheus.MustNewConstMetric(descProbeFailures, prometheus.CounterValue, float64(n), k.service, k.endpoint.String())
	}
}

// assocPathCounter is implemented by a datapath that keeps SCTP
// association records (*dataplane.Datapath does).
type assocPathCounter interface {
	AssocPaths() (map[uint32][dataplane.MaxAssocPaths]uint64, error)
}

// assocPaths exports the association records of the SCTP datapath
// services by path count. Only counts that have associations get a
// series: at most MaxAssocPaths per SCTP service, none while idle.
func (c *collector) assocPaths(ch chan<- prometheus.Metric, ap assocPathCounter, list []storedService) {
	counts, err := ap.AssocPaths()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descAssocPaths, fmt.Errorf("datapath association records: %w", err))
		return
	}
	for _, ss := range list {
		if ss.Service.Protocol != api.ProtocolSCTP || ss.Service.N2 || ss.Service.Diameter != nil {
			continue
		}
		var sum [dataplane.MaxAssocPaths]uint64
		for _, id := range ss.IDs {
			for i, n := range counts[id] {
				sum[i] += n
			}
		}
		for i, n := range sum {
			if n > 0 {
				ch <- prometheus.MustNewConstMetric(descAssocPaths, prometheus.GaugeValue, float64(n), ss.Service.Name, strconv.Itoa(i+1))
			}
		}
	}
}
