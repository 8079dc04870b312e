package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
)

// memDatapath is an in-memory app.Datapath with canned counters.
type memDatapath struct {
	mu          sync.Mutex
	services    map[uint32]dataplane.Service
	conns       []dataplane.Conn
	notMigrated uint64
}

// ConntrackNotMigrated is what a datapath that migrated maps reports.
func (m *memDatapath) ConntrackNotMigrated() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.notMigrated
}

func (m *memDatapath) UpsertService(s dataplane.Service) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.services[s.ID] = s
	return nil
}

func (m *memDatapath) DeleteService(id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.services, id)
	return nil
}

func (m *memDatapath) Conntrack() ([]dataplane.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]dataplane.Conn(nil), m.conns...), nil
}

func (m *memDatapath) FlushConntrack() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns = nil
	return nil
}

// ServiceStats reports endpoint i with (i+1)*10 packets, so tables show
// distinct numbers per row.
func (m *memDatapath) ServiceStats(id uint32, n int) (dataplane.ServiceStats, error) {
	st := dataplane.ServiceStats{Endpoints: make([]dataplane.EndpointStats, n)}
	for i := range st.Endpoints {
		e := dataplane.EndpointStats{Packets: uint64(i+1) * 10, Bytes: uint64(i+1) * 1000, Sessions: uint64(i + 1), Active: 1}
		st.Endpoints[i] = e
		st.Packets += e.Packets
		st.Bytes += e.Bytes
		st.Sessions += e.Sessions
		st.Active += e.Active
	}
	return st, nil
}

func (m *memDatapath) DropStats() (map[dataplane.DropReason]uint64, error) { return nil, nil }
func (m *memDatapath) Interfaces() []string                                { return []string{"eth0", "eth1"} }
func (m *memDatapath) AttachMode() string                                  { return "tcx" }

func startDaemon(t *testing.T, token string) (string, *memDatapath) {
	t.Helper()
	dp := &memDatapath{services: map[uint32]dataplane.Service{}}
	srv, err := app.NewServer(app.Config{
		Datapath: dp, StateDir: t.TempDir(), Token: token,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL, dp
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, url, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string {
		if k == "TELCOLB_SERVER" {
			return url
		}
		return ""
	}}
	code := run(args, e)
	return result{code, out.String(), errb.String()}
}

// lines splits table output and squeezes column padding, so assertions do
// not depend on column widths.
func lines(s string) []string {
	space := regexp.MustCompile(` {2,}`)
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, space.ReplaceAllString(strings.TrimSpace(l), " | "))
	}
	return out
}

