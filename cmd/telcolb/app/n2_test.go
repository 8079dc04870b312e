package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

const n2VIP = "10.96.0.38"

func n2Service(amfs ...string) api.Service {
	s := api.Service{Name: "n2", VIP: n2VIP, Port: 38412, Protocol: api.ProtocolSCTP, N2: true}
	for _, a := range amfs {
		s.Endpoints = append(s.Endpoints, api.Endpoint{Address: a, Port: 38412})
	}
	return s
}

// n2Env is a server whose N2 proxies run on an in-memory SCTP network with
// simulated AMFs at 10.0.1.1.., pointers 1...
func n2Env(t *testing.T, amfs int) (*testEnv, *memory.Network) {
	t.Helper()
	ngapl.SilenceLibraryLogs()
	net := memory.New(memory.Config{Queue: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := 1; i <= amfs; i++ {
		a, err := n2.NewAMF(n2.AMFConfig{Name: fmt.Sprintf("amf%d", i), Transport: net, Region: 0xca, SetID: 1, Pointer: uint8(i),
			Listen: transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", i))}, Port: 38412}})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := a.Listen()
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = a.Serve(ctx, ln) }()
	}
	env := newEnv(t, func(c *Config) { c.N2 = N2Config{Transport: net} })
	return env, net
}

func n2GNB(t *testing.T, net *memory.Network, name string, ues int) *n2.GNB {
	t.Helper()
	return registeredGNB(t, n2.GNBConfig{Name: name, Transport: net, UEs: ues, SetID: 1, Wait: 5 * time.Second})
}

// registeredGNB connects a gNB simulator to the N2 VIP and registers all
// its UEs, failing the test on any UE left unregistered.
func registeredGNB(t *testing.T, cfg n2.GNBConfig) *n2.GNB {
	t.Helper()
	cfg.Remote = transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(n2VIP)}, Port: 38412}
	g, err := n2.NewGNB(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = g.Close() })
	if err := g.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	g.Register(ctx)
	for _, u := range g.Report().UEs {
		if !u.Registered {
			t.Fatalf("%s ue %d not registered: %s", cfg.Name, u.Index, u.Error)
		}
	}
	return g
}

