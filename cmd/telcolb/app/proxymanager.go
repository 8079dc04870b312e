package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
)

// proxyManager runs one in-daemon proxy per service for the N2, PFCP and
// Diameter services: the three share its life cycle (keep on an unchanged
// configuration, change in place where the kind can, else stop and start
// anew; stop on removal; a registerer per proxy so a restart can register
// the same metric names again) and differ only in the proxyKind functions.
// C is the kind's configuration, compared by its JSON fingerprint; P the
// running proxy.
type proxyManager[C, P any] struct {
	kind proxyKind[C, P]
	log  *slog.Logger
	reg  prometheus.Registerer

	// mu also guards what the kinds keep beside it (the N2 transport), so
	// their functions run under it.
	mu      sync.Mutex
	proxies map[string]*liveProxy[C, P]
}

// proxyKind is what one kind of proxy adds to the common life cycle.
type proxyKind[C, P any] struct {
	// name is the proxy in log lines ("N2 proxy"); errPrefix starts the
	// errors of a service's configuration ("n2 service").
	name, errPrefix string
	// restarting is logged when a change restarts a running proxy.
	restarting string
	configOf   func(api.Service) (C, error)
	// reconfigure, when set, tries a change on the running proxy: applied
	// keeps the proxy; an error fails the call; neither restarts it.
	reconfigure func(svc string, p P, cur, next C) (applied bool, err error)
	// start builds and opens a proxy (prev is the one just stopped, if
	// any, whose state a kind may hand over) and returns how to serve it.
	start func(svc api.Service, c C, prev *liveProxy[C, P], reg prometheus.Registerer) (P, func(context.Context) error, error)
	// describe is the kind's part of the "started" log line.
	describe func(svc api.Service, c C) []any
	// fill puts the proxy's state into a service status.
	fill func(p P, st *api.ServiceStatus)
}

type liveProxy[C, P any] struct {
	cfg         C
	fingerprint string
	proxy       P
	cancel      context.CancelFunc
	done        chan struct{}
	reg         *trackingRegisterer
}

func newProxyManager[C, P any](kind proxyKind[C, P], reg prometheus.Registerer, log *slog.Logger) proxyManager[C, P] {
	return proxyManager[C, P]{kind: kind, log: log, reg: reg, proxies: map[string]*liveProxy[C, P]{}}
}

// apply starts, restarts or keeps the proxy of svc; before runs first
// whenever a proxy is (re)started. A listen error (VIP not local, port
// taken) is returned so the API call fails.
func (m *proxyManager[C, P]) apply(svc api.Service, before func() error) error {
	c, err := m.kind.configOf(svc)
	if err != nil {
		return err
	}
	fp, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("%s %s: %w", m.kind.errPrefix, svc.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.proxies[svc.Name]
	if prev != nil {
		if prev.fingerprint == string(fp) {
			return nil
		}
		if m.kind.reconfigure != nil {
			applied, err := m.kind.reconfigure(svc.Name, prev.proxy, prev.cfg, c)
			if err != nil {
				return err
			}
			if applied {
				prev.cfg, prev.fingerprint = c, string(fp)
				return nil
			}
		}
		m.log.Info(m.kind.restarting, "service", svc.Name)
		m.stopLocked(svc.Name)
	}
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	reg := &trackingRegisterer{reg: m.reg}
	p, serve, err := m.kind.start(svc, c, prev, reg)
	if err != nil {
		reg.unregisterAll()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	lp := &liveProxy[C, P]{cfg: c, fingerprint: string(fp), proxy: p, cancel: cancel, done: make(chan struct{}), reg: reg}
	go func() {
		defer close(lp.done)
		if err := serve(ctx); err != nil {
			m.log.Error(m.kind.name+" stopped", "service", svc.Name, "error", err)
		}
	}()
	m.proxies[svc.Name] = lp
	m.log.Info(m.kind.name+" started", append([]any{"service", svc.Name}, m.kind.describe(svc, c)...)...)
	return nil
}

// remove stops the proxy of a service, if it has one.
func (m *proxyManager[C, P]) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked(name)
}

func (m *proxyManager[C, P]) stopLocked(name string) {
	lp := m.proxies[name]
	if lp == nil {
		return
	}
	lp.cancel()
	<-lp.done
	lp.reg.unregisterAll()
	delete(m.proxies, name)
	m.log.Info(m.kind.name+" stopped", "service", name)
}

// running returns the proxy of a service, if it has one.
func (m *proxyManager[C, P]) running(name string) (P, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lp := m.proxies[name]; lp != nil {
		return lp.proxy, true
	}
	var none P
	return none, false
}

// fill puts the proxy's state into a service status; a service without
// a running proxy keeps what the probes said.
func (m *proxyManager[C, P]) fill(st *api.ServiceStatus) {
	if p, ok := m.running(st.Service.Name); ok {
		m.kind.fill(p, st)
	}
}

// close stops every proxy.
func (m *proxyManager[C, P]) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopAllLocked()
}

func (m *proxyManager[C, P]) stopAllLocked() {
	for name := range m.proxies {
		m.stopLocked(name)
	}
}

// trackingRegisterer remembers what a proxy registered so a restart can
// unregister it: sctplb registers fixed metric names, which a second proxy
// of the same service could not register again.
type trackingRegisterer struct {
	reg prometheus.Registerer
	cs  []prometheus.Collector
}

func (t *trackingRegisterer) Register(c prometheus.Collector) error {
	if err := t.reg.Register(c); err != nil {
		return err
	}
	t.cs = append(t.cs, c)
	return nil
}

func (t *trackingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err) // prometheus.Registerer's contract for MustRegister
		}
	}
}

func (t *trackingRegisterer) Unregister(c prometheus.Collector) bool {
	for i, x := range t.cs {
		if x == c {
			t.cs = append(t.cs[:i], t.cs[i+1:]...)
			break
		}
	}
	return t.reg.Unregister(c)
}

func (t *trackingRegisterer) unregisterAll() {
	for _, c := range t.cs {
		t.reg.Unregister(c)
	}
	t.cs = nil
}
