package sctplb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// AMFEndpoint is one backend AMF.
type AMFEndpoint struct {
	Name    string
	Address transport.Endpoint
	// Weight biases the weighted policy; 0 means 1.
	Weight int
}

// Config configures a Proxy.
type Config struct {
	Transport transport.Transport
	// Listen is the N2 endpoint the gNBs connect to (port 38412 normally);
	// several addresses make it multi-homed.
	Listen transport.Endpoint
	// LocalAddrs are the source addresses toward the AMFs (none: any).
	LocalAddrs []netip.Addr
	AMFs       []AMFEndpoint
	Policy     steer.Policy
	// Name is the AMF Name the gNBs see and the "proxy" metrics label.
	Name string
	// Steering timers; zero keeps steer's defaults.
	SetupWait, SetupTimeout, RedialMin, RedialMax, DrainTimeout time.Duration
	// TickInterval paces the state machine's timers (default 100ms).
	TickInterval time.Duration
	// DialTimeout bounds one association setup toward an AMF (default 5s).
	DialTimeout time.Duration
	// SendQueue is the per-association outbound queue; a full queue drops
	// and counts (default 4096).
	SendQueue int
	// Publish, when set, turns on replication (steer Config.Replicate,
	// replicate.go there): it is called from the proxy loop, after every
	// event that changed replicable state, with the changed records, and
	// must not block (the daemon queues them on its HA sync). Records of
	// peers come in through Import.
	Publish func([]steer.Record)
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Proxy runs the N2 proxy loop.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	machine *steer.Machine
	met     *metrics
	// names and amfs are by AMF index, owned by the Run loop once it runs.
	names []string
	amfs  []AMFEndpoint
	// ctl carries AddAMF/RemoveAMF to the loop; quit closes when it ends.
	ctl      chan control
	quit     chan struct{}
	quitOnce sync.Once

	// snap is what Stats returns: the machine belongs to the Run loop, so
	// other goroutines read a copy refreshed at tick pace.
	snapMu sync.Mutex
	snap   Stats

	// held: the ABORT targets of the gNB associations up now (held.go).
	held heldTargets
}

// Stats is a snapshot of the proxy's state, refreshed every TickInterval.
type Stats struct {
	// AMFs lists the configured AMFs: Config.AMFs, then those added, without
	// the removed ones.
	AMFs []AMFStats
	// GNBs and AMFAssociations count established associations.
	GNBs, AMFAssociations int
	// Running is true between a successful listen and the end of Run.
	Running bool
}

// AMFStats is one AMF's share of the UE contexts and the health of the
// proxy's associations to it.
type AMFStats struct {
	Name string
	UEs  int
	// Ready of Wanted associations (one per set-up gNB) are up with NG
	// Setup answered; Overloaded of them are under Overload Start.
	Ready, Wanted, Overloaded int
}

// State summarises the associations: "idle" (no gNB set up, nothing to
// say), "up" (all ready), "partial", or "down" (none ready).
func (a AMFStats) State() string {
	switch {
	case a.Wanted == 0:
		return "idle"
	case a.Ready == a.Wanted:
		return "up"
	case a.Ready == 0:
		return "down"
	}
	return "partial"
}

type control struct {
	add     *AMFEndpoint
	remove  string
	imports []steer.Record
	done    chan error
}

// Import parks a peer proxy's replicated records in the running proxy
// (steer.Machine.Import): kept, not acted upon, until their gNBs reconnect
// here asking for UE retention. Records that do not decode are refused
// with an error; the others are applied.
func (p *Proxy) Import(ctx context.Context, recs []steer.Record) error {
	if len(recs) == 0 {
		return nil
	}
	return p.control(ctx, control{imports: recs})
}

// ErrNotRunning is returned by AddAMF and RemoveAMF when the proxy loop is
// not (or no longer) running.
var ErrNotRunning = errors.New("sctplb: proxy not running")

