package member

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// sim runs a group of machines over a simulated network in 1 ms steps of
// virtual time: heartbeats take latency to arrive; links can be cut one way;
// a node can be frozen (its packets wait in its socket buffer, as with
// SIGSTOP), killed, or restarted with a new incarnation.
//
// All nodes also share the clients' segment (unless offSeg), where claims
// are visible whatever happens to the heartbeats, as the shell in ha/l2
// sees them: a node announces a VIP it starts answering for (and one Announce
// asks for) with a burst of 5 claims 200 ms apart, probes each fenced VIP
// every interval, and answers a probe for a VIP it answers for with a claim.
// Every other running node on the segment sees each claim after latency.
type sim struct {
	t       *testing.T
	now     time.Time
	names   []string
	nodes   map[string]*simNode
	vips    []netip.Addr
	latency time.Duration
	cut     map[[2]string]bool // [from, to]
	queue   []simPkt
	// dropFrozen loses the packets sent to a frozen node (its socket
	// buffer overflowed) instead of queueing them.
	dropFrozen bool
	// dualMs counts the ms in which some VIP was claimed by two nodes.
	dualMs int
	// darkMs counts the ms in which some VIP was claimed by nobody.
	darkMs int
	offSeg map[string]bool // nodes cut off from the clients' segment
	frames []simFrame
}

// simFrame is a claim (or, probe set, a probe) on the segment.
type simFrame struct {
	at    time.Time
	from  string
	vip   netip.Addr
	probe bool
}

func mac(name string) string { return "mac-" + name }

type simNode struct {
	m      *Machine
	wake   time.Time
	frozen bool
	dead   bool
	inc    uint64
	bursts map[netip.Addr]simBurst
	probe  time.Time // next probe of the fenced VIPs
	moves  int       // ownership changes this node's machine reported
}

type simBurst struct {
	left int
	next time.Time
}

type simPkt struct {
	at   time.Time
	to   string
	data []byte
}

func newSim(t *testing.T, names []string, nVIPs int) *sim {
	s := &sim{t: t, now: t0, names: names, nodes: map[string]*simNode{}, vips: vips(nVIPs), latency: ms(1), cut: map[[2]string]bool{}, offSeg: map[string]bool{}}
	for _, n := range names {
		s.start(n)
	}
	return s
}

func (s *sim) start(name string) {
	old := s.nodes[name]
	inc := uint64(1)
	if old != nil {
		inc = old.inc + 1
	}
	m, err := New(Config{Self: name, Members: s.names}, inc)
	if err != nil {
		s.t.Fatal(err)
	}
	n := &simNode{m: m, inc: inc, bursts: map[netip.Addr]simBurst{}}
	s.nodes[name] = n
	s.step(name, func() Output { return m.SetVIPs(s.now, s.vips) })
	s.step(name, func() Output { return m.Start(s.now) })
}

func (s *sim) step(name string, f func() Output) {
	n := s.nodes[name]
	before := snap(n.m)
	owned := n.m.Owned()
	out := f()
	if msg := checkStep(n.m, before, s.now, out); msg != "" {
		s.t.Fatalf("%s at %v: invariant: %s", name, s.now.Sub(t0), msg)
	}
	if !out.Wake.IsZero() {
		n.wake = out.Wake
	}
	n.moves += len(out.Ownership)
	for _, v := range append(n.m.Owned(), out.Announce...) {
		if !slices.Contains(owned, v) || slices.Contains(out.Announce, v) {
			n.bursts[v] = simBurst{left: 5, next: s.now}
		}
	}
	if out.Heartbeat != nil {
		for _, to := range s.names {
			if to != name && !s.cut[[2]string{name, to}] {
				s.queue = append(s.queue, simPkt{at: s.now.Add(s.latency), to: to, data: out.Heartbeat})
			}
		}
	}
}

func (s *sim) run(d time.Duration) {
	end := s.now.Add(d)
	for s.now.Before(end) {
		s.now = s.now.Add(time.Millisecond)
		var keep []simPkt
		due := s.queue
		s.queue = nil
		for _, p := range due {
			n := s.nodes[p.to]
			switch {
			case n.frozen && s.dropFrozen:
			case p.at.After(s.now) || n.frozen:
				keep = append(keep, p)
			case n.dead:
			default:
				s.step(p.to, func() Output { return n.m.ReceivePacket(s.now, p.data) })
			}
		}
		s.queue = append(keep, s.queue...)
		s.segment()
		for _, name := range s.names {
			n := s.nodes[name]
			if !n.dead && !n.frozen && !s.now.Before(n.wake) {
				s.step(name, func() Output { return n.m.Tick(s.now) })
			}
		}
		if len(s.dual()) > 0 {
			s.dualMs++
		}
		if c := s.claims(); len(c) < len(s.vips) {
			s.darkMs++
		}
	}
}

