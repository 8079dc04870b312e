package sctplb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// N4UPF is one backend UPF of an N4 proxy.
type N4UPF struct {
	Name string
	Addr netip.AddrPort
	// Weight biases the weighted policy; 0 means 1.
	Weight int
}

// N4Config configures an N4Proxy, the UDP shell of the PFCP steering
// machine (sctplb/n4).
type N4Config struct {
	// Listen is where the SMFs send PFCP (the VIP, port 8805).
	Listen netip.AddrPort
	// UPFLocal, when set, is a second local address (port 8805) the proxy
	// talks to the UPFs from and puts in their CP F-SEIDs; unset, the UPFs
	// talk to Listen too.
	UPFLocal netip.Addr
	UPFs     []N4UPF
	Policy   n4.Policy
	// Steering confines sessions to UPFs (by UPF name) by DNN, slice or
	// network instance.
	Steering []n4.SteeringRule
	OnLoss   n4.LossPolicy
	// Name labels the metrics and the logs.
	Name string
	// Machine timers; zero keeps n4's defaults.
	T1, HeartbeatInterval, LossTimeout time.Duration
	N1                                 int
	// TickInterval paces the machine's timers (default 100ms).
	TickInterval time.Duration
	// Recovery is the proxy's Recovery Time Stamp (default: New's time);
	// a restored state's wins.
	Recovery time.Time
	// StateDir, when set, is where the proxy keeps its state (n4state.go):
	// a proxy built on the same directory, after a restart or a
	// configuration change, takes every session and the Recovery Time
	// Stamp over, so the SMFs see no change. Empty keeps state in memory.
	StateDir string
	// Restore, when set, is the state to start from (another proxy's
	// State), taking precedence over what StateDir holds.
	Restore    *n4.State
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// N4Proxy runs the N4 proxy loop.
type N4Proxy struct {
	cfg     N4Config
	log     *slog.Logger
	machine *n4.Machine
	met     *n4Metrics
	names   []string

	smfConn, upfConn *net.UDPConn
	store            *n4Store // nil without StateDir
	// mu serialises the machine: the socket readers and the ticker step it.
	mu sync.Mutex

	snapMu sync.Mutex
	snap   N4Stats

	lastJournalErr time.Time
}

// N4Stats is a snapshot of the proxy's state, refreshed every tick.
type N4Stats struct {
	UPFs    []N4UPFStats
	SMFs    int
	Running bool
}

// N4UPFStats is one UPF's share of the sessions.
type N4UPFStats struct {
	Name     string
	Sessions int
	Up       bool
}

// NewN4 validates cfg and builds the machine and metrics; Open binds the
// sockets.
func NewN4(cfg N4Config) (*N4Proxy, error) {
	if !cfg.Listen.IsValid() || cfg.Listen.Port() == 0 {
		return nil, errors.New("sctplb: N4 listen address and port required")
	}
	if cfg.Name == "" {
		cfg.Name = "telcolb-n4"
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.Recovery.IsZero() {
		cfg.Recovery = time.Now()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	upfSide := cfg.UPFLocal
	if !upfSide.IsValid() {
		upfSide = cfg.Listen.Addr()
	}
	mc := n4.Config{Policy: cfg.Policy, OnLoss: cfg.OnLoss, Steering: cfg.Steering, SMFSide: cfg.Listen.Addr(), UPFSide: upfSide,
		Recovery: cfg.Recovery, T1: cfg.T1, N1: cfg.N1, HeartbeatInterval: cfg.HeartbeatInterval,
		LossTimeout: cfg.LossTimeout, Logger: cfg.Logger}
	for _, u := range cfg.UPFs {
		mc.UPFs = append(mc.UPFs, n4.UPF{Name: u.Name, Addr: u.Addr, Weight: u.Weight})
	}
	m, err := n4.New(mc)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	store, err := restoreN4(m, cfg)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	met, err := newN4Metrics(cfg.Registerer, cfg.Name)
	if err != nil {
		if store != nil {
			_ = store.close()
		}
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	pfcp.SilenceLibraryLogs()
	return &N4Proxy{cfg: cfg, log: cfg.Logger, machine: m, met: met, names: m.UPFNames(), store: store}, nil
}

// restoreN4 gives m the state it starts from (cfg.Restore, else what
// cfg.StateDir holds) and opens the store. A state directory that cannot
// be loaded or restored is moved aside with an ERROR line and the proxy
// starts afresh: one damaged file must not keep the service down.
func restoreN4(m *n4.Machine, cfg N4Config) (*n4Store, error) {
	var st n4.State
	have := false
	if cfg.Restore != nil {
		st, have = *cfg.Restore, true
	} else if cfg.StateDir != "" {
		var err error
		if st, have, err = loadN4State(cfg.StateDir); err != nil {
			to, merr := moveAside(cfg.StateDir)
			cfg.Logger.Error("PFCP proxy state unreadable: moved aside, starting without sessions", "dir", cfg.StateDir, "movedTo", to, "error", err, "moveError", merr)
			have = false
		}
	}
	if have {
		if err := m.Restore(st); err != nil {
			if cfg.StateDir != "" && cfg.Restore == nil {
				to, merr := moveAside(cfg.StateDir)
				cfg.Logger.Error("PFCP proxy state inconsistent: moved aside, starting without sessions", "dir", cfg.StateDir, "movedTo", to, "error", err, "moveError", merr)
			} else {
				return nil, err
			}
		} else {
			cfg.Logger.Info("PFCP proxy state restored", "sessions", len(st.Sessions), "smfs", len(st.SMFs), "recovery", st.Recovery)
		}
	}
	if cfg.StateDir == "" {
		m.DiscardChanges()
		return nil, nil
	}
	snap := m.Export()
	m.TakeChanges() // the snapshot holds them
	return openN4Store(cfg.StateDir, snap)
}

// State returns the proxy's persistent state (for a successor proxy).
func (p *N4Proxy) State() n4.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.machine.Export()
}

// Open binds the SMF-side socket (and the UPF-side one, if configured), so
// that a VIP that is not local fails synchronously.
func (p *N4Proxy) Open() error {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(p.cfg.Listen))
	if err != nil {
		return fmt.Errorf("sctplb: N4 listen %v: %w", p.cfg.Listen, err)
	}
	p.smfConn, p.upfConn = c, c
	if p.cfg.UPFLocal.IsValid() && p.cfg.UPFLocal != p.cfg.Listen.Addr() {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.cfg.UPFLocal, pfcp.Port)))
		if err != nil {
			_ = c.Close()
			return fmt.Errorf("sctplb: N4 listen %v:%d: %w", p.cfg.UPFLocal, pfcp.Port, err)
		}
		p.upfConn = u
	}
	return nil
}

