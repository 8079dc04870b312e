package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

const webJSON = `{"name":"web","vip":"10.96.0.10","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":8080},{"address":"10.0.0.2","port":8080}]}`

func webService() api.Service {
	return api.Service{
		Name: "web", VIP: "10.96.0.10", Port: 80, Protocol: api.ProtocolTCP,
		Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 8080}, {Address: "10.0.0.2", Port: 8080}},
	}
}

// withField rewrites one top-level field of webJSON.
func withField(t *testing.T, key string, value any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(webJSON), &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withFields is webJSON with several fields replaced.
func withFields(t *testing.T, fields map[string]any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(webJSON), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAPIRejectsBadInputNamingTheProblem(t *testing.T) {
	env := newEnv(t, nil)
	eps := func(e ...map[string]any) []map[string]any { return e }
	ep := func(addr string, port int) map[string]any { return map[string]any{"address": addr, "port": port} }
	tests := []struct {
		name      string
		method    string
		path      string
		body      string
		hdr       map[string]string
		wantCode  int
		wantField string
		wantMsg   string
	}{
		{"unknown field", "PUT", "/v1/services/web", withField(t, "vips", "x"), nil, 400, "vips", "unknown field"},
		{"unknown nested field", "PUT", "/v1/services/web", withField(t, "probe", map[string]any{"type": "tcp", "every": 3}), nil, 400, "every", "unknown field"},
		{"malformed json", "PUT", "/v1/services/web", `{"name":"web",`, nil, 400, "", "truncated"},
		{"syntax error", "PUT", "/v1/services/web", `{"name" "web"}`, nil, 400, "", "malformed JSON at byte"},
		{"trailing data", "PUT", "/v1/services/web", webJSON + `{"x":1}`, nil, 400, "", "trailing data"},
		{"trailing garbage", "PUT", "/v1/services/web", webJSON + `]`, nil, 400, "", "trailing data"},
		{"string for port", "PUT", "/v1/services/web", withField(t, "port", "80"), nil, 400, "port", "expected uint16"},
		{"port out of range", "PUT", "/v1/services/web", withField(t, "port", 70000), nil, 400, "port", "number 70000"},
		{"wrong endpoint type", "PUT", "/v1/services/web", withField(t, "endpoints", []any{map[string]any{"address": 10}}), nil, 400, "endpoints.address", "expected string"},
		{"empty body", "POST", "/v1/services", "", map[string]string{"Content-Type": "application/json"}, 400, "", "empty body"},
		{"wrong content type", "PUT", "/v1/services/web", webJSON, map[string]string{"Content-Type": "text/plain"}, 415, "", "send application/json"},
		{"oversized body", "PUT", "/v1/services/web", withField(t, "name", strings.Repeat("a", MaxBodyBytes)), nil, 413, "", "larger than"},
		{"name mismatch", "PUT", "/v1/services/other", webJSON, nil, 400, "name", "does not match"},
		{"bad name in path", "PUT", "/v1/services/Web", withField(t, "name", ""), nil, 400, "name", "only lowercase"},
		{"bad vip", "PUT", "/v1/services/web", withField(t, "vip", "10.96.0"), nil, 400, "vip", "not an IP address"},
		{"too many secondary vips", "PUT", "/v1/services/web", withField(t, "secondaryVIPs", []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"}), nil, 400, "secondaryVIPs", "at most 3"},
		{"secondary vip family", "PUT", "/v1/services/web", withField(t, "secondaryVIPs", []string{"fd00::1"}), nil, 400, "secondaryVIPs[0]", "one family"},
		{"port zero", "PUT", "/v1/services/web", withField(t, "port", 0), nil, 400, "port", "required"},
		{"port end below port", "PUT", "/v1/services/web", withField(t, "portEnd", 10), nil, 400, "portEnd", "below port"},
		{"protocol", "PUT", "/v1/services/web", withField(t, "protocol", "icmp"), nil, 400, "protocol", "not one of"},
		{"mode", "PUT", "/v1/services/web", withField(t, "mode", "snat"), nil, 400, "mode", "not one of"},
		{"select", "PUT", "/v1/services/web", withField(t, "select", "random"), nil, 400, "select", "not one of"},
		{"idle timeout", "PUT", "/v1/services/web", withField(t, "idleTimeoutSeconds", 86401), nil, 400, "idleTimeoutSeconds", "24h"},
		{"no endpoints", "PUT", "/v1/services/web", withField(t, "endpoints", []any{}), nil, 400, "endpoints", "at least one"},
		{"endpoint address", "PUT", "/v1/services/web", withField(t, "endpoints", eps(ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("ten", 80))), nil, 400, "endpoints[2].address", "not an IP address"},
		{"nat64 in dsr mode", "PUT", "/v1/services/web", withFields(t, map[string]any{"vip": "fd00::10", "mode": "dsr"}), nil, 400, "endpoints[0].address", "NAT64"},
		{"endpoint port zero", "PUT", "/v1/services/web", withField(t, "endpoints", eps(ep("10.0.0.1", 0))), nil, 400, "endpoints[0].port", "dsr mode or with a port range"},
		{"endpoint weight", "PUT", "/v1/services/web", withField(t, "endpoints", []any{map[string]any{"address": "10.0.0.1", "port": 80, "weight": 101}}), nil, 400, "endpoints[0].weight", "maximum of 100"},
		{"duplicate endpoint", "PUT", "/v1/services/web", withField(t, "endpoints", eps(ep("10.0.0.1", 80), ep("10.0.0.1", 80))), nil, 400, "endpoints[1]", "duplicates"},
		{"probe type", "PUT", "/v1/services/web", withField(t, "probe", map[string]any{"type": "quic"}), nil, 400, "probe.type", "not one of"},
		{"sctp multi-homing in onearm mode", "PUT", "/v1/services/web", withFields(t, map[string]any{"protocol": "sctp", "mode": "onearm", "secondaryVIPs": []string{"10.96.1.10"}}), nil, 400, "secondaryVIPs", "needs mode default or fullnat"},
		{"probe timeout", "PUT", "/v1/services/web", withField(t, "probe", map[string]any{"type": "tcp", "intervalSeconds": 2, "timeoutSeconds": 2}), nil, 400, "probe.timeoutSeconds", "shorter than the interval"},
		{"probe retries", "PUT", "/v1/services/web", withField(t, "probe", map[string]any{"type": "tcp", "retries": 50}), nil, 400, "probe.retries", "maximum"},
		{"n2 without sctp", "PUT", "/v1/services/web", withField(t, "n2", true), nil, 400, "n2", "sctp"},
		{"wrong method on collection", "PATCH", "/v1/services", "", nil, 405, "", "not allowed"},
		{"wrong method on service", "POST", "/v1/services/web", webJSON, nil, 405, "", "not allowed"},
		{"wrong method on health", "DELETE", "/v1/health", "", nil, 405, "", "not allowed"},
		{"unknown path", "GET", "/v2/services", "", nil, 404, "", "no such resource"},
		{"missing service", "GET", "/v1/services/nope", "", nil, 404, "", `"nope" not found`},
		{"delete missing service", "DELETE", "/v1/services/nope", "", nil, 404, "", `"nope" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := env.do(t, tt.method, tt.path, tt.body, tt.hdr)
			if r.code != tt.wantCode {
				t.Fatalf("code = %d, want %d (body %s)", r.code, tt.wantCode, r.body)
			}
			if r.err.Field != tt.wantField || !strings.Contains(r.err.Message, tt.wantMsg) {
				t.Errorf("error = %+v, want field %q and message containing %q", r.err, tt.wantField, tt.wantMsg)
			}
		})
	}
	if n := env.dp.upsertCount(); n != 0 {
		t.Errorf("bad requests programmed the datapath %d times", n)
	}
	if r := env.do(t, "POST", "/v1/services/web", webJSON, nil); r.hdr.Get("Allow") != "DELETE, GET, PUT" {
		t.Errorf("405 Allow = %q", r.hdr.Get("Allow"))
	}
}

func TestAPIRequiresTheBearerToken(t *testing.T) {
	env := newEnv(t, func(c *Config) { c.Token = "s3cret" })
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"no header", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"token prefix", "Bearer s3cre", 401},
		{"basic scheme", "Basic czNjcmV0", 401},
		{"right token", "Bearer s3cret", 200},
		{"scheme in lower case (RFC 7235: case-insensitive)", "bearer s3cret", 200},
		{"scheme in upper case", "BEARER s3cret", 200},
		{"other scheme", "Basic s3cret", 401},
		{"token only", "s3cret", 401},
	}
	for _, tt := range tests {
		for _, path := range []string{"/v1/health", "/v1/services", "/metrics", "/openapi.yaml"} {
			t.Run(tt.name+path, func(t *testing.T) {
				hdr := map[string]string{}
				if tt.auth != "" {
					hdr["Authorization"] = tt.auth
				}
				req, _ := http.NewRequest("GET", env.http.URL+path, nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := env.http.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("code = %d, want %d", resp.StatusCode, tt.want)
				}
			})
		}
	}
	c := env.client(t, "s3cret")
	if _, err := c.Health(context.Background()); err != nil {
		t.Errorf("client with token: %v", err)
	}
}

func TestCreateApplyAndDeleteProgramTheDatapath(t *testing.T) {
	env := newEnv(t, nil)
	ctx := context.Background()
	c := env.client(t, "")
	if r := env.do(t, "POST", "/v1/services", webJSON, nil); r.code != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.code, r.body)
	}
	got, ok := env.dp.service(1)
	want := dataplane.Service{
		ID: 1, VIP: netip.MustParseAddr("10.96.0.10"), PortStart: 80, PortEnd: 80, Proto: dataplane.ProtoTCP,
		Mode: dataplane.ModeDefault, Select: dataplane.SelectRR,
		Endpoints: []dataplane.Endpoint{
			{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Weight: 1},
			{Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 1},
		},
	}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("datapath rule = %+v, want %+v", got, want)
	}
	if r := env.do(t, "POST", "/v1/services", webJSON, nil); r.code != http.StatusConflict || r.err.Field != "name" {
		t.Errorf("second POST = %d %+v, want 409 on name", r.code, r.err)
	}
	before := env.dp.upsertCount()
	if err := c.ApplyService(ctx, webService()); err != nil {
		t.Fatalf("unchanged PUT: %v", err)
	}
	if r := env.do(t, "PUT", "/v1/services/web", webJSON, nil); r.code != http.StatusOK {
		t.Fatalf("unchanged PUT = %d", r.code)
	}
	if n := env.dp.upsertCount(); n != before {
		t.Errorf("unchanged PUT touched the datapath (%d upserts)", n-before)
	}
	changed := webService()
	changed.Select = api.SelectHash
	changed.Endpoints = append(changed.Endpoints, api.Endpoint{Address: "10.0.0.3", Port: 8080, Weight: 7})
	if err := c.ApplyService(ctx, changed); err != nil {
		t.Fatalf("changed PUT: %v", err)
	}
	got, _ = env.dp.service(1)
	if got.Select != dataplane.SelectHash || len(got.Endpoints) != 3 || got.Endpoints[2].Weight != 7 {
		t.Errorf("changed rule = %+v", got)
	}
	st, err := c.GetService(ctx, "web")
	if err != nil || st.Service.Select != api.SelectHash || len(st.Endpoints) != 3 || !st.Endpoints[2].Healthy {
		t.Errorf("GET = %+v, %v", st, err)
	}
	if err := c.DeleteService(ctx, "web"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := env.dp.service(1); ok {
		t.Error("rule still in the datapath after delete")
	}
	if err := c.DeleteService(ctx, "web"); !api.IsNotFound(err) {
		t.Errorf("second delete = %v, want not found", err)
	}
	if _, err := c.GetService(ctx, "web"); !api.IsNotFound(err) {
		t.Errorf("GET after delete = %v, want not found", err)
	}
}

func TestOverlappingServicesConflict(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	ctx := context.Background()
	base := webService()
	base.PortEnd = 90
	base.SecondaryVIPs = []string{"10.96.0.11"}
	if err := c.ApplyService(ctx, base); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		mutate    func(*api.Service)
		wantField string // "" means accepted
	}{
		{"same port", func(s *api.Service) { s.Port = 80 }, "vip"},
		{"range overlapping the end", func(s *api.Service) { s.Port = 85; s.PortEnd = 95 }, "vip"},
		{"on the secondary vip", func(s *api.Service) { s.VIP = "10.96.0.11"; s.Port = 90 }, "vip"},
		{"own secondary on their vip", func(s *api.Service) { s.VIP = "10.96.0.50"; s.SecondaryVIPs = []string{"10.96.0.10"} }, "secondaryVIPs[0]"},
		{"other protocol", func(s *api.Service) { s.Protocol = api.ProtocolUDP }, ""},
		{"next port", func(s *api.Service) { s.Port = 91 }, ""},
		{"other vip", func(s *api.Service) { s.VIP = "10.96.0.12" }, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := webService()
			s.Name = "other-" + string(rune('a'+i))
			tt.mutate(&s)
			err := c.ApplyService(ctx, s)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("apply = %v, want accepted", err)
				}
				if err := c.DeleteService(ctx, s.Name); err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *api.StatusError
			if !api.IsConflict(err) || !asStatus(err, &se) || se.Body.Field != tt.wantField || !strings.Contains(se.Body.Message, `service "web"`) {
				t.Fatalf("apply = %v, want 409 on %s naming web", err, tt.wantField)
			}
		})
	}
	// Changing a service may overlap its own old version.
	moved := base
	moved.Port, moved.PortEnd = 85, 100
	if err := c.ApplyService(ctx, moved); err != nil {
		t.Errorf("service overlapping its own old ports: %v", err)
	}
}

func TestRulesPersistAcrossRestartWithStableIDs(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	c := env.client(t, "")
	ctx := context.Background()
	mk := func(name, vip string, secondary ...string) api.Service {
		s := webService()
		s.Name, s.VIP, s.SecondaryVIPs = name, vip, secondary
		return s
	}
	for _, s := range []api.Service{mk("a", "10.96.0.1"), mk("b", "10.96.0.2"), mk("c", "10.96.0.3", "10.96.1.3")} {
		if err := c.ApplyService(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// a=1 b=2 c=3 (one rule with both VIPs); deleting b frees 2, the lowest
	// free ID for d.
	if err := c.DeleteService(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyService(ctx, mk("d", "10.96.0.4")); err != nil {
		t.Fatal(err)
	}
	wantIDs := map[string][]uint32{"a": {1}, "c": {3}, "d": {2}}
	checkIDs := func(t *testing.T, s *Server) {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		got := map[string][]uint32{}
		for n, ss := range s.services {
			got[n] = ss.IDs
		}
		if !reflect.DeepEqual(got, wantIDs) {
			t.Errorf("IDs = %v, want %v", got, wantIDs)
		}
	}
	checkIDs(t, env.srv)
	env.stop()

	fresh := newFakeDatapath()
	env2 := startEnv(t, Config{Datapath: fresh, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t)})
	checkIDs(t, env2.srv)
	for id, vip := range map[uint32]string{1: "10.96.0.1", 2: "10.96.0.4", 3: "10.96.0.3"} {
		rule, ok := fresh.service(id)
		if !ok || rule.VIP != netip.MustParseAddr(vip) {
			t.Errorf("after restart, rule %d = %+v (present %v), want vip %s", id, rule, ok, vip)
		}
	}
	if rule, _ := fresh.service(3); len(rule.SecondaryVIPs) != 1 || rule.SecondaryVIPs[0] != netip.MustParseAddr("10.96.1.3") {
		t.Errorf("rule 3 secondary VIPs %v, want [10.96.1.3]", rule.SecondaryVIPs)
	}
	if n := fresh.upsertCount(); n != 3 {
		t.Errorf("restart re-applied %d rules, want 3", n)
	}
	list, err := env2.client(t, "").ListServices(ctx)
	if err != nil || len(list) != 3 || list[0].Service.Name != "a" || list[2].Service.Name != "d" {
		t.Errorf("list after restart = %+v, %v", list, err)
	}
	// Shrinking the secondary VIPs releases the extra rule and its ID.
	if err := env2.client(t, "").ApplyService(ctx, mk("c", "10.96.0.3")); err != nil {
		t.Fatal(err)
	}
	if rule, _ := fresh.service(3); len(rule.SecondaryVIPs) != 0 {
		t.Errorf("rule 3 still has secondary VIPs %v", rule.SecondaryVIPs)
	}
}

func TestStartRefusesABrokenStore(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"not json", "{", "parse rule store"},
		{"other version", `{"version":7,"services":[]}`, "version 7"},
		{"invalid service", `{"version":1,"services":[{"ids":[1],"service":{"name":"x"}}]}`, "services[0]"},
		{"id out of range", `{"version":1,"services":[{"ids":[20000],"service":` + webJSON + `}]}`, "outside 1..16383"},
		{"ids neither one nor one per vip", `{"version":1,"services":[{"ids":[1,2,3],"service":` + withField(t, "secondaryVIPs", []string{"10.1.1.1"}) + `}]}`, "want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "services.json"), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := NewServer(Config{Datapath: newFakeDatapath(), StateDir: dir, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewServer = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestFailedDatapathWriteLeavesStoreUnchanged(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	env.dp.mu.Lock()
	env.dp.failUpsert = errString2("map full")
	env.dp.mu.Unlock()
	r := env.do(t, "PUT", "/v1/services/web", webJSON, nil)
	if r.code != 500 || !strings.Contains(r.err.Message, "map full") {
		t.Fatalf("PUT = %d %+v, want 500 naming the datapath error", r.code, r.err)
	}
	if files := dirNames(t, filepath.Join(dir, storeDirName)); len(files) != 0 {
		t.Errorf("store written after a failed datapath write: %v", files)
	}
	if r := env.do(t, "GET", "/v1/services/web", "", nil); r.code != 404 {
		t.Errorf("GET after failed create = %d", r.code)
	}
}

type errString2 string

func (e errString2) Error() string { return string(e) }

func asStatus(err error, se **api.StatusError) bool {
	for err != nil {
		if s, ok := err.(*api.StatusError); ok {
			*se = s
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestConntrackHealthAndStatus(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	ctx := context.Background()
	s := webService()
	s.Protocol = api.ProtocolSCTP
	if err := c.ApplyService(ctx, s); err != nil {
		t.Fatal(err)
	}
	env.dp.mu.Lock()
	env.dp.conns = []dataplane.Conn{{
		Proto: dataplane.ProtoSCTP, ServiceID: 1, Endpoint: 1,
		Client:  netip.MustParseAddrPort("192.0.2.1:40000"),
		VIP:     netip.MustParseAddrPort("10.96.0.10:80"),
		Backend: netip.MustParseAddrPort("10.0.0.2:8080"),
		Source:  netip.MustParseAddrPort("192.0.2.1:40000"),
		State:   "established", OrigPackets: 3, OrigBytes: 300, ReplyPackets: 2, ReplyBytes: 200,
		Idle: 1500e6, ExpiresIn: 60e9, VTagClient: 0xdeadbeef, VTagEndpoint: 1,
		Paths: []dataplane.Path{{Client: netip.MustParseAddr("192.0.2.2"), VIP: netip.MustParseAddr("10.96.1.10"),
			Backend: netip.MustParseAddr("10.0.1.2"), Source: netip.MustParseAddr("192.0.2.2"), OrigPackets: 4, ReplyBytes: 7}},
	}, {Proto: dataplane.ProtoTCP, ServiceID: 99}}
	env.dp.stats[1] = dataplane.ServiceStats{Packets: 5, Bytes: 500, Active: 1,
		Endpoints: []dataplane.EndpointStats{{}, {Packets: 5, Bytes: 500, Sessions: 1, Active: 1}}}
	env.dp.mu.Unlock()

	conns, err := c.Conntrack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := api.Conn{Protocol: "sctp", Service: "web", Client: "192.0.2.1:40000", VIP: "10.96.0.10:80",
		Endpoint: "10.0.0.2:8080", Source: "192.0.2.1:40000", State: "established",
		OrigPackets: 3, OrigBytes: 300, ReplyPackets: 2, ReplyBytes: 200, IdleSeconds: 1, ExpiresInSeconds: 60,
		VTagClient: "deadbeef", VTagEndpoint: "00000001",
		Paths: []api.ConnPath{{Client: "192.0.2.2", VIP: "10.96.1.10", Endpoint: "10.0.1.2", Source: "192.0.2.2", OrigPackets: 4, ReplyBytes: 7}}}
	if len(conns) != 2 || !reflect.DeepEqual(conns[0], want) || conns[1].Service != "unknown-id-99" {
		t.Errorf("conntrack = %+v", conns)
	}
	st, err := c.GetService(ctx, "web")
	if err != nil || st.Packets != 5 || st.ActiveConnections != 1 || st.Endpoints[1].Sessions != 1 || st.Endpoints[1].Bytes != 500 {
		t.Errorf("status = %+v, %v", st, err)
	}
	if err := c.FlushConntrack(ctx); err != nil || env.dp.flushes != 1 {
		t.Errorf("flush = %v (flushes %d)", err, env.dp.flushes)
	}
	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" || h.Services != 1 || h.AttachMode != "tcx" || len(h.Interfaces) != 2 {
		t.Errorf("health = %+v, %v", h, err)
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	env := newEnv(t, nil)
	r := env.do(t, "GET", "/openapi.yaml", "", nil)
	if r.code != 200 {
		t.Fatalf("GET /openapi.yaml = %d", r.code)
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := yaml.Unmarshal([]byte(r.body), &doc); err != nil {
		t.Fatalf("parse served openapi.yaml: %v", err)
	}
	routes := env.srv.Routes()
	if len(routes) < 10 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	for _, rt := range routes {
		ops, ok := doc.Paths[rt.Path]
		if !ok {
			t.Errorf("path %s missing from openapi.yaml", rt.Path)
			continue
		}
		if _, ok := ops[strings.ToLower(rt.Method)]; !ok {
			t.Errorf("%s %s missing from openapi.yaml", rt.Method, rt.Path)
		}
	}
}

// FuzzServicePUT throws arbitrary bodies at the JSON decoder and validation:
// the server must answer every one without a panic or a 5xx.
func FuzzServicePUT(f *testing.F) {
	f.Add([]byte(webJSON))
	f.Add([]byte(`{"name":"web","endpoints":[{"address":1}]}`))
	f.Add([]byte(`{"name":"web"}{}`))
	f.Add([]byte(`[]`))
	env := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := env.do(t, "PUT", "/v1/services/web", string(body), map[string]string{"Content-Type": "application/json"})
		if r.code >= 500 {
			t.Fatalf("PUT %q = %d %s", body, r.code, r.body)
		}
	})
}
