package dashboards

func init() { register("l2", l2) }

// l2: the L2 announcer (ARP / NDP): who owns the VIPs, the group members,
// the announcements sent.
func l2() Spec {
	return Spec{
		File:        "l2",
		Title:       "telcolb / L2 announcement",
		Description: "L2 announcer: VIPs owned per node, group members as each node sees them, owner changes, ARP replies, Neighbor Advertisements and gratuitous announcements sent.",
		Rows: []Row{
			{Title: "Ownership", Panels: []Panel{
				{Title: "VIPs owned per node", Description: "VIPs each node answers ARP / NS for; every VIP has one owner when the group agrees.",
					Queries: []Query{{Expr: `sum by (instance) (telcolb_l2_vips_owned)`, Legend: "{{instance}}"}}},
				{Title: "VIPs given to the announcer", Kind: Stat, Description: "Largest count over the nodes; compare with the sum of VIPs owned.",
					Queries: []Query{{Expr: `max(telcolb_l2_vips)`, Legend: "VIPs"}}},
				{Title: "Group members up", Description: "1 when the member is alive and ready, as each node sees it.",
					Queries: []Query{{Expr: `max by (instance, member) (telcolb_l2_member_up)`, Legend: "{{instance}} sees {{member}}"}}},
				{Title: "Owner changes", Unit: "ops", Description: "Takeovers, failbacks and VIPs added, as each node sees them.",
					Queries: []Query{{Expr: `sum by (instance) (rate(telcolb_l2_ownership_changes_total[$__rate_interval]))`, Legend: "{{instance}}"}}},
			}},
			{Title: "Announcements", Panels: []Panel{
				{Title: "Frames sent", Unit: "pps", Description: "ARP replies, Neighbor Advertisements and gratuitous announcements, per interface.",
					Queries: []Query{{Expr: `sum by (instance, interface, kind) (rate(telcolb_l2_frames_sent_total[$__rate_interval]))`, Legend: "{{instance}} {{interface}} {{kind}}"}}},
				{Title: "Malformed ARP / NS received", Unit: "pps",
					Queries: []Query{{Expr: `sum by (instance, interface) (rate(telcolb_l2_malformed_frames_total[$__rate_interval]))`, Legend: "{{instance}} {{interface}}"}}},
			}},
		},
	}
}
