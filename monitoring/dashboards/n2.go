package dashboards

func init() { register("n2", n2) }

// n2: the NGAP-aware N2 proxies.
func n2() Spec {
	const px = `proxy=~"$proxy"`
	return Spec{
		File:        "n2",
		Title:       "telcolb / N2",
		Description: "N2 proxies: UE contexts per AMF, NGAP messages per procedure, steering failures, rejected PDUs by reason, associations per AMF and per gNB and AMF.",
		Variables:   []Variable{{Name: "proxy", Label: "N2 service", Metric: "telcolb_n2_associations_up", LabelName: "proxy"}},
		Rows: []Row{
			{Title: "UEs and AMFs", Panels: []Panel{
				{Title: "UE contexts per AMF",
					Queries: []Query{{Expr: `sum by (proxy, amf) (telcolb_n2_ue_contexts{` + px + `})`, Legend: "{{proxy}} {{amf}}"}}},
				{Title: "NG associations per AMF", Description: "wanted: one per set-up gNB; ready: NG Setup answered; overloaded: Overload Start received.",
					Queries: []Query{{Expr: `sum by (amf, state) (telcolb_n2_amf_associations{` + px + `})`, Legend: "{{amf}} {{state}}"}}},
				{Title: "SCTP associations up", Description: "gNB side and AMF side.",
					Queries: []Query{{Expr: `sum by (proxy, side) (telcolb_n2_associations_up{` + px + `})`, Legend: "{{proxy}} {{side}}"}}},
				{Title: "UEs", Kind: Stat,
					Queries: []Query{{Expr: `sum(telcolb_n2_ue_contexts{` + px + `})`, Legend: "UE contexts"}}},
			}},
			{Title: "Messages", Panels: []Panel{
				{Title: "NGAP messages per procedure", Unit: "ops",
					Queries: []Query{{Expr: `sum by (direction, procedure) (rate(telcolb_n2_messages_total{` + px + `}[$__rate_interval]))`, Legend: "{{direction}} {{procedure}}"}}},
				{Title: "Initial UE identities", Unit: "ops", Description: "Initial UE Messages without 5G-S-TMSI, by the identity their NAS carries.",
					Queries: []Query{{Expr: `sum by (identity) (rate(telcolb_n2_initial_nas_identity_total{` + px + `}[$__rate_interval]))`, Legend: "{{identity}}"}}},
				{Title: "Steering failures", Unit: "ops",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_n2_steering_failures_total{` + px + `}[$__rate_interval]))`, Legend: "{{reason}}"}}},
				{Title: "Rejected PDUs by reason", Unit: "ops", Description: "Refused by the TS 38.413 section 10 checks.",
					Queries: []Query{{Expr: `sum by (procedure, reason) (rate(telcolb_n2_rejected_total{` + px + `}[$__rate_interval]))`, Legend: "{{procedure}} {{reason}}"}}},
				{Title: "Malformed PDUs", Unit: "ops",
					Queries: []Query{{Expr: `sum by (direction) (rate(telcolb_n2_malformed_total{` + px + `}[$__rate_interval]))`, Legend: "{{direction}}"}}},
				{Title: "Suppressed logs and Error Indications", Unit: "ops",
					Queries: []Query{{Expr: `sum by (what) (rate(telcolb_n2_suppressed_total{` + px + `}[$__rate_interval]))`, Legend: "{{what}}"}}},
			}},
			// Appended last: panel IDs follow the order, and users' links
			// to the panels above must keep working.
			{Title: "gNBs", Panels: []Panel{
				{Title: "NG associations ready per gNB and AMF", Description: "1 when the gNB's NG association to the AMF is set up, 0 while it is wanted but not ready. gNBs by Global RAN Node ID; past 32 per proxy they add up under other.",
					Queries: []Query{{Expr: `sum by (gnb, amf) (telcolb_n2_gnb_associations_ready{` + px + `})`, Legend: "{{gnb}} to {{amf}}"}}},
				{Title: "gNBs with an AMF not ready", Kind: Stat, Description: "gNBs missing a ready NG association to at least one AMF.",
					Queries: []Query{{Expr: `count(count by (proxy, gnb) (telcolb_n2_gnb_associations_ready{` + px + `} == 0)) or on() (0 * count(telcolb_n2_gnb_associations_ready{` + px + `}))`, Legend: "gNBs"}}},
			}},
		},
	}
}
