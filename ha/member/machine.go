// Package member decides which node of an L2 group owns each VIP. It is a
// pure state machine (heartbeats and clock readings in; heartbeats to send,
// a wake-up time and liveness / ownership changes out; no I/O), like
// sctplb/steer, with a thin UDP shell in shell.go.
//
// Liveness: every member sends a heartbeat to every other member each
// interval (default 100 ms); a member not heard for DetectMultiplier
// (default 3) of its intervals is dead. Heartbeats carry the sender's
// incarnation (new at every process start), so a restarted member is seen
// as such even when it comes back within the detection time.
//
// Ownership: the owner of a VIP is, among the eligible members, the one with
// the highest rendezvous hash of (member name, VIP). Eligible means alive and
// ready. A member is not ready during its warm-up: after it starts (and
// after Rewarm: its link came back) it claims nothing until it has heard
// every other member or a detection time has passed. Without the warm-up a
// restarting node, which has not yet heard anybody, would briefly believe
// it owns every VIP and take them over with gratuitous ARP.
//
// Running late (a loaded machine, SIGSTOP, a frozen VM: a step after the
// wake-up asked for) is not a restart: the time a member did not run is
// not counted against the others (it could not read their heartbeats), it
// keeps its own VIPs, and if its heartbeats stopped long enough for the
// others to take its VIPs it tells them at once and announces the VIPs
// again (advance).
//
// Split brain: members that cannot hear each other each compute ownership
// over the members they see, so a VIP can have an owner on both sides.
// Claims seen on the clients' segment fence all but one of them (Claim,
// fence.go); doc.go has the reasoning and the cases.
package member

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Defaults from api.L2Config.
const (
	DefaultInterval         = 100 * time.Millisecond
	DefaultDetectMultiplier = 3
)

// Config is one member's view of its group.
type Config struct {
	// Self is this node's name; it must be one of Members.
	Self string
	// Members are the names of every node of the group, Self included.
	Members []string
	// Interval is how often heartbeats are sent (DefaultInterval if zero).
	Interval time.Duration
	// DetectMultiplier is how many intervals without a heartbeat make a
	// member dead (DefaultDetectMultiplier if zero).
	DetectMultiplier int
	// FenceHold is how long a VIP lost in a conflict stays fenced after the
	// last conflicting claim (DefaultFenceHoldIntervals intervals if zero;
	// see fence.go).
	FenceHold time.Duration
}

// Output is what a step asks the shell to do.
type Output struct {
	// Heartbeat, when not nil, is to be sent to every other member.
	Heartbeat []byte
	// Wake is when Tick must be called next at the latest.
	Wake time.Time
	// Liveness lists the members whose liveness or readiness changed.
	Liveness []LivenessChange
	// Ownership lists the VIPs whose owner changed (added VIPs have Old "",
	// removed ones New "").
	Ownership []OwnershipChange
	// Fencing lists the VIPs fenced or released from a fence (fence.go).
	Fencing []FenceChange
	// Announce lists VIPs this node answers for and must announce again (a
	// gratuitous burst) because another node may have announced them
	// meanwhile: VIPs kept in a conflict (caches that followed the loser come
	// back), and every VIP owned here when this node's heartbeats stopped
	// for long enough that the others may have taken them over (it ran
	// late: see advance), so caches that followed the others come back.
	Announce []netip.Addr
}

// LivenessChange is one member's new state.
type LivenessChange struct {
	Member string
	Alive  bool
	Ready  bool
	// Reason: "heard", "timeout", "restarted", "ready", "not ready";
	// for self "ready", "leaving", "rewarm".
	Reason string
}

// OwnershipChange is one VIP's new owner.
type OwnershipChange struct {
	VIP      netip.Addr
	Old, New string
}

// MemberState is one member as this node sees it.
type MemberState struct {
	Name        string
	Self        bool
	Alive       bool
	Ready       bool
	Incarnation uint64
	LastHeard   time.Time
}

