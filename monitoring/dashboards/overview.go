package dashboards

func init() { register("overview", overview) }

// overview: services, endpoints, sessions, traffic and drops of the
// datapath, over every daemon Prometheus scrapes.
func overview() Spec {
	const svc = `service=~"$service"`
	return Spec{
		File:        "overview",
		Title:       "telcolb / Overview",
		Description: "Services, endpoints up, sessions per service, endpoint and protocol, packet and byte rates, drops by reason. Metrics: docs/metrics.md.",
		Variables:   []Variable{{Name: "service", Label: "Service", Metric: "telcolb_endpoint_up", LabelName: "service"}},
		Rows: []Row{
			{Title: "Services and endpoints", Panels: []Panel{
				{Title: "Services", Kind: Stat, Description: "Services configured, summed over daemons.",
					Queries: []Query{{Expr: `sum(telcolb_services)`, Legend: "services"}}},
				{Title: "Endpoints up", Kind: Stat, Description: "Endpoints passing their probe.",
					Queries: []Query{{Expr: `sum(telcolb_endpoint_up{` + svc + `})`, Legend: "up"}}},
				{Title: "Endpoints down", Kind: Stat, Description: "Endpoints failing their probe (N2: no NG association ready; PFCP: UPF not associated).",
					Queries: []Query{{Expr: `sum(1 - telcolb_endpoint_up{` + svc + `})`, Legend: "down"}}},
				{Title: "Daemons reporting", Kind: Stat, Description: "Daemons whose /metrics Prometheus scraped last time.",
					Queries: []Query{{Expr: `count(telcolb_services)`, Legend: "daemons"}}},
				{Title: "Endpoint up", Description: "1 up, 0 down, per service and endpoint.",
					Queries: []Query{{Expr: `max by (service, endpoint) (telcolb_endpoint_up{` + svc + `})`, Legend: "{{service}} {{endpoint}}"}}},
				{Title: "Probe failures", Unit: "ops", Description: "Failed health probes per second.",
					Queries: []Query{{Expr: `sum by (service, endpoint) (rate(telcolb_probe_failures_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}} {{endpoint}}"}}},
			}},
			{Title: "Sessions", Panels: []Panel{
				{Title: "New sessions per endpoint", Unit: "ops", Description: "Connections (SCTP: associations) created per second toward each endpoint.",
					Queries: []Query{{Expr: `sum by (service, endpoint) (rate(telcolb_endpoint_sessions_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}} {{endpoint}}"}}},
				{Title: "New sessions per service", Unit: "ops",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_endpoint_sessions_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "Live connections per protocol", Description: "Conntrack entries of datapath services (one per connection or SCTP association).",
					Queries: []Query{{Expr: `sum by (protocol) (telcolb_active_connections)`, Legend: "{{protocol}}"}}},
				{Title: "New sessions per protocol", Unit: "ops",
					Queries: []Query{{Expr: `sum by (protocol) (rate(telcolb_endpoint_sessions_total{` + svc + `}[$__rate_interval]))`, Legend: "{{protocol}}"}}},
			}},
			{Title: "Traffic", Panels: []Panel{
				{Title: "Packets per service", Unit: "pps", Description: "Both directions.",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_service_packets_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "Bytes per service", Unit: "Bps", Description: "Both directions.",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_service_bytes_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "Drops by reason", Unit: "pps", Description: "Packets the datapath dropped (docs/metrics.md lists the reasons).",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_drops_total[$__rate_interval]))`, Legend: "{{reason}}"}}},
				{Title: "State", Description: "State files set aside and conntrack entries lost at the daemon's last start.",
					Queries: []Query{
						{Expr: `sum by (instance) (telcolb_state_files_damaged)`, Legend: "damaged state files {{instance}}"},
						{Expr: `sum by (instance) (telcolb_conntrack_not_migrated_entries)`, Legend: "conntrack entries not migrated {{instance}}"},
					}},
				{Title: "Carried by XDP", Unit: "percentunit", Description: "Share of each daemon's datapath packets its XDP hook carried (--attach xdp/auto; 0 in TC mode): established flows on XDP interfaces.",
					Queries: []Query{{Expr: `sum by (instance) (rate(telcolb_xdp_packets_total[$__rate_interval])) / sum by (instance) (rate(telcolb_service_packets_total[$__rate_interval]))`, Legend: "{{instance}}"}}},
			}},
		},
	}
}
