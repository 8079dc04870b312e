package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Peer is one member and where its heartbeats go.
type Peer struct {
	Name string
	Addr netip.AddrPort
}

// NodeConfig configures the UDP shell around a Machine.
type NodeConfig struct {
	Self    string
	Members []Peer // Self included: its Addr is the local bind address
	// Interval and DetectMultiplier as in Config.
	Interval         time.Duration
	DetectMultiplier int
	Logger           *slog.Logger
	// FenceHold as in Config.
	FenceHold time.Duration
	// OnChange is called from the node's goroutine after every step that
	// changed liveness, ownership or fencing, with the VIPs this node
	// answers for now, the ones it owns but is fenced from, and every VIP's
	// owner. It must not block for long.
	OnChange func(owned, fenced []netip.Addr, owners map[netip.Addr]string)
	// OnAnnounce is called from the node's goroutine with VIPs this node
	// kept in a conflict and must announce again. It must not block for long.
	OnAnnounce func(vips []netip.Addr)
}

// claimMsg is a claim seen on the segment, for Machine.Claim.
type claimMsg struct {
	vip          netip.Addr
	ours, theirs string
}

// Node runs a Machine over UDP. Heartbeats are accepted only from the
// configured address of the member they name.
type Node struct {
	cfg   NodeConfig
	log   *slog.Logger
	conn  *net.UDPConn
	peers map[string]netip.AddrPort
	start time.Time

	mu sync.Mutex // guards m
	m  *Machine

	vipsCh   chan []netip.Addr
	rewarmCh chan struct{}
	claimCh  chan claimMsg
	done     chan struct{}
	// Spoofed counts heartbeats from an address that is not the named member's.
	spoofed uint64
	// wake is the machine's last wake-up (time since start); late counts
	// timer steps more than an interval after it since lateLogged (see
	// noteLate).
	wake       time.Duration
	late       int
	lateLogged time.Time
}

// Listen binds the member's heartbeat socket. Run starts the exchange.
func Listen(cfg NodeConfig) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	names := make([]string, 0, len(cfg.Members))
	peers := map[string]netip.AddrPort{}
	var self netip.AddrPort
	for _, p := range cfg.Members {
		names = append(names, p.Name)
		peers[p.Name] = p.Addr
		if p.Name == cfg.Self {
			self = p.Addr
		}
	}
	start := time.Now()
	m, err := New(Config{Self: cfg.Self, Members: names, Interval: cfg.Interval, DetectMultiplier: cfg.DetectMultiplier, FenceHold: cfg.FenceHold}, uint64(start.UnixNano()))
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(self))
	if err != nil {
		return nil, fmt.Errorf("member: heartbeat socket on %v: %w", self, err)
	}
	return &Node{
		cfg: cfg, log: cfg.Logger.With("member", cfg.Self), conn: conn, peers: peers, start: start, m: m,
		vipsCh: make(chan []netip.Addr, 1), rewarmCh: make(chan struct{}, 1), claimCh: make(chan claimMsg, 64), done: make(chan struct{}),
	}, nil
}

// SetVIPs replaces the VIPs whose owner is decided; it never blocks.
func (n *Node) SetVIPs(vips []netip.Addr) {
	v := append([]netip.Addr(nil), vips...)
	for {
		select {
		case n.vipsCh <- v:
			return
		default:
		}
		select { // replace a pending, older set
		case <-n.vipsCh:
		default:
		}
	}
}

// Rewarm asks the machine to warm up again (see Machine.Rewarm); it never blocks.
func (n *Node) Rewarm() {
	select {
	case n.rewarmCh <- struct{}{}:
	default:
	}
}

// Claim reports that theirs was seen on the segment claiming vip, where
// this node is ours (see Machine.Claim); it never blocks: when claims come
// faster than the machine takes them, some are dropped, which only delays
// a decision the next claim makes.
func (n *Node) Claim(vip netip.Addr, ours, theirs string) {
	select {
	case n.claimCh <- claimMsg{vip: vip, ours: ours, theirs: theirs}:
	default:
	}
}

// Stats returns the machine's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Stats()
}

// Owners returns every VIP's owner as this node sees it.
func (n *Node) Owners() map[netip.Addr]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Owners()
}

// Members returns the members' states, LastHeard on the local clock (with
// its monotonic reading): the machine runs on the time since start (step),
// so its LastHeard is a date in year 1 that compares with nothing outside.
func (n *Node) Members() []MemberState {
	n.mu.Lock()
	ms := n.m.Members()
	n.mu.Unlock()
	for i := range ms {
		if !ms[i].LastHeard.IsZero() {
			ms[i].LastHeard = n.start.Add(ms[i].LastHeard.Sub(time.Time{}))
		}
	}
	return ms
}

// Leave tells the other members this node gives up its VIPs (a last
// heartbeat, not ready), so they take over at once. Call it before Close
// on a graceful stop; it does not stop Run.
func (n *Node) Leave() {
	out := n.step(func(m *Machine, now time.Time) Output { return m.Leave(now) })
	if out.Heartbeat != nil {
		n.send(out.Heartbeat)
	}
}

// Close stops Run and closes the socket.
func (n *Node) Close() error { return n.conn.Close() }

type rxPkt struct {
	from netip.AddrPort
	b    []byte
}

