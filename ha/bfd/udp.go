package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// RFC 5881 and RFC 5883 constants.
const (
	// Port is the single-hop control packet destination port (RFC 5881 §4).
	Port = 3784
	// MultihopPort is the multihop one (RFC 5883 §5).
	MultihopPort = 4784
	// GTSM TTL/hop limit: sent always, required on receipt for single hop
	// (RFC 5881 §5).
	ttl = 255
	// DefaultMultihopMinTTL is the lowest TTL/hop limit a multihop session
	// accepts when its configuration says none: one router between the
	// peers, as frr's bfdd assumes by default (its minimum-ttl 254). RFC 5883
	// §5 leaves the check to configuration; a peer further away needs a
	// lower MinTTL.
	DefaultMultihopMinTTL = 254
	// Source ports come from this range (§4).
	srcPortMin = 49152
	srcPortMax = 65535
)

// PeerConfig is one session to run over UDP.
type PeerConfig struct {
	// Remote is the peer's address.
	Remote netip.Addr
	// Local is the address to send from and receive on; invalid means the
	// address the routing table picks toward Remote.
	Local netip.Addr
	// Interface, when set, binds the session's sockets to it
	// (SO_BINDTODEVICE).
	Interface string
	// Timers as in Config.
	DesiredMinTx, RequiredMinRx time.Duration
	DetectMult                  uint8
	// Multihop runs the session per RFC 5883: port 4784, no interface
	// binding, and a received TTL/hop limit of at least MinTTL (zero:
	// DefaultMultihopMinTTL) instead of exactly 255.
	Multihop bool
	MinTTL   uint8
}

// port is the session's destination (and receive) port.
func (c PeerConfig) port() uint16 {
	if c.Multihop {
		return MultihopPort
	}
	return Port
}

// ttlOK applies the mode's receive TTL rule.
func (c PeerConfig) ttlOK(hops int) (bool, string) {
	if !c.Multihop {
		if hops == ttl {
			return true, ""
		}
		return false, fmt.Sprintf("TTL/hop limit %d, RFC 5881 requires 255", hops)
	}
	min := int(c.MinTTL)
	if min == 0 {
		min = DefaultMultihopMinTTL
	}
	if hops >= min {
		return true, ""
	}
	return false, fmt.Sprintf("TTL/hop limit %d, this multihop session requires at least %d", hops, min)
}

// Status is a session's state for status reports and metrics.
type Status struct {
	Remote, Local       netip.Addr
	State               State
	Since               time.Time
	LocalDiscr          uint32
	RemoteDiag          Diag
	TxInterval          time.Duration
	DetectTime          time.Duration
	Received, Sent      uint64
	Dropped             uint64 // packets for this session's address that failed a check
	LastDropReason      string
	LocalDiag           Diag
	StateChangesCounter uint64
}

// Manager runs BFD sessions over UDP: one receive socket per local address
// and mode (port 3784 single hop, 4784 multihop; TTL checked per session),
// one send socket per session (a source port in 49152-65535, TTL 255). It
// is the only part of the package with I/O; both modes share the session
// machine.
type Manager struct {
	log *slog.Logger

	mu       sync.Mutex
	rnd      *rand.Rand
	sessions map[uint32]*Peer // by local discriminator
	rx       map[rxKey]*rxSocket
	closed   bool
}

// rxKey is a receive socket's local address and port (the mode).
type rxKey struct {
	addr netip.Addr
	port uint16
}

type rxSocket struct {
	conn  net.PacketConn
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	users int
	done  chan struct{}
}

// Peer is one running session.
type Peer struct {
	m        *Manager
	cfg      PeerConfig
	local    netip.Addr
	tx       *net.UDPConn
	onChange func(State, Diag)

	// Guarded by m.mu.
	s                 *Session
	txTimer, detTimer *time.Timer
	txGen, detGen     uint64
	since             time.Time
	remoteDiag        Diag
	received, sent    uint64
	dropped           uint64
	lastDrop          string
	changes           uint64
	closed            bool
}

// NewManager returns an empty manager.
func NewManager(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{
		log:      log,
		rnd:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		sessions: map[uint32]*Peer{},
		rx:       map[rxKey]*rxSocket{},
	}
}