// Stats counts received packets that were not used.
type Stats struct {
	Malformed, UnknownMember, Stale, FromSelf uint64
	// Conflicts counts claims by another identity for a VIP this node
	// owned, confirmed after the settle time; ClaimsIgnored claims for VIPs
	// it does not own (their owner announcing them) or by itself.
	Conflicts, ClaimsIgnored uint64
}

type peer struct {
	name        string
	heard       bool // heard at least once in this incarnation of ours
	alive       bool
	ready       bool
	incarnation uint64
	seq         uint64
	lastHeard   time.Time
	detect      time.Duration
	// expires is when the member is dead unless heard: lastHeard + detect,
	// pushed back by the time this node ran late since (advance).
	expires time.Time
}

// Machine is one member's state. It is not safe for concurrent use.
type Machine struct {
	self        string
	interval    time.Duration
	mult        int
	hold        time.Duration
	incarnation uint64
	seq         uint64

	started   bool
	leaving   bool // Leave was called: never ready again
	ready     bool
	warmUntil time.Time
	lastStep  time.Time
	nextSend  time.Time
	// wake is the last Output.Wake: a step after it ran late by the
	// difference. lastSent is when the last heartbeat was sent.
	wake     time.Time
	lastSent time.Time

	peers  []*peer // sorted by name
	vips   map[netip.Addr]string
	owners map[netip.Addr]string // scratch for recompute
	fences map[netip.Addr]*fenceState
	stats  Stats
}

// New builds a machine. incarnation must differ at every process start
// (the shell uses the start time in nanoseconds).
func New(cfg Config, incarnation uint64) (*Machine, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DetectMultiplier == 0 {
		cfg.DetectMultiplier = DefaultDetectMultiplier
	}
	if cfg.Interval < time.Millisecond || cfg.Interval > 65535*time.Millisecond {
		return nil, fmt.Errorf("member: interval %v out of range 1ms..65.535s", cfg.Interval)
	}
	if cfg.DetectMultiplier < 1 || cfg.DetectMultiplier > 255 {
		return nil, fmt.Errorf("member: detect multiplier %d out of range 1..255", cfg.DetectMultiplier)
	}
	if cfg.FenceHold == 0 {
		cfg.FenceHold = DefaultFenceHoldIntervals * cfg.Interval
	}
	if cfg.FenceHold < 2*cfg.Interval {
		// Shorter than two probes, one lost answer would end the fence.
		return nil, fmt.Errorf("member: fence hold %v shorter than two intervals (%v)", cfg.FenceHold, 2*cfg.Interval)
	}
	if cfg.Self == "" || len(cfg.Self) > maxNameLen {
		return nil, fmt.Errorf("member: self name %q: want 1..%d bytes", cfg.Self, maxNameLen)
	}
	m := &Machine{
		self: cfg.Self, interval: cfg.Interval, mult: cfg.DetectMultiplier, hold: cfg.FenceHold, incarnation: incarnation,
		vips: map[netip.Addr]string{}, owners: map[netip.Addr]string{}, fences: map[netip.Addr]*fenceState{},
	}
	seen := map[string]bool{}
	for _, name := range cfg.Members {
		if name == "" || len(name) > maxNameLen {
			return nil, fmt.Errorf("member: member name %q: want 1..%d bytes", name, maxNameLen)
		}
		if seen[name] {
			return nil, fmt.Errorf("member: member %q listed twice", name)
		}
		seen[name] = true
		if name != cfg.Self {
			m.peers = append(m.peers, &peer{name: name, detect: m.detectTime()})
		}
	}
	if !seen[cfg.Self] {
		return nil, errors.New("member: self " + cfg.Self + " is not among the members")
	}
	slices.SortFunc(m.peers, func(a, b *peer) int { return cmpString(a.name, b.name) })
	return m, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Machine) detectTime() time.Duration { return time.Duration(m.mult) * m.interval }

// Start begins the warm-up and sends the first heartbeat.
func (m *Machine) Start(now time.Time) Output {
	var out Output
	m.started = true
	m.lastStep = now
	m.enterWarmUp(now)
	m.nextSend = now
	m.finish(now, &out)
	return out
}

