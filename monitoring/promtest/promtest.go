// Package promtest runs a real Prometheus for tests and evaluates the
// generated dashboards' panel queries and the alert expressions through
// its HTTP API. Used by the metrics lab (scenarios/metrics) and the
// controller's envtest test (k8s/controller).
package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/monitoring/alerts"
	"github.com/telcolb/telcolb/monitoring/dashboards"
)

// RequireTools skips without the tools, or fails naming them when CI is
// set (CI installs them with hack/install-deps.sh).
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (hack/install-deps.sh installs Debian's prometheus package): %v", tool, err)
			}
			t.Skipf("%s not installed (hack/install-deps.sh)", tool)
		}
	}
}

// Job is one scrape job.
type Job struct {
	Name    string
	Targets []string
	// TokenFile, when set, is sent as "Authorization: Bearer" (the daemon's
	// <state-dir>/api-token).
	TokenFile string
}

// ScrapeInterval is the lab's scrape interval; RateInterval stands in for
// Grafana's $__rate_interval (at least 4 scrape intervals, as Grafana
// computes it).
const (
	ScrapeInterval = time.Second
	RateInterval   = "10s"
)

// WriteConfig writes prometheus.yml into dir and returns the command line
// arguments that run Prometheus on listen with its data in dir.
func WriteConfig(dir, listen string, jobs []Job) ([]string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n  scrape_timeout: %s\nscrape_configs:\n",
		ScrapeInterval, ScrapeInterval, ScrapeInterval)
	for _, j := range jobs {
		fmt.Fprintf(&b, "  - job_name: %q\n", j.Name)
		if j.TokenFile != "" {
			fmt.Fprintf(&b, "    authorization:\n      type: Bearer\n      credentials_file: %q\n", j.TokenFile)
		}
		b.WriteString("    static_configs:\n      - targets:\n")
		for _, t := range j.Targets {
			fmt.Fprintf(&b, "          - %q\n", t)
		}
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("prometheus config: %w", err)
	}
	return []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen, "--log.level=warn"}, nil
}

// Client queries a Prometheus.
type Client struct {
	Base string // http://host:port
	HTTP *http.Client
}

type apiReply struct {
	Status    string          `json:"status"`
	Error     string          `json:"error"`
	ErrorType string          `json:"errorType"`
	Data      json.RawMessage `json:"data"`
}

func (c Client) get(ctx context.Context, path string, q url.Values) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r apiReply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s %s: %s: %s", path, q.Encode(), r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// Series is one instant-vector sample.
type Series struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query evaluates expr now and returns the instant vector.
func (c Client) Query(ctx context.Context, expr string) ([]Series, error) {
	data, err := c.get(ctx, "/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var v struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	if v.ResultType != "vector" {
		return nil, fmt.Errorf("%s: result type %s, want vector", expr, v.ResultType)
	}
	var out []Series
	return out, json.Unmarshal(v.Result, &out)
}

// LabelValues lists the values label takes on the series matching match
// (what Grafana's label_values(match, label) does).
func (c Client) LabelValues(ctx context.Context, label, match string) ([]string, error) {
	data, err := c.get(ctx, "/api/v1/label/"+label+"/values", url.Values{"match[]": {match}})
	if err != nil {
		return nil, err
	}
	var out []string
	return out, json.Unmarshal(data, &out)
}

// Target is one scrape target's health.
type Target struct {
	Job, Instance, Health, LastError string
}

// Targets lists the active targets.
func (c Client) Targets(ctx context.Context) ([]Target, error) {
	data, err := c.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}})
	if err != nil {
		return nil, err
	}
	var v struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	var out []Target
	for _, t := range v.ActiveTargets {
		out = append(out, Target{Job: t.Labels["job"], Instance: t.Labels["instance"], Health: t.Health, LastError: t.LastError})
	}
	return out, nil
}