// segment delivers the frames due, then has each running node send its
// bursts and probes.
func (s *sim) segment() {
	due := s.frames
	s.frames = nil
	for _, f := range due {
		if f.at.After(s.now) {
			s.frames = append(s.frames, f)
			continue
		}
		for _, to := range s.names {
			n := s.nodes[to]
			if to == f.from || n.dead || n.frozen || s.offSeg[to] {
				continue
			}
			switch {
			case !f.probe:
				s.step(to, func() Output { return n.m.Claim(s.now, f.vip, mac(to), mac(f.from)) })
			case slices.Contains(n.m.Owned(), f.vip):
				s.send(to, f.vip, false)
			}
		}
	}
	for _, name := range s.names {
		n := s.nodes[name]
		if n.dead || n.frozen || s.offSeg[name] {
			continue
		}
		owned := n.m.Owned()
		for v, b := range n.bursts {
			switch {
			case !slices.Contains(owned, v) || b.left == 0:
				delete(n.bursts, v)
			case !s.now.Before(b.next):
				s.send(name, v, false)
				n.bursts[v] = simBurst{left: b.left - 1, next: s.now.Add(ms(200))}
			}
		}
		if fenced := n.m.Fenced(); len(fenced) > 0 && !s.now.Before(n.probe) {
			for _, v := range fenced {
				s.send(name, v, true)
			}
			n.probe = s.now.Add(ms(100))
		}
	}
}

func (s *sim) send(from string, vip netip.Addr, probe bool) {
	s.frames = append(s.frames, simFrame{at: s.now.Add(s.latency), from: from, vip: vip, probe: probe})
}

// claims maps each VIP to the nodes that believe they own it.
func (s *sim) claims() map[netip.Addr][]string {
	r := map[netip.Addr][]string{}
	for _, name := range s.names {
		n := s.nodes[name]
		if n.dead || n.frozen {
			continue
		}
		for _, v := range n.m.Owned() {
			r[v] = append(r[v], name)
		}
	}
	return r
}

func (s *sim) dual() []string {
	var d []string
	for v, c := range s.claims() {
		if len(c) > 1 {
			d = append(d, fmt.Sprintf("%v:%v", v, c))
		}
	}
	slices.Sort(d)
	return d
}

// converged checks every VIP is claimed by exactly one running node, the
// rendezvous winner among want.
func (s *sim) converged(want ...string) {
	s.t.Helper()
	c := s.claims()
	for _, v := range s.vips {
		if exp := pickOwner(want, v); len(c[v]) != 1 || c[v][0] != exp {
			s.t.Fatalf("at %v: vip %v claimed by %v, want %s", s.now.Sub(t0), v, c[v], exp)
		}
	}
}

func (s *sim) cutLink(a, b string, oneWay bool) {
	s.cut[[2]string{a, b}] = true
	if !oneWay {
		s.cut[[2]string{b, a}] = true
	}
}

func TestGroupFailover(t *testing.T) {
	abc := []string{"a", "b", "c"}
	t.Run("converge", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(50))
		s.converged(abc...)
		// Started together, each becomes ready on hearing the others (not
		// yet ready) and claims everything until their ready heartbeats
		// arrive: one latency.
		if s.dualMs > 2 {
			t.Fatalf("dual ownership for %d ms during start-up", s.dualMs)
		}
	})
	t.Run("kill", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		before := s.claims()
		s.dualMs = 0
		s.nodes["a"].dead = true
		s.run(ms(401)) // dead after 3 x 100 ms without a heartbeat
		s.converged("b", "c")
		for v, c := range before {
			if c[0] != "a" && s.claims()[v][0] != c[0] {
				t.Fatalf("vip %v moved from %s although only a died", v, c[0])
			}
		}
		if s.dualMs != 0 {
			t.Fatalf("dual ownership %d ms", s.dualMs)
		}
	})
	t.Run("leave", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.dualMs = 0
		a := s.nodes["a"]
		s.step("a", func() Output { return a.m.Leave(s.now) })
		if len(a.m.Owned()) != 0 {
			t.Fatalf("leaving a still owns %v", a.m.Owned())
		}
		s.run(ms(2)) // one latency: b and c take over without a timeout
		a.dead = true
		s.converged("b", "c")
		if s.dualMs != 0 {
			t.Fatalf("dual ownership %d ms", s.dualMs)
		}
	})
	t.Run("restart", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.start("a") // kill -9 and start again within the detection time
		if own := s.nodes["a"].m.Owned(); len(own) != 0 {
			t.Fatalf("restarted a claims %v before hearing the others", own)
		}
		s.run(ms(200))
		s.converged(abc...)
		// The hand-back of a's VIPs: a claims when ready, b and c release
		// when a's ready heartbeat arrives, one latency later.
		if s.dualMs > 2 {
			t.Fatalf("dual ownership %d ms around the restart", s.dualMs)
		}
	})
	t.Run("freeze", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.nodes["a"].frozen = true
		s.run(ms(450))
		s.converged("b", "c")
		s.run(ms(2000))
		// On thawing, a first reads the heartbeats queued in its socket:
		// they show b and c alive and ready, so a's view is right at once
		// and it claims its share back; b and c release it when a's ready
		// heartbeat arrives (one latency). Without the suspension rule a
		// would tick first, declare b and c dead and claim every VIP.
		s.nodes["a"].frozen = false
		s.run(ms(300))
		s.converged(abc...)
		if s.dualMs > 2 {
			t.Fatalf("dual ownership %d ms around the freeze", s.dualMs)
		}
	})
}

