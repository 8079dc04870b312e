package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// PFCP services (api.Service.PFCP) get no eBPF rule: the daemon terminates
// PFCP on VIP:8805 itself with an sctplb.N4Proxy and steers every PFCP
// session to one of the service's endpoints (the UPFs). The VIP must be a
// local address of the daemon's network namespace; the UPFs talk to the
// same address (it is in the CP F-SEIDs they get), so they need a route to
// it.
//
// Each proxy keeps its state in <state-dir>/pfcp/<service> (sctplb's
// n4state.go: a snapshot and a journal written before any answer leaves).
// A daemon restart, or any change of the service (UPFs added or removed,
// policy, timers), rebuilds the proxy on the same state: the SMFs keep
// their association, the proxy's Recovery Time Stamp and every session;
// sessions of a UPF no longer listed are moved or released per
// --pfcp-upf-loss. Deleting the service deletes its state. The socket is
// closed and reopened across a change, so a datagram arriving in between
// is lost and retransmitted by its sender.

// PFCPConfig tunes the daemon's PFCP proxies.
type PFCPConfig struct {
	// OnLoss is what happens to a lost UPF's sessions (default release:
	// moving is only right when the SMF allocates the F-TEIDs).
	OnLoss n4.LossPolicy
	// Timers; zero keeps n4's defaults (T1 3s, N1 3, heartbeats 10s, loss
	// after 60s unreachable).
	T1, HeartbeatInterval, LossTimeout time.Duration
	N1                                 int
}

type pfcpManager struct {
	proxyManager[sctplb.N4Config, *sctplb.N4Proxy]
	cfg PFCPConfig
	// dir holds one state directory per PFCP service ("" keeps state in
	// memory, for tests).
	dir string
}

func newPFCPManager(cfg PFCPConfig, stateDir string, reg prometheus.Registerer, log *slog.Logger) *pfcpManager {
	m := &pfcpManager{cfg: cfg}
	if stateDir != "" {
		m.dir = filepath.Join(stateDir, "pfcp")
	}
	m.proxyManager = newProxyManager(proxyKind[sctplb.N4Config, *sctplb.N4Proxy]{
		name: "PFCP proxy", errPrefix: "pfcp service",
		restarting: "PFCP service changed: rebuilding its proxy on the same sessions",
		configOf:   m.pfcpConfigOf,
		start:      m.start,
		describe: func(_ api.Service, c sctplb.N4Config) []any {
			return []any{"listen", c.Listen, "upfs", len(c.UPFs), "policy", c.Policy.String(), "onLoss", c.OnLoss.String()}
		},
		fill: fillPFCP,
	}, reg, log)
	return m
}

func (m *pfcpManager) stateDirOf(name string) string {
	if m.dir == "" {
		return ""
	}
	return filepath.Join(m.dir, name)
}

// pfcpConfigOf maps an api.Service onto a proxy configuration; leastconn
// means "fewest sessions" (policyOf).
func (m *pfcpManager) pfcpConfigOf(svc api.Service) (sctplb.N4Config, error) {
	c := sctplb.N4Config{Name: svc.Name, OnLoss: m.cfg.OnLoss, T1: m.cfg.T1, N1: m.cfg.N1,
		HeartbeatInterval: m.cfg.HeartbeatInterval, LossTimeout: m.cfg.LossTimeout}
	vip, err := netip.ParseAddr(svc.VIP)
	if err != nil {
		return c, &api.FieldError{Field: "vip", Message: err.Error()}
	}
	if len(svc.SecondaryVIPs) > 0 {
		return c, &api.FieldError{Field: "secondaryVIPs", Message: "a PFCP service has one VIP"}
	}
	c.Listen = netip.AddrPortFrom(vip, svc.Port)
	bs, weighted, err := backendsOf(svc, pfcp.Port)
	if err != nil {
		return c, err
	}
	for _, b := range bs {
		c.UPFs = append(c.UPFs, sctplb.N4UPF{Name: b.name, Addr: b.addr, Weight: b.weight})
	}
	for _, r := range svc.PFCPSteering {
		sr := n4.SteeringRule{DNN: r.DNN, SNSSAI: r.SNSSAI, NetworkInstance: r.NetworkInstance}
		for _, e := range r.Endpoints {
			if i := api.PFCPSteeringEndpoint(&svc, e); i >= 0 {
				sr.UPFs = append(sr.UPFs, backendName(svc.Endpoints[i], pfcp.Port))
			}
		}
		c.Steering = append(c.Steering, sr)
	}
	c.Policy, err = policyOf(svc, weighted, n4.RoundRobin, n4.Weighted, n4.LeastSessions, "PFCP services steer sessions", "sessions")
	return c, err
}

// start builds the proxy on the state its predecessor left: on disk, or
// handed over in memory when there is no state directory.
func (m *pfcpManager) start(svc api.Service, cfg sctplb.N4Config, prev *liveProxy[sctplb.N4Config, *sctplb.N4Proxy], reg prometheus.Registerer) (*sctplb.N4Proxy, func(context.Context) error, error) {
	if prev != nil && m.dir == "" {
		st := prev.proxy.State()
		cfg.Restore = &st
	}
	cfg.Registerer, cfg.Logger = reg, m.log.With("pfcp", svc.Name)
	cfg.StateDir = m.stateDirOf(svc.Name)
	p, err := sctplb.NewN4(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pfcp service %s: %w", svc.Name, err)
	}
	if err := p.Open(); err != nil {
		return nil, nil, &api.FieldError{Field: "vip", Message: fmt.Sprintf("PFCP proxy cannot listen (the VIP must be a local address of the daemon): %v", err)}
	}
	return p, p.Serve, nil
}

// remove stops the proxy of a deleted service and deletes its state: its
// sessions end with it.
func (m *pfcpManager) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked(name)
	if dir := m.stateDirOf(name); dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			m.log.Error("PFCP service state not removed", "service", name, "dir", dir, "error", err)
		}
	}
}

// fill puts the proxy's state into a service status: an endpoint's
// ActiveConnections is the PFCP sessions its UPF holds, and it is healthy
// while its association is up.
func fillPFCP(p *sctplb.N4Proxy, st *api.ServiceStatus) {
	byName := map[string]sctplb.N4UPFStats{}
	for _, u := range p.Stats().UPFs {
		byName[u.Name] = u
	}
	fillSessions(st, pfcp.Port, func(name string) (int, bool) { return byName[name].Sessions, byName[name].Up })
}
