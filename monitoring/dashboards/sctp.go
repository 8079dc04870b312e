package dashboards

func init() { register("sctp", sctp) }

// sctp: SCTP associations through the datapath and the N2 proxies.
func sctp() Spec {
	const svc = `service=~"$service",protocol="sctp"`
	return Spec{
		File:        "sctp",
		Title:       "telcolb / SCTP",
		Description: "SCTP associations through the datapath (one conntrack entry per association, every path of a multi-homed association on one endpoint) and the N2 proxies' SCTP associations.",
		Variables:   []Variable{{Name: "service", Label: "SCTP service", Metric: `telcolb_endpoint_sessions_total{protocol="sctp"}`, LabelName: "service"}},
		Rows: []Row{
			{Title: "Datapath", Panels: []Panel{
				{Title: "Live SCTP associations", Kind: Stat,
					Queries: []Query{{Expr: `sum(telcolb_active_connections{protocol="sctp"})`, Legend: "associations"}}},
				{Title: "New associations per endpoint", Unit: "ops",
					Queries: []Query{{Expr: `sum by (service, endpoint) (rate(telcolb_endpoint_sessions_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}} {{endpoint}}"}}},
				{Title: "SCTP packets per service", Unit: "pps",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_service_packets_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "SCTP bytes per service", Unit: "Bps",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_service_bytes_total{` + svc + `}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "SCTP drops", Unit: "pps", Description: "INIT/INIT-ACK parameters that could not be rewritten safely, ASCONF chunks refused.",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_drops_total{reason=~"sctp_.*"}[$__rate_interval]))`, Legend: "{{reason}}"}}},
			}},
			{Title: "N2 proxy associations", Panels: []Panel{
				{Title: "Associations up", Description: "gNB side: associations gNBs hold to the VIP; AMF side: the proxy's associations to the AMFs.",
					Queries: []Query{{Expr: `sum by (proxy, side) (telcolb_n2_associations_up)`, Legend: "{{proxy}} {{side}}"}}},
				{Title: "Send errors", Unit: "ops", Description: "Messages dropped because an association's send queue was full or the send failed.",
					Queries: []Query{{Expr: `sum by (proxy) (rate(telcolb_n2_send_errors_total[$__rate_interval]))`, Legend: "{{proxy}}"}}},
			}},
			// Appended last: panel IDs follow the order, and users' links
			// to the panels above must keep working.
			{Title: "Multi-homed path failover", Panels: []Panel{
				{Title: "Path failovers steered by the LB", Unit: "ops", Description: "Times the datapath began sending an association's endpoint packets on the client's live path because the client's other path went silent or unroutable (sctpPathFailover).",
					Queries: []Query{{Expr: `sum by (service) (rate(telcolb_sctp_path_steerings_total{service=~"$service"}[$__rate_interval]))`, Legend: "{{service}}"}}},
				{Title: "Associations by path count", Description: "Live associations by the number of client addresses the LB knows for them (1: single-homed; at most 4 are tracked).",
					Queries: []Query{{Expr: `sum by (service, paths) (telcolb_sctp_associations{service=~"$service"})`, Legend: "{{service}} {{paths}} paths"}}},
				{Title: "Multi-homed associations", Kind: Stat, Description: "Live associations with more than one client address.",
					Queries: []Query{{Expr: `sum(telcolb_sctp_associations{service=~"$service",paths!="1"})`, Legend: "multi-homed"}}},
			}},
		},
	}
}
