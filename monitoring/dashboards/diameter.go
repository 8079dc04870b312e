package dashboards

func init() { register("diameter", diameter) }

// diameter: the Diameter agents (relay/proxy in front of Diameter servers).
func diameter() Spec {
	const ag = `agent=~"$agent"`
	return Spec{
		File:        "diameter",
		Title:       "telcolb / Diameter",
		Description: "Diameter agents: sessions per server, server watchdog state, requests and answers by command, Result-Codes, retransmissions and rejections.",
		Variables:   []Variable{{Name: "agent", Label: "Diameter service", Metric: "telcolb_diameter_clients", LabelName: "agent"}},
		Rows: []Row{
			{Title: "Sessions and peers", Panels: []Panel{
				{Title: "Sessions per server", Description: "Session-Id bindings to each server.",
					Queries: []Query{{Expr: `sum by (agent, server) (telcolb_diameter_sessions{` + ag + `})`, Legend: "{{agent}} {{server}}"}}},
				{Title: "Server watchdog state", Description: "Each server's current RFC 6733 / 3539 state (okay: answering watchdogs).",
					Queries: []Query{{Expr: `max by (agent, server, state) (telcolb_diameter_peer_state{` + ag + `}) == 1`, Legend: "{{agent}} {{server}} {{state}}"}}},
				{Title: "Servers okay", Kind: Stat,
					Queries: []Query{{Expr: `sum(telcolb_diameter_peer_state{` + ag + `,state="okay"})`, Legend: "okay"}}},
				{Title: "Client connections", Kind: Stat,
					Queries: []Query{{Expr: `sum(telcolb_diameter_clients{` + ag + `})`, Legend: "clients"}}},
			}},
			{Title: "Messages", Panels: []Panel{
				{Title: "Requests by command", Unit: "ops", Description: "side client: from clients; side server: from servers (server-initiated requests).",
					Queries: []Query{{Expr: `sum by (side, application, command) (rate(telcolb_diameter_requests_total{` + ag + `}[$__rate_interval]))`, Legend: "{{side}} {{application}} {{command}}"}}},
				{Title: "Answers by command", Unit: "ops",
					Queries: []Query{{Expr: `sum by (side, application, command) (rate(telcolb_diameter_answers_total{` + ag + `}[$__rate_interval]))`, Legend: "{{side}} {{application}} {{command}}"}}},
				{Title: "Answers by Result-Code", Unit: "ops", Description: "side agent: answers the agent wrote itself (e.g. 3002 unable to deliver).",
					Queries: []Query{{Expr: `sum by (side, result) (rate(telcolb_diameter_result_codes_total{` + ag + `}[$__rate_interval]))`, Legend: "{{side}} {{result}}"}}},
				{Title: "Retransmissions to another server", Unit: "ops",
					Queries: []Query{{Expr: `sum by (server) (rate(telcolb_diameter_retransmissions_total{` + ag + `}[$__rate_interval]))`, Legend: "{{server}}"}}},
				{Title: "Rejected by the agent", Unit: "ops",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_diameter_rejected_total{` + ag + `}[$__rate_interval]))`, Legend: "{{reason}}"}}},
				{Title: "Send errors", Unit: "ops",
					Queries: []Query{{Expr: `sum by (agent) (rate(telcolb_diameter_send_errors_total{` + ag + `}[$__rate_interval]))`, Legend: "{{agent}}"}}},
			}},
		},
	}
}