func (m *Machine) enterWarmUp(now time.Time) {
	m.ready = false
	m.warmUntil = now.Add(m.detectTime())
	for _, p := range m.peers {
		p.heard = false
	}
}

// Leave gives up every VIP and returns a last heartbeat saying so (not
// ready), for the shell to send before it stops: the others take this
// node's VIPs over at once instead of after the detection time (graceful
// stop, drain).
func (m *Machine) Leave(now time.Time) Output {
	var out Output
	if !m.started {
		return out
	}
	m.advance(now, &out)
	if m.ready {
		out.Liveness = append(out.Liveness, LivenessChange{Member: m.self, Alive: true, Reason: "leaving"})
	}
	m.ready, m.leaving = false, true
	m.nextSend = now
	m.finish(now, &out)
	return out
}

// Rewarm makes this node give up its VIPs and warm up again, as after a
// suspension: the shell calls it when the node was cut off (its link came
// back up), so it does not reclaim, from a view built while it heard nobody,
// VIPs the others took over meanwhile.
func (m *Machine) Rewarm(now time.Time) Output {
	var out Output
	if !m.started {
		return out
	}
	m.advance(now, &out)
	if m.ready {
		out.Liveness = append(out.Liveness, LivenessChange{Member: m.self, Alive: true, Reason: "rewarm"})
	}
	m.enterWarmUp(now)
	m.nextSend = now
	m.finish(now, &out)
	return out
}

// Tick processes timer expiries.
func (m *Machine) Tick(now time.Time) Output {
	var out Output
	if !m.started {
		return out
	}
	m.advance(now, &out)
	m.finish(now, &out)
	return out
}

// ReceivePacket processes one received heartbeat packet. Malformed packets
// and packets from unknown members are counted and otherwise ignored.
func (m *Machine) ReceivePacket(now time.Time, b []byte) Output {
	hb, err := Unmarshal(b)
	if err != nil {
		m.stats.Malformed++
		return m.Tick(now)
	}
	return m.Receive(now, hb)
}

// Receive processes one decoded heartbeat.
func (m *Machine) Receive(now time.Time, hb Heartbeat) Output {
	var out Output
	if !m.started {
		return out
	}
	m.advance(now, &out)
	m.receive(now, hb, &out)
	m.finish(now, &out)
	return out
}

// SetVIPs replaces the set of VIPs whose owner is decided.
func (m *Machine) SetVIPs(now time.Time, vips []netip.Addr) Output {
	var out Output
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		want[v.Unmap()] = true
	}
	for v := range m.vips {
		if !want[v] {
			out.Ownership = append(out.Ownership, OwnershipChange{VIP: v, Old: m.vips[v]})
			delete(m.vips, v)
		}
	}
	for v := range want {
		if _, ok := m.vips[v]; !ok {
			m.vips[v] = ""
		}
	}
	if m.started {
		m.advance(now, &out)
	}
	m.finish(now, &out)
	return out
}

func (m *Machine) receive(now time.Time, hb Heartbeat, out *Output) {
	if hb.Name == m.self {
		m.stats.FromSelf++
		return
	}
	p := m.peer(hb.Name)
	if p == nil {
		m.stats.UnknownMember++
		return
	}
	switch {
	case p.incarnation != 0 && hb.Incarnation < p.incarnation:
		m.stats.Stale++
		return
	case p.incarnation != 0 && hb.Incarnation == p.incarnation && hb.Seq <= p.seq:
		m.stats.Stale++
		return
	}
	reason := "heard"
	if p.incarnation != 0 && hb.Incarnation != p.incarnation {
		reason = "restarted"
	}
	wasAlive, wasReady := p.alive, p.ready
	p.incarnation, p.seq = hb.Incarnation, hb.Seq
	p.heard, p.alive, p.ready = true, true, hb.Ready
	p.lastHeard = now
	p.detect = m.detectTime()
	if adv := time.Duration(hb.IntervalMs) * time.Millisecond * time.Duration(m.mult); adv > p.detect {
		// A slower peer is judged by its own interval, not ours.
		p.detect = adv
	}
	p.expires = now.Add(p.detect)
	switch {
	case reason == "restarted" || !wasAlive:
		out.Liveness = append(out.Liveness, LivenessChange{Member: p.name, Alive: true, Ready: p.ready, Reason: reason})
	case wasReady != p.ready:
		r := "ready"
		if !p.ready {
			r = "not ready"
		}
		out.Liveness = append(out.Liveness, LivenessChange{Member: p.name, Alive: true, Ready: p.ready, Reason: r})
	}
}

