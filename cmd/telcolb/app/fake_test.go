package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// fakeDatapath records what the server programs, like the eBPF maps would.
type fakeDatapath struct {
	mu         sync.Mutex
	services   map[uint32]dataplane.Service
	upserts    int
	deleted    []uint32
	conns      []dataplane.Conn
	stats      map[uint32]dataplane.ServiceStats
	drops      map[dataplane.DropReason]uint64
	flushes    int
	failUpsert error
	// assocPaths are the SCTP association records by path count, per
	// service ID (AssocPaths).
	assocPaths map[uint32][dataplane.MaxAssocPaths]uint64
	// maxID is the datapath's ID space (testMaxID when 0).
	maxID uint32
}

func (f *fakeDatapath) MaxServiceID() uint32 {
	if f.maxID == 0 {
		return testMaxID
	}
	return f.maxID
}

func newFakeDatapath() *fakeDatapath {
	return &fakeDatapath{services: map[uint32]dataplane.Service{}, stats: map[uint32]dataplane.ServiceStats{}}
}

func (f *fakeDatapath) UpsertService(s dataplane.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failUpsert != nil {
		return f.failUpsert
	}
	if s.ID == 0 || s.ID > f.MaxServiceID() {
		return fmt.Errorf("fake: bad id %d", s.ID)
	}
	s.Endpoints = append([]dataplane.Endpoint(nil), s.Endpoints...)
	f.services[s.ID] = s
	f.upserts++
	return nil
}

func (f *fakeDatapath) DeleteService(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	f.deleted = append(f.deleted, id)
	return nil
}

func (f *fakeDatapath) Conntrack() ([]dataplane.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]dataplane.Conn(nil), f.conns...), nil
}

func (f *fakeDatapath) AssocPaths() (map[uint32][dataplane.MaxAssocPaths]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint32][dataplane.MaxAssocPaths]uint64{}
	for id, c := range f.assocPaths {
		out[id] = c
	}
	return out, nil
}

func (f *fakeDatapath) FlushConntrack() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns = nil
	f.flushes++
	return nil
}

func (f *fakeDatapath) ServiceStats(id uint32, n int) (dataplane.ServiceStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[id]; !ok {
		return dataplane.ServiceStats{}, fmt.Errorf("fake: no service %d", id)
	}
	st := f.stats[id]
	eps := make([]dataplane.EndpointStats, n)
	copy(eps, st.Endpoints)
	st.Endpoints = eps
	return st, nil
}

func (f *fakeDatapath) DropStats() (map[dataplane.DropReason]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[dataplane.DropReason]uint64{}
	for k, v := range f.drops {
		out[k] = v
	}
	return out, nil
}

func (f *fakeDatapath) Interfaces() []string { return []string{"eth0", "eth1"} }
func (f *fakeDatapath) AttachMode() string   { return "tcx" }

func (f *fakeDatapath) service(id uint32) (dataplane.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[id]
	return s, ok
}

func (f *fakeDatapath) upsertCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.upserts
}

// scriptedProber fails the endpoints listed in down.
type scriptedProber struct {
	mu   sync.Mutex
	down map[string]bool // ProbeTarget.Addr.String()
	runs int
}

func (p *scriptedProber) Probe(_ context.Context, t ProbeTarget) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs++
	if p.down[t.Addr.String()] {
		return errors.New("scripted failure")
	}
	return nil
}

func (p *scriptedProber) set(addr string, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down == nil {
		p.down = map[string]bool{}
	}
	p.down[addr] = down
}

type testEnv struct {
	srv  *Server
	http *httptest.Server
	dp   *fakeDatapath
	reg  *prometheus.Registry
	cfg  Config
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newEnv starts a server over a fake datapath in a temporary state dir.
func newEnv(t testing.TB, mutate func(*Config)) *testEnv {
	t.Helper()
	cfg := Config{
		Datapath:      newFakeDatapath(),
		StateDir:      t.TempDir(),
		Prober:        &scriptedProber{},
		Logger:        testLogger(t),
		ProbeTimeUnit: 10 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return startEnv(t, cfg)
}

func startEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return &testEnv{srv: srv, http: hs, dp: cfg.Datapath.(*fakeDatapath), reg: reg, cfg: cfg}
}

func (e *testEnv) stop() {
	e.http.Close()
	e.srv.Close()
}

type reply struct {
	code int
	body string
	err  api.Error
	hdr  http.Header
}

func (e *testEnv) do(t testing.TB, method, path, body string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, body: string(raw), hdr: resp.Header}
	if resp.StatusCode >= 400 {
		if err := jsonUnmarshal(raw, &r.err); err != nil {
			t.Fatalf("%s %s: error body %q is not an api.Error: %v", method, path, raw, err)
		}
	}
	return r
}

func (e *testEnv) client(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient(api.ClientConfig{BaseURL: e.http.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls cond; the deadline only bounds a broken test, it does
// not measure anything.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
