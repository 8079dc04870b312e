package l2

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	Logger *slog.Logger
	// BurstCount gratuitous ARP / unsolicited NA frames are sent on taking a
	// VIP over, BurstInterval apart (defaults 5 and 200 ms: about 1 s).
	BurstCount    int
	BurstInterval time.Duration
	// StrictARP sets arp_ignore=1 and arp_announce=2 on each interface the
	// responder opens: a VIP that is also a local address of the node (a
	// local VIP on the dummy interface) must not be answered by the kernel
	// on every node, only by its owner through the responder.
	StrictARP bool
	// OnLinkUp is called when an interface whose link went down is up
	// again (the announcer re-warms its member machine then).
	OnLinkUp func(iface string)
	// OnClaim is called, from an interface's receive loop, for each frame
	// seen there that binds a VIP this node answers for or is fenced from
	// to another MAC (claim.go): the split-brain fencing input.
	OnClaim func(iface string, vip netip.Addr, ours, theirs net.HardwareAddr)
	// ProbeInterval is how often a fenced VIP is probed for (default
	// 100 ms, the default heartbeat interval: well within the hold time).
	ProbeInterval time.Duration
}

// Responder answers ARP requests and Neighbor Solicitations for the VIPs
// this node owns, per interface, through packet sockets, and announces a VIP
// with a burst of gratuitous ARP / unsolicited NA when it is taken over.
type Responder struct {
	cfg ResponderConfig
	log *slog.Logger

	mu     sync.Mutex
	ifaces map[string]*ifaceSock
	strict map[string]bool // interfaces made strict-ARP
	// past holds the counts of interfaces closed since, so counters stay
	// monotonic when an interface stops and starts answering.
	past   map[string]Stats
	closed bool
}

// Stats counts one interface's work.
type Stats struct {
	ARPReplies, NAReplies, Announcements, Malformed, NotOwned uint64
	// Claims counts frames from another MAC claiming a VIP answered or
	// fenced here; Probes the probes sent for fenced VIPs.
	Claims, Probes uint64
}

type ifaceSock struct {
	r     *Responder
	name  string
	index int
	mac   net.HardwareAddr
	arp   *os.File
	nd    *os.File
	mc    *ipv6.PacketConn // holds the solicited-node group memberships
	// owned is the set of VIPs answered on this interface; replaced whole
	// by Set, read lock-free by the receive loops.
	owned atomic.Pointer[map[netip.Addr]bool]
	// fenced is the set of VIPs this node owns but lost in a conflict: not
	// answered, probed for, claims about them reported.
	fenced atomic.Pointer[map[netip.Addr]bool]
	groups map[netip.Addr]int // solicited-node group -> VIPs needing it
	down   atomic.Bool        // a watchUp is running
	closed atomic.Bool
	wg     sync.WaitGroup

	arpReplies, naReplies, announcements, malformed, notOwned, claims, probes atomic.Uint64
}

// NewResponder returns a responder with no interface open yet.
func NewResponder(cfg ResponderConfig) *Responder {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BurstCount == 0 {
		cfg.BurstCount = 5
	}
	if cfg.BurstInterval == 0 {
		cfg.BurstInterval = 200 * time.Millisecond
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 100 * time.Millisecond
	}
	return &Responder{cfg: cfg, log: cfg.Logger, ifaces: map[string]*ifaceSock{}, strict: map[string]bool{}, past: map[string]Stats{}}
}

// Set replaces what is answered: for each VIP, the interfaces it is answered
// on. A (VIP, interface) pair that is new gets a gratuitous burst; one that
// is gone stops being answered at once. Interfaces no longer needed are
// closed. Errors (an interface missing) are returned joined; the other
// interfaces are served regardless.
func (r *Responder) Set(owned map[netip.Addr][]string) error { return r.Update(owned, nil) }

// Update is Set with the fenced VIPs too (each with its interfaces): not
// answered, but watched for claims and probed for, so the fence lasts as
// long as the winner answers.
func (r *Responder) Update(owned, fenced map[netip.Addr][]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("l2: responder closed")
	}
	per, perFenced := byIface(owned), byIface(fenced)
	for name := range perFenced {
		if per[name] == nil {
			per[name] = map[netip.Addr]bool{}
		}
	}
	var errs []error
	for name, s := range r.ifaces {
		if per[name] == nil {
			s.close()
			delete(r.ifaces, name)
		}
	}
	for name, set := range per {
		s := r.ifaces[name]
		if s == nil {
			var err error
			if s, err = r.open(name); err != nil {
				errs = append(errs, err)
				continue
			}
			r.ifaces[name] = s
		}
		f := perFenced[name]
		if f == nil {
			f = map[netip.Addr]bool{}
		}
		s.fenced.Store(&f)
		s.set(set)
	}
	return errors.Join(errs...)
}