// lockedRand serves the sessions' jitter from the manager's source; only
// called with m.mu held.
type lockedRand struct{ m *Manager }

func (r lockedRand) Float64() float64 { return r.m.rnd.Float64() }

// Add starts a session. onChange (may be nil) is called on each state
// change, from a goroutine of the manager, never with its lock held.
func (m *Manager) Add(cfg PeerConfig, onChange func(State, Diag)) (*Peer, error) {
	if !cfg.Remote.IsValid() {
		return nil, errors.New("bfd: peer address required")
	}
	cfg.Remote = cfg.Remote.Unmap()
	if cfg.Multihop {
		// A multihop session's packets may arrive on any interface.
		cfg.Interface = ""
	} else if cfg.MinTTL != 0 && cfg.MinTTL != ttl {
		return nil, fmt.Errorf("bfd: minimum TTL %d: single-hop sessions require 255 (RFC 5881 §5)", cfg.MinTTL)
	}
	tx, local, err := dialTx(cfg)
	if err != nil {
		return nil, err
	}
	p := &Peer{m: m, cfg: cfg, local: local, tx: tx, onChange: onChange, since: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		tx.Close()
		return nil, errors.New("bfd: manager closed")
	}
	key := rxKey{local, cfg.port()}
	if err := m.acquireRx(key, cfg.Interface); err != nil {
		tx.Close()
		return nil, err
	}
	var discr uint32
	for discr == 0 || m.sessions[discr] != nil {
		discr = m.rnd.Uint32()
	}
	s, out, err := New(Config{LocalDiscr: discr, DesiredMinTx: cfg.DesiredMinTx, RequiredMinRx: cfg.RequiredMinRx, DetectMult: cfg.DetectMult}, lockedRand{m})
	if err != nil {
		m.releaseRx(key)
		tx.Close()
		return nil, err
	}
	p.s = s
	m.sessions[discr] = p
	p.perform(out)
	m.log.Info("bfd session started", "peer", cfg.Remote, "local", local, "discriminator", discr, "multihop", cfg.Multihop)
	return p, nil
}

// dialTx opens the session's send socket: connected to Remote:3784 (4784
// multihop) from a source port in the RFC 5881 range, TTL/hop limit 255.
func dialTx(cfg PeerConfig) (*net.UDPConn, netip.Addr, error) {
	network := "udp4"
	if cfg.Remote.Is6() {
		network = "udp6"
	}
	var lastErr error
	start := srcPortMin + rand.IntN(srcPortMax-srcPortMin+1)
	for i := 0; i < 64; i++ {
		port := srcPortMin + (start-srcPortMin+i*7919)%(srcPortMax-srcPortMin+1)
		d := net.Dialer{Control: controlBind(cfg.Interface)}
		if cfg.Local.IsValid() {
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.Local, uint16(port)))
		} else {
			d.LocalAddr = &net.UDPAddr{Port: port}
		}
		c, err := d.DialContext(context.Background(), network, netip.AddrPortFrom(cfg.Remote, cfg.port()).String())
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, netip.Addr{}, fmt.Errorf("bfd: socket to %s: %w", cfg.Remote, err)
		}
		uc := c.(*net.UDPConn)
		if cfg.Remote.Is4() {
			err = ipv4.NewConn(uc).SetTTL(ttl)
		} else {
			err = ipv6.NewConn(uc).SetHopLimit(ttl)
		}
		if err != nil {
			uc.Close()
			return nil, netip.Addr{}, fmt.Errorf("bfd: set TTL 255: %w", err)
		}
		local := uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return uc, local, nil
	}
	return nil, netip.Addr{}, fmt.Errorf("bfd: no free source port in %d-%d: %w", srcPortMin, srcPortMax, lastErr)
}