// WaitReady polls /-/ready.
func (c Client) WaitReady(ctx context.Context) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/-/ready", nil)
		if resp, err := c.HTTP.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus at %s not ready: %w", c.Base, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Check is one query to evaluate and where it comes from.
type Check struct {
	Where string // "dashboard overview, panel Services" or "alert X"
	Expr  string
}

// Expand substitutes a dashboard's variables as Grafana would with "All"
// selected in a multi-value variable: the regex alternation of every value
// the variable's query returns (values regex-escaped), and
// $__rate_interval. A variable with no values is an error: its panels
// could show nothing.
func Expand(ctx context.Context, c Client, d dashboards.Spec, expr string) (string, error) {
	for _, v := range d.Variables {
		if !strings.Contains(expr, "$"+v.Name) {
			continue
		}
		vals, err := c.LabelValues(ctx, v.LabelName, v.Metric)
		if err != nil {
			return "", fmt.Errorf("variable $%s: %w", v.Name, err)
		}
		if len(vals) == 0 {
			return "", fmt.Errorf("variable $%s (label_values(%s, %s)) has no values", v.Name, v.Metric, v.LabelName)
		}
		quoted := make([]string, len(vals))
		for i, s := range vals {
			// Grafana escapes regex characters; PromQL strings need the
			// backslashes doubled.
			quoted[i] = strings.ReplaceAll(regexp.QuoteMeta(s), `\`, `\\`)
		}
		expr = strings.ReplaceAll(expr, "$"+v.Name, "("+strings.Join(quoted, "|")+")")
	}
	expr = strings.ReplaceAll(expr, "$__rate_interval", RateInterval)
	if strings.Contains(expr, "$") {
		return "", fmt.Errorf("unsubstituted variable left in %s", expr)
	}
	return expr, nil
}

// PanelChecks lists every panel query of the dashboards, expanded.
func PanelChecks(ctx context.Context, c Client, ds []dashboards.Spec) ([]Check, []string) {
	var out []Check
	var problems []string
	for _, d := range ds {
		for _, r := range d.Rows {
			for _, p := range r.Panels {
				for _, q := range p.Queries {
					where := fmt.Sprintf("dashboard %s, panel %q", d.File, p.Title)
					e, err := Expand(ctx, c, d, q.Expr)
					if err != nil {
						problems = append(problems, where+": "+err.Error())
						continue
					}
					out = append(out, Check{Where: where, Expr: e})
				}
			}
		}
	}
	return out, problems
}

// AlertChecks lists every alert expression.
func AlertChecks() []Check {
	var out []Check
	for _, g := range alerts.Groups() {
		for _, r := range g.Rules {
			out = append(out, Check{Where: "alert " + r.Alert, Expr: r.Expr})
		}
	}
	return out
}

// Unexercised says why a check may return nothing in a given test.
type Unexercised map[string]string // Where -> reason

// Evaluate runs every check: each must return at least one series, unless
// it is listed in skip (with its reason). It returns the problems, and
// also reports listed checks that did return series (the list is stale).
func Evaluate(ctx context.Context, c Client, checks []Check, skip Unexercised) (problems, notes []string) {
	seen := map[string]bool{}
	for _, ch := range checks {
		seen[ch.Where] = true
		res, err := c.Query(ctx, ch.Expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ch.Where, err))
			continue
		}
		reason, listed := skip[ch.Where]
		switch {
		case len(res) == 0 && !listed:
			problems = append(problems, fmt.Sprintf("%s: no series for %s", ch.Where, ch.Expr))
		case len(res) == 0:
			notes = append(notes, fmt.Sprintf("not exercised here: %s (%s)", ch.Where, reason))
		case listed:
			problems = append(problems, fmt.Sprintf("%s is listed as not exercised (%s) but returned %d series: remove it from the list", ch.Where, reason, len(res)))
		}
	}
	for w := range skip {
		if !seen[w] {
			problems = append(problems, "listed as not exercised but no such query: "+w)
		}
	}
	sort.Strings(problems)
	slices.Sort(notes)
	return problems, notes
}