func byIface(vips map[netip.Addr][]string) map[string]map[netip.Addr]bool {
	per := map[string]map[netip.Addr]bool{}
	for v, ifs := range vips {
		for _, name := range ifs {
			if per[name] == nil {
				per[name] = map[netip.Addr]bool{}
			}
			per[name][v.Unmap()] = true
		}
	}
	return per
}

// Announce sends a gratuitous burst again for those of vips answered on
// each interface (a VIP kept in a split-brain conflict: caches that
// followed the loser's announcement come back).
func (r *Responder) Announce(vips []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.ifaces {
		owned := *s.owned.Load()
		var mine []netip.Addr
		for _, v := range vips {
			if owned[v.Unmap()] {
				mine = append(mine, v.Unmap())
			}
		}
		if len(mine) > 0 {
			s.announce(mine)
		}
	}
}

// Stats returns per-interface counters.
func (r *Responder) Stats() map[string]Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]Stats{}
	for name, st := range r.past {
		m[name] = st
	}
	for name, s := range r.ifaces {
		m[name] = m[name].add(s.stats())
	}
	return m
}

// Close stops answering on every interface.
func (r *Responder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for name, s := range r.ifaces {
		s.close()
		delete(r.ifaces, name)
	}
	return nil
}

func (r *Responder) open(name string) (*ifaceSock, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("l2: interface %s: %w", name, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("l2: interface %s has no Ethernet address", name)
	}
	if err := r.strictLocked(name); err != nil {
		return nil, err
	}
	s := &ifaceSock{r: r, name: name, index: ifi.Index, mac: ifi.HardwareAddr, groups: map[netip.Addr]int{}}
	empty, noneFenced := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	s.owned.Store(&empty)
	s.fenced.Store(&noneFenced)
	if s.arp, err = packetSocket(ifi, etherARP, nil); err != nil {
		return nil, err
	}
	// Only Neighbor Solicitations (questions) and Advertisements (claims,
	// for fencing) reach the NDP socket, not every IPv6 frame.
	nsOrNA := []bpf.Instruction{
		bpf.LoadAbsolute{Off: ethLen + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 4},
		bpf.LoadAbsolute{Off: ethLen + ipv6Len, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpNS, SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: icmpNA, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
	if s.nd, err = packetSocket(ifi, etherIPv6, nsOrNA); err != nil {
		s.arp.Close()
		return nil, err
	}
	if c, err := net.ListenPacket("udp6", "[::]:0"); err != nil {
		r.log.Warn("l2: no IPv6 socket for solicited-node groups; NDP only where the switch floods", "interface", name, "err", err)
	} else {
		s.mc = ipv6.NewPacketConn(c)
	}
	s.wg.Add(3)
	go s.loop(s.arp, s.answerARP)
	go s.loop(s.nd, s.answerNS)
	go s.probeLoop()
	r.log.Info("l2: answering on interface", "interface", name, "mac", s.mac.String())
	return s, nil
}

// Prepare readies interfaces that may answer later: with StrictARP, the
// kernel must stop answering ARP for local VIPs on every node that may own
// them, not only on the owner (the others never open a socket).
func (r *Responder) Prepare(names []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, n := range names {
		errs = append(errs, r.strictLocked(n))
	}
	return errors.Join(errs...)
}

func (r *Responder) strictLocked(name string) error {
	if !r.cfg.StrictARP || r.strict[name] {
		return nil
	}
	for _, kv := range [][2]string{{"arp_ignore", "1"}, {"arp_announce", "2"}} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/"+kv[0], []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("l2: interface %s: set %s: %w", name, kv[0], err)
		}
	}
	r.strict[name] = true
	r.log.Info("l2: strict ARP on interface (arp_ignore=1, arp_announce=2)", "interface", name)
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func packetSocket(ifi *net.Interface, proto uint16, filter []bpf.Instruction) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(proto)))
	if err != nil {
		return nil, fmt.Errorf("l2: packet socket on %s: %w", ifi.Name, err)
	}
	if filter != nil {
		raw, err := bpf.Assemble(filter)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("l2: assemble filter: %w", err)
		}
		ins := make([]unix.SockFilter, len(raw))
		for i, r := range raw {
			ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("l2: attach filter on %s: %w", ifi.Name, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("l2: bind packet socket to %s: %w", ifi.Name, err)
	}
	// Non-blocking and wrapped in an os.File, reads go through the runtime
	// poller and Close unblocks them.
	return os.NewFile(uintptr(fd), fmt.Sprintf("packet:%s:%#04x", ifi.Name, proto)), nil
}