// Run exchanges heartbeats until ctx ends or the socket is closed.
func (n *Node) Run(ctx context.Context) error {
	rx := make(chan rxPkt, 256)
	go func() {
		defer close(rx)
		for {
			buf := make([]byte, 512)
			k, from, err := n.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					n.log.Warn("member: heartbeat read", "err", err)
				}
				return
			}
			rx <- rxPkt{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), b: buf[:k]}
		}
	}()
	go func() {
		<-ctx.Done()
		n.conn.Close()
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	n.apply(n.step(func(m *Machine, now time.Time) Output { return m.Start(now) }), timer)
	for {
		select {
		case p, ok := <-rx:
			if !ok {
				return ctx.Err()
			}
			n.handle(p, timer)
		case c := <-n.claimCh:
			n.apply(n.step(func(m *Machine, now time.Time) Output { return m.Claim(now, c.vip, c.ours, c.theirs) }), timer)
		case <-n.rewarmCh:
			n.apply(n.step(func(m *Machine, now time.Time) Output { return m.Rewarm(now) }), timer)
		case v := <-n.vipsCh:
			n.apply(n.step(func(m *Machine, now time.Time) Output { return m.SetVIPs(now, v) }), timer)
		case <-timer.C:
			n.noteLate()
			// Packets that waited while we were not running (a frozen
			// process) go in before the timer, so the machine judges the
			// others by what they sent, not by our own absence.
			for drained := false; !drained; {
				select {
				case p, ok := <-rx:
					if !ok {
						return ctx.Err()
					}
					n.handle(p, timer)
				default:
					drained = true
				}
			}
			n.apply(n.step(func(m *Machine, now time.Time) Output { return m.Tick(now) }), timer)
		}
	}
}

// noteLate logs, at most every 10 s, that the timer step ran more than an
// interval after the wake-up the machine asked for: the process or this
// goroutine waited for a CPU (or was stopped). Heartbeats went out that
// late too; past the detection time the others take this node's VIPs
// (they hand them back on its next heartbeat and it announces them again,
// see Machine.advance).
func (n *Node) noteLate() {
	now := time.Now()
	wake := n.start.Add(n.wake)
	late := now.Sub(wake)
	interval := n.cfg.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	if late <= interval {
		return
	}
	n.late++
	if now.Sub(n.lateLogged) < 10*time.Second {
		return
	}
	n.log.Warn("member: ran late: heartbeats and liveness checks delayed (a loaded or stopped process)",
		"late", late.Round(time.Millisecond), "lateSteps", n.late)
	n.late, n.lateLogged = 0, now
}

func (n *Node) handle(p rxPkt, timer *time.Timer) {
	hb, err := Unmarshal(p.b)
	if err == nil {
		if want, ok := n.peers[hb.Name]; ok && want.Addr() != p.from.Addr() {
			n.spoofed++
			n.log.Debug("member: heartbeat from the wrong address", "name", hb.Name, "from", p.from, "want", want)
			return
		}
	}
	n.apply(n.step(func(m *Machine, now time.Time) Output { return m.ReceivePacket(now, p.b) }), timer)
}

func (n *Node) send(hb []byte) {
	for name, a := range n.peers {
		if name == n.cfg.Self {
			continue
		}
		if _, err := n.conn.WriteToUDPAddrPort(hb, a); err != nil {
			// A peer's link being down is what liveness detects; log quietly.
			n.log.Debug("member: heartbeat send", "to", name, "err", err)
		}
	}
}

func (n *Node) step(f func(*Machine, time.Time) Output) Output {
	n.mu.Lock()
	defer n.mu.Unlock()
	// The machine's clock is the monotonic time since start, carried in a
	// time.Time so wall-clock jumps never fire or delay timers.
	now := time.Time{}.Add(time.Since(n.start))
	return f(n.m, now)
}

func (n *Node) apply(out Output, timer *time.Timer) {
	if out.Heartbeat != nil {
		n.send(out.Heartbeat)
	}
	for _, c := range out.Liveness {
		n.log.Info("member: liveness", "node", c.Member, "alive", c.Alive, "ready", c.Ready, "reason", c.Reason)
	}
	for _, c := range out.Ownership {
		n.log.Info("member: ownership", "vip", c.VIP, "from", c.Old, "to", c.New)
	}
	for _, c := range out.Fencing {
		if c.Fenced {
			n.log.Warn("member: split brain: fenced, another node keeps the VIP", "vip", c.VIP, "winner", c.Claimant)
		} else {
			n.log.Info("member: fence ended", "vip", c.VIP, "reason", c.Reason)
		}
	}
	if (len(out.Liveness) > 0 || len(out.Ownership) > 0 || len(out.Fencing) > 0) && n.cfg.OnChange != nil {
		n.mu.Lock()
		owned, fenced, owners := n.m.Owned(), n.m.Fenced(), n.m.Owners()
		n.mu.Unlock()
		n.cfg.OnChange(owned, fenced, owners)
	}
	if len(out.Announce) > 0 {
		n.log.Info("member: announcing VIPs again (kept in a split-brain conflict, or owned here across a silence the others may have taken them over in)", "vips", out.Announce)
		if n.cfg.OnAnnounce != nil {
			n.cfg.OnAnnounce(out.Announce)
		}
	}
	if !out.Wake.IsZero() {
		n.wake = out.Wake.Sub(time.Time{})
		d := out.Wake.Sub(time.Time{}.Add(time.Since(n.start)))
		if d < 0 {
			d = 0
		}
		timer.Reset(d)
	}
}