// TestThawWithLostHeartbeats: a frozen node whose socket lost the others'
// heartbeats ticks first on thawing, its view 2 s old. It claims its own
// share only (the others released it on its heartbeat), never theirs, and
// announces its share again (the others took it over while it was frozen).
func TestThawWithLostHeartbeats(t *testing.T) {
	abc := []string{"a", "b", "c"}
	s := newSim(t, abc, 32)
	s.dropFrozen = true
	s.run(ms(500))
	s.nodes["a"].frozen = true
	s.run(ms(2000))
	s.dualMs = 0
	s.nodes["a"].frozen = false
	a := s.nodes["a"]
	var out Output
	s.step("a", func() Output { out = a.m.Tick(s.now); return out }) // a ticks first: its view is 2 s old
	var share []netip.Addr
	for _, v := range s.vips {
		if pickOwner(abc, v) == "a" {
			share = append(share, v)
		}
	}
	slices.SortFunc(share, netip.Addr.Compare)
	if own := a.m.Owned(); !slices.Equal(own, share) {
		t.Fatalf("thawed a claims %v, want its share %v only", own, share)
	}
	if !slices.Equal(out.Announce, share) || out.Heartbeat == nil {
		t.Fatalf("thawed a announces %v (want %v), heartbeat %v", out.Announce, share, out.Heartbeat != nil)
	}
	s.run(ms(300))
	s.converged(abc...)
	if s.dualMs > 2 {
		t.Fatalf("dual ownership %d ms after the thaw", s.dualMs)
	}
}

// TestStallsDoNotMoveVIPs: members that stop running for a while (a loaded
// machine: the process waits for a CPU; SIGSTOP) with the others'
// heartbeats waiting unread in their sockets, then tick before reading
// them (the shell's timer and its reader are separate goroutines). A stall
// of the whole group, or of one member for less than the detection time,
// moves no VIP: nobody takes another's VIPs from a view it could not
// update, nobody gives its own up. A member silent for longer than the detection time loses its
// VIPs to the others (they did not hear it) and takes them back at once
// when it runs again, announcing them. Invariants are checked after every
// step.
func TestStallsDoNotMoveVIPs(t *testing.T) {
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		stalled []string
		stall   time.Duration
		// moved: the others took the stalled member's VIPs over.
		moved bool
	}{
		// Shorter than the detection time, but on waking each one's last
		// heartbeat from the others is older than that.
		{"whole group 250 ms", abc, ms(250), false},
		{"whole group 350 ms", abc, ms(350), false},
		{"whole group 2 s", abc, ms(2000), false},
		// Its heartbeats stop for less than a detection time less an
		// interval: the others keep hearing it in time.
		{"one member 150 ms", []string{"b"}, ms(150), false},
		{"one member 1 s", []string{"b"}, ms(1000), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, abc, 32)
			s.run(ms(500))
			before := s.claims()
			moves := 0
			for _, n := range abc {
				moves += s.nodes[n].moves
			}
			for _, n := range tc.stalled {
				s.nodes[n].frozen = true
			}
			s.run(tc.stall)
			for _, n := range tc.stalled {
				// Thawed, each ticks before it reads what waited.
				nd := s.nodes[n]
				nd.frozen = false
				s.step(n, func() Output { return nd.m.Tick(s.now) })
			}
			s.dualMs, s.darkMs = 0, 0
			s.run(ms(300))
			s.converged(abc...)
			after := 0
			for _, n := range abc {
				after += s.nodes[n].moves
			}
			if !tc.moved && after != moves {
				t.Fatalf("%d ownership changes across the stall, want none", after-moves)
			}
			if tc.moved && after == moves {
				t.Fatal("the others kept out of a silent member's VIPs for longer than the detection time")
			}
			if s.dualMs > 2 || (!tc.moved && s.darkMs != 0) {
				t.Fatalf("after the stall: dual %d ms, dark %d ms", s.dualMs, s.darkMs)
			}
			for v, c := range s.claims() {
				if len(c) != 1 || c[0] != before[v][0] {
					t.Fatalf("vip %v claimed by %v, before the stall %v", v, c, before[v])
				}
			}
		})
	}
}