// Stats returns the latest snapshot.
func (p *N4Proxy) Stats() N4Stats {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	out := p.snap
	out.UPFs = append([]N4UPFStats(nil), p.snap.UPFs...)
	return out
}

func (p *N4Proxy) refresh(running bool) {
	s := N4Stats{SMFs: p.machine.SMFs(), Running: running}
	up := p.machine.UPFUp()
	for i, n := range p.machine.Sessions() {
		s.UPFs = append(s.UPFs, N4UPFStats{Name: p.names[i], Sessions: n, Up: up[i]})
	}
	p.met.state(s)
	p.snapMu.Lock()
	p.snap = s
	p.snapMu.Unlock()
}

// Serve runs the proxy until ctx ends, then closes the sockets. Open must
// have succeeded. Each socket's reader steps the machine itself, under a
// mutex shared with the ticker: handing datagrams to one loop goroutine
// through a channel cost a goroutine switch per message, as much as the
// steering itself.
func (p *N4Proxy) Serve(ctx context.Context) error {
	if p.smfConn == nil {
		return errors.New("sctplb: N4 proxy not opened")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	conns := []*net.UDPConn{p.smfConn}
	if p.upfConn != p.smfConn {
		conns = append(conns, p.upfConn)
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
						return
					}
					p.log.Warn("N4 read failed", "err", err)
					continue
				}
				d := n4.Datagram{From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), Data: append([]byte(nil), buf[:n]...)}
				p.mu.Lock()
				p.step(d)
				p.mu.Unlock()
			}
		}()
	}
	defer func() {
		cancel()
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
		p.refresh(false)
		if p.store != nil {
			p.mu.Lock()
			if err := p.store.compact(p.machine.Export()); err != nil {
				p.log.Error("PFCP proxy state not saved at stop", "error", err)
			}
			p.machine.DiscardChanges()
			_ = p.store.close()
			p.mu.Unlock()
		}
	}()
	p.log.Info("N4 proxy listening", "listen", p.cfg.Listen, "upfs", len(p.cfg.UPFs), "policy", p.cfg.Policy.String())
	tickUntil(ctx, p.cfg.TickInterval, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.step(n4.Tick{})
		p.refresh(true)
	})
	return nil
}

func (p *N4Proxy) step(ev n4.Event) {
	acts := p.machine.Step(time.Now(), ev)
	p.persist()
	for _, a := range acts {
		p.met.action(a, p.names)
		if a.Kind != n4.Send {
			continue
		}
		c := p.smfConn
		if a.Side == n4.UPFSide {
			c = p.upfConn
		}
		if _, err := c.WriteToUDPAddrPort(a.Data, a.To); err != nil {
			p.met.sendErrors.Inc()
			p.log.Debug("N4 send failed", "to", a.To, "err", err)
		}
	}
}

