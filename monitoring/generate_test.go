package monitoring

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/monitoring/alerts"
	"github.com/telcolb/telcolb/monitoring/dashboards"
	"github.com/telcolb/telcolb/monitoring/metricsdoc"
	"github.com/telcolb/telcolb/monitoring/promtest"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := metricsdoc.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestGeneratedFilesAreCurrent: the committed dashboards, rules and
// kustomization are what the code generates now, and nothing stale is
// left in the dashboards directory.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	r := root(t)
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(r, p))
		if err != nil {
			t.Errorf("%s: %v (run go run ./monitoring/gen)", p, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what monitoring/gen generates: run go run ./monitoring/gen and commit", p)
		}
	}
	ents, err := os.ReadDir(filepath.Join(r, Dir, DashboardsDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, ok := files[filepath.Join(Dir, DashboardsDir, e.Name())]; !ok {
			t.Errorf("%s/%s/%s is not generated any more: delete it", Dir, DashboardsDir, e.Name())
		}
	}
}

var metricName = regexp.MustCompile(`\btelcolb_[a-z0-9_]+`)

// TestQueriesNameOnlyDocumentedMetrics: every metric a dashboard panel, a
// dashboard variable or an alert names is in docs/metrics.md, so no panel
// waits for a metric nobody exports.
func TestQueriesNameOnlyDocumentedMetrics(t *testing.T) {
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	known := metricsdoc.Names(table)
	check := func(where, expr string) {
		for _, m := range metricName.FindAllString(expr, -1) {
			if _, ok := known[m]; !ok {
				t.Errorf("%s names %s, which %s does not list", where, m, metricsdoc.Path)
			}
		}
	}
	panels := 0
	for _, d := range dashboards.All() {
		for _, v := range d.Variables {
			check("dashboard "+d.File+" variable $"+v.Name, v.Metric)
		}
		for _, r := range d.Rows {
			for _, p := range r.Panels {
				panels++
				if len(p.Queries) == 0 {
					t.Errorf("dashboard %s panel %q has no query", d.File, p.Title)
				}
				for _, q := range p.Queries {
					check("dashboard "+d.File+" panel "+p.Title, q.Expr)
				}
			}
		}
	}
	for _, c := range promtest.AlertChecks() {
		check(c.Where, c.Expr)
	}
	// The committed JSON carries the same queries (what users import).
	for _, d := range dashboards.All() {
		raw, err := os.ReadFile(filepath.Join(root(t), Dir, DashboardsDir, d.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			UID    string `json:"uid"`
			Panels []struct {
				Type    string `json:"type"`
				ID      int    `json:"id"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", d.FileName(), err)
		}
		if doc.UID != d.UID() {
			t.Errorf("%s: uid %q", d.FileName(), doc.UID)
		}
		ids := map[int]bool{}
		for _, p := range doc.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel id %d missing or repeated", d.FileName(), p.ID)
			}
			ids[p.ID] = true
			for _, tg := range p.Targets {
				check(d.FileName(), tg.Expr)
			}
		}
	}
	for _, want := range []string{"overview", "sctp", "n2", "controller", "pfcp", "bgp", "l2", "diameter"} {
		if !slices.ContainsFunc(dashboards.All(), func(s dashboards.Spec) bool { return s.File == want }) {
			t.Errorf("no %s dashboard", want)
		}
	}
	t.Logf("%d panels in %d dashboards", panels, len(dashboards.All()))
}

// TestAlertRulesPassPromtool: promtool checks the rule file and runs the
// unit tests of every alert (testdata/telcolb.rules_test.yaml); the
// PrometheusRule object carries the same groups.
func TestAlertRulesPassPromtool(t *testing.T) {
	promtest.RequireTools(t, "promtool")
	r := root(t)
	rules := filepath.Join(r, Dir, RuleFile)
	if out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err := exec.Command("promtool", "test", "rules", filepath.Join(r, "monitoring/alerts/testdata/telcolb.rules_test.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every alert has a unit test.
	tests, err := os.ReadFile(filepath.Join(r, "monitoring/alerts/testdata/telcolb.rules_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range alerts.Groups() {
		for _, rule := range g.Rules {
			if !strings.Contains(string(tests), "alertname: "+rule.Alert+"\n") {
				t.Errorf("alert %s has no promtool unit test", rule.Alert)
			}
		}
	}
	var file struct {
		Groups []alerts.Group `json:"groups"`
	}
	var obj struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []alerts.Group `json:"groups"`
		} `json:"spec"`
	}
	for _, x := range []struct {
		name string
		v    any
	}{{RuleFile, &file}, {PrometheusRule, &obj}} {
		raw, err := os.ReadFile(filepath.Join(r, Dir, x.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(raw, x.v); err != nil {
			t.Fatalf("%s: %v", x.name, err)
		}
	}
	a, _ := json.Marshal(file.Groups)
	b, _ := json.Marshal(obj.Spec.Groups)
	if obj.Kind != "PrometheusRule" || !bytes.Equal(a, b) || len(file.Groups) == 0 {
		t.Errorf("PrometheusRule (kind %q) and the rule file differ:\n%s\n%s", obj.Kind, a, b)
	}
}

// TestKustomizeComponentIsComplete: the component's kustomization names
// files that exist and parse; the monitors select what k8s/deploy runs
// (labels and port names) and the dashboards' ConfigMaps carry Grafana's
// sidecar label. No kustomize binary needed.
func TestKustomizeComponentIsComplete(t *testing.T) {
	r := root(t)
	dir := filepath.Join(r, Dir)
	var k struct {
		Kind               string   `json:"kind"`
		Resources          []string `json:"resources"`
		ConfigMapGenerator []struct {
			Name    string   `json:"name"`
			Files   []string `json:"files"`
			Options struct {
				Labels map[string]string `json:"labels"`
			} `json:"options"`
		} `json:"configMapGenerator"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, Kustomization))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Component" {
		t.Errorf("kind %q, want Component", k.Kind)
	}
	kinds := map[string]map[string]any{}
	for _, res := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, res))
		if err != nil {
			t.Errorf("resource %s: %v", res, err)
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal(b, &obj); err != nil {
			t.Errorf("resource %s: %v", res, err)
			continue
		}
		if obj["apiVersion"] != "monitoring.coreos.com/v1" {
			t.Errorf("%s: apiVersion %v", res, obj["apiVersion"])
		}
		kinds[obj["kind"].(string)] = obj
	}
	for _, want := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
		if kinds[want] == nil {
			t.Errorf("the component has no %s", want)
		}
	}
	if len(k.ConfigMapGenerator) != len(dashboards.All()) {
		t.Errorf("%d dashboard ConfigMaps for %d dashboards", len(k.ConfigMapGenerator), len(dashboards.All()))
	}
	for _, g := range k.ConfigMapGenerator {
		if g.Options.Labels["grafana_dashboard"] != "1" {
			t.Errorf("ConfigMap %s lacks the grafana_dashboard: \"1\" label", g.Name)
		}
		for _, f := range g.Files {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Errorf("ConfigMap %s: %v", g.Name, err)
				continue
			}
			if !json.Valid(b) {
				t.Errorf("ConfigMap %s: %s is not JSON", g.Name, f)
			}
		}
	}

	// What the monitors select exists in k8s/deploy.
	deployed := map[string][]map[string]any{}
	for _, f := range []string{"daemon.yaml", "controller.yaml"} {
		b, err := os.ReadFile(filepath.Join(r, "k8s/deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj == nil {
				continue
			}
			deployed[obj["kind"].(string)] = append(deployed[obj["kind"].(string)], obj)
		}
	}
	sm := kinds["ServiceMonitor"]
	if sm != nil {
		sel := dig(sm, "spec", "selector", "matchLabels").(map[string]any)
		port := dig(sm, "spec", "endpoints").([]any)[0].(map[string]any)["port"]
		found := false
		for _, svc := range deployed["Service"] {
			labels, _ := dig(svc, "metadata", "labels").(map[string]any)
			if subset(sel, labels) && hasPortNamed(dig(svc, "spec", "ports"), port) {
				found = true
			}
		}
		if !found {
			t.Errorf("ServiceMonitor selects %v port %v: no such Service in k8s/deploy", sel, port)
		}
		if dig(sm, "metadata", "name") != alerts.DaemonJob {
			t.Errorf("ServiceMonitor name %v: the job the alerts expect is %s", dig(sm, "metadata", "name"), alerts.DaemonJob)
		}
	}
	pm := kinds["PodMonitor"]
	if pm != nil {
		sel := dig(pm, "spec", "selector", "matchLabels").(map[string]any)
		port := dig(pm, "spec", "podMetricsEndpoints").([]any)[0].(map[string]any)["port"]
		found := false
		for _, d := range deployed["Deployment"] {
			labels, _ := dig(d, "spec", "template", "metadata", "labels").(map[string]any)
			for _, c := range dig(d, "spec", "template", "spec", "containers").([]any) {
				if subset(sel, labels) && hasPortNamed(c.(map[string]any)["ports"], port) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("PodMonitor selects %v port %v: no such Deployment in k8s/deploy", sel, port)
		}
	}
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func hasPortNamed(ports any, name any) bool {
	list, _ := ports.([]any)
	for _, p := range list {
		if pm, ok := p.(map[string]any); ok && pm["name"] == name {
			return true
		}
	}
	return false
}