func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	g := lines(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("output:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

func TestCLIServiceLifecycle(t *testing.T) {
	url, dp := startDaemon(t, "")
	r := runCLI(t, url, "", "create", "lb", "web", "--vip", "10.96.0.10", "--port", "80", "--protocol", "tcp",
		"--mode", "fullnat", "--select", "hash", "--timeout", "5m",
		"--endpoints", "10.0.0.1:8080:3,10.0.0.2:8080", "--probe", "tcp", "--probe-interval", "10s", "--probe-retries", "3")
	if r.code != 0 || r.stdout != "service \"web\" created\n" {
		t.Fatalf("create = %+v", r)
	}
	dp.mu.Lock()
	rule := dp.services[1]
	dp.mu.Unlock()
	if rule.Mode != dataplane.ModeFullNAT || rule.IdleTimeout != 5*time.Minute || rule.Endpoints[0].Weight != 3 {
		t.Errorf("datapath rule = %+v", rule)
	}

	r = runCLI(t, url, "", "get", "lb")
	wantLines(t, r.stdout,
		"NAME | VIP | PORT | PROTO | MODE | SELECT | ENDPOINTS | ACTIVE | PACKETS | BYTES",
		"web | 10.96.0.10 | 80 | tcp | fullnat | hash | 2/2 up | 2 | 30 | 3000")

	r = runCLI(t, url, "", "-o", "wide", "get", "lb", "web")
	wantLines(t, r.stdout,
		"NAME | VIP | PORT | PROTO | MODE | SELECT | PROBE | ENDPOINT | WEIGHT | HEALTH | PACKETS | BYTES | SESSIONS | ACTIVE",
		"web | 10.96.0.10 | 80 | tcp | fullnat | hash | tcp | 10.0.0.1:8080 | 3 | up | 10 | 1000 | 1 | 1",
		"web | 10.96.0.10 | 80 | tcp | fullnat | hash | tcp | 10.0.0.2:8080 | 1 | up | 20 | 2000 | 2 | 1")

	r = runCLI(t, url, "", "get", "lb", "web", "-o", "json")
	var st api.ServiceStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Service.Probe == nil || st.Service.Probe.IntervalSeconds != 10 || st.Service.Probe.Retries != 3 {
		t.Errorf("get -o json = %q (%v)", r.stdout, err)
	}

	r = runCLI(t, url, "", "get", "ep")
	wantLines(t, r.stdout,
		"SERVICE | ENDPOINT | WEIGHT | HEALTH | ACTIVE | SESSIONS | LAST-ERROR",
		"web | 10.0.0.1:8080 | 3 | up | 1 | 1 | -",
		"web | 10.0.0.2:8080 | 1 | up | 1 | 2 | -")

	r = runCLI(t, url, "", "health")
	wantLines(t, r.stdout, "STATUS | SERVICES | ATTACH | INTERFACES", "ok | 1 | tcx | eth0,eth1")

	r = runCLI(t, url, "", "delete", "lb", "web")
	if r.code != 0 || r.stdout != "service \"web\" deleted\n" {
		t.Fatalf("delete = %+v", r)
	}
	r = runCLI(t, url, "", "get", "lb")
	wantLines(t, r.stdout, "NAME | VIP | PORT | PROTO | MODE | SELECT | ENDPOINTS | ACTIVE | PACKETS | BYTES")
}

func TestCLIConntrack(t *testing.T) {
	url, dp := startDaemon(t, "")
	if r := runCLI(t, url, "", "create", "lb", "n2", "--vip", "10.96.0.20", "--port", "38412", "--protocol", "sctp",
		"--secondary-vips", "10.96.1.20", "--endpoints", "10.0.0.5:38412"); r.code != 0 {
		t.Fatalf("create = %+v", r)
	}
	dp.mu.Lock()
	dp.conns = []dataplane.Conn{{
		Proto: dataplane.ProtoSCTP, ServiceID: 1, // one rule holds both VIPs
		Client:  netip.MustParseAddrPort("192.0.2.7:38412"),
		VIP:     netip.MustParseAddrPort("10.96.1.20:38412"),
		Backend: netip.MustParseAddrPort("10.0.0.5:38412"),
		Source:  netip.MustParseAddrPort("192.0.2.7:38412"),
		State:   "established", OrigPackets: 4, ReplyPackets: 3, OrigBytes: 400, ReplyBytes: 300,
		Idle: 2 * time.Second, ExpiresIn: 300 * time.Second, VTagClient: 0xa, VTagEndpoint: 0xb,
		Paths: []dataplane.Path{{Client: netip.MustParseAddr("192.0.2.8"), VIP: netip.MustParseAddr("10.96.0.20"),
			Backend: netip.MustParseAddr("10.0.0.6"), Source: netip.MustParseAddr("192.0.2.8"),
			OrigPackets: 2, ReplyPackets: 1, OrigBytes: 20, ReplyBytes: 10}},
		Steering: &dataplane.Steering{Count: 2, Active: true, From: netip.MustParseAddr("192.0.2.7"),
			To: netip.MustParseAddr("192.0.2.8"), VIP: netip.MustParseAddr("10.96.0.20"), Since: 1500 * time.Millisecond},
	}}
	dp.mu.Unlock()
	r := runCLI(t, url, "", "get", "ct")
	wantLines(t, r.stdout,
		"PROTO | CLIENT | VIP | ENDPOINT | SOURCE | STATE | PACKETS | BYTES | IDLE",
		"sctp | 192.0.2.7:38412 | 10.96.1.20:38412 | 10.0.0.5:38412 | 192.0.2.7:38412 | established | 4/3 | 400/300 | 2s",
		"path | 192.0.2.8 | 10.96.0.20 | 10.0.0.6 | 192.0.2.8 | 2/1 | 20/10",
		"steer | 192.0.2.7 -> 192.0.2.8 | 10.96.0.20 | steering | 2 times | 1.5s")
	r = runCLI(t, url, "", "get", "ct", "-o", "wide")
	if l := lines(r.stdout); len(l) != 4 || !strings.HasSuffix(l[1], "| n2 | 5m0s | 0000000a/0000000b") {
		t.Errorf("wide conntrack = %q", r.stdout)
	}
	r = runCLI(t, url, "", "get", "ct", "-o", "json")
	var conns []api.Conn
	if err := json.Unmarshal([]byte(r.stdout), &conns); err != nil || len(conns) != 1 || conns[0].Service != "n2" ||
		conns[0].Steering == nil || conns[0].Steering.To != "192.0.2.8" || conns[0].Steering.SinceSeconds != 1.5 {
		t.Errorf("json conntrack = %q (%v)", r.stdout, err)
	}
	if r := runCLI(t, url, "", "delete", "ct"); r.code != 0 || r.stdout != "conntrack flushed\n" {
		t.Errorf("delete ct = %+v", r)
	}
	r = runCLI(t, url, "", "get", "ct")
	if len(lines(r.stdout)) != 1 {
		t.Errorf("conntrack after flush = %q", r.stdout)
	}
}

func TestCLIApplyFromFiles(t *testing.T) {
	url, _ := startDaemon(t, "")
	dir := t.TempDir()
	yamlDocs := `name: a
vip: 10.96.0.1
port: 80
protocol: tcp
endpoints:
- {address: 10.0.0.1, port: 80}
---
name: b
vip: 2001:db8::1
port: 53
protocol: udp
endpoints:
- {address: "2001:db8::53", port: 53, weight: 2}
`
	p := filepath.Join(dir, "svcs.yaml")
	if err := os.WriteFile(p, []byte(yamlDocs), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, url, "", "apply", "-f", p)
	if r.code != 0 || r.stdout != "service \"a\" applied\nservice \"b\" applied\n" {
		t.Fatalf("apply yaml = %+v", r)
	}
	// Re-applying is idempotent; a JSON list on stdin works too.
	list := `[{"name":"a","vip":"10.96.0.1","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":80}]}]`
	if r := runCLI(t, url, list, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply stdin = %+v", r)
	}
	r = runCLI(t, url, "", "get", "ep", "b")
	wantLines(t, r.stdout,
		"SERVICE | ENDPOINT | WEIGHT | HEALTH | ACTIVE | SESSIONS | LAST-ERROR",
		"b | [2001:db8::53]:53 | 2 | up | 1 | 1 | -")
}

func TestCLIErrors(t *testing.T) {
	url, _ := startDaemon(t, "")
	tokenURL, _ := startDaemon(t, "s3cret")
	badFile := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badFile, []byte("name: x\nvips: [1.2.3.4]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	create := []string{"create", "lb", "web", "--vip", "10.96.0.10", "--port", "80"}
	tests := []struct {
		name     string
		url      string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"field error from the daemon", url, append(create, "--endpoints", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80:101"), 2, "endpoints[2].weight: 101 exceeds the maximum of 100 (HTTP 400)"},
		{"nat64 refused in dsr mode", url, []string{"create", "lb", "v6", "--vip", "fd00::1", "--port", "80", "--mode", "dsr", "--endpoints", "10.0.0.1:80"}, 2, "endpoints[0].address"},
		{"delete missing", url, []string{"delete", "lb", "nope"}, 2, `service "nope" not found (HTTP 404)`},
		{"get missing", url, []string{"get", "lb", "nope"}, 2, "HTTP 404"},
		{"no token", tokenURL, []string{"get", "lb"}, 2, "HTTP 401"},
		{"bad endpoint syntax", url, append(create, "--endpoints", "10.0.0.1:http"), 2, `port "http" is not a number`},
		{"missing vip", url, []string{"create", "lb", "x", "--port", "80", "--endpoints", "10.0.0.1:80"}, 2, "--vip, --port and --endpoints are required"},
		{"probe options without probe", url, append(create, "--endpoints", "10.0.0.1:80", "--probe-retries", "3"), 2, "need --probe TYPE"},
		{"diameter options without --diameter", url, append(create, "--endpoints", "10.0.0.1:3868", "--origin-host", "dra.example"), 2, "need --diameter"},
		{"diameter agent without an identity", url, append(create, "--endpoints", "10.0.0.1:3868", "--diameter", "--origin-realm", "example"), 2, "diameter.originHost: required (HTTP 400)"},
		{"diameter proxy without applications", url, append(create, "--endpoints", "10.0.0.1:3868", "--diameter", "--origin-host", "dra.example", "--origin-realm", "example", "--diameter-mode", "proxy"), 2, "diameter.applications"},
		{"bad timeout", url, append(create, "--endpoints", "10.0.0.1:80", "--timeout", "1.5s"), 2, "whole seconds"},
		{"unknown flag", url, []string{"get", "lb", "--colour"}, 2, "unknown flag"},
		{"unknown verb", url, []string{"frobnicate"}, 2, `unknown verb "frobnicate"`},
		{"unknown resource", url, []string{"get", "pods"}, 2, `unknown resource "pods"`},
		{"missing verb", url, nil, 2, "missing verb"},
		{"bad output", url, []string{"get", "lb", "-o", "yaml"}, 2, "use table, wide or json"},
		{"unknown field in file", url, []string{"apply", "-f", badFile}, 2, `unknown field "vips"`},
		{"missing file", url, []string{"apply", "-f", "/nonexistent.yaml"}, 2, "read /nonexistent.yaml"},
		{"daemon unreachable", "http://127.0.0.1:1", []string{"get", "lb"}, 1, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.url, "", tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d stderr %q, want exit %d and %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
	if r := runCLI(t, tokenURL, "", "--token", "s3cret", "health"); r.code != 0 {
		t.Errorf("with token: %+v", r)
	}
	if r := runCLI(t, url, "", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage: telcolbctl") {
		t.Errorf("--help = %+v", r)
	}
}

func TestParseEndpoints(t *testing.T) {
	tests := []struct {
		in      string
		want    []api.Endpoint
		wantErr string
	}{
		{"10.0.0.1:80:5,10.0.0.2:80", []api.Endpoint{{Address: "10.0.0.1", Port: 80, Weight: 5}, {Address: "10.0.0.2", Port: 80}}, ""},
		{"10.0.0.1", []api.Endpoint{{Address: "10.0.0.1"}}, ""},
		{"[2001:db8::1]:80:2, [fd00::2]", []api.Endpoint{{Address: "2001:db8::1", Port: 80, Weight: 2}, {Address: "fd00::2"}}, ""},
		{"2001:db8::1", []api.Endpoint{{Address: "2001:db8::1"}}, ""},
		{"::1", []api.Endpoint{{Address: "::1"}}, ""},
		{"10.0.0.1:80,", nil, "endpoint 2 is empty"},
		{"10.0.0.1:99999", nil, "not a number 0-65535"},
		{"10.0.0.1:80:x", nil, `weight "x"`},
		{"10.0.0.1:80:1:2", nil, `weight "1:2"`},
		{"10.0.0.1:", nil, "empty port"},
		{"[::1", nil, "missing ']'"},
		{"[::1]80", nil, "expected ':'"},
		{"web-1:80", nil, "not an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseEndpoints(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseEndpoints = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("parseEndpoints = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// FuzzParseEndpoint checks that parsing never panics and that formatting a
// parsed endpoint parses back to the same endpoint.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80:5", "[2001:db8::1]:80", "::1", "1.2.3.4", "[::]:", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := parseEndpoint(s)
		if err != nil {
			return
		}
		back, err := parseEndpoint(formatEndpoint(ep))
		if err != nil {
			t.Fatalf("%q -> %+v -> %q: %v", s, ep, formatEndpoint(ep), err)
		}
		norm := ep
		if back != norm {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, ep, formatEndpoint(ep), back)
		}
	})
}

func TestTokenIsFoundOnTheNodeWithoutFlags(t *testing.T) {
	url, _ := startDaemon(t, "n0de-t0ken")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte("n0de-t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runWith := func(defaultFile string, extraEnv map[string]string, args ...string) result {
		var out, errb bytes.Buffer
		e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, defaultTokenFile: defaultFile,
			getenv: func(k string) string {
				if k == "TELCOLB_SERVER" {
					return url
				}
				return extraEnv[k]
			}}
		return result{run(args, e), out.String(), errb.String()}
	}
	if r := runWith(tokenFile, nil, "health"); r.code != 0 {
		t.Fatalf("with the node's token file: %d %s", r.code, r.stderr)
	}
	if r := runWith("", map[string]string{"TELCOLB_TOKEN_FILE": tokenFile}, "health"); r.code != 0 {
		t.Fatalf("with $TELCOLB_TOKEN_FILE: %d %s", r.code, r.stderr)
	}
	if r := runWith("", nil, "--token-file", tokenFile, "health"); r.code != 0 {
		t.Fatalf("with --token-file: %d %s", r.code, r.stderr)
	}
	r := runWith(filepath.Join(dir, "missing"), nil, "health")
	if r.code != exitUsage || !strings.Contains(r.stderr, "401") && !strings.Contains(r.stderr, "token") || !strings.Contains(r.stderr, "--token-file") {
		t.Fatalf("without a readable token: %d %q, want a 401 explaining where the token is", r.code, r.stderr)
	}
	if r := runWith("", nil, "--token-file", filepath.Join(dir, "missing"), "health"); r.code == 0 || !strings.Contains(r.stderr, "--token-file") {
		t.Fatalf("unreadable --token-file: %d %q", r.code, r.stderr)
	}
}

func TestGetCTWarnsAboutConnectionsARestartCouldNotMigrate(t *testing.T) {
	url, dp := startDaemon(t, "")
	if r := runCLI(t, url, "", "get", "ct"); r.code != 0 || strings.Contains(r.stderr, "migrated") {
		t.Fatalf("get ct with nothing lost: %+v", r)
	}
	dp.mu.Lock()
	dp.notMigrated = 42
	dp.mu.Unlock()
	r := runCLI(t, url, "", "get", "ct")
	if r.code != 0 || !strings.Contains(r.stderr, "42 conntrack entries") {
		t.Fatalf("get ct after a lossy migration: %+v", r)
	}
}

func TestCLICreateSCTPPathFailover(t *testing.T) {
	url, dp := startDaemon(t, "")
	r := runCLI(t, url, "", "create", "lb", "amf", "--vip", "10.96.0.30", "--secondary-vips", "10.96.1.30", "--port", "38412",
		"--protocol", "sctp", "--endpoints", "10.0.0.1:38412", "--sctp-path-hold-down", "300ms")
	if r.code != 0 {
		t.Fatalf("create = %+v", r)
	}
	r = runCLI(t, url, "", "create", "lb", "smf", "--vip", "10.96.0.31", "--secondary-vips", "10.96.1.31", "--port", "38412",
		"--protocol", "sctp", "--endpoints", "10.0.0.1:38412", "--sctp-path-failover", "off")
	if r.code != 0 {
		t.Fatalf("create = %+v", r)
	}
	dp.mu.Lock()
	amf, smf := dp.services[1], dp.services[2]
	dp.mu.Unlock()
	if !amf.SCTPPathFailover || amf.SCTPPathHoldDown != 300*time.Millisecond || smf.SCTPPathFailover {
		t.Errorf("rules: amf failover %v hold-down %s, smf failover %v; want on 300ms, off", amf.SCTPPathFailover, amf.SCTPPathHoldDown, smf.SCTPPathFailover)
	}
	if r := runCLI(t, url, "", "create", "lb", "x", "--vip", "10.96.0.32", "--port", "38412", "--protocol", "sctp",
		"--endpoints", "10.0.0.1:38412", "--sctp-path-failover", "maybe"); r.code == 0 || !strings.Contains(r.stderr, "sctpPathFailover") {
		t.Errorf("bad --sctp-path-failover accepted: %+v", r)
	}
}
