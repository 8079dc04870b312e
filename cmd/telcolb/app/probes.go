package app

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/telcolb/telcolb/api"
)

// endpointKey names one endpoint of one service.
type endpointKey struct {
	service  string
	endpoint netip.AddrPort
}

// probeWorker checks one endpoint in its own goroutine.
type probeWorker struct {
	target   ProbeTarget
	interval time.Duration
	retries  int
	cancel   context.CancelFunc
	done     chan struct{}

	// Guarded by probeManager.mu.
	healthy bool
	streak  int // consecutive results that disagree with healthy
	lastErr string
}

// probeManager runs the endpoint probes and tells the server when an
// endpoint changes state. A new endpoint starts healthy: rules take traffic
// at once and a dead endpoint is taken out after Retries failed probes. After
// a restart an endpoint starts from its persisted verdict (seed).
type probeManager struct {
	prober Prober
	unit   time.Duration
	log    *slog.Logger
	// onFlip is called (without mu held) after an endpoint of service
	// changed state, to push the new Down flags to the datapath.
	onFlip func(service string)

	mu       sync.Mutex
	workers  map[endpointKey]*probeWorker
	failures map[endpointKey]uint64
	// known are the verdicts persisted by the previous run: an endpoint's
	// first worker starts from its last known health, not healthy. Each
	// entry is used once.
	known  map[endpointKey]bool
	wg     sync.WaitGroup
	closed bool
}

func newProbeManager(p Prober, unit time.Duration, log *slog.Logger, onFlip func(string)) *probeManager {
	return &probeManager{
		prober:   p,
		unit:     unit,
		log:      log,
		onFlip:   onFlip,
		workers:  map[endpointKey]*probeWorker{},
		failures: map[endpointKey]uint64{},
	}
}

// targets lists the probe of each endpoint of s (empty when s has no probe).
func (m *probeManager) targets(s api.Service) map[endpointKey]*probeWorker {
	out := map[endpointKey]*probeWorker{}
	if s.Probe == nil || s.Probe.Type == api.ProbeNone {
		return out
	}
	p := *s.Probe
	for _, ep := range s.Endpoints {
		addr, err := netip.ParseAddr(ep.Address)
		if err != nil {
			continue // validated before; never happens
		}
		port := ep.Port
		if p.Port != 0 {
			port = p.Port
		}
		out[endpointKey{s.Name, netip.AddrPortFrom(addr, ep.Port)}] = &probeWorker{
			target: ProbeTarget{
				Type:     p.Type,
				Addr:     netip.AddrPortFrom(addr, port),
				Request:  p.Request,
				Response: p.Response,
				Timeout:  time.Duration(p.TimeoutSeconds) * m.unit,
			},
			interval: time.Duration(p.IntervalSeconds) * m.unit,
			retries:  max(int(p.Retries), 1),
			healthy:  true,
		}
	}
	return out
}

// seed sets the verdicts the previous run persisted (endpoints down); call
// before the first sync.
func (m *probeManager) seed(down map[endpointKey]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known = down
}

// down lists the endpoints whose probes say down.
func (m *probeManager) down() []endpointKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []endpointKey
	for k, w := range m.workers {
		if !w.healthy {
			out = append(out, k)
		}
	}
	return out
}

// sync makes the running probes of s.Name match s. Probes whose target did
// not change keep running with their state, so an unrelated edit does not
// bring a down endpoint back.
func (m *probeManager) sync(s api.Service) {
	want := m.targets(s)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for k, w := range m.workers {
		if k.service != s.Name {
			continue
		}
		if nw, ok := want[k]; ok && nw.target == w.target && nw.interval == w.interval && nw.retries == w.retries {
			delete(want, k)
			continue
		}
		// Not waiting for done: the worker may be blocked calling onFlip,
		// which needs the server lock our caller holds.
		w.cancel()
		delete(m.workers, k)
		delete(m.failures, k)
	}
	for k, w := range want {
		if m.known[k] {
			w.healthy = false
			w.lastErr = "down before the restart; waiting for the probe"
			delete(m.known, k)
		}
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel, w.done = cancel, make(chan struct{})
		m.workers[k] = w
		m.wg.Add(1)
		go m.run(ctx, k, w)
	}
}

func (m *probeManager) remove(service string) { m.sync(api.Service{Name: service}) }

// health reports the verdict for one endpoint; endpoints without a probe are
// healthy.
func (m *probeManager) health(service string, ep netip.AddrPort) (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.workers[endpointKey{service, ep}]
	if !ok {
		return true, ""
	}
	return w.healthy, w.lastErr
}

// failureCounts copies the failed-probe counters (for metrics).
func (m *probeManager) failureCounts() map[endpointKey]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[endpointKey]uint64, len(m.failures))
	for k, v := range m.failures {
		out[k] = v
	}
	return out
}

// close stops every probe and waits for them.
func (m *probeManager) close() {
	m.mu.Lock()
	m.closed = true
	for _, w := range m.workers {
		w.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *probeManager) run(ctx context.Context, k endpointKey, w *probeWorker) {
	defer m.wg.Done()
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		err := m.prober.Probe(ctx, w.target)
		if ctx.Err() != nil {
			return
		}
		if m.record(k, w, err) {
			m.log.Info("endpoint changed state", "service", k.service, "endpoint", k.endpoint.String(), "healthy", err == nil, "error", errString(err))
			m.onFlip(k.service)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record applies one probe result and reports whether the endpoint flipped.
func (m *probeManager) record(k endpointKey, w *probeWorker, err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.workers[k] != w {
		return false // replaced or removed while probing
	}
	ok := err == nil
	if !ok {
		m.failures[k]++
		w.lastErr = err.Error()
	}
	if ok == w.healthy {
		w.streak = 0
		if ok {
			w.lastErr = ""
		}
		return false
	}
	w.streak++
	if w.streak < w.retries {
		return false
	}
	w.healthy, w.streak = ok, 0
	if ok {
		w.lastErr = ""
	}
	return true
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
