package dashboards

func init() { register("bgp", bgp) }

// bgp: the BGP speaker, its BFD sessions and the VIPs each node hands to an
// announcer.
func bgp() Spec {
	return Spec{
		File:        "bgp",
		Title:       "telcolb / BGP and BFD",
		Description: "BGP sessions and prefixes sent per peer, BFD state per peer, VIPs announced by mode and announcement changes, per daemon.",
		Rows: []Row{
			{Title: "BGP", Panels: []Panel{
				{Title: "BGP sessions established", Kind: Stat, Description: "Established sessions over every daemon.",
					Queries: []Query{{Expr: `sum(telcolb_bgp_session_up)`, Legend: "established"}}},
				{Title: "BGP sessions down", Kind: Stat, Description: "Configured peers whose session is not established.",
					Queries: []Query{{Expr: `sum(1 - telcolb_bgp_session_up)`, Legend: "down"}}},
				{Title: "BGP session up per peer", Description: "1 established, 0 not.",
					Queries: []Query{{Expr: `max by (instance, peer) (telcolb_bgp_session_up)`, Legend: "{{instance}} {{peer}}"}}},
				{Title: "Prefixes sent per peer", Description: "VIP routes advertised on the established session.",
					Queries: []Query{{Expr: `sum by (instance, peer) (telcolb_bgp_prefixes_sent)`, Legend: "{{instance}} {{peer}}"}}},
			}},
			{Title: "BFD", Panels: []Panel{
				{Title: "BFD session up per peer", Description: "1 Up, 0 otherwise; a BFD Down takes the BGP session down within the detection time.",
					Queries: []Query{{Expr: `max by (instance, peer) (telcolb_bfd_session_up)`, Legend: "{{instance}} {{peer}}"}}},
			}},
			{Title: "VIP announcement", Panels: []Panel{
				{Title: "VIPs announced by mode", Description: "VIPs each daemon hands to the BGP speaker or the L2 announcer.",
					Queries: []Query{{Expr: `sum by (instance, mode) (telcolb_vips_announced)`, Legend: "{{instance}} {{mode}}"}}},
				{Title: "Announcement changes", Unit: "ops", Description: "VIPs that started or stopped being announced, or changed mode.",
					Queries: []Query{{Expr: `sum by (instance) (rate(telcolb_vip_announcement_changes_total[$__rate_interval]))`, Legend: "{{instance}}"}}},
			}},
		},
	}
}
