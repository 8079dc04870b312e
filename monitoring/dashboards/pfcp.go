package dashboards

func init() { register("pfcp", pfcp) }

// pfcp: the PFCP-aware N4 proxies.
func pfcp() Spec {
	const px = `proxy=~"$proxy"`
	return Spec{
		File:        "pfcp",
		Title:       "telcolb / PFCP",
		Description: "N4 proxies: sessions per UPF, UPF associations, PFCP messages by type, retransmissions absorbed, replays.",
		Variables:   []Variable{{Name: "proxy", Label: "PFCP service", Metric: "telcolb_pfcp_smf_associations", LabelName: "proxy"}},
		Rows: []Row{
			{Title: "Sessions and peers", Panels: []Panel{
				{Title: "Sessions per UPF",
					Queries: []Query{{Expr: `sum by (proxy, upf) (telcolb_pfcp_sessions{` + px + `})`, Legend: "{{proxy}} {{upf}}"}}},
				{Title: "UPF associated",
					Queries: []Query{{Expr: `max by (proxy, upf) (telcolb_pfcp_upf_associated{` + px + `})`, Legend: "{{proxy}} {{upf}}"}}},
				{Title: "SMF associations", Kind: Stat,
					Queries: []Query{{Expr: `sum(telcolb_pfcp_smf_associations{` + px + `})`, Legend: "SMFs"}}},
			}},
			{Title: "Messages", Panels: []Panel{
				{Title: "PFCP messages by type", Unit: "ops",
					Queries: []Query{{Expr: `sum by (side, type) (rate(telcolb_pfcp_messages_total{` + px + `}[$__rate_interval]))`, Legend: "{{side}} {{type}}"}}},
				{Title: "Retransmissions absorbed", Unit: "ops",
					Queries: []Query{{Expr: `sum by (proxy) (rate(telcolb_pfcp_retransmissions_absorbed_total{` + px + `}[$__rate_interval]))`, Legend: "{{proxy}}"}}},
				{Title: "Sessions replayed or moved", Unit: "ops",
					Queries: []Query{{Expr: `sum by (upf) (rate(telcolb_pfcp_replays_total{` + px + `}[$__rate_interval]))`, Legend: "{{upf}}"}}},
				{Title: "Steering failures", Unit: "ops",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_pfcp_steering_failures_total{` + px + `}[$__rate_interval]))`, Legend: "{{reason}}"}}},
				{Title: "Malformed messages", Unit: "ops",
					Queries: []Query{{Expr: `sum by (side) (rate(telcolb_pfcp_malformed_total{` + px + `}[$__rate_interval]))`, Legend: "{{side}}"}}},
				{Title: "Send errors", Unit: "ops",
					Queries: []Query{{Expr: `sum by (proxy) (rate(telcolb_pfcp_send_errors_total{` + px + `}[$__rate_interval]))`, Legend: "{{proxy}}"}}},
			}},
		},
	}
}