func controlBind(iface string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil && iface != "" {
				serr = unix.BindToDevice(int(fd), iface)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// acquireRx opens (or shares) the receive socket on key's address and port.
func (m *Manager) acquireRx(key rxKey, iface string) error {
	if r := m.rx[key]; r != nil {
		r.users++
		return nil
	}
	local := key.addr
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: controlBind(iface)}
	conn, err := lc.ListenPacket(context.Background(), network, netip.AddrPortFrom(local, key.port).String())
	if err != nil {
		return fmt.Errorf("bfd: listen on %s port %d: %w", local, key.port, err)
	}
	r := &rxSocket{conn: conn, users: 1, done: make(chan struct{})}
	if local.Is4() {
		r.p4 = ipv4.NewPacketConn(conn)
		err = r.p4.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true)
	} else {
		r.p6 = ipv6.NewPacketConn(conn)
		err = r.p6.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true)
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("bfd: ask for the received TTL: %w", err)
	}
	m.rx[key] = r
	go m.readLoop(key, r)
	return nil
}

func (m *Manager) releaseRx(key rxKey) {
	r := m.rx[key]
	if r == nil {
		return
	}
	r.users--
	if r.users == 0 {
		delete(m.rx, key)
		r.conn.Close()
	}
}

func (m *Manager) readLoop(key rxKey, r *rxSocket) {
	local := key.addr
	defer close(r.done)
	buf := make([]byte, 512)
	for {
		var (
			n      int
			src    net.Addr
			hops   int
			err    error
			hasTTL bool
		)
		if r.p4 != nil {
			var cm *ipv4.ControlMessage
			n, cm, src, err = r.p4.ReadFrom(buf)
			if cm != nil {
				hops, hasTTL = cm.TTL, true
			}
		} else {
			var cm *ipv6.ControlMessage
			n, cm, src, err = r.p6.ReadFrom(buf)
			if cm != nil {
				hops, hasTTL = cm.HopLimit, true
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("bfd receive", "local", local, "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ua, _ := src.(*net.UDPAddr)
		if ua == nil {
			continue
		}
		from := ua.AddrPort().Addr().Unmap()
		if !hasTTL {
			hops = -1 // never accepted: the kernel did not say
		}
		m.deliver(key, from, buf[:n], hops)
	}
}

// deliver checks and dispatches one received datagram.
func (m *Manager) deliver(key rxKey, from netip.Addr, b []byte, hops int) {
	local := key.addr
	var notify []func()
	m.mu.Lock()
	p, reason := m.find(key, from, b, hops)
	if p != nil && reason != "" {
		p.dropped++
		p.lastDrop = reason
	}
	if p != nil && reason == "" {
		pkt, _ := Parse(b) // find parsed it already
		out, err := p.s.Handle(Received{Packet: pkt})
		if err != nil {
			p.dropped++
			p.lastDrop = err.Error()
		} else {
			p.received++
			p.remoteDiag = pkt.Diag
			notify = p.perform(out)
		}
	}
	m.mu.Unlock()
	if reason != "" {
		m.log.Debug("bfd packet discarded", "from", from, "local", local, "reason", reason)
	}
	for _, f := range notify {
		f()
	}
}

// find picks the session a datagram is for (RFC 5880 §6.8.6: by Your
// Discriminator when nonzero, else by the addresses; RFC 5883 §5: by the
// address pair for multihop too) among the sessions of the socket's mode,
// and says why it must be discarded, if it must.
func (m *Manager) find(key rxKey, from netip.Addr, b []byte, hops int) (*Peer, string) {
	local := key.addr
	pkt, perr := Parse(b)
	var p *Peer
	if perr == nil && pkt.YourDisc != 0 {
		p = m.sessions[pkt.YourDisc]
		if p != nil && p.closed {
			return nil, "session closed"
		}
		if p != nil && (p.cfg.Remote != from || p.local != local || p.cfg.port() != key.port) {
			return nil, fmt.Sprintf("your discriminator %d belongs to the session with %s port %d", pkt.YourDisc, p.cfg.Remote, p.cfg.port())
		}
	} else {
		for _, s := range m.sessions {
			if s.cfg.Remote == from && s.local == local && s.cfg.port() == key.port && !s.closed {
				p = s
				break
			}
		}
	}
	if p == nil {
		return nil, "no session"
	}
	if ok, why := p.cfg.ttlOK(hops); !ok {
		return p, why
	}
	if perr != nil {
		return p, perr.Error()
	}
	return p, ""
}

// perform carries out a session's actions; it returns the notifications to
// run once the lock is released. Called with m.mu held.
func (p *Peer) perform(out []Action) []func() {
	var notify []func()
	for _, a := range out {
		switch a := a.(type) {
		case Send:
			if _, err := p.tx.Write(a.Packet.Marshal()); err != nil {
				p.m.log.Debug("bfd send", "peer", p.cfg.Remote, "error", err)
			} else {
				p.sent++
			}
		case ArmTx:
			p.txGen++
			gen := p.txGen
			if p.txTimer != nil {
				p.txTimer.Stop()
			}
			p.txTimer = time.AfterFunc(a.After, func() { p.fire(TxTimerExpired{}, gen, false) })
		case StopTx:
			p.txGen++
			if p.txTimer != nil {
				p.txTimer.Stop()
			}
		case ArmDetect:
			p.detGen++
			gen := p.detGen
			if p.detTimer != nil {
				p.detTimer.Stop()
			}
			p.detTimer = time.AfterFunc(a.After, func() { p.fire(DetectTimerExpired{}, gen, true) })
		case StopDetect:
			p.detGen++
			if p.detTimer != nil {
				p.detTimer.Stop()
			}
		case StateChanged:
			p.since = time.Now()
			p.changes++
			p.m.log.Info("bfd session state", "peer", p.cfg.Remote, "from", a.From.String(), "to", a.To.String(), "diag", a.Diag.String())
			if p.onChange != nil {
				st, d := a.To, a.Diag
				notify = append(notify, func() { p.onChange(st, d) })
			}
		}
	}
	return notify
}

// fire delivers a timer expiry unless the timer was rearmed or stopped
// since (its generation moved on).
func (p *Peer) fire(ev any, gen uint64, detect bool) {
	p.m.mu.Lock()
	if p.closed || (detect && gen != p.detGen) || (!detect && gen != p.txGen) {
		p.m.mu.Unlock()
		return
	}
	out, err := p.s.Handle(ev)
	var notify []func()
	if err == nil {
		notify = p.perform(out)
	}
	p.m.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// SetAdmin takes the session administratively down (the peer is told
// AdminDown, which it must not treat as a failure) or back up.
func (p *Peer) SetAdmin(up bool) {
	var ev any = AdminDownEvent{}
	if up {
		ev = AdminUp{}
	}
	p.m.mu.Lock()
	var notify []func()
	if !p.closed {
		out, _ := p.s.Handle(ev)
		notify = p.perform(out)
	}
	p.m.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// Status reports the session's state.
func (p *Peer) Status() Status {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	return Status{
		Remote: p.cfg.Remote, Local: p.local, State: p.s.State(), Since: p.since,
		LocalDiscr: p.s.LocalDiscr(), RemoteDiag: p.remoteDiag, LocalDiag: p.s.LocalDiag(),
		TxInterval: p.s.TxInterval(), DetectTime: p.s.DetectTime(),
		Received: p.received, Sent: p.sent, Dropped: p.dropped, LastDropReason: p.lastDrop,
		StateChangesCounter: p.changes,
	}
}

// Config returns the configuration the session was started with.
func (p *Peer) Config() PeerConfig { return p.cfg }

// Close stops the session: it sends AdminDown once (so the peer does not
// count it as a failure, RFC 5880 §6.8.16) and frees its sockets.
func (p *Peer) Close() {
	m := p.m
	m.mu.Lock()
	if p.closed {
		m.mu.Unlock()
		return
	}
	if p.s.State() != AdminDown {
		out, _ := p.s.Handle(AdminDownEvent{})
		for _, a := range out {
			if s, ok := a.(Send); ok {
				_, _ = p.tx.Write(s.Packet.Marshal())
			}
		}
	}
	p.closed = true
	p.txGen++
	p.detGen++
	if p.txTimer != nil {
		p.txTimer.Stop()
	}
	if p.detTimer != nil {
		p.detTimer.Stop()
	}
	delete(m.sessions, p.s.LocalDiscr())
	m.releaseRx(rxKey{p.local, p.cfg.port()})
	m.mu.Unlock()
	p.tx.Close()
}

// Close stops every session.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	peers := make([]*Peer, 0, len(m.sessions))
	for _, p := range m.sessions {
		peers = append(peers, p)
	}
	m.mu.Unlock()
	for _, p := range peers {
		p.Close()
	}
}
