package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
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
	cfg  DiameterConfig
	log  *slog.Logger
	reg  prometheus.Registerer
	sctp func() (transport.Transport, error)

	mu     sync.Mutex
	agents map[string]*diameterAgent
}

type diameterAgent struct {
	// fingerprint is the whole configuration; identity the part that
	// needs a restart to change (everything but servers and policy).
	fingerprint, identity string
	agent                 *sctplb.DiameterAgent
	cancel                context.CancelFunc
	done                  chan struct{}
	reg                   *trackingRegisterer
}

func newDiameterManager(cfg DiameterConfig, sctp func() (transport.Transport, error), reg prometheus.Registerer, log *slog.Logger) *diameterManager {
	return &diameterManager{cfg: cfg, log: log, reg: reg, sctp: sctp, agents: map[string]*diameterAgent{}}
}

// diameterConfigOf maps an api.Service onto an agent configuration.
// Selection: rr (weighted when the endpoints carry different weights) or
// leastconn (fewest sessions).
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
	weights := map[uint16]bool{}
	for i, ep := range svc.Endpoints {
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			return c, &api.FieldError{Field: fmt.Sprintf("endpoints[%d].address", i), Message: err.Error()}
		}
		port := ep.Port
		if port == 0 {
			port = svc.Port
		}
		w := max(ep.Weight, 1)
		weights[w] = true
		c.Servers = append(c.Servers, sctplb.DiameterServer{Name: diameterServerName(svc, ep), Addr: netip.AddrPortFrom(a, port), Weight: int(w)})
	}
	switch svc.Select {
	case "", api.SelectRoundRobin:
		c.Policy = diam.RoundRobin
		if len(weights) > 1 {
			c.Policy = diam.Weighted
		}
	case api.SelectLeastConn:
		c.Policy = diam.LeastSessions
	default:
		return c, &api.FieldError{Field: "select", Message: fmt.Sprintf("Diameter agents bind sessions with rr (weighted when endpoint weights differ) or leastconn (fewest sessions), not %s", svc.Select)}
	}
	return c, nil
}

// diameterServerName is an endpoint's name in the agent and its metrics.
func diameterServerName(svc api.Service, ep api.Endpoint) string {
	port := ep.Port
	if port == 0 {
		port = svc.Port
	}
	if a, err := netip.ParseAddr(ep.Address); err == nil {
		return netip.AddrPortFrom(a, port).String()
	}
	return fmt.Sprintf("%s:%d", ep.Address, port)
}

// apply starts, restarts or keeps the agent of svc; before runs whenever
// an agent is (re)started. A socket error (VIP not local) fails the call.
func (m *diameterManager) apply(svc api.Service, before func() error) error {
	cfg, err := m.diameterConfigOf(svc)
	if err != nil {
		return err
	}
	fp, err := json.Marshal(struct {
		C    sctplb.DiameterConfig
		SCTP bool
	}{cfg, svc.Protocol == api.ProtocolSCTP})
	if err != nil {
		return fmt.Errorf("diameter service %s: %w", svc.Name, err)
	}
	ident := cfg
	ident.Servers, ident.Policy = nil, 0
	idfp, err := json.Marshal(struct {
		C    sctplb.DiameterConfig
		SCTP bool
	}{ident, svc.Protocol == api.ProtocolSCTP})
	if err != nil {
		return fmt.Errorf("diameter service %s: %w", svc.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.agents[svc.Name]; cur != nil {
		if cur.fingerprint == string(fp) {
			return nil
		}
		if cur.identity == string(idfp) {
			if err := cur.agent.Reconfigure(cfg.Servers, cfg.Policy); err != nil {
				return fmt.Errorf("diameter service %s: %w", svc.Name, err)
			}
			cur.fingerprint = string(fp)
			m.log.Info("Diameter service changed: servers and policy applied in place", "service", svc.Name,
				"servers", len(cfg.Servers), "policy", cfg.Policy.String())
			return nil
		}
		m.log.Info("Diameter service changed what peers exchanged capabilities on: restarting its agent; its peers reconnect", "service", svc.Name)
		m.stopLocked(svc.Name)
	}
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	if svc.Protocol == api.ProtocolSCTP {
		tr, err := m.sctp()
		if err != nil {
			return fmt.Errorf("diameter service %s: %w", svc.Name, err)
		}
		cfg.SCTP = tr
	}
	reg := &trackingRegisterer{reg: m.reg}
	cfg.Registerer, cfg.Logger = reg, m.log.With("diameter", svc.Name)
	a, err := sctplb.NewDiameter(cfg)
	if err != nil {
		reg.unregisterAll()
		return fmt.Errorf("diameter service %s: %w", svc.Name, err)
	}
	if err := a.Open(); err != nil {
		reg.unregisterAll()
		return &api.FieldError{Field: "vip", Message: fmt.Sprintf("Diameter agent cannot listen (the VIP must be a local address of the daemon): %v", err)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	da := &diameterAgent{fingerprint: string(fp), identity: string(idfp), agent: a, cancel: cancel, done: make(chan struct{}), reg: reg}
	go func() {
		defer close(da.done)
		if err := a.Serve(ctx); err != nil {
			m.log.Error("Diameter agent stopped", "service", svc.Name, "error", err)
		}
	}()
	m.agents[svc.Name] = da
	m.log.Info("Diameter agent started", "service", svc.Name, "listen", cfg.Listen, "protocol", svc.Protocol, "mode", cfg.Mode.String(),
		"servers", len(cfg.Servers), "policy", cfg.Policy.String())
	return nil
}

func (m *diameterManager) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked(name)
}

func (m *diameterManager) stopLocked(name string) {
	da := m.agents[name]
	if da == nil {
		return
	}
	da.cancel()
	<-da.done
	da.reg.unregisterAll()
	delete(m.agents, name)
	m.log.Info("Diameter agent stopped", "service", name)
}

// fill puts the agent's state into a service status: an endpoint's
// ActiveConnections is the Session-Id bindings its server holds, and it
// is healthy while its watchdog state is OKAY.
func (m *diameterManager) fill(st *api.ServiceStatus) {
	m.mu.Lock()
	da := m.agents[st.Service.Name]
	m.mu.Unlock()
	if da == nil {
		return
	}
	s := da.agent.Stats()
	byName := map[string]sctplb.DiameterServerStats{}
	for _, u := range s.Servers {
		byName[u.Name] = u
	}
	var total uint64
	for i, ep := range st.Endpoints {
		u := byName[diameterServerName(st.Service, api.Endpoint{Address: ep.Address, Port: ep.Port})]
		st.Endpoints[i].ActiveConnections = uint64(u.Sessions)
		st.Endpoints[i].Healthy = u.Up
		total += uint64(u.Sessions)
	}
	st.ActiveConnections = total
}

func (m *diameterManager) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.agents {
		m.stopLocked(name)
	}
}
