package metricsdoc

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Described is what a collector's descriptor says about one metric.
type Described struct {
	Name   string
	Labels []string // constant and variable, sorted
	Help   string
}

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]*)", help: "((?:[^"\\]|\\.)*)", unit: "[^"]*", constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// Describe lists the descriptors of cs (client_golang has no accessor for
// a Desc's name and labels; its String form is stable and parsed here).
func Describe(cs ...prometheus.Collector) ([]Described, error) {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []Described
	var errs []string
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			errs = append(errs, "unparsable descriptor "+d.String())
			continue
		}
		x := Described{Name: m[1], Help: m[2]}
		if m[3] != "" {
			for _, kv := range strings.Split(m[3], ",") {
				x.Labels = append(x.Labels, strings.SplitN(kv, "=", 2)[0])
			}
		}
		if m[4] != "" {
			for _, v := range strings.Split(m[4], ",") {
				x.Labels = append(x.Labels, strings.TrimSuffix(strings.TrimPrefix(v, "c("), ")"))
			}
		}
		sort.Strings(x.Labels)
		out = append(out, x)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// Compare holds the described metrics of one source to the table's rows of
// that source, both ways, and the gathered families' types to the table's:
// it returns one line per difference.
func Compare(table []Metric, source string, described []Described, types map[string]string) []string {
	var problems []string
	rows := map[string]Metric{}
	for _, m := range table {
		if m.Source == source {
			rows[m.Name] = m
		}
	}
	seen := map[string]bool{}
	for _, d := range described {
		seen[d.Name] = true
		r, ok := rows[d.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s (labels %v) is exported by the %s but missing from %s", d.Name, d.Labels, source, Path))
			continue
		}
		if !slices.Equal(r.Labels, d.Labels) {
			problems = append(problems, fmt.Sprintf("%s: labels %v, %s says %v", d.Name, d.Labels, Path, r.Labels))
		}
		if d.Help == "" {
			problems = append(problems, d.Name+": no help text")
		}
	}
	for name := range rows {
		if !seen[name] {
			problems = append(problems, fmt.Sprintf("%s is listed in %s (source %s) but not exported", name, Path, source))
		}
	}
	for name, typ := range types {
		r, ok := rows[name]
		if !ok {
			continue
		}
		if typ != r.Type {
			problems = append(problems, fmt.Sprintf("%s is a %s, %s says %s", name, typ, Path, r.Type))
		}
	}
	sort.Strings(problems)
	return problems
}

// Types maps gathered families to their type names (counter, gauge, ...).
func Types(mfs []*dto.MetricFamily) map[string]string {
	out := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	return out
}

// CollectorTypes maps the metrics of plain client_golang counters and
// gauges (and their vectors) to their type; other collectors are skipped.
func CollectorTypes(cs ...prometheus.Collector) (map[string]string, error) {
	out := map[string]string{}
	for _, c := range cs {
		var typ string
		// Gauge first: a Gauge also has a Counter's methods.
		switch c.(type) {
		case prometheus.Gauge, *prometheus.GaugeVec:
			typ = "gauge"
		case prometheus.Counter, *prometheus.CounterVec:
			typ = "counter"
		default:
			continue
		}
		ds, err := Describe(c)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			out[d.Name] = typ
		}
	}
	return out, nil
}
