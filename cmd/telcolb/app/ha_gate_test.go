package app

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

type testGate struct{ why atomic.Value }

func (g *testGate) Waiting() string { return g.why.Load().(string) }

// TestNoVIPAnnouncedBeforeHAResync: while the HA gate says the peers'
// bulk resync is pending, the node reports "syncing" and announces no VIP
// (every VIP says why); once it opens, the VIP is announced.
func TestNoVIPAnnouncedBeforeHAResync(t *testing.T) {
	r := newTestRouter(t, "127.0.0.3")
	gate := &testGate{}
	const why = "ha resync pending from lb2"
	gate.why.Store(why)
	env := newEnv(t, func(c *Config) { c.Ready = gate })
	c := env.client(t, "")
	ctx := context.Background()
	cfg := advConfig(r.port)
	cfg.BGP.Peers[0].Password = ""
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateService(ctx, webService()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "BGP session up", func() bool {
		st, err := c.Advertisement(ctx)
		return err == nil && len(st.BGPPeers) == 1 && st.BGPPeers[0].State == "established"
	})
	// Reconciles ran (the PUT, the service) with the session up: nothing
	// may have reached the router.
	time.Sleep(500 * time.Millisecond)
	if got := r.prefixes(t); len(got) != 0 {
		t.Fatalf("announced before the resync: %v", got)
	}
	if v := vipByAddr(t, c, "10.96.0.10"); v.Reason != why || len(v.Announced) != 0 {
		t.Errorf("vip while syncing: %+v", v)
	}
	if h, err := c.Health(ctx); err != nil || h.Status != "syncing" || h.NotReady != why {
		t.Errorf("health while syncing: %+v %v", h, err)
	}
	// A readiness check fails while syncing: 503.
	if code := healthCode(t, ctx, env); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/health while syncing: HTTP %d, want 503", code)
	}
	if st, err := c.HA(ctx); err != nil || st.Enabled {
		t.Errorf("GET /v1/ha without HA sync: %+v %v", st, err)
	}
	gate.why.Store("")
	env.srv.KickAdvertiser()
	r.waitPrefixes(t, "10.96.0.10/32")
	if h, err := c.Health(ctx); err != nil || h.Status != "ok" {
		t.Errorf("health after the resync: %+v %v", h, err)
	}
	if code := healthCode(t, ctx, env); code != http.StatusOK {
		t.Errorf("GET /v1/health once ready: HTTP %d, want 200", code)
	}
}

// healthCode is the HTTP status of GET /v1/health (no token in this env).
func healthCode(t *testing.T, ctx context.Context, env *testEnv) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.http.URL+"/v1/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
