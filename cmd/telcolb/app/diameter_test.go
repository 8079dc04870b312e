package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/l7parse/diameter"
	lab "github.com/telcolb/telcolb/scenarios/diameter"
)

// diamLoop is a loopback address per test process.
func diamLoop(host byte) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 88, byte(os.Getpid() % 250), host})
}

func TestDiameterServiceRunsAnAgentWithSessionsPerServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := newEnv(t, func(c *Config) { c.Diameter = DiameterConfig{Tw: 6 * time.Second, Tc: time.Second} })
	c := env.client(t, "")
	l, err := net.Listen("tcp", diamLoop(1).String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	svc := api.Service{Name: "gy", VIP: diamLoop(1).String(), Port: port, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "agent.gy.example", OriginRealm: "gy.example", Mode: api.DiameterProxy, Applications: []uint32{4}}}
	var servers []*lab.Server
	for i := range 2 {
		s, err := lab.StartServer(diamLoop(byte(10+i)).String()+":0", fmt.Sprintf("ocs%d.gy.example", i), "gy.example")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Kill)
		servers = append(servers, s)
		a := netip.MustParseAddrPort(s.Addr)
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.Addr().String(), Port: a.Port()})
	}
	if err := c.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create Diameter service: %v", err)
	}
	if n := env.dp.upsertCount(); n != 0 {
		t.Errorf("a Diameter service programmed %d datapath rules", n)
	}
	eventually(t, "both servers OKAY", func() bool {
		st, err := c.GetService(ctx, "gy")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	cl, err := lab.Dial(fmt.Sprintf("%v:%d", diamLoop(1), port), "pcef.client.example", "client.example")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 10 {
		a, err := cl.CCR(ctx, fmt.Sprintf("s;%d", i), "gy.example", diameter.CCInitial, 0)
		if err != nil || a.Result != diameter.Success {
			t.Fatalf("CCR-I %d: %+v %v", i, a, err)
		}
	}
	eventually(t, "sessions per server in the status", func() bool {
		st, err := c.GetService(ctx, "gy")
		return err == nil && st.ActiveConnections == 10 && st.Endpoints[0].ActiveConnections == 5 && st.Endpoints[1].ActiveConnections == 5
	})
	m := scrape(t, env)
	for _, want := range []string{
		fmt.Sprintf(`telcolb_diameter_sessions{agent="gy",server="%s"} 5`, servers[0].Addr),
		`telcolb_diameter_requests_total{agent="gy",application="4",command="CCR",side="client"} 10`,
		`telcolb_diameter_answers_total{agent="gy",application="4",command="CCA",side="server"} 10`,
		fmt.Sprintf(`telcolb_diameter_peer_state{agent="gy",server="%s",state="okay"} 1`, servers[1].Addr),
		`telcolb_diameter_clients{agent="gy"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := c.DeleteService(ctx, "gy"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("%v:%d", diamLoop(1), port)); err == nil {
		t.Error("agent still listening after the service was deleted")
	}
}

func TestDiameterServiceValidationNamesTheField(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	base := api.Service{Name: "dia", VIP: "192.0.2.77", Port: 3868, Protocol: api.ProtocolTCP,
		Diameter:  &api.DiameterSpec{OriginHost: "agent.example", OriginRealm: "example"},
		Endpoints: []api.Endpoint{{Address: "192.0.2.10", Port: 3868}}}
	for _, k := range []struct {
		field string
		edit  func(*api.Service)
	}{
		{"vip", func(*api.Service) {}},
		{"diameter", func(s *api.Service) { s.Protocol = api.ProtocolUDP }},
		{"pfcp", func(s *api.Service) { s.PFCP = true }},
		{"diameter", func(s *api.Service) { s.N2, s.Protocol = true, api.ProtocolSCTP }},
		{"diameter.originHost", func(s *api.Service) { s.Diameter.OriginHost = "" }},
		{"diameter.originRealm", func(s *api.Service) { s.Diameter.OriginRealm = "bad realm" }},
		{"diameter.mode", func(s *api.Service) { s.Diameter.Mode = "redirect" }},
		{"diameter.applications", func(s *api.Service) { s.Diameter.Mode = api.DiameterProxy }},
		{"diameter.applications[1]", func(s *api.Service) {
			s.Diameter.Mode, s.Diameter.Applications = api.DiameterProxy, []uint32{4, 0xffffffff}
		}},
		{"select", func(s *api.Service) { s.Select = api.SelectHash }},
	} {
		svc := base
		d := *base.Diameter
		svc.Diameter = &d
		k.edit(&svc)
		err := c.ApplyService(context.Background(), svc)
		var ae *api.StatusError
		if !errors.As(err, &ae) || ae.Code != 400 || ae.Body.Field != k.field {
			t.Errorf("apply = %v, want a 400 naming %s", err, k.field)
		}
	}
}

// A change of a Diameter service's endpoints and selection is applied to
// the running agent: the client's connection and the kept server's
// connection stay, every session of the kept server stays on it, the
// removed server's sessions continue elsewhere, the new server takes new
// sessions, and the removed server's series leave /metrics.
func TestDiameterServiceChangeKeepsBindingsAndPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := newEnv(t, func(c *Config) { c.Diameter = DiameterConfig{Tw: 6 * time.Second, Tc: time.Second} })
	c := env.client(t, "")
	l, err := net.Listen("tcp", diamLoop(2).String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	svc := api.Service{Name: "gy2", VIP: diamLoop(2).String(), Port: port, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "agent.gy.example", OriginRealm: "gy.example"}}
	var servers []*lab.Server
	var eps []api.Endpoint
	for i := range 3 {
		s, err := lab.StartServer(diamLoop(byte(20+i)).String()+":0", fmt.Sprintf("ocs%d.gy.example", i), "gy.example")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Kill)
		servers = append(servers, s)
		a := netip.MustParseAddrPort(s.Addr)
		eps = append(eps, api.Endpoint{Address: a.Addr().String(), Port: a.Port()})
	}
	svc.Endpoints = eps[:2]
	if err := c.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create Diameter service: %v", err)
	}
	eventually(t, "both servers OKAY", func() bool {
		st, err := c.GetService(ctx, "gy2")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	cl, err := lab.Dial(fmt.Sprintf("%v:%d", diamLoop(2), port), "pcef.client.example", "client.example")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	origin := map[string]string{}
	for i := range 20 {
		sid := fmt.Sprintf("chg;%d", i)
		a, err := cl.CCR(ctx, sid, "gy.example", diameter.CCInitial, 0)
		if err != nil || a.Result != diameter.Success {
			t.Fatalf("CCR-I %s: %+v %v", sid, a, err)
		}
		origin[sid] = a.Origin
	}
	// Server 1 out, server 2 in, fewest sessions instead of round robin.
	svc.Endpoints = []api.Endpoint{eps[0], eps[2]}
	svc.Select = api.SelectLeastConn
	if err := c.ApplyService(ctx, svc); err != nil {
		t.Fatalf("change Diameter service: %v", err)
	}
	eventually(t, "the new server OKAY", func() bool {
		st, err := c.GetService(ctx, "gy2")
		return err == nil && len(st.Endpoints) == 2 && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	// New sessions go to the server holding the fewest: the new one.
	for i := range 5 {
		sid := fmt.Sprintf("chg-new;%d", i)
		a, err := cl.CCR(ctx, sid, "gy.example", diameter.CCInitial, 0)
		if err != nil || a.Result != diameter.Success || a.Origin != servers[2].Host {
			t.Fatalf("new session %s after the change: %+v %v", sid, a, err)
		}
	}
	// On the same client connection: kept sessions stay, the removed
	// server's continue elsewhere.
	for i := range 20 {
		sid := fmt.Sprintf("chg;%d", i)
		a, err := cl.CCR(ctx, sid, "gy.example", diameter.CCUpdate, 1)
		if err != nil || a.Result != diameter.Success {
			t.Fatalf("CCR-U %s after the change: %+v %v", sid, a, err)
		}
		switch origin[sid] {
		case servers[0].Host:
			if a.Origin != servers[0].Host {
				t.Errorf("session %s moved from %s to %s", sid, servers[0].Host, a.Origin)
			}
		case servers[1].Host:
			if a.Origin == servers[1].Host {
				t.Errorf("session %s still answered by the removed server", sid)
			}
		}
	}
	if n := servers[0].Accepted(); n != 1 {
		t.Errorf("the kept server accepted %d connections, want 1 (the agent reconnected)", n)
	}
	if d := cl.Duplicates(); d != 0 {
		t.Errorf("%d duplicate answers", d)
	}
	eventually(t, "the status counts the bindings of the servers listed", func() bool {
		st, err := c.GetService(ctx, "gy2")
		return err == nil && st.ActiveConnections == 25 && st.Endpoints[0].ActiveConnections+st.Endpoints[1].ActiveConnections == 25
	})
	m := scrape(t, env)
	if strings.Contains(m, servers[1].Addr) {
		t.Errorf("/metrics still has series of the removed server %s", servers[1].Addr)
	}
	if !strings.Contains(m, fmt.Sprintf(`telcolb_diameter_peer_state{agent="gy2",server="%s",state="okay"} 1`, servers[2].Addr)) {
		t.Error("/metrics lacks the new server's peer state")
	}
}
