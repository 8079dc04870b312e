package sync

import (
	"fmt"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"
)

// livePair is two machines joined by hand: a's messages reach b and b's
// reach a only when the test delivers them.
type livePair struct {
	t    *testing.T
	now  time.Time
	m    map[string]*Machine
	outq map[string][]Send // per sender, not yet delivered
}

func newLivePair(t *testing.T, a, b Config) *livePair {
	t.Helper()
	lp := &livePair{t: t, now: t0, m: map[string]*Machine{}, outq: map[string][]Send{}}
	for _, c := range []struct {
		cfg        Config
		self, peer string
	}{{a, "a", "b"}, {b, "b", "a"}} {
		c.cfg.Self, c.cfg.Peers = c.self, []string{c.peer}
		m, err := New(c.cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		lp.m[c.self] = m
	}
	lp.take("a", lp.m["a"].Connected(lp.now, "b"))
	lp.take("b", lp.m["b"].Connected(lp.now, "a"))
	// Hellos, then the empty resyncs both ways and their acks.
	for range 10 {
		lp.deliver("a")
		lp.deliver("b")
	}
	if len(lp.outq["a"])+len(lp.outq["b"]) > 0 {
		t.Fatal("the pair does not settle")
	}
	if !lp.m["a"].Up("b") || !lp.m["b"].Up("a") {
		t.Fatal("a and b not up after their hellos")
	}
	return lp
}

func (lp *livePair) take(from string, out Output) Output {
	lp.outq[from] = append(lp.outq[from], out.Sends...)
	return out
}

// deliver hands what from sent to the other machine.
func (lp *livePair) deliver(from string) {
	to := "a"
	if from == "a" {
		to = "b"
	}
	q := lp.outq[from]
	lp.outq[from] = nil
	for _, s := range q {
		out := lp.take(to, lp.m[to].Receive(lp.now, from, s.Data))
		if len(out.Close) > 0 {
			lp.t.Fatalf("%s closes %v on a message from %s", to, out.Close, from)
		}
	}
}

// tick advances the clock by d and ticks both machines; it returns their
// closes.
func (lp *livePair) tick(d time.Duration) map[string][]Close {
	lp.now = lp.now.Add(d)
	closes := map[string][]Close{}
	for _, n := range []string{"a", "b"} {
		out := lp.take(n, lp.m[n].Tick(lp.now))
		closes[n] = out.Close
	}
	return closes
}

var liveCfg = Config{KeepaliveInterval: time.Second, PeerTimeout: 4 * time.Second}

// An idle connection stays up: each side sends a keepalive every
// KeepaliveInterval, which the other one answers with nothing.
func TestKeepalivesHoldAnIdleConnection(t *testing.T) {
	lp := newLivePair(t, liveCfg, liveCfg)
	for i := range 40 { // 20 s in steps of half a second
		closes := lp.tick(500 * time.Millisecond)
		if len(closes["a"])+len(closes["b"]) > 0 {
			t.Fatalf("step %d: closes %v on an idle connection with keepalives", i, closes)
		}
		sent := len(lp.outq["a"])
		before := len(lp.outq["b"])
		lp.deliver("a")
		if n := len(lp.outq["b"]) - before; n != 0 {
			var what []string
			for _, x := range lp.outq["b"][before:] {
				m, _ := Parse(x.Data)
				what = append(what, fmt.Sprintf("%+v %+v %+v", m.Hello, m.Ack, m.Data))
			}
			t.Fatalf("step %d: b answered a's keepalive with %d messages: %v", i, n, what)
		}
		if i%2 == 1 && sent == 0 {
			t.Fatalf("step %d: no keepalive from a after %v idle", i, time.Second)
		}
		lp.deliver("b")
	}
	if st := lp.m["a"].Stats(); st.Keepalives < 15 || st.SilentPeers != 0 {
		t.Errorf("a: %d keepalives (want about 20), %d silent peers", st.Keepalives, st.SilentPeers)
	}
}

// A peer silent for PeerTimeout (its messages no longer arrive, its
// connection still open: a dead node or a cut link, which TCP tells only
// after minutes) is closed as lost, once, not before; the wake-up time
// asks for the tick that finds it.
func TestSilentPeerTimesOut(t *testing.T) {
	lp := newLivePair(t, liveCfg, liveCfg)
	lp.tick(time.Second)
	lp.deliver("a")
	lp.deliver("b")
	heard := lp.now
	// From here b's messages are lost; a's still reach b.
	var lost []Close
	var at time.Time
	for range 100 {
		closes := lp.tick(100 * time.Millisecond)
		lp.outq["b"] = nil
		lp.deliver("a")
		if len(closes["a"]) > 0 && lost == nil {
			lost, at = closes["a"], lp.now
			// The shell closes the connection and says so.
			lp.m["a"].Disconnected(lp.now, "b")
			lp.m["b"].Disconnected(lp.now, "a")
		} else if len(closes["a"]) > 0 {
			t.Fatalf("a closed b again at %v: %v", lp.now.Sub(heard), closes["a"])
		}
		if len(closes["b"]) > 0 {
			t.Fatalf("b, which hears a, closed: %v", closes["b"])
		}
	}
	if len(lost) != 1 || lost[0].Peer != "b" || !lost[0].Lost || !strings.Contains(lost[0].Reason, "nothing received") {
		t.Fatalf("a's closes %v, want one Lost close of b", lost)
	}
	if d := at.Sub(heard); d < liveCfg.PeerTimeout || d > liveCfg.PeerTimeout+100*time.Millisecond {
		t.Errorf("b closed %v after it was last heard, want PeerTimeout %v (ticks 100 ms apart)", d, liveCfg.PeerTimeout)
	}
	if st := lp.m["a"].Stats(); st.SilentPeers != 1 {
		t.Errorf("silent peers %d, want 1", st.SilentPeers)
	}
	// The wake-up time: a machine that hears nothing asks to be ticked
	// by the time its peer's silence runs out.
	lp2 := newLivePair(t, Config{KeepaliveInterval: -1, PeerTimeout: 4 * time.Second}, liveCfg)
	out := lp2.m["a"].Flush(lp2.now)
	if want := lp2.now.Add(4 * time.Second); out.Wake.IsZero() || out.Wake.After(want) {
		t.Errorf("wake %v, want by %v", out.Wake, want)
	}
}

// A peer whose hello offered no keepalives (an older version, which sends
// nothing on an idle connection) is never timed out; one that offered
// them is, even by a node that sends none itself.
func TestPeerWithoutKeepalivesIsNotTimedOut(t *testing.T) {
	old := Config{KeepaliveInterval: -1, PeerTimeout: -1}
	lp := newLivePair(t, liveCfg, old)
	for range 100 {
		closes := lp.tick(time.Second)
		lp.deliver("a")
		lp.deliver("b")
		if len(closes["a"]) > 0 {
			t.Fatalf("a timed out b, which offered no keepalives: %v", closes["a"])
		}
	}
	if n := lp.m["b"].Stats().Keepalives; n != 0 {
		t.Errorf("b, keepalives off, sent %d", n)
	}
	// The hello b sent says so on the wire: the feature bit clear.
	h := AppendHello(nil, Hello{Name: "b", Incarnation: 1})
	if msg, err := Parse(h); err != nil || msg.Hello.Keepalive {
		t.Fatalf("hello without the feature: %+v, %v", msg.Hello, err)
	}
	h = AppendHello(nil, Hello{Name: "b", Incarnation: 1, Keepalive: true})
	if h[3] != FeatureKeepalive {
		t.Fatalf("keepalive feature not in the reserved byte: %x", h)
	}
	// Unknown feature bits (a newer peer's) are ignored, not refused.
	h[3] |= 0x80
	if msg, err := Parse(h); err != nil || !msg.Hello.Keepalive {
		t.Fatalf("hello with an unknown feature bit: %+v, %v", msg.Hello, err)
	}
}

func TestLivenessConfigChecked(t *testing.T) {
	_, err := New(Config{Self: "a", KeepaliveInterval: 2 * time.Second, PeerTimeout: time.Second}, 1)
	if err == nil || !strings.Contains(err.Error(), "must exceed the keepalive interval") {
		t.Fatalf("peer timeout below the keepalive interval: %v", err)
	}
}

// Over real connections: b's messages to a stop arriving (dropped by the
// test hook while the TCP connection stays open, as when b's node dies
// or the link drops packets); a reports b lost within its PeerTimeout,
// while before that the idle connection with keepalives made no loss.
func TestNodeReportsASilentPeerLost(t *testing.T) {
	cfg := Config{KeepaliveInterval: 200 * time.Millisecond, PeerTimeout: time.Second}
	var silent atomic.Bool
	g := &group{t: t, ca: newCA(t, "group"), names: []string{"a", "b"}, addrs: map[string]string{}, nodes: map[string]*tnode{}, mcfg: cfg,
		// Two nodes: only b sends to a.
		impair: func(peer string) Fault { return Fault{Drop: peer == "a" && silent.Load()} }}
	var mu stdsync.Mutex
	var lostAt []time.Time
	record := func(node, peer string) {
		if node == "a" && peer == "b" {
			mu.Lock()
			lostAt = append(lostAt, time.Now())
			mu.Unlock()
		}
	}
	g.lost.Store(&record)
	g.start("b", "127.0.0.1:0")
	g.start("a", "127.0.0.1:0")
	deadline := time.Now().Add(time.Minute)
	for !g.nodes["a"].n.Up("b") || !g.nodes["b"].n.Up("a") {
		if time.Now().After(deadline) {
			t.Fatal("a and b never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Idle for three timeouts: keepalives hold the connection.
	time.Sleep(3 * cfg.PeerTimeout)
	mu.Lock()
	early := len(lostAt)
	mu.Unlock()
	if early != 0 || !g.nodes["a"].n.Up("b") {
		t.Fatalf("an idle connection with keepalives was lost (%d losses)", early)
	}
	start := time.Now()
	silent.Store(true)
	// The bound: PeerTimeout after the last message heard (before start),
	// plus scheduling on a loaded machine; TCP alone would take minutes.
	bound := cfg.PeerTimeout + 10*time.Second
	for {
		mu.Lock()
		n := len(lostAt)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Since(start) > bound {
			t.Fatalf("b silent for %v and a has not lost it (peer timeout %v)", bound, cfg.PeerTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	took := lostAt[0].Sub(start)
	mu.Unlock()
	t.Logf("a reported b lost %v after b went silent (peer timeout %v)", took.Round(time.Millisecond), cfg.PeerTimeout)
	if took < cfg.PeerTimeout-cfg.KeepaliveInterval-50*time.Millisecond {
		// b's last keepalive is at most KeepaliveInterval before start.
		t.Errorf("b lost %v after it went silent, before its timeout could run out", took)
	}
	if st := g.nodes["a"].n.Stats(); st.SilentPeers < 1 {
		t.Errorf("a's silent peers %d", st.SilentPeers)
	}
}