func scrape(t *testing.T, env *testEnv) string {
	t.Helper()
	resp, err := env.http.Client().Get(env.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics = %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestN2ServiceRunsAProxyInsteadOfADatapathRule(t *testing.T) {
	env, net := n2Env(t, 3)
	ctx := context.Background()
	c := env.client(t, "")
	if err := c.ApplyService(ctx, n2Service("10.0.1.1", "10.0.1.2")); err != nil {
		t.Fatalf("create N2 service: %v", err)
	}
	if n := env.dp.upsertCount(); n != 0 {
		t.Errorf("an N2 service programmed %d datapath rules", n)
	}
	n2GNB(t, net, "gnb1", 20)
	eventually(t, "UE counts in the service status", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && st.ActiveConnections == 20 && st.Endpoints[0].ActiveConnections == 10 && st.Endpoints[1].ActiveConnections == 10
	})
	m := scrape(t, env)
	for _, want := range []string{`telcolb_n2_ue_contexts{amf="10.0.1.1:38412",proxy="n2"} 10`, `telcolb_n2_associations_up{proxy="n2",side="gnb"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// An unchanged apply leaves the proxy, and so the gNB's UEs, alone.
	before := running(env)
	if err := c.ApplyService(ctx, n2Service("10.0.1.1", "10.0.1.2")); err != nil {
		t.Fatal(err)
	}
	if running(env) != before {
		t.Error("unchanged apply restarted the proxy")
	}

	// A new AMF joins the running proxy: existing UEs stay, new UEs spread
	// over three.
	if err := c.ApplyService(ctx, n2Service("10.0.1.1", "10.0.1.2", "10.0.1.3")); err != nil {
		t.Fatalf("add an AMF: %v", err)
	}
	if running(env) != before {
		t.Fatal("adding an AMF restarted the proxy")
	}
	n2GNB(t, net, "gnb2", 30)
	eventually(t, "new UEs spread over three AMFs, old ones kept", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && len(st.Endpoints) == 3 && st.ActiveConnections == 50 &&
			st.Endpoints[0].ActiveConnections == 20 && st.Endpoints[1].ActiveConnections == 20 && st.Endpoints[2].ActiveConnections == 10
	})

	// Removing an AMF releases only its UEs; the proxy keeps running.
	if err := c.ApplyService(ctx, n2Service("10.0.1.2", "10.0.1.3")); err != nil {
		t.Fatalf("remove an AMF: %v", err)
	}
	if running(env) != before {
		t.Fatal("removing an AMF restarted the proxy")
	}
	eventually(t, "the removed AMF's UEs gone, the others kept", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && len(st.Endpoints) == 2 && st.ActiveConnections == 30 &&
			st.Endpoints[0].ActiveConnections == 20 && st.Endpoints[1].ActiveConnections == 10
	})
	if m := scrape(t, env); strings.Contains(m, `amf="10.0.1.1:38412"`) {
		t.Error("/metrics still lists the removed AMF")
	}

	// A new selection restarts the proxy: UE contexts start over and the
	// metrics are registered again without a conflict.
	changed := n2Service("10.0.1.2", "10.0.1.3")
	changed.Select = api.SelectLeastConn
	if err := c.ApplyService(ctx, changed); err != nil {
		t.Fatalf("change the selection: %v", err)
	}
	if running(env) == before {
		t.Fatal("a selection change did not restart the proxy")
	}
	n2GNB(t, net, "gnb3", 4)
	eventually(t, "UEs of the restarted proxy", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && st.ActiveConnections == 4 && st.Endpoints[0].ActiveConnections == 2
	})
	if m := scrape(t, env); !strings.Contains(m, `telcolb_n2_ue_contexts{amf="10.0.1.3:38412",proxy="n2"} 2`) {
		t.Error("/metrics lacks the restarted proxy's AMFs")
	}

	if err := c.DeleteService(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if conn, err := net.Dial(dctx, nil, transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(n2VIP)}, Port: 38412}); err == nil {
		conn.Close()
		t.Error("the N2 VIP still accepts associations after delete")
	}
	if m := scrape(t, env); strings.Contains(m, "telcolb_n2_ue_contexts") {
		t.Error("N2 metrics outlive the deleted service")
	}
}

func TestN2ServiceRejectsWhatTheProxyCannotDo(t *testing.T) {
	env, _ := n2Env(t, 0)
	tests := []struct {
		name      string
		mutate    func(*api.Service)
		wantField string
		wantMsg   string
	}{
		{"hash selection", func(s *api.Service) { s.Select = api.SelectHash }, "select", "rr"},
		{"port range", func(s *api.Service) { s.PortEnd = 38420 }, "portEnd", "one port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := n2Service("10.0.1.1")
			tt.mutate(&s)
			err := env.client(t, "").ApplyService(context.Background(), s)
			var se *api.StatusError
			if !errors.As(err, &se) || se.Code != http.StatusBadRequest || se.Body.Field != tt.wantField || !strings.Contains(se.Body.Message, tt.wantMsg) {
				t.Fatalf("apply = %v, want an error on %s mentioning %q", err, tt.wantField, tt.wantMsg)
			}
			if _, ok := env.srv.n2.stats("n2"); ok {
				t.Error("a proxy runs for a rejected service")
			}
		})
	}
}

func running(env *testEnv) *sctplb.Proxy {
	env.srv.n2.mu.Lock()
	defer env.srv.n2.mu.Unlock()
	if np := env.srv.n2.proxies["n2"]; np != nil {
		return np.proxy
	}
	return nil
}
