package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// blockedProber never answers: what a restart looks like before the first
// probe has completed.
type blockedProber struct{}

func (blockedProber) Probe(ctx context.Context, _ ProbeTarget) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestRestartKeepsAProbedDownEndpointOutOfRotation(t *testing.T) {
	dir := t.TempDir()
	prober := &scriptedProber{}
	env := newEnv(t, func(c *Config) { c.StateDir = dir; c.Prober = prober; c.ProbeTimeUnit = 5 * time.Millisecond })
	s := webService()
	s.Probe = &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 2}
	if err := env.client(t, "").ApplyService(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	prober.set("10.0.0.2:8080", true)
	eventually(t, "endpoint 2 down", func() bool {
		r, _ := env.dp.service(1)
		return len(r.Endpoints) == 2 && r.Endpoints[1].Down
	})
	env.stop()

	// The new process programs the rule before any probe has answered: the
	// endpoint must still be down, in the datapath and in the API.
	dp := newFakeDatapath()
	env2 := startEnv(t, Config{Datapath: dp, StateDir: dir, Prober: blockedProber{}, Logger: testLogger(t)})
	r, ok := dp.service(1)
	if !ok || len(r.Endpoints) != 2 {
		t.Fatalf("service not re-applied: %+v", r)
	}
	if !r.Endpoints[1].Down || r.Endpoints[0].Down {
		t.Fatalf("after restart: down flags %v/%v, want false/true", r.Endpoints[0].Down, r.Endpoints[1].Down)
	}
	st, err := env2.client(t, "").GetService(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if st.Endpoints[1].Healthy || !st.Endpoints[0].Healthy {
		t.Fatalf("API after restart: %+v", st.Endpoints)
	}
}

func TestRestartedDownEndpointComesBackWhenItsProbePasses(t *testing.T) {
	dir := t.TempDir()
	prober := &scriptedProber{}
	env := newEnv(t, func(c *Config) { c.StateDir = dir; c.Prober = prober; c.ProbeTimeUnit = 5 * time.Millisecond })
	s := webService()
	s.Probe = &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 2}
	if err := env.client(t, "").ApplyService(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	prober.set("10.0.0.2:8080", true)
	eventually(t, "endpoint 2 down", func() bool { r, _ := env.dp.service(1); return r.Endpoints[1].Down })
	env.stop()

	prober.set("10.0.0.2:8080", false)
	env2 := newEnv(t, func(c *Config) { c.StateDir = dir; c.Prober = prober; c.ProbeTimeUnit = 5 * time.Millisecond })
	eventually(t, "endpoint 2 back up", func() bool { r, _ := env2.dp.service(1); return !r.Endpoints[1].Down })
	env2.stop()
	// And that verdict is what the next start begins with.
	env3 := startEnv(t, Config{Datapath: newFakeDatapath(), StateDir: dir, Prober: blockedProber{}, Logger: testLogger(t)})
	if r, _ := env3.dp.service(1); r.Endpoints[1].Down {
		t.Fatal("an endpoint that recovered before the restart starts down")
	}
}

func TestDamagedProbeStateIsSetAside(t *testing.T) {
	dir := t.TempDir()
	writeStateFile(t, dir+"/"+healthFileName, `{"version":1,"down":{"web":["not an address"]}}`)
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	if got := gaugeValue(t, env.reg, "telcolb_state_files_damaged"); got != 1 {
		t.Fatalf("damaged files %v, want 1", got)
	}
}

func TestServiceLimitComesFromTheDatapathAndIsA507(t *testing.T) {
	var logs logBuffer
	dp := newFakeDatapath()
	dp.maxID = 3
	env := startEnv(t, Config{Datapath: dp, StateDir: t.TempDir(), Prober: &scriptedProber{}, Logger: bufferLogger(&logs)})
	c := env.client(t, "")
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if err := c.ApplyService(ctx, svcNamed(fmt.Sprintf("s%d", i), fmt.Sprintf("10.96.0.%d", i))); err != nil {
			t.Fatalf("service %d of 3: %v", i, err)
		}
	}
	for i := 0; i < 3; i++ {
		r := env.do(t, http.MethodPost, "/v1/services", `{"name":"s4","vip":"10.96.0.4","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":80}]}`, nil)
		if r.code != http.StatusInsufficientStorage || !strings.Contains(r.err.Message, "holds 3 services") {
			t.Fatalf("4th service: %d %+v, want 507 naming the limit of 3", r.code, r.err)
		}
	}
	if n := strings.Count(logs.String(), "every datapath service ID is in use"); n != 1 {
		t.Fatalf("limit logged %d times for 3 refusals, want once:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a refusal at the limit logged an error:\n%s", logs.String())
	}
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.MaxServices != 3 {
		t.Fatalf("health reports maxServices %d, want 3", h.MaxServices)
	}
	// A freed ID is handed out again, with the limit logged again next time.
	if err := c.DeleteService(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyService(ctx, svcNamed("s4", "10.96.0.4")); err != nil {
		t.Fatal(err)
	}
	if r, ok := dp.service(2); !ok || r.VIP.String() != "10.96.0.4" {
		t.Fatalf("freed ID 2 not reused: %+v", r)
	}
	var se *api.StatusError
	if err := c.ApplyService(ctx, svcNamed("s5", "10.96.0.5")); !errors.As(err, &se) || se.Code != http.StatusInsufficientStorage {
		t.Fatalf("service beyond the limit: %v, want 507", err)
	}
	if n := strings.Count(logs.String(), "every datapath service ID is in use"); n != 2 {
		t.Fatalf("limit logged %d times, want once per time the table filled", n)
	}
}

// TestFullDatapathTableIsA507: a datapath that has no room for a service's
// endpoints (its counter slots are all in use) refuses it with 507 naming
// the endpoints, not a 500, and the service is not stored.
func TestFullDatapathTableIsA507(t *testing.T) {
	dp := newFakeDatapath()
	env := startEnv(t, Config{Datapath: dp, StateDir: t.TempDir(), Prober: &scriptedProber{}, Logger: testLogger(t)})
	dp.failUpsert = fmt.Errorf("service 1: endpoint 0: all 65535 endpoint counter slots are in use: %w", dataplane.ErrCapacity)
	r := env.do(t, http.MethodPost, "/v1/services", `{"name":"s1","vip":"10.96.0.1","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":80}]}`, nil)
	if r.code != http.StatusInsufficientStorage || r.err.Field != "endpoints" || !strings.Contains(r.err.Message, "65535 endpoint counter slots") {
		t.Fatalf("service with no room: %d %+v, want 507 on endpoints naming the limit", r.code, r.err)
	}
	dp.failUpsert = nil
	if _, err := env.client(t, "").GetService(context.Background(), "s1"); err == nil {
		t.Fatal("a refused service was stored")
	}
}

// TestRestartWith10000Services restores 10,000 services over a datapath
// whose ID space holds them: every one is re-applied with its ID, and the
// work is one datapath write per service (no rescans).
func TestRestartWith10000Services(t *testing.T) {
	const n = 10000
	dir := t.TempDir()
	st := store{stateDir: dir, maxID: n}
	if err := os.MkdirAll(st.dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		s := svcNamed(fmt.Sprintf("svc-%05d", i), fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256))
		raw, err := json.Marshal(serviceFile{Version: storeVersion, IDs: []uint32{uint32(i)}, Service: s})
		if err != nil {
			t.Fatal(err)
		}
		// Not synced one by one: the test needs the files, not durability.
		if err := os.WriteFile(filepath.Join(st.dir(), serviceFileName(s.Name)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dp := newFakeDatapath()
	dp.maxID = n
	env := startEnv(t, Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t)})
	if got := dp.upsertCount(); got != n {
		t.Fatalf("%d datapath writes for %d services", got, n)
	}
	for _, i := range []int{1, 2, 4097, n} {
		r, ok := dp.service(uint32(i))
		if !ok || r.VIP.String() != fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256) {
			t.Fatalf("service %d not restored with its ID: %+v", i, r)
		}
	}
	h, err := env.client(t, "").Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Services != n {
		t.Fatalf("health reports %d services", h.Services)
	}
	// The ID space is full: the next one is refused, an overlap is still
	// found among 10,000.
	r := env.do(t, http.MethodPost, "/v1/services", `{"name":"one-more","vip":"10.200.0.1","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":80}]}`, nil)
	if r.code != http.StatusInsufficientStorage {
		t.Fatalf("service %d: %d %+v", n+1, r.code, r.err)
	}
	r = env.do(t, http.MethodPut, "/v1/services/svc-00001", `{"name":"svc-00001","vip":"10.100.39.16","port":80,"protocol":"tcp","endpoints":[{"address":"10.0.0.1","port":80}]}`, nil)
	if r.code != http.StatusConflict || !strings.Contains(r.err.Message, "svc-10000") {
		t.Fatalf("overlap with svc-10000: %d %+v", r.code, r.err)
	}
}

