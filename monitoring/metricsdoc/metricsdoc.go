// Package metricsdoc reads the metric table of docs/metrics.md, the one
// list of every series telcolb exports. Tests hold the code to it (every
// registered metric is in the table with the same labels, and every row of
// a source is registered), and the dashboard and alert tests check that
// each query names only metrics the table lists: a dashboard cannot refer to
// a metric nobody exports.
package metricsdoc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sources name who exports a metric (the table's last column).
const (
	SourceDaemon     = "daemon"
	SourceN2         = "n2"
	SourcePFCP       = "pfcp"
	SourceController = "controller"
	// SourceL2 is the daemon's L2 announcer (only with an l2 advertisement).
	SourceL2 = "l2"
	// SourceDiameter is a Diameter agent (a service with diameter set).
	SourceDiameter = "diameter"
)

// Metric is one row of the table.
type Metric struct {
	Name string
	Type string // counter, gauge or histogram
	// Labels in the order of the table (sorted there).
	Labels  []string
	Meaning string
	Source  string
}

// Path is docs/metrics.md relative to the module root.
const Path = "docs/metrics.md"

// Load reads the table from the module root found above dir.
func Load(dir string) ([]Metric, error) {
	root, err := ModuleRoot(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, Path))
	if err != nil {
		return nil, fmt.Errorf("metric table: %w", err)
	}
	return Parse(b)
}

// ModuleRoot walks up from dir to the directory holding go.mod.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		d = up
	}
}

// Parse reads the rows of the table whose header is
// "| name | type | labels | meaning | source |". Labels are written as
// `a`, `b` or "-" for none.
func Parse(b []byte) ([]Metric, error) {
	var out []Metric
	in := false
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(l, "|") {
			in = false
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) == 5 && cells[0] == "name" && cells[1] == "type" && cells[4] == "source" {
			in = true
			continue
		}
		if !in || strings.HasPrefix(cells[0], "---") {
			continue
		}
		if len(cells) != 5 {
			return nil, fmt.Errorf("%s line %d: %d cells, want 5", Path, line, len(cells))
		}
		m := Metric{Name: strings.Trim(cells[0], "`"), Type: cells[1], Meaning: cells[3], Source: cells[4]}
		if m.Type != "counter" && m.Type != "gauge" && m.Type != "histogram" {
			return nil, fmt.Errorf("%s line %d: %s: type %q, want counter, gauge or histogram", Path, line, m.Name, m.Type)
		}
		switch m.Source {
		case SourceDaemon, SourceN2, SourcePFCP, SourceController, SourceL2, SourceDiameter:
		default:
			return nil, fmt.Errorf("%s line %d: %s: source %q", Path, line, m.Name, m.Source)
		}
		if cells[2] != "-" {
			for _, lb := range strings.Split(cells[2], ",") {
				m.Labels = append(m.Labels, strings.Trim(strings.TrimSpace(lb), "`"))
			}
		}
		if !slices.IsSorted(m.Labels) {
			return nil, fmt.Errorf("%s line %d: %s: labels not sorted", Path, line, m.Name)
		}
		if seen[m.Name] {
			return nil, fmt.Errorf("%s line %d: %s listed twice", Path, line, m.Name)
		}
		seen[m.Name] = true
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New(Path + ": no metric table found")
	}
	return out, nil
}

// Names maps each metric name to its row.
func Names(ms []Metric) map[string]Metric {
	out := make(map[string]Metric, len(ms))
	for _, m := range ms {
		out[m.Name] = m
	}
	return out
}