// advance applies what the passage of time implies: peers timing out,
// heartbeats due.
//
// A step later than the wake-up asked for means this node did not run as
// scheduled: a loaded machine (the process or its goroutine waited for a
// CPU), or a suspension (SIGSTOP, a frozen VM). While it did not run it
// did not read its socket either, so the peers' heartbeats of that time
// may still be unread (the shell reads packets and the timer in different
// goroutines; a frozen VM may have lost them): the time it ran late is not
// counted against the peers (their expiry moves back by it). A node that
// did not run cannot have heard anybody; judging the peers dead for it
// would claim their VIPs from a stale view, and on a loaded machine make
// the VIPs flap between nodes that are all alive. The peers are still
// timed out by the time this node did run: a peer dead meanwhile is
// noticed at most a detection time after this node runs again.
//
// What this node keeps: its own VIPs. It stays ready; if it was silent
// long enough for the others to have taken its VIPs over, finish sends a
// heartbeat at once (they hand the VIPs back on it, as for any member
// coming back) and asks for the VIPs to be announced again. (Until issue
// 15's session 14 a step more than a detection time late made the node
// warm up again, not ready: it released every VIP with a "not ready"
// heartbeat, which made the others take them over, then claimed them back
// on hearing them: every stall of a loaded machine moved the VIPs twice.)
func (m *Machine) advance(now time.Time, out *Output) {
	if now.Before(m.lastStep) {
		// The shell uses a monotonic clock; a step back is ignored rather
		// than trusted, so timers never run backwards.
		now = m.lastStep
	}
	if late := now.Sub(m.wake); !m.wake.IsZero() && late > 0 {
		for _, p := range m.peers {
			if p.alive {
				p.expires = p.expires.Add(late)
			}
		}
		// Only once per lateness: the next step is late only after the
		// next wake-up.
		m.wake = now
	}
	if now.Sub(m.lastSent) >= m.silentTakeover() && m.ready {
		m.nextSend = now // tell the others at once
	}
	m.lastStep = now
	for _, p := range m.peers {
		if p.alive && !now.Before(p.expires) {
			p.alive, p.ready = false, false
			out.Liveness = append(out.Liveness, LivenessChange{Member: p.name, Reason: "timeout"})
		}
	}
}

// silentTakeover is how long this node's heartbeats may stop before the
// others may have declared it dead (their detection time for it, less half
// an interval for the network's jitter, at least an interval and a half).
func (m *Machine) silentTakeover() time.Duration {
	return max(m.detectTime()-m.interval/2, m.interval+m.interval/2)
}