func (s *ifaceSock) loop(f *os.File, answer func([]byte)) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := f.Read(buf)
		if errors.Is(err, syscall.ENETDOWN) {
			// Reported once when the link goes down; the socket receives
			// again when it comes back up.
			s.r.log.Info("l2: interface down", "interface", s.name)
			s.watchUp()
			continue
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				s.r.log.Warn("l2: read", "interface", s.name, "err", err)
			}
			return
		}
		answer(buf[:n])
	}
}

// watchUp waits (once per outage) for the link to come back and reports it.
func (s *ifaceSock) watchUp() {
	if !s.down.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.down.Store(false)
		for {
			if s.closed.Load() {
				return
			}
			ifi, err := net.InterfaceByIndex(s.index)
			if err == nil && ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagRunning != 0 {
				s.r.log.Info("l2: interface up again", "interface", s.name)
				if s.r.cfg.OnLinkUp != nil {
					s.r.cfg.OnLinkUp(s.name)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

// checkClaim reports a frame from another MAC binding a VIP answered or
// fenced here.
func (s *ifaceSock) checkClaim(f []byte) {
	c, err := ParseClaim(f)
	if err != nil || bytes.Equal(c.MAC, s.mac) {
		return
	}
	if !(*s.owned.Load())[c.Addr] && !(*s.fenced.Load())[c.Addr] {
		return
	}
	s.claims.Add(1)
	if s.r.cfg.OnClaim != nil {
		s.r.cfg.OnClaim(s.name, c.Addr, s.mac, c.MAC)
	}
}

// probeLoop asks for each fenced VIP every ProbeInterval: the winner's
// answers are claims that hold the fence; when nobody answers any more
// (the winner died or released the VIP), the fence expires.
func (s *ifaceSock) probeLoop() {
	defer s.wg.Done()
	tk := time.NewTicker(s.r.cfg.ProbeInterval)
	defer tk.Stop()
	for range tk.C {
		if s.closed.Load() {
			return
		}
		for v := range *s.fenced.Load() {
			var f []byte
			var out *os.File
			if v.Is4() {
				f, out = ARPProbe(v, s.mac), s.arp
			} else {
				f, out = NSProbe(v, s.mac), s.nd
			}
			if _, err := out.Write(f); err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				s.r.log.Debug("l2: send probe", "interface", s.name, "vip", v, "err", err)
				continue
			}
			s.probes.Add(1)
		}
	}
}

func (s *ifaceSock) answerARP(f []byte) {
	if len(f) >= 12 && bytes.Equal(f[6:12], s.mac) {
		return
	}
	s.checkClaim(f)
	q, err := ParseARP(f)
	switch {
	case errors.Is(err, ErrNotOurs):
		return
	case err != nil:
		s.malformed.Add(1)
		return
	case q.Gratuitous || !(*s.owned.Load())[q.Target]:
		s.notOwned.Add(1)
		return
	}
	if _, err := s.arp.Write(ARPReply(q, q.Target, s.mac)); err != nil {
		s.r.log.Warn("l2: send ARP reply", "interface", s.name, "vip", q.Target, "err", err)
		return
	}
	s.arpReplies.Add(1)
}

func (s *ifaceSock) answerNS(f []byte) {
	if len(f) >= 12 && bytes.Equal(f[6:12], s.mac) {
		return // our own NA or probe, looped back to the packet socket
	}
	s.checkClaim(f)
	q, err := ParseNS(f)
	switch {
	case errors.Is(err, ErrNotOurs):
		return
	case err != nil:
		s.malformed.Add(1)
		return
	case !(*s.owned.Load())[q.Target]:
		s.notOwned.Add(1)
		return
	}
	if _, err := s.nd.Write(NeighborAdvert(&q, q.Target, s.mac)); err != nil {
		s.r.log.Warn("l2: send Neighbor Advertisement", "interface", s.name, "vip", q.Target, "err", err)
		return
	}
	s.naReplies.Add(1)
}

// set replaces the VIPs answered here, joins and leaves solicited-node
// groups, and starts a burst for each VIP taken over.
func (s *ifaceSock) set(want map[netip.Addr]bool) {
	old := *s.owned.Load()
	next := make(map[netip.Addr]bool, len(want))
	for v := range want {
		next[v] = true
	}
	s.owned.Store(&next) // from here, removed VIPs are no longer answered
	var added []netip.Addr
	for v := range next {
		if !old[v] {
			added = append(added, v)
			if v.Is6() {
				s.group(v, +1)
			}
		}
	}
	for v := range old {
		if !next[v] && v.Is6() {
			s.group(v, -1)
		}
	}
	slices.SortFunc(added, netip.Addr.Compare)
	if len(added) > 0 {
		s.announce(added)
	}
}

func (s *ifaceSock) group(v netip.Addr, delta int) {
	g := SolicitedNode(v)
	before := s.groups[g]
	s.groups[g] += delta
	if s.groups[g] <= 0 {
		delete(s.groups, g)
	}
	if s.mc == nil {
		return
	}
	ifi := &net.Interface{Index: s.index, Name: s.name}
	addr := &net.UDPAddr{IP: g.AsSlice()}
	switch {
	case before == 0 && delta > 0:
		if err := s.mc.JoinGroup(ifi, addr); err != nil {
			s.r.log.Warn("l2: join solicited-node group", "interface", s.name, "group", g, "err", err)
		}
	case before+delta <= 0 && before > 0:
		if err := s.mc.LeaveGroup(ifi, addr); err != nil {
			s.r.log.Debug("l2: leave solicited-node group", "interface", s.name, "group", g, "err", err)
		}
	}
}

// announce sends the first frame of a burst for vips at once, in the
// caller, and starts the rest. The first frame is written before set (or
// Announce) returns on purpose: the announcer publishes a VIP as owned
// (Announced, which the N2 takeover's gate reads) only after its Update
// returned, so "owned here" always means the segment has been told.
func (s *ifaceSock) announce(vips []netip.Addr) {
	if !s.announceOnce(vips) || s.r.cfg.BurstCount <= 1 {
		return
	}
	s.wg.Add(1)
	go s.burst(vips)
}

// burst sends the rest of a burst (BurstCount-1 frames per VIP after the
// first, BurstInterval apart); a VIP lost meanwhile is not announced again.
func (s *ifaceSock) burst(vips []netip.Addr) {
	defer s.wg.Done()
	for i := 1; i < s.r.cfg.BurstCount; i++ {
		time.Sleep(s.r.cfg.BurstInterval)
		if !s.announceOnce(vips) {
			return
		}
	}
}

// announceOnce writes one gratuitous ARP / unsolicited NA per VIP of vips
// still owned; false when the interface's sockets are closed.
func (s *ifaceSock) announceOnce(vips []netip.Addr) bool {
	owned := *s.owned.Load()
	for _, v := range vips {
		if !owned[v] {
			continue
		}
		var f []byte
		var out *os.File
		if v.Is4() {
			f, out = GratuitousARP(v, s.mac), s.arp
		} else {
			f, out = NeighborAdvert(nil, v, s.mac), s.nd
		}
		if _, err := out.Write(f); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return false
			}
			s.r.log.Warn("l2: send announcement", "interface", s.name, "vip", v, "err", err)
			continue
		}
		s.announcements.Add(1)
	}
	return true
}

func (a Stats) add(b Stats) Stats {
	return Stats{ARPReplies: a.ARPReplies + b.ARPReplies, NAReplies: a.NAReplies + b.NAReplies,
		Announcements: a.Announcements + b.Announcements, Malformed: a.Malformed + b.Malformed, NotOwned: a.NotOwned + b.NotOwned,
		Claims: a.Claims + b.Claims, Probes: a.Probes + b.Probes}
}

func (s *ifaceSock) stats() Stats {
	return Stats{ARPReplies: s.arpReplies.Load(), NAReplies: s.naReplies.Load(), Announcements: s.announcements.Load(),
		Malformed: s.malformed.Load(), NotOwned: s.notOwned.Load(), Claims: s.claims.Load(), Probes: s.probes.Load()}
}

func (s *ifaceSock) close() {
	defer func() { s.r.past[s.name] = s.r.past[s.name].add(s.stats()) }()
	s.closed.Store(true)
	empty := map[netip.Addr]bool{}
	s.owned.Store(&empty)
	s.fenced.Store(&empty)
	s.arp.Close()
	s.nd.Close()
	if s.mc != nil {
		s.mc.Close()
	}
	s.wg.Wait()
	s.r.log.Info("l2: stopped answering on interface", "interface", s.name)
}
