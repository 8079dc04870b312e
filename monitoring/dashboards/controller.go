package dashboards

func init() { register("controller", controller) }

// controller: the Kubernetes controller's pools, errors and daemons.
func controller() Spec {
	return Spec{
		File:        "controller",
		Title:       "telcolb / Controller",
		Description: "VIP pools (size and use), allocation failures, reconcile errors, daemons up as the controller sees them.",
		Variables:   []Variable{{Name: "pool", Label: "Pool", Metric: "telcolb_controller_pool_size", LabelName: "pool"}},
		Rows: []Row{
			{Title: "Pools", Panels: []Panel{
				{Title: "Pool size and use",
					Queries: []Query{
						{Expr: `max by (pool, family) (telcolb_controller_pool_size{pool=~"$pool"})`, Legend: "{{pool}} {{family}} size"},
						{Expr: `max by (pool, family) (telcolb_controller_pool_in_use{pool=~"$pool"})`, Legend: "{{pool}} {{family}} in use"},
					}},
				{Title: "Pool use", Unit: "percentunit",
					Queries: []Query{{Expr: `max by (pool, family) (telcolb_controller_pool_in_use{pool=~"$pool"} / telcolb_controller_pool_size{pool=~"$pool"})`, Legend: "{{pool}} {{family}}"}}},
				{Title: "Allocation failures", Unit: "ops",
					Queries: []Query{{Expr: `sum by (pool, reason) (rate(telcolb_controller_allocation_failures_total{pool=~"$pool"}[$__rate_interval]))`, Legend: "{{pool}} {{reason}}"}}},
			}},
			{Title: "Reconciles and daemons", Panels: []Panel{
				{Title: "Reconcile errors", Unit: "ops",
					Queries: []Query{{Expr: `sum by (reason) (rate(telcolb_controller_reconcile_errors_total[$__rate_interval]))`, Legend: "{{reason}}"}}},
				{Title: "Daemons up", Kind: Stat, Description: "Daemons that answered the controller's last health check.",
					Queries: []Query{{Expr: `sum(telcolb_controller_daemon_up)`, Legend: "up"}}},
				{Title: "Daemon up", Description: "Per daemon: 1 answered the last health check, 0 did not.",
					Queries: []Query{{Expr: `max by (daemon) (telcolb_controller_daemon_up)`, Legend: "{{daemon}}"}}},
			}},
		},
	}
}