// finish ends a step: readiness, ownership, heartbeat and wake-up.
func (m *Machine) finish(now time.Time, out *Output) {
	if now.After(m.lastStep) {
		m.lastStep = now
	}
	if m.started && !m.ready && !m.leaving && (!now.Before(m.warmUntil) || m.heardAll()) {
		m.ready = true
		out.Liveness = append(out.Liveness, LivenessChange{Member: m.self, Alive: true, Ready: true, Reason: "ready"})
		m.nextSend = now // tell the others at once
	}
	m.recompute(out)
	m.fenceStep(now, out)
	if m.started && !now.Before(m.nextSend) {
		if m.ready && !m.lastSent.IsZero() && now.Sub(m.lastSent) >= m.silentTakeover() {
			// The others may have taken our VIPs over while we were silent
			// (and announced them): they hand them back on this heartbeat;
			// announce them again so the segment's caches follow.
			for _, v := range m.Owned() {
				if !slices.Contains(out.Announce, v) {
					out.Announce = append(out.Announce, v)
				}
			}
		}
		out.Heartbeat = m.heartbeat()
		m.nextSend = now.Add(m.interval)
		m.lastSent = now
	}
	if m.started {
		out.Wake = m.nextSend
		if !m.ready && !m.leaving && m.warmUntil.Before(out.Wake) {
			out.Wake = m.warmUntil
		}
		for _, p := range m.peers {
			if p.alive && p.expires.Before(out.Wake) {
				out.Wake = p.expires
			}
		}
		for _, f := range m.fences {
			if !f.until.IsZero() && f.until.Before(out.Wake) {
				out.Wake = f.until
			}
		}
		m.wake = out.Wake
	}
}

func (m *Machine) heardAll() bool {
	for _, p := range m.peers {
		if !p.heard {
			return false
		}
	}
	return true
}

func (m *Machine) heartbeat() []byte {
	m.seq++
	b, err := Heartbeat{
		Version: codecVersion, Ready: m.ready, IntervalMs: uint16(m.interval / time.Millisecond),
		Incarnation: m.incarnation, Seq: m.seq, Name: m.self,
	}.Marshal(make([]byte, 0, headerLen+len(m.self)))
	if err != nil {
		// New checked the name's length: this cannot happen.
		panic(err)
	}
	return b
}

func (m *Machine) eligible() []string {
	var e []string
	if m.ready {
		e = append(e, m.self)
	}
	for _, p := range m.peers {
		if p.alive && p.ready {
			e = append(e, p.name)
		}
	}
	return e
}

func (m *Machine) recompute(out *Output) {
	el := m.eligible()
	for v, old := range m.vips {
		n := pickOwner(el, v)
		if n != old {
			m.vips[v] = n
			out.Ownership = append(out.Ownership, OwnershipChange{VIP: v, Old: old, New: n})
		}
	}
	slices.SortFunc(out.Ownership, func(a, b OwnershipChange) int { return a.VIP.Compare(b.VIP) })
}

func (m *Machine) peer(name string) *peer {
	i, ok := slices.BinarySearchFunc(m.peers, name, func(p *peer, n string) int { return cmpString(p.name, n) })
	if !ok {
		return nil
	}
	return m.peers[i]
}

// Self is this node's name.
func (m *Machine) Self() string { return m.self }

// Ready reports whether this node has finished its warm-up.
func (m *Machine) Ready() bool { return m.ready }

// Owner returns the owner of vip as this node sees it ("" when no member is
// eligible or vip is not in the set).
func (m *Machine) Owner(vip netip.Addr) string { return m.vips[vip.Unmap()] }

// Owners returns every VIP with its owner.
func (m *Machine) Owners() map[netip.Addr]string {
	r := make(map[netip.Addr]string, len(m.vips))
	for v, o := range m.vips {
		r[v] = o
	}
	return r
}

// Owned returns the VIPs this node owns and answers for (not fenced), sorted.
func (m *Machine) Owned() []netip.Addr {
	var r []netip.Addr
	for v, o := range m.vips {
		if o == m.self && !m.fenced(v) {
			r = append(r, v)
		}
	}
	slices.SortFunc(r, netip.Addr.Compare)
	return r
}

// Members returns every member's state, self first.
func (m *Machine) Members() []MemberState {
	r := []MemberState{{Name: m.self, Self: true, Alive: true, Ready: m.ready, Incarnation: m.incarnation}}
	for _, p := range m.peers {
		r = append(r, MemberState{Name: p.name, Alive: p.alive, Ready: p.ready, Incarnation: p.incarnation, LastHeard: p.lastHeard})
	}
	return r
}

// Stats returns the counts of unused packets.
func (m *Machine) Stats() Stats { return m.stats }
