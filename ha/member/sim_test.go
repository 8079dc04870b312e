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
}

type simNode struct {
	m      *Machine
	wake   time.Time
	frozen bool
	dead   bool
	inc    uint64
}

type simPkt struct {
	at   time.Time
	to   string
	data []byte
}

func newSim(t *testing.T, names []string, nVIPs int) *sim {
	s := &sim{t: t, now: t0, names: names, nodes: map[string]*simNode{}, vips: vips(nVIPs), latency: ms(1), cut: map[[2]string]bool{}}
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
	n := &simNode{m: m, inc: inc}
	s.nodes[name] = n
	s.step(name, func() Output { return m.SetVIPs(s.now, s.vips) })
	s.step(name, func() Output { return m.Start(s.now) })
}

func (s *sim) step(name string, f func() Output) {
	n := s.nodes[name]
	before := snap(n.m)
	out := f()
	if msg := checkStep(n.m, before, s.now, out); msg != "" {
		s.t.Fatalf("%s at %v: invariant: %s", name, s.now.Sub(t0), msg)
	}
	if !out.Wake.IsZero() {
		n.wake = out.Wake
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
		for _, name := range s.names {
			n := s.nodes[name]
			if !n.dead && !n.frozen && !s.now.Before(n.wake) {
				s.step(name, func() Output { return n.m.Tick(s.now) })
			}
		}
		if len(s.dual()) > 0 {
			s.dualMs++
		}
	}
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

func TestThawWithLostHeartbeats(t *testing.T) {
	s := newSim(t, []string{"a", "b", "c"}, 32)
	s.dropFrozen = true
	s.run(ms(500))
	s.nodes["a"].frozen = true
	s.run(ms(2000))
	s.dualMs = 0
	s.nodes["a"].frozen = false
	s.run(ms(1)) // a ticks first: its view is 2 s old
	if own := s.nodes["a"].m.Owned(); len(own) != 0 {
		t.Fatalf("thawed a claims %v before hearing anybody", own)
	}
	s.run(ms(300))
	s.converged("a", "b", "c")
	if s.dualMs > 2 {
		t.Fatalf("dual ownership %d ms after the thaw", s.dualMs)
	}
}

// TestSplitBrain documents what happens when members cannot hear each
// other. Without fencing (issue 15) the sides each claim; the test pins the
// behaviour so a change to it is deliberate.
func TestSplitBrain(t *testing.T) {
	abc := []string{"a", "b", "c"}
	t.Run("symmetric partition", func(t *testing.T) {
		s := newSim(t, abc, 32)
		s.run(ms(500))
		s.cutLink("a", "b", false)
		s.cutLink("a", "c", false)
		s.run(ms(500))
		// a sees itself alone and claims every VIP; b and c split them.
		if got := len(s.nodes["a"].m.Owned()); got != 32 {
			t.Fatalf("isolated a owns %d of 32", got)
		}
		if len(s.dual()) == 0 {
			t.Fatal("expected dual claims during the partition")
		}
		s.cut = map[[2]string]bool{}
		s.dualMs = 0
		s.run(ms(50))
		s.converged(abc...)
		if s.dualMs > 2 {
			t.Fatalf("dual ownership %d ms after healing", s.dualMs)
		}
	})
	t.Run("one-way loss", func(t *testing.T) {
		s := newSim(t, []string{"a", "b"}, 32)
		s.run(ms(500))
		s.cutLink("a", "b", true) // b stops hearing a; a still hears b
		s.run(ms(500))
		// b believes a dead and claims all; a still believes b alive and
		// keeps its share: a's VIPs are claimed twice.
		if len(s.nodes["b"].m.Owned()) != 32 || len(s.nodes["a"].m.Owned()) == 0 {
			t.Fatalf("a owns %d, b owns %d", len(s.nodes["a"].m.Owned()), len(s.nodes["b"].m.Owned()))
		}
		if len(s.dual()) != len(s.nodes["a"].m.Owned()) {
			t.Fatalf("dual %v", s.dual())
		}
	})
}