// persist journals what the last step changed, before anything it sent
// leaves: an answer a peer got is always backed by the state on disk. A
// failing disk is logged and counted; the proxy keeps serving.
func (p *N4Proxy) persist() {
	if p.store == nil {
		p.machine.DiscardChanges()
		return
	}
	c := p.machine.TakeChanges()
	if c.Empty() {
		return
	}
	compact, err := p.store.append(c)
	if err == nil && compact {
		err = p.store.compact(p.machine.Export())
	}
	if err != nil {
		p.met.journalErrors.Inc()
		if time.Since(p.lastJournalErr) > 10*time.Second {
			p.lastJournalErr = time.Now()
			p.log.Error("PFCP proxy state not saved", "dir", p.cfg.StateDir, "error", err)
		}
	}
}

// n4Metrics are the N4 proxy's Prometheus series.
type n4Metrics struct {
	sessions   *prometheus.GaugeVec
	upfUp      *prometheus.GaugeVec
	smfs       prometheus.Gauge
	messages   *prometheus.CounterVec
	absorbed   prometheus.Counter
	replays    *prometheus.CounterVec
	failures   *prometheus.CounterVec
	malformed  *prometheus.CounterVec
	sendErrors prometheus.Counter
	// journalErrors counts state changes that could not be saved.
	journalErrors prometheus.Counter
	perType       [3][256]prometheus.Counter
}

func newN4Metrics(reg prometheus.Registerer, proxy string) (*n4Metrics, error) {
	l := prometheus.Labels{"proxy": proxy}
	m := &n4Metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telcolb_pfcp_sessions",
			Help: "PFCP sessions held, per UPF.", ConstLabels: l}, []string{"upf"}),
		upfUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telcolb_pfcp_upf_associated",
			Help: "1 when the PFCP association with the UPF is up.", ConstLabels: l}, []string{"upf"}),
		smfs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "telcolb_pfcp_smf_associations",
			Help: "SMFs with a PFCP association to the proxy.", ConstLabels: l}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_pfcp_messages_total",
			Help: "PFCP messages received, by side and message type.", ConstLabels: l}, []string{"side", "type"}),
		absorbed: prometheus.NewCounter(prometheus.CounterOpts{Name: "telcolb_pfcp_retransmissions_absorbed_total",
			Help: "Retransmitted requests answered from the cache or dropped while pending, never forwarded.", ConstLabels: l}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_pfcp_replays_total",
			Help: "Sessions replayed to a UPF after its restart or moved to it after a loss.", ConstLabels: l}, []string{"upf"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_pfcp_steering_failures_total",
			Help: "Messages the proxy could not steer, by reason.", ConstLabels: l}, []string{"reason"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telcolb_pfcp_malformed_total",
			Help: "Malformed PFCP messages, by side.", ConstLabels: l}, []string{"side"}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "telcolb_pfcp_send_errors_total",
			Help: "Datagrams the proxy failed to send.", ConstLabels: l}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "telcolb_pfcp_state_save_errors_total",
			Help: "Session state changes the proxy failed to save to its state directory.", ConstLabels: l}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register N4 metrics: %w", err)
		}
	}
	return m, nil
}

// collectors are every series family of the N4 proxy (docs/metrics.md lists them).
func (m *n4Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sessions, m.upfUp, m.smfs, m.messages, m.absorbed, m.replays, m.failures, m.malformed, m.sendErrors, m.journalErrors}
}

func (m *n4Metrics) action(a n4.Action, names []string) {
	switch a.Kind {
	case n4.Received:
		c := m.perType[a.Side%3][a.MsgType]
		if c == nil {
			c = m.messages.WithLabelValues(a.Side.String(), pfcp.TypeName(a.MsgType))
			m.perType[a.Side%3][a.MsgType] = c
		}
		c.Inc()
	case n4.Absorbed:
		m.absorbed.Inc()
	case n4.Replayed:
		if a.UPF >= 0 && a.UPF < len(names) {
			m.replays.WithLabelValues(names[a.UPF]).Inc()
		}
	case n4.SteeringFailure:
		m.failures.WithLabelValues(a.Reason).Inc()
	case n4.Malformed:
		m.malformed.WithLabelValues(a.Side.String()).Inc()
	}
}

func (m *n4Metrics) state(s N4Stats) {
	for _, u := range s.UPFs {
		m.sessions.WithLabelValues(u.Name).Set(float64(u.Sessions))
		up := 0.0
		if u.Up {
			up = 1
		}
		m.upfUp.WithLabelValues(u.Name).Set(up)
	}
	m.smfs.Set(float64(s.SMFs))
}