// TestSplitBrain: members that cannot hear each other but share the
// clients' segment are fenced by the claims they see there: after a bound,
// each VIP is answered by one node only, the tie-breaker's choice between
// the two claimants (computed here from their identities), with no flapping
// for as long as the partition lasts and no VIP left dark; after healing the
// normal owners answer again.
func TestSplitBrain(t *testing.T) {
	abc := []string{"a", "b", "c"}
	// fenced checks each VIP is claimed by exactly one node: the owner the
	// other side picks among others or, if a (which sees aView) claims it
	// too, the tie-breaker's choice between the two.
	fenced := func(s *sim, aView, others []string) {
		t.Helper()
		c := s.claims()
		for _, v := range s.vips {
			other := pickOwner(others, v)
			want := other
			if pickOwner(aView, v) == "a" {
				want = ClaimWinner(v, mac("a"), mac(other))[len("mac-"):]
			}
			if len(c[v]) != 1 || c[v][0] != want {
				t.Fatalf("at %v: vip %v claimed by %v, want only %s (tie-breaker between a and %s)", s.now.Sub(t0), v, c[v], want, other)
			}
		}
	}
	t.Run("symmetric partition", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.dualMs = 0
		s.cutLink("a", "b", false)
		s.cutLink("a", "c", false)
		// Detection (300 ms), then the first claims and a confirming one a
		// settle time later; bursts are 200 ms apart.
		s.run(ms(1000))
		fenced(s, []string{"a"}, []string{"b", "c"})
		t.Logf("dual claims for %d ms after the partition began", s.dualMs)
		if s.dualMs > 800 {
			t.Fatalf("dual claims for %d ms", s.dualMs)
		}
		// The losers keep probing, the winners keep answering: stable.
		s.dualMs, s.darkMs = 0, 0
		s.run(ms(5000))
		fenced(s, []string{"a"}, []string{"b", "c"})
		if s.dualMs != 0 || s.darkMs != 0 {
			t.Fatalf("during the partition: dual claims %d ms, VIPs dark %d ms", s.dualMs, s.darkMs)
		}
		s.cut = map[[2]string]bool{}
		s.dualMs, s.darkMs = 0, 0
		// A fenced normal owner takes its VIP back once the other side has
		// released it (on a's heartbeat) and answers no probe: the hold
		// time (500 ms) after the last answer.
		s.run(ms(700))
		s.converged(abc...)
		t.Logf("after healing: dual claims %d ms, VIPs dark %d ms", s.dualMs, s.darkMs)
		if s.dualMs > 2 || s.darkMs > 600 {
			t.Fatalf("after healing: dual claims %d ms, VIPs dark %d ms", s.dualMs, s.darkMs)
		}
	})
	t.Run("one-way loss", func(t *testing.T) {
		s := newSim(t, []string{"a", "b"}, 32)
		s.run(ms(500))
		s.cutLink("a", "b", true) // b stops hearing a; a still hears b
		s.run(ms(1000))
		// b believes a dead and claims all; a still believes b alive and
		// keeps its share; the segment settles a's VIPs between them.
		fenced(s, []string{"a", "b"}, []string{"b"})
		s.dualMs = 0
		s.run(ms(3000))
		if s.dualMs != 0 || s.darkMs != 0 {
			t.Fatalf("dual %d ms, dark %d ms", s.dualMs, s.darkMs)
		}
	})
	t.Run("off the segment", func(t *testing.T) {
		// a loses its link: no heartbeats and no claims either way. It
		// claims every VIP, which is harmless (nobody can reach it), and
		// fences nothing; b and c are not disturbed either.
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.cutLink("a", "b", false)
		s.cutLink("a", "c", false)
		s.offSeg["a"] = true
		s.run(ms(2000))
		if got := len(s.nodes["a"].m.Owned()); got != 32 {
			t.Fatalf("cut-off a owns %d of 32", got)
		}
		for _, n := range abc {
			if f := s.nodes[n].m.Fenced(); len(f) != 0 {
				t.Fatalf("%s fenced %v with nothing on its segment", n, f)
			}
		}
		for v, c := range s.claims() {
			if len(slices.DeleteFunc(c, func(n string) bool { return n == "a" })) != 1 {
				t.Fatalf("vip %v claimed by %v on the segment", v, c)
			}
		}
	})
}
