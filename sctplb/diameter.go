package sctplb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb/diam"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// DiameterServer is one Diameter server behind the agent.
type DiameterServer struct {
	Name string
	Addr netip.AddrPort
	// Weight biases the weighted policy; 0 means 1.
	Weight int
}

// DiameterConfig configures a DiameterAgent, the I/O shell of the Diameter
// agent machine (sctplb/diam).
type DiameterConfig struct {
	// Listen is where clients connect (the VIP, port 3868).
	Listen netip.AddrPort
	// SCTP, when set, carries Diameter over SCTP (PPID 46, RFC 6733
	// §2.1.1) on both sides through the same transports as the N2 proxy;
	// nil means TCP.
	SCTP         transport.Transport
	Identity     diameter.Identity
	Mode         diam.Mode
	Applications []uint32
	Servers      []DiameterServer
	Policy       diam.Policy
	// Machine timers; zero keeps diam's defaults.
	Tw, Tc, RequestTimeout, SessionIdle time.Duration
	// TickInterval paces the machine's timers (default 100ms).
	TickInterval time.Duration
	// DialTimeout bounds one connection attempt to a server (default 5s).
	DialTimeout time.Duration
	// Name labels the metrics and the logs.
	Name       string
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DiameterAgent runs the agent's connections around one machine.
type DiameterAgent struct {
	cfg     DiameterConfig
	log     *slog.Logger
	machine *diam.Machine
	met     *diamMetrics
	names   []string

	tcpLn  net.Listener
	sctpLn transport.Listener

	// mu serialises the machine: readers, dialers and the ticker step it.
	mu     sync.Mutex
	conns  map[diam.ConnID]*dconn
	nextID diam.ConnID
	// slabs are the TCP readers' recycled read buffers.
	slabs slabPool
	// inline is set while a reader steps a batch: connections the batch
	// gave something to write are listed in dirty (rather than their
	// writer woken) for the reader to write after the lock.
	inline bool
	dirty  []*dconn
	ctx    context.Context
	wg     sync.WaitGroup

	snapMu sync.Mutex
	snap   DiameterStats
}

// DiameterStats is a snapshot of the agent's state, refreshed every tick.
type DiameterStats struct {
	Servers []DiameterServerStats
	Clients int
	Running bool
}

// DiameterServerStats is one server's share.
type DiameterServerStats struct {
	Name     string
	Sessions int
	State    string
	Up       bool
}

// NewDiameter validates cfg and builds the machine and metrics; Open
// listens.
func NewDiameter(cfg DiameterConfig) (*DiameterAgent, error) {
	if !cfg.Listen.IsValid() || cfg.Listen.Port() == 0 {
		return nil, errors.New("sctplb: Diameter listen address and port required")
	}
	if cfg.Name == "" {
		cfg.Name = "telcolb-diameter"
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mc := diam.Config{Identity: cfg.Identity, HostIPs: []netip.Addr{cfg.Listen.Addr()}, Mode: cfg.Mode,
		Applications: cfg.Applications, Policy: cfg.Policy, OriginStateID: uint32(time.Now().Unix()),
		Tw: cfg.Tw, Tc: cfg.Tc, RequestTimeout: cfg.RequestTimeout, SessionIdle: cfg.SessionIdle, Logger: cfg.Logger}
	for _, s := range cfg.Servers {
		mc.Servers = append(mc.Servers, diam.Server{Name: s.Name, Addr: s.Addr, Weight: s.Weight})
	}
	m, err := diam.New(mc)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	met, err := newDiamMetrics(cfg.Registerer, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	return &DiameterAgent{cfg: cfg, log: cfg.Logger, machine: m, met: met, names: m.ServerNames(), conns: map[diam.ConnID]*dconn{}}, nil
}

// Open listens on cfg.Listen, so that a VIP that is not local fails
// synchronously.
func (a *DiameterAgent) Open() error {
	if a.cfg.SCTP != nil {
		ln, err := a.cfg.SCTP.Listen(transport.Endpoint{Addrs: []netip.Addr{a.cfg.Listen.Addr()}, Port: a.cfg.Listen.Port()})
		if err != nil {
			return fmt.Errorf("sctplb: Diameter listen sctp %v: %w", a.cfg.Listen, err)
		}
		a.sctpLn = ln
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen.String())
	if err != nil {
		return fmt.Errorf("sctplb: Diameter listen tcp %v: %w", a.cfg.Listen, err)
	}
	a.tcpLn = ln
	return nil
}

// Stats returns the latest snapshot.
func (a *DiameterAgent) Stats() DiameterStats {
	a.snapMu.Lock()
	defer a.snapMu.Unlock()
	out := a.snap
	out.Servers = append([]DiameterServerStats(nil), a.snap.Servers...)
	return out
}

func (a *DiameterAgent) refresh(running bool) {
	s := DiameterStats{Clients: a.machine.Clients(), Running: running}
	states := a.machine.States()
	for i, n := range a.machine.Sessions() {
		s.Servers = append(s.Servers, DiameterServerStats{Name: a.names[i], Sessions: n, State: states[i].String(), Up: states[i] == diam.Okay})
	}
	a.met.state(s, states)
	a.snapMu.Lock()
	a.snap = s
	a.snapMu.Unlock()
}

// Serve runs the agent until ctx ends: then every peer gets a DPR, and
// the connections close once answered (or after a second).
func (a *DiameterAgent) Serve(ctx context.Context) error {
	if a.tcpLn == nil && a.sctpLn == nil {
		return errors.New("sctplb: Diameter agent not opened")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	a.ctx = runCtx
	defer func() {
		a.mu.Lock()
		a.step(diam.Shutdown{})
		a.mu.Unlock()
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			a.mu.Lock()
			n := len(a.conns)
			a.mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		a.closeListener()
		a.mu.Lock()
		for _, c := range a.conns {
			c.shut()
		}
		a.mu.Unlock()
		a.wg.Wait()
		a.refresh(false)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.accept(runCtx)
	}()
	a.log.Info("Diameter agent listening", "listen", a.cfg.Listen, "sctp", a.cfg.SCTP != nil, "mode", a.cfg.Mode.String(),
		"servers", len(a.cfg.Servers), "policy", a.cfg.Policy.String(), "originHost", a.cfg.Identity.Host)
	tickUntil(ctx, a.cfg.TickInterval, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.step(diam.Tick{})
		a.refresh(true)
	})
	return nil
}

func (a *DiameterAgent) closeListener() {
	if a.tcpLn != nil {
		_ = a.tcpLn.Close()
	}
	if a.sctpLn != nil {
		_ = a.sctpLn.Close()
	}
}

func (a *DiameterAgent) accept(ctx context.Context) {
	for {
		var p peerIO
		if a.tcpLn != nil {
			c, err := a.tcpLn.Accept()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				a.log.Warn("Diameter accept failed", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			p = newPooledTCPPeer(c, &a.slabs)
		} else {
			c, err := a.sctpLn.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
					return
				}
				a.log.Warn("Diameter accept failed", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			p = &sctpPeer{c: c, ctx: ctx}
		}
		a.mu.Lock()
		id := a.start(p)
		a.step(diam.Accepted{Conn: id})
		a.mu.Unlock()
	}
}

// start registers a connection and runs its reader and writer; a.mu held.
func (a *DiameterAgent) start(p peerIO) diam.ConnID {
	a.nextID++
	c := newDconn(a.nextID, p)
	a.conns[c.id] = c
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		c.writer()
	}()
	go func() {
		defer a.wg.Done()
		a.reader(c)
	}()
	return c.id
}

// maxReadBatch bounds the messages one reader steps under one lock.
const maxReadBatch = 64

func (a *DiameterAgent) reader(c *dconn) {
	defer c.p.finish()
	batch := make([]outMsg, 0, maxReadBatch)
	var dirtyBuf []*dconn
	for {
		// Every whole message already read from the socket is stepped
		// under one lock: one lock round per message cost the agent a
		// good share of its CPU under load.
		b, ref, err := c.p.readRef()
		batch = append(batch[:0], outMsg{b, ref})
		for err == nil && len(batch) < maxReadBatch && c.p.ready() {
			b, ref, err = c.p.readRef()
			batch = append(batch, outMsg{b, ref})
		}
		a.mu.Lock()
		// The reader writes what the batch queued itself, once the lock
		// is released (flushInline): waking each connection's writer
		// goroutine cost the agent a scheduler round trip per batch.
		a.inline = true
		now := time.Now()
		for _, m := range batch {
			if len(m.b) > 0 {
				// The message's reference goes to the machine.
				a.stepAt(now, diam.Message{Conn: c.id, Data: m.b, Ref: m.ref})
			} else {
				releaseRef(m.ref)
			}
		}
		a.inline = false
		dirty := append(dirtyBuf[:0], a.dirty...)
		clear(a.dirty)
		a.dirty = a.dirty[:0]
		a.mu.Unlock()
		for _, d := range dirty {
			d.flushInline()
		}
		clear(dirty)
		dirtyBuf = dirty
		clear(batch)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, transport.ErrClosed) {
				a.log.Debug("Diameter connection ended", "conn", c.id, "remote", c.p.remote(), "err", err)
			}
			var framing *diameter.Error
			if errors.As(err, &framing) {
				// The stream cannot be resynchronised: let the error
				// answer the machine queued go out, then close.
				c.closeAfterWrites()
				select {
				case <-c.done:
				case <-time.After(time.Second):
				}
			}
			c.shut()
			a.mu.Lock()
			delete(a.conns, c.id)
			a.step(diam.Closed{Conn: c.id})
			a.mu.Unlock()
			return
		}
	}
}

func (a *DiameterAgent) dial(s int) {
	// The server is known by name across the dial: a Reconfigure may
	// move or remove it meanwhile.
	name, addr := a.cfg.Servers[s].Name, a.cfg.Servers[s].Addr
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.DialTimeout)
		defer cancel()
		var p peerIO
		var err error
		if a.cfg.SCTP != nil {
			var c transport.Conn
			c, err = a.cfg.SCTP.Dial(ctx, nil, transport.Endpoint{Addrs: []netip.Addr{addr.Addr()}, Port: addr.Port()})
			if err == nil {
				p = &sctpPeer{c: c, ctx: a.ctx}
			}
		} else {
			var c net.Conn
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr.String())
			if err == nil {
				p = newPooledTCPPeer(c, &a.slabs)
			}
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		s := a.serverIndex(name)
		if s < 0 {
			if p != nil {
				_ = p.close()
			}
			return
		}
		if err != nil {
			a.log.Debug("Diameter server dial failed", "server", name, "err", err)
			a.step(diam.DialFailed{Server: s})
			return
		}
		if a.ctx.Err() != nil {
			_ = p.close()
			return
		}
		id := a.start(p)
		a.step(diam.Dialed{Server: s, Conn: id})
	}()
}