// AddAMF adds an AMF to the running proxy (steer.AddAMF): every gNB gets an
// association to it and new UEs spread over it; established UEs stay where
// they are.
func (p *Proxy) AddAMF(ctx context.Context, a AMFEndpoint) error {
	if a.Name == "" || len(a.Address.Addrs) == 0 || a.Address.Port == 0 {
		return fmt.Errorf("sctplb: add AMF %q: name, address and port required", a.Name)
	}
	return p.control(ctx, control{add: &a})
}

// RemoveAMF retires an AMF of the running proxy (steer.RemoveAMF): its UEs
// are released toward their gNBs and its associations closed for good. The
// last AMF cannot be removed.
func (p *Proxy) RemoveAMF(ctx context.Context, name string) error {
	return p.control(ctx, control{remove: name})
}

func (p *Proxy) control(ctx context.Context, c control) error {
	c.done = make(chan error, 1)
	select {
	case p.ctl <- c:
	case <-p.quit:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleControl runs in the loop: the shell's AMF list must grow before the
// machine dials the new index.
func (l *loop) handleControl(c control) error {
	names, active := l.machine.AMFNames(), l.machine.Active()
	find := func(name string) int {
		for i, n := range names {
			if n == name {
				return i
			}
		}
		return -1
	}
	if c.imports != nil {
		return l.machine.Import(c.imports)
	}
	if c.add != nil {
		i := find(c.add.Name)
		switch {
		case i >= 0 && active[i]:
			return fmt.Errorf("sctplb: AMF %q already configured", c.add.Name)
		case i >= 0:
			l.amfs[i] = *c.add
		default:
			l.amfs = append(l.amfs, *c.add)
		}
		l.step(steer.AddAMF{AMF: steer.AMF{Name: c.add.Name, Weight: c.add.Weight}})
	} else {
		i := find(c.remove)
		if i < 0 || !active[i] {
			return fmt.Errorf("sctplb: AMF %q is not configured", c.remove)
		}
		n := 0
		for _, a := range active {
			if a {
				n++
			}
		}
		if n == 1 {
			return fmt.Errorf("sctplb: AMF %q is the last one; it cannot be removed", c.remove)
		}
		l.step(steer.RemoveAMF{Name: c.remove})
	}
	l.names = l.machine.AMFNames()
	l.met.state(l.machine, l.names)
	l.refreshStats(true)
	return nil
}

// Stats returns the latest snapshot.
func (p *Proxy) Stats() Stats {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	out := p.snap
	out.AMFs = append([]AMFStats(nil), p.snap.AMFs...)
	return out
}

func (p *Proxy) refreshStats(running bool) {
	ues, active, links := p.machine.UEs(), p.machine.Active(), p.machine.Links()
	g, u := p.machine.AssociationsUp()
	s := Stats{GNBs: g, AMFAssociations: u, Running: running}
	for i, n := range p.names {
		if i < len(active) && !active[i] {
			continue
		}
		st := AMFStats{Name: n}
		if i < len(ues) {
			st.UEs = ues[i]
		}
		if i < len(links) {
			st.Ready, st.Wanted, st.Overloaded = links[i].Ready, links[i].Wanted, links[i].Overloaded
		}
		s.AMFs = append(s.AMFs, st)
	}
	p.snapMu.Lock()
	p.snap = s
	p.snapMu.Unlock()
}

// New validates cfg and builds the state machine and metrics.
func New(cfg Config) (*Proxy, error) {
	if cfg.Transport == nil {
		return nil, errors.New("sctplb: no transport")
	}
	if cfg.Listen.Port == 0 {
		return nil, errors.New("sctplb: listen port is 0")
	}
	if cfg.Name == "" {
		cfg.Name = "telcolb-n2"
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sc := steer.Config{
		Policy: cfg.Policy, ProxyName: cfg.Name, Logger: cfg.Logger,
		SetupWait: cfg.SetupWait, SetupTimeout: cfg.SetupTimeout,
		RedialMin: cfg.RedialMin, RedialMax: cfg.RedialMax, DrainTimeout: cfg.DrainTimeout,
		Replicate: cfg.Publish != nil,
	}
	for i, a := range cfg.AMFs {
		if len(a.Address.Addrs) == 0 || a.Address.Port == 0 {
			return nil, fmt.Errorf("sctplb: amfs[%d] (%s): address and port required", i, a.Name)
		}
		sc.AMFs = append(sc.AMFs, steer.AMF{Name: a.Name, Weight: a.Weight})
	}
	m, err := steer.New(sc)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	met, err := newMetrics(cfg.Registerer, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("sctplb: %w", err)
	}
	return &Proxy{cfg: cfg, log: cfg.Logger, machine: m, met: met, names: m.AMFNames(),
		amfs: append([]AMFEndpoint(nil), cfg.AMFs...), ctl: make(chan control), quit: make(chan struct{})}, nil
}

type (
	evAccepted struct {
		conn   transport.Conn
		target abort.Target
	}
	evDialed struct {
		id   steer.AssocID
		conn transport.Conn
		err  error
	}
	evRecv struct {
		id  steer.AssocID
		msg transport.Message
	}
	evDown struct {
		id  steer.AssocID
		err error
	}
)

type peer struct {
	id    steer.AssocID
	conn  transport.Conn
	sendq chan transport.Message
	done  chan struct{}
	once  sync.Once
}

func (p *peer) close() {
	p.once.Do(func() {
		close(p.done)
		_ = p.conn.Close()
	})
}

// loop is the state one Run owns.
type loop struct {
	*Proxy
	ctx     context.Context
	events  chan any
	peers   map[steer.AssocID]*peer
	nextGNB steer.AssocID
	wg      sync.WaitGroup
	// targetWarned: an unknown ABORT target was logged as a warning on
	// this listener (held.go; the accept goroutine's).
	targetWarned bool
}

// Run listens and proxies until ctx ends. It returns nil on cancellation and
// an error if it cannot listen.
func (p *Proxy) Run(ctx context.Context) error {
	ln, err := p.cfg.Transport.Listen(p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("sctplb: listen %v: %w", p.cfg.Listen, err)
	}
	return p.Serve(ctx, ln)
}

// Serve proxies the associations ln accepts until ctx ends, then closes ln.
// Callers that must report a listen error synchronously (the daemon's API)
// listen themselves and hand the listener over.
func (p *Proxy) Serve(ctx context.Context, ln transport.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{Proxy: p, ctx: ctx, events: make(chan any, 1024), peers: map[steer.AssocID]*peer{}}
	defer func() {
		cancel()
		_ = ln.Close()
		for _, pr := range l.peers {
			pr.close()
		}
		l.wg.Wait()
		p.held.reset()
	}()
	l.wg.Add(1)
	go l.accept(ln)
	p.log.Info("N2 proxy listening", "endpoint", p.cfg.Listen.String(), "amfs", len(p.cfg.AMFs), "policy", p.cfg.Policy.String())

	p.refreshStats(true)
	defer p.refreshStats(false)
	defer p.quitOnce.Do(func() { close(p.quit) })
	tick := time.NewTicker(p.cfg.TickInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			l.step(steer.Tick{})
			// Gauges follow the state at tick pace, not per message.
			l.met.state(l.machine, l.names)
			l.refreshStats(true)
		case ev := <-l.events:
			l.handle(ev)
		case c := <-p.ctl:
			c.done <- l.handleControl(c)
		}
	}
}

func (l *loop) post(ev any) bool {
	select {
	case l.events <- ev:
		return true
	case <-l.ctx.Done():
		return false
	}
}

func (l *loop) accept(ln transport.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			l.log.Warn("accept failed", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		if !l.post(evAccepted{conn: c, target: l.abortTargetOf(c)}) {
			_ = c.Close()
			return
		}
	}
}

func (l *loop) handle(ev any) {
	switch e := ev.(type) {
	case evAccepted:
		l.nextGNB++
		if l.nextGNB >= steer.UpstreamBit {
			l.nextGNB = 1
		}
		id := l.nextGNB
		l.start(id, e.conn)
		l.held.set(id, e.target)
		l.log.Info("gNB connected", "assoc", id, "remote", e.conn.Remote())
		l.step(steer.GNBUp{Assoc: id, OutStreams: e.conn.OutStreams(), Abort: e.target})
	case evDialed:
		if e.err != nil {
			l.log.Warn("AMF dial failed", "assoc", e.id, "err", e.err)
			l.step(steer.AMFDown{Assoc: e.id})
			return
		}
		l.start(e.id, e.conn)
		l.step(steer.AMFUp{Assoc: e.id, OutStreams: e.conn.OutStreams()})
	case evRecv:
		if e.msg.PPID != ngapl.PPID && e.msg.PPID != 0 {
			l.log.Warn("dropping non-NGAP payload", "assoc", e.id, "ppid", e.msg.PPID)
			l.met.failures.WithLabelValues("wrong PPID").Inc()
			return
		}
		if e.id&steer.UpstreamBit != 0 {
			l.step(steer.AMFMessage{Assoc: e.id, Stream: e.msg.Stream, Data: e.msg.Data})
		} else {
			l.step(steer.GNBMessage{Assoc: e.id, Stream: e.msg.Stream, Data: e.msg.Data})
		}
	case evDown:
		if pr := l.peers[e.id]; pr != nil {
			pr.close()
			delete(l.peers, e.id)
		}
		if e.id&steer.UpstreamBit != 0 {
			l.step(steer.AMFDown{Assoc: e.id})
		} else {
			l.held.drop(e.id)
			l.log.Info("gNB disconnected", "assoc", e.id, "err", e.err)
			l.step(steer.GNBDown{Assoc: e.id})
		}
	}
}

func (l *loop) step(ev steer.Event) {
	defer l.publish()
	for _, a := range l.machine.Step(time.Now(), ev) {
		l.met.action(a)
		switch a.Kind {
		case steer.Send:
			pr := l.peers[a.Assoc]
			if pr == nil {
				l.met.sendErrors.Inc()
				continue
			}
			select {
			case pr.sendq <- transport.Message{Stream: a.Stream, PPID: ngapl.PPID, Data: a.Data}:
			default:
				l.met.sendErrors.Inc()
				l.log.Warn("send queue full, dropping", "assoc", a.Assoc)
			}
		case steer.Dial:
			l.dial(a.Assoc, a.AMF)
		case steer.Close:
			if pr := l.peers[a.Assoc]; pr != nil {
				pr.close()
			}
		}
	}
}

// publish hands what the last step changed to the replication.
func (l *loop) publish() {
	if l.cfg.Publish == nil {
		return
	}
	if recs := l.machine.TakeChanges(); len(recs) > 0 {
		l.cfg.Publish(recs)
	}
}

func (l *loop) dial(id steer.AssocID, amf int) {
	target := l.amfs[amf]
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
		defer cancel()
		c, err := l.cfg.Transport.Dial(ctx, l.cfg.LocalAddrs, target.Address)
		if err != nil {
			err = fmt.Errorf("dial %s at %v: %w", target.Name, target.Address, err)
		}
		if !l.post(evDialed{id: id, conn: c, err: err}) && c != nil {
			_ = c.Close()
		}
	}()
}

// start runs the reader and writer of one association. The reader reports
// the association's end; the writer closes it on a send error so the reader
// notices.
func (l *loop) start(id steer.AssocID, c transport.Conn) {
	pr := &peer{id: id, conn: c, sendq: make(chan transport.Message, l.cfg.SendQueue), done: make(chan struct{})}
	l.peers[id] = pr
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		for {
			m, err := c.Recv(l.ctx)
			if err != nil {
				l.post(evDown{id: id, err: err})
				return
			}
			if !l.post(evRecv{id: id, msg: m}) {
				return
			}
		}
	}()
	go func() {
		defer l.wg.Done()
		for {
			select {
			case m := <-pr.sendq:
				if err := c.Send(l.ctx, m); err != nil {
					l.log.Warn("send failed, closing association", "assoc", id, "err", err)
					l.met.sendErrors.Inc()
					pr.close()
					return
				}
			case <-pr.done:
				return
			case <-l.ctx.Done():
				return
			}
		}
	}()
}
