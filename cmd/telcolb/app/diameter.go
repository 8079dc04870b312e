package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/diam"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// Diameter services (api.Service.Diameter) get no eBPF rule: the daemon
// terminates Diameter on VIP:port itself with an sctplb.DiameterAgent, a
// relay or proxy agent (RFC 6733 §2.8) whose servers are the service's
// endpoints. TCP services use TCP on both sides; SCTP services use the N2
// proxies' SCTP transport (kernel, or usrsctp where the kernel has none)
// on both sides. The VIP must be a local address of the daemon.
//
// A change of the servers (endpoints added, removed, reweighted) or of the
// selection is applied to the running agent (DiameterAgent.Reconfigure):
// clients stay connected, kept servers keep their connection and their
// Session-Id bindings; a removed server gets a DPR, its pending requests
// are re-sent to another server with the T flag and its sessions are bound
// anew at their next request. A change of what peers exchanged
// capabilities on (VIP, port, protocol, Origin-Host/Realm, mode,
// applications) restarts the agent: peers get a DPR (REBOOTING),
// reconnect and exchange capabilities again, and bindings start afresh.

// DiameterConfig tunes the daemon's Diameter agents.
type DiameterConfig struct {
	// Timers; zero keeps diam's defaults (Tw 30s, Tc 30s, requests
	// answered 3002 after 30s, bindings idle for 1h dropped).
	Tw, Tc, RequestTimeout, SessionIdle time.Duration
}

type diameterManager struct {
	proxyManager[diameterSpec, *sctplb.DiameterAgent]
	cfg  DiameterConfig
	sctp func() (transport.Transport, error)
}

// diameterSpec is what a running agent depends on: its configuration and
// whether it speaks SCTP (the transport itself is added at start).
type diameterSpec struct {
	C    sctplb.DiameterConfig
	SCTP bool
}

func newDiameterManager(cfg DiameterConfig, sctp func() (transport.Transport, error), reg prometheus.Registerer, log *slog.Logger) *diameterManager {
	m := &diameterManager{cfg: cfg, sctp: sctp}
	m.proxyManager = newProxyManager(proxyKind[diameterSpec, *sctplb.DiameterAgent]{
		name: "Diameter agent", errPrefix: "diameter service",
		restarting:  "Diameter service changed what peers exchanged capabilities on: restarting its agent; its peers reconnect",
		configOf:    m.specOf,
		reconfigure: m.reconfigure,
		start:       m.start,
		describe: func(svc api.Service, sp diameterSpec) []any {
			return []any{"listen", sp.C.Listen, "protocol", svc.Protocol, "mode", sp.C.Mode.String(),
				"servers", len(sp.C.Servers), "policy", sp.C.Policy.String()}
		},
		fill: fillDiameter,
	}, reg, log)
	return m
}

// specOf maps an api.Service onto an agent configuration; leastconn means
// "fewest sessions" (policyOf).
func (m *diameterManager) specOf(svc api.Service) (diameterSpec, error) {
	c, err := m.diameterConfigOf(svc)
	return diameterSpec{C: c, SCTP: svc.Protocol == api.ProtocolSCTP}, err
}

func (m *diameterManager) diameterConfigOf(svc api.Service) (sctplb.DiameterConfig, error) {
	d := svc.Diameter
	c := sctplb.DiameterConfig{Name: svc.Name, Tw: m.cfg.Tw, Tc: m.cfg.Tc, RequestTimeout: m.cfg.RequestTimeout, SessionIdle: m.cfg.SessionIdle,
		Identity: diameter.Identity{Host: d.OriginHost, Realm: d.OriginRealm}, Applications: append([]uint32(nil), d.Applications...)}
	vip, err := netip.ParseAddr(svc.VIP)
	if err != nil {
		return c, &api.FieldError{Field: "vip", Message: err.Error()}
	}
	c.Listen = netip.AddrPortFrom(vip, svc.Port)
	if d.Mode == api.DiameterProxy {
		c.Mode = diam.Proxy
	}
	bs, weighted, err := backendsOf(svc, svc.Port)
	if err != nil {
		return c, err
	}
	for _, b := range bs {
		c.Servers = append(c.Servers, sctplb.DiameterServer{Name: b.name, Addr: b.addr, Weight: b.weight})
	}
	c.Policy, err = policyOf(svc, weighted, diam.RoundRobin, diam.Weighted, diam.LeastSessions, "Diameter agents bind sessions", "sessions")
	return c, err
}

// reconfigure applies a change of servers or policy to the running agent;
// a change of anything peers exchanged capabilities on restarts it.
func (m *diameterManager) reconfigure(name string, a *sctplb.DiameterAgent, cur, next diameterSpec) (bool, error) {
	curID, err := identityOf(cur)
	if err != nil {
		return false, fmt.Errorf("diameter service %s: %w", name, err)
	}
	nextID, err := identityOf(next)
	if err != nil {
		return false, fmt.Errorf("diameter service %s: %w", name, err)
	}
	if curID != nextID {
		return false, nil
	}
	if err := a.Reconfigure(next.C.Servers, next.C.Policy); err != nil {
		return false, fmt.Errorf("diameter service %s: %w", name, err)
	}
	m.log.Info("Diameter service changed: servers and policy applied in place", "service", name,
		"servers", len(next.C.Servers), "policy", next.C.Policy.String())
	return true, nil
}

// identityOf is the fingerprint of what needs a restart to change:
// everything but the servers and the policy.
func identityOf(sp diameterSpec) (string, error) {
	sp.C.Servers, sp.C.Policy = nil, 0
	b, err := json.Marshal(sp)
	return string(b), err
}

func (m *diameterManager) start(svc api.Service, sp diameterSpec, _ *liveProxy[diameterSpec, *sctplb.DiameterAgent], reg prometheus.Registerer) (*sctplb.DiameterAgent, func(context.Context) error, error) {
	cfg := sp.C
	if sp.SCTP {
		tr, err := m.sctp()
		if err != nil {
			return nil, nil, fmt.Errorf("diameter service %s: %w", svc.Name, err)
		}
		cfg.SCTP = tr
	}
	cfg.Registerer, cfg.Logger = reg, m.log.With("diameter", svc.Name)
	a, err := sctplb.NewDiameter(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("diameter service %s: %w", svc.Name, err)
	}
	if err := a.Open(); err != nil {
		return nil, nil, &api.FieldError{Field: "vip", Message: fmt.Sprintf("Diameter agent cannot listen (the VIP must be a local address of the daemon): %v", err)}
	}
	return a, a.Serve, nil
}

// fill puts the agent's state into a service status: an endpoint's
// ActiveConnections is the Session-Id bindings its server holds, and it
// is healthy while its watchdog state is OKAY.
func fillDiameter(a *sctplb.DiameterAgent, st *api.ServiceStatus) {
	byName := map[string]sctplb.DiameterServerStats{}
	for _, u := range a.Stats().Servers {
		byName[u.Name] = u
	}
	fillSessions(st, st.Service.Port, func(name string) (int, bool) { return byName[name].Sessions, byName[name].Up })
}
