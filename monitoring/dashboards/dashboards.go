// Package dashboards defines telcolb's Grafana dashboards in Go with the
// Grafana Foundation SDK. `go run ./monitoring/gen` writes them as JSON to
// k8s/deploy/monitoring/dashboards (committed; a test fails when they are
// stale).
//
// Adding a dashboard is one file: a function building a Spec, registered
// in that file's init. A Spec is plain data (rows of panels, each panel
// one or more PromQL queries), so the tests can evaluate every query
// against a real Prometheus without Grafana.
package dashboards

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Spec is one dashboard.
type Spec struct {
	// File is the JSON file name (without .json) and the dashboard's UID
	// suffix: "overview" is telcolb-overview.json, UID telcolb-overview.
	File        string
	Title       string
	Description string
	// Variables beyond $datasource, in order.
	Variables []Variable
	Rows      []Row
}

// Variable is a query variable filled from one label's values.
type Variable struct {
	Name, Label string
	// Metric and LabelName make the query label_values(Metric, LabelName).
	Metric, LabelName string
}

// Row is a titled row of panels.
type Row struct {
	Title  string
	Panels []Panel
}

// PanelKind is how a panel draws.
type PanelKind int

const (
	// TimeSeries draws each series over time.
	TimeSeries PanelKind = iota
	// Stat shows the last value of each series.
	Stat
)

// Panel is one panel of a dashboard.
type Panel struct {
	Title, Description string
	Kind               PanelKind
	Unit               string // Grafana unit id: "short", "bytes", "Bps", "pps", "percentunit", ...
	Queries            []Query
}

// Query is one PromQL target. Expressions may use the dashboard's
// variables ($service...) and Grafana's $__rate_interval.
type Query struct {
	Expr, Legend string
}

var (
	mu    sync.Mutex
	specs = map[string]func() Spec{}
)

// register adds a dashboard; each dashboard file calls it from init. The
// registry is written only during package initialisation.
func register(file string, build func() Spec) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := specs[file]; dup {
		panic("dashboards: " + file + " registered twice")
	}
	specs[file] = build
}

// All returns every dashboard, sorted by file name.
func All() []Spec {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Spec, 0, len(specs))
	for _, b := range specs {
		out = append(out, b())
	}
	slices.SortFunc(out, func(a, b Spec) int { return cmp.Compare(a.File, b.File) })
	return out
}

// FileName is the JSON file a spec is written to.
func (s Spec) FileName() string { return "telcolb-" + s.File + ".json" }

// UID is the dashboard's Grafana UID.
func (s Spec) UID() string { return "telcolb-" + s.File }

const dsVar = "datasource"

func dsRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${" + dsVar + "}")}
}

// Build turns a spec into a Grafana dashboard.
func (s Spec) Build() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder(s.Title).
		Uid(s.UID()).
		Description(s.Description).
		Tags([]string{"telcolb"}).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder(dsVar).Label("Data source").Type("prometheus"))
	for _, v := range s.Variables {
		q := fmt.Sprintf("label_values(%s, %s)", v.Metric, v.LabelName)
		b = b.WithVariable(dashboard.NewQueryVariableBuilder(v.Name).
			Label(v.Label).
			Datasource(dsRef()).
			Query(dashboard.StringOrMap{Map: map[string]any{"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1}}).
			Definition(q).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			AllValue(".*"))
	}
	// Panel IDs are stable (1, 2, ... in order) so regenerating changes
	// nothing and Grafana links to a panel survive.
	id := uint32(0)
	for _, r := range s.Rows {
		id++
		b = b.WithRow(dashboard.NewRowBuilder(r.Title).Id(id))
		for _, p := range r.Panels {
			id++
			b = b.WithPanel(p.builder(id))
		}
	}
	return b.Build()
}

func (p Panel) targets() []cog.Builder[variants.Dataquery] {
	var out []cog.Builder[variants.Dataquery]
	for i, q := range p.Queries {
		out = append(out, prometheus.NewDataqueryBuilder().
			Datasource(dsRef()).
			Expr(q.Expr).
			LegendFormat(q.Legend).
			RefId(string(rune('A'+i))))
	}
	return out
}

func (p Panel) builder(id uint32) cog.Builder[dashboard.Panel] {
	unit := cmp.Or(p.Unit, "short")
	switch p.Kind {
	case Stat:
		b := stat.NewPanelBuilder().Id(id).Title(p.Title).Description(p.Description).Datasource(dsRef()).
			Unit(unit).Height(5).Span(6)
		for _, t := range p.targets() {
			b = b.WithTarget(t)
		}
		return b
	default:
		b := timeseries.NewPanelBuilder().Id(id).Title(p.Title).Description(p.Description).Datasource(dsRef()).
			Unit(unit).Min(0).Height(8).Span(12)
		for _, t := range p.targets() {
			b = b.WithTarget(t)
		}
		return b
	}
}

// JSON renders a dashboard as Grafana imports it (indented, newline at
// the end, stable: the committed files are compared byte for byte).
func (s Spec) JSON() ([]byte, error) {
	d, err := s.Build()
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", s.File, err)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", s.File, err)
	}
	return append(out, '\n'), nil
}