func FuzzParseHealth(f *testing.F) {
	f.Add([]byte(`{"version":1,"down":{"web":["10.0.0.2:8080","[fd00::1]:80"]}}`))
	f.Add([]byte(`{"version":1,"down":{}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"down":{"web":["nope"]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		down, err := parseHealth(raw)
		if err != nil {
			return
		}
		for k := range down {
			if !k.endpoint.IsValid() {
				t.Fatalf("accepted an invalid endpoint %v", k)
			}
		}
	})
}

// TestFullMaglevTablesAreA507OnSelect: the datapath out of maglev tables
// refuses the service with 507 naming select, and nothing is stored.
func TestFullMaglevTablesAreA507OnSelect(t *testing.T) {
	dp := newFakeDatapath()
	env := startEnv(t, Config{Datapath: dp, StateDir: t.TempDir(), Prober: &scriptedProber{}, Logger: testLogger(t)})
	dp.failUpsert = fmt.Errorf("service 1: select maglev: 256 services use maglev selection already: %w", dataplane.ErrMaglevCapacity)
	r := env.do(t, http.MethodPost, "/v1/services", `{"name":"s1","vip":"10.96.0.1","port":80,"protocol":"tcp","select":"maglev","endpoints":[{"address":"10.0.0.1","port":80}]}`, nil)
	if r.code != http.StatusInsufficientStorage || r.err.Field != "select" || !strings.Contains(r.err.Message, "maglev") {
		t.Fatalf("maglev service with no room: %d %+v, want 507 on select", r.code, r.err)
	}
	dp.failUpsert = nil
	if _, err := env.client(t, "").GetService(context.Background(), "s1"); err == nil {
		t.Fatal("a refused service was stored")
	}
}
