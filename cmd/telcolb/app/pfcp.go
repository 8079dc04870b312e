package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
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
	cfg PFCPConfig
	// dir holds one state directory per PFCP service ("" keeps state in
	// memory, for tests).
	dir string
	log *slog.Logger
	reg prometheus.Registerer

	mu      sync.Mutex
	proxies map[string]*pfcpProxy
}

type pfcpProxy struct {
	fingerprint string
	proxy       *sctplb.N4Proxy
	cancel      context.CancelFunc
	done        chan struct{}
	reg         *trackingRegisterer
}

func newPFCPManager(cfg PFCPConfig, stateDir string, reg prometheus.Registerer, log *slog.Logger) *pfcpManager {
	m := &pfcpManager{cfg: cfg, log: log, reg: reg, proxies: map[string]*pfcpProxy{}}
	if stateDir != "" {
		m.dir = filepath.Join(stateDir, "pfcp")
	}
	return m
}

func (m *pfcpManager) stateDirOf(name string) string {
	if m.dir == "" {
		return ""
	}
	return filepath.Join(m.dir, name)
}

// pfcpConfigOf maps an api.Service onto a proxy configuration. Selection:
// rr (weighted when the endpoints carry different weights) or leastconn
// ("fewest sessions"); hash and persist have no meaning for PFCP sessions.
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
	weights := map[uint16]bool{}
	for i, ep := range svc.Endpoints {
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			return c, &api.FieldError{Field: fmt.Sprintf("endpoints[%d].address", i), Message: err.Error()}
		}
		port := ep.Port
		if port == 0 {
			port = pfcp.Port
		}
		w := max(ep.Weight, 1)
		weights[w] = true
		c.UPFs = append(c.UPFs, sctplb.N4UPF{Name: upfName(svc, ep), Addr: netip.AddrPortFrom(a, port), Weight: int(w)})
	}
	for _, r := range svc.PFCPSteering {
		sr := n4.SteeringRule{DNN: r.DNN, SNSSAI: r.SNSSAI, NetworkInstance: r.NetworkInstance}
		for _, e := range r.Endpoints {
			if i := api.PFCPSteeringEndpoint(&svc, e); i >= 0 {
				sr.UPFs = append(sr.UPFs, upfName(svc, svc.Endpoints[i]))
			}
		}
		c.Steering = append(c.Steering, sr)
	}
	switch svc.Select {
	case "", api.SelectRoundRobin:
		c.Policy = n4.RoundRobin
		if len(weights) > 1 {
			c.Policy = n4.Weighted
		}
	case api.SelectLeastConn:
		c.Policy = n4.LeastSessions
	default:
		return c, &api.FieldError{Field: "select", Message: fmt.Sprintf("PFCP services steer sessions with rr (weighted when endpoint weights differ) or leastconn (fewest sessions), not %s", svc.Select)}
	}
	return c, nil
}

// upfName is the name an endpoint's UPF has in the proxy and its metrics.
func upfName(svc api.Service, ep api.Endpoint) string {
	port := ep.Port
	if port == 0 {
		port = pfcp.Port
	}
	if a, err := netip.ParseAddr(ep.Address); err == nil {
		return netip.AddrPortFrom(a, port).String()
	}
	return fmt.Sprintf("%s:%d", ep.Address, port)
}

// apply starts, restarts or keeps the proxy of svc; before runs whenever a
// proxy is (re)started. A socket error (VIP not local) fails the API call.
func (m *pfcpManager) apply(svc api.Service, before func() error) error {
	cfg, err := m.pfcpConfigOf(svc)
	if err != nil {
		return err
	}
	fp, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("pfcp service %s: %w", svc.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var handoff *n4.State
	if cur := m.proxies[svc.Name]; cur != nil {
		if cur.fingerprint == string(fp) {
			return nil
		}
		m.log.Info("PFCP service changed: rebuilding its proxy on the same sessions", "service", svc.Name)
		m.stopLocked(svc.Name)
		if m.dir == "" {
			st := cur.proxy.State()
			handoff = &st
		}
	}
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	reg := &trackingRegisterer{reg: m.reg}
	cfg.Registerer, cfg.Logger = reg, m.log.With("pfcp", svc.Name)
	cfg.StateDir, cfg.Restore = m.stateDirOf(svc.Name), handoff
	p, err := sctplb.NewN4(cfg)
	if err != nil {
		reg.unregisterAll()
		return fmt.Errorf("pfcp service %s: %w", svc.Name, err)
	}
	if err := p.Open(); err != nil {
		reg.unregisterAll()
		return &api.FieldError{Field: "vip", Message: fmt.Sprintf("PFCP proxy cannot listen (the VIP must be a local address of the daemon): %v", err)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	pp := &pfcpProxy{fingerprint: string(fp), proxy: p, cancel: cancel, done: make(chan struct{}), reg: reg}
	go func() {
		defer close(pp.done)
		if err := p.Serve(ctx); err != nil {
			m.log.Error("PFCP proxy stopped", "service", svc.Name, "error", err)
		}
	}()
	m.proxies[svc.Name] = pp
	m.log.Info("PFCP proxy started", "service", svc.Name, "listen", cfg.Listen, "upfs", len(cfg.UPFs), "policy", cfg.Policy.String(), "onLoss", cfg.OnLoss.String())
	return nil
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

func (m *pfcpManager) stopLocked(name string) {
	pp := m.proxies[name]
	if pp == nil {
		return
	}
	pp.cancel()
	<-pp.done
	pp.reg.unregisterAll()
	delete(m.proxies, name)
	m.log.Info("PFCP proxy stopped", "service", name)
}

// fill puts the proxy's state into a service status: an endpoint's
// ActiveConnections is the PFCP sessions its UPF holds, and it is healthy
// while its association is up.
func (m *pfcpManager) fill(st *api.ServiceStatus) {
	m.mu.Lock()
	pp := m.proxies[st.Service.Name]
	m.mu.Unlock()
	if pp == nil {
		return
	}
	s := pp.proxy.Stats()
	byName := map[string]sctplb.N4UPFStats{}
	for _, u := range s.UPFs {
		byName[u.Name] = u
	}
	var total uint64
	for i, ep := range st.Endpoints {
		u := byName[upfName(st.Service, api.Endpoint{Address: ep.Address, Port: ep.Port})]
		st.Endpoints[i].ActiveConnections = uint64(u.Sessions)
		st.Endpoints[i].Healthy = u.Up
		total += uint64(u.Sessions)
	}
	st.ActiveConnections = total
}

func (m *pfcpManager) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.proxies {
		m.stopLocked(name)
	}
}