// serverIndex is the machine's index of the named server, -1 if it is no
// longer configured; a.mu held.
func (a *DiameterAgent) serverIndex(name string) int {
	for i, n := range a.names {
		if n == name {
			return i
		}
	}
	return -1
}

// Reconfigure changes the servers and the policy without a restart:
// clients stay connected, kept servers keep their connection and Session-Id
// bindings; a removed server gets a DPR and its pending requests go to
// another server with the T flag (diam.Reconfigure). Listen address,
// transport, identity, mode and applications cannot change this way.
func (a *DiameterAgent) Reconfigure(servers []DiameterServer, policy diam.Policy) error {
	var ms []diam.Server
	for _, s := range servers {
		ms = append(ms, diam.Server{Name: s.Name, Addr: s.Addr, Weight: s.Weight})
	}
	if err := diam.ValidateServers(ms); err != nil {
		return fmt.Errorf("sctplb: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	removed := map[string]bool{}
	for _, n := range a.names {
		removed[n] = true
	}
	for _, s := range servers {
		delete(removed, s.Name)
	}
	// The new list first: the machine's Dial actions index it.
	a.cfg.Servers = append([]DiameterServer(nil), servers...)
	a.cfg.Policy = policy
	a.names = make([]string, len(servers))
	for i, s := range servers {
		a.names[i] = s.Name
	}
	a.step(diam.Reconfigure{Servers: ms, Policy: policy})
	for n := range removed {
		a.met.forget(n)
	}
	a.refresh(a.ctx != nil && a.ctx.Err() == nil)
	a.log.Info("Diameter agent reconfigured", "servers", len(servers), "removed", len(removed), "policy", policy.String())
	return nil
}

// step runs the machine and carries out its actions; a.mu held.
func (a *DiameterAgent) step(ev diam.Event) { a.stepAt(time.Now(), ev) }

// stepAt is step with the time already read (a reader's batch reads the
// clock once); a.mu held.
func (a *DiameterAgent) stepAt(now time.Time, ev diam.Event) {
	for _, act := range a.machine.Step(now, ev) {
		a.met.action(act, a.names)
		switch act.Kind {
		case diam.Send:
			c := a.conns[act.Conn]
			switch {
			case c == nil:
				releaseRef(act.Ref) // gone: never written
			case !c.enqueueRef(act.Data, act.Ref, a.inline, &a.dirty):
				releaseRef(act.Ref)
				a.met.sendErrors.Inc()
				a.log.Warn("Diameter peer not reading: closing", "conn", act.Conn, "remote", c.p.remote())
				c.shut()
			}
		case diam.Close:
			if c := a.conns[act.Conn]; c != nil {
				c.closeAfterWrites()
			}
		case diam.Dial:
			if a.ctx != nil && a.ctx.Err() == nil {
				a.dial(act.Server)
			}
		}
	}
}
