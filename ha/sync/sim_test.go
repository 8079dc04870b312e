package sync

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var debug = false

var t0 = time.Unix(1_700_000_000, 0)

// sim runs machines over simulated connections in virtual time. Each pair
// of nodes has at most one connection; messages on it are queued per
// direction and can be delivered in order, reordered, duplicated or
// dropped (what the transport's test hook does to a real link). A cut
// drops the connection and what it carried. A restarted node loses
// everything and its producer puts its table again (as the datapath's
// entries would be read back).
type sim struct {
	tb    testing.TB
	now   time.Time
	cfg   Config
	names []string
	nodes map[string]*simNode
	conn  map[[2]string]int // sorted pair -> connection number, 0 = none
	nconn int
	queue []simMsg
	ver   uint64 // value versions, growing across restarts
	// garbage is set while a step delivers garbage: Close is expected.
	garbage bool
	closes  int
}

type simNode struct {
	m    *Machine
	inc  uint64
	dead bool
	wake time.Time
	// own is what the producer put (key -> value).
	own map[string]string
	// applied is what the consumer holds, per sender; lastVer the version
	// of the last value applied per sender and key.
	applied map[string]map[string]string
	lastVer map[string]map[string]uint64
	// barriers taken and not complete; done lists those completed.
	barriers map[uint64]simBarrier
	done     []uint64
}

// simBarrier is what the producer had when a barrier was taken.
type simBarrier struct {
	own   map[string]string
	ver   uint64   // last version given out then
	peers []string // up then
}

type simMsg struct {
	from, to string
	conn     int
	data     []byte
}

func newSim(tb testing.TB, cfg Config, names ...string) *sim {
	// The sim's connections end at both sides at once, like TCP's when a
	// peer goes; its clock jumps far past any timeout. Keepalives and the
	// peer timeout are off unless a test asks (liveness_test.go).
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = -1
	}
	if cfg.PeerTimeout == 0 {
		cfg.PeerTimeout = -1
	}
	s := &sim{tb: tb, now: t0, cfg: cfg, names: names, nodes: map[string]*simNode{}, conn: map[[2]string]int{}}
	for _, n := range names {
		s.start(n)
	}
	return s
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (s *sim) start(name string) {
	inc := uint64(1)
	var own map[string]string
	if old := s.nodes[name]; old != nil {
		inc, own = old.inc+1, old.own
	}
	cfg := s.cfg
	cfg.Self = name
	cfg.Peers = nil
	for _, n := range s.names {
		if n != name {
			cfg.Peers = append(cfg.Peers, n)
		}
	}
	m, err := New(cfg, inc)
	if err != nil {
		s.tb.Fatal(err)
	}
	n := &simNode{m: m, inc: inc, own: map[string]string{}, applied: map[string]map[string]string{}, lastVer: map[string]map[string]uint64{},
		barriers: map[uint64]simBarrier{}}
	for _, p := range cfg.Peers {
		n.applied[p] = map[string]string{}
		n.lastVer[p] = map[string]uint64{}
	}
	s.nodes[name] = n
	for _, k := range slices.Sorted(maps.Keys(own)) {
		s.put(name, k)
	}
}

// restart kills name (its connections go) and starts it again. A
// barrier of another node's that name had acknowledged already is no
// longer checked against name's state: the barrier promises an
// acknowledgement from every peer up at its mark, which name gave, not
// that the peer keeps what it acknowledged through its own restart (the
// barrier still waits for the others). One that name had not
// acknowledged waits for it, and is checked: name gets it in a resync.
func (s *sim) restart(name string) {
	for _, o := range s.names {
		if o == name {
			continue
		}
		s.cut(name, o)
		for id, sb := range s.nodes[o].barriers {
			for _, b := range s.nodes[o].m.barriers {
				if _, waiting := b.marks[name]; b.id == id && !waiting {
					sb.peers = slices.DeleteFunc(sb.peers, func(p string) bool { return p == name })
					s.nodes[o].barriers[id] = sb
				}
			}
		}
	}
	s.start(name)
}

func (s *sim) step(name string, f func(*Machine) Output) Output {
	n := s.nodes[name]
	out := f(n.m)
	if msg := checkStep(n.m); msg != "" {
		s.tb.Fatalf("%s at %v: invariant: %s", name, s.now.Sub(t0), msg)
	}
	if msg := checkWake(n.m, s.now, out); msg != "" {
		s.tb.Fatalf("%s at %v: timer: %s", name, s.now.Sub(t0), msg)
	}
	for _, a := range out.Applied {
		tk := KeyOf(a.Record.Kind, a.Record.Key)
		if a.Record.Deleted {
			delete(n.applied[a.From], tk)
			continue
		}
		if len(a.Record.Value) < 8 {
			s.tb.Fatalf("%s: applied %q from %s: value %x is not the producer's", name, tk, a.From, a.Record.Value)
		}
		v := binary.BigEndian.Uint64(a.Record.Value)
		if v < n.lastVer[a.From][tk] {
			s.tb.Fatalf("%s at %v: key %q from %s went back from version %d to %d", name, s.now.Sub(t0), tk, a.From, n.lastVer[a.From][tk], v)
		}
		n.lastVer[a.From][tk] = v
		n.applied[a.From][tk] = string(a.Record.Value)
	}
	if msg := checkConsumer(n.m, n.applied); msg != "" {
		s.tb.Fatalf("%s at %v: consumer: %s", name, s.now.Sub(t0), msg)
	}
	if len(out.Close) > 0 && !s.garbage {
		s.tb.Fatalf("%s at %v: closes %v without garbage", name, s.now.Sub(t0), out.Close)
	}
	if s.garbage && len(out.Applied) > 0 {
		s.tb.Fatalf("%s: garbage applied %d records", name, len(out.Applied))
	}
	for _, id := range out.Barriers {
		s.barrierDone(name, id)
	}
	for _, c := range out.Close {
		s.closes++
		s.cut(name, c.Peer)
	}
	if !out.Wake.IsZero() {
		if !out.Wake.After(s.now) {
			s.tb.Fatalf("%s: wake %v not after now", name, out.Wake.Sub(t0))
		}
		n.wake = out.Wake
	}
	for _, snd := range out.Sends {
		c := s.conn[pair(name, snd.Peer)]
		if c != 0 {
			s.queue = append(s.queue, simMsg{from: name, to: snd.Peer, conn: c, data: snd.Data})
		}
	}
	return out
}

func (s *sim) put(name, key string) {
	s.ver++
	v := binary.BigEndian.AppendUint64(nil, s.ver)
	v = append(v, key...)
	n := s.nodes[name]
	n.own[key] = string(v)
	s.step(name, func(m *Machine) Output {
		out, err := m.Put(s.now, Record{Kind: 7, Key: []byte(key), Value: v})
		if err != nil {
			s.tb.Fatal(err)
		}
		return out
	})
}

// barrier takes a barrier at name and returns its id.
func (s *sim) barrier(name string) uint64 {
	n := s.nodes[name]
	var id uint64
	s.step(name, func(m *Machine) Output {
		b := simBarrier{own: maps.Clone(n.own), ver: s.ver}
		for _, p := range m.names {
			if m.Up(p) {
				b.peers = append(b.peers, p)
			}
		}
		var out Output
		id, out = m.Barrier(s.now)
		n.barriers[id] = b
		return out
	})
	return id
}

// barrierDone checks that every peer up when barrier id was taken holds
// what name's producer had then: each key with that value or a later one
// (or the key changed since and the peer already has the change), and no
// key the producer had deleted then, unless it was put again since.
func (s *sim) barrierDone(name string, id uint64) {
	n := s.nodes[name]
	b, ok := n.barriers[id]
	if !ok {
		s.tb.Fatalf("%s: barrier %d completed twice or never taken", name, id)
	}
	delete(n.barriers, id)
	n.done = append(n.done, id)
	ver := func(v string) uint64 { return binary.BigEndian.Uint64([]byte(v)) }
	for _, p := range b.peers {
		held := s.nodes[p].applied[name]
		for k, v := range b.own {
			got, ok := held[KeyOf(7, []byte(k))]
			switch {
			case ok && ver(got) < ver(v):
				s.tb.Fatalf("%s: barrier %d complete, %s holds %q at version %d, older than %d at the barrier", name, id, p, k, ver(got), ver(v))
			case !ok && n.own[k] == v:
				s.tb.Fatalf("%s: barrier %d complete, %s lacks %q (unchanged since)", name, id, p, k)
			}
		}
		for tk, got := range held {
			_, key := splitKey(tk)
			if _, had := b.own[string(key)]; !had && ver(got) <= b.ver {
				s.tb.Fatalf("%s: barrier %d complete, %s still holds %q deleted before it", name, id, p, key)
			}
		}
	}
}

func (s *sim) del(name, key string) {
	delete(s.nodes[name].own, key)
	s.step(name, func(m *Machine) Output {
		out, err := m.Delete(s.now, 7, []byte(key))
		if err != nil {
			s.tb.Fatal(err)
		}
		return out
	})
}

func (s *sim) connect(a, b string) {
	p := pair(a, b)
	if s.conn[p] != 0 {
		return
	}
	s.nconn++
	s.conn[p] = s.nconn
	s.step(a, func(m *Machine) Output { return m.Connected(s.now, b) })
	s.step(b, func(m *Machine) Output { return m.Connected(s.now, a) })
}

func (s *sim) cut(a, b string) {
	p := pair(a, b)
	if s.conn[p] == 0 {
		return
	}
	s.conn[p] = 0
	s.step(a, func(m *Machine) Output { return m.Disconnected(s.now, b) })
	s.step(b, func(m *Machine) Output { return m.Disconnected(s.now, a) })
}

func (s *sim) connectAll() {
	for i, a := range s.names {
		for _, b := range s.names[i+1:] {
			s.connect(a, b)
		}
	}
}

// deliver hands queue[i] to its receiver (if its connection still stands).
func (s *sim) deliver(i int, keep bool) {
	msg := s.queue[i]
	if !keep {
		s.queue = slices.Delete(s.queue, i, i+1)
	}
	if s.conn[pair(msg.from, msg.to)] != msg.conn {
		return
	}
	s.step(msg.to, func(m *Machine) Output { return m.Receive(s.now, msg.from, msg.data) })
}

// advance moves the clock and runs due timers.
func (s *sim) advance(d time.Duration) {
	s.now = s.now.Add(d)
	for _, n := range s.names {
		node := s.nodes[n]
		if !node.wake.IsZero() && !s.now.Before(node.wake) {
			node.wake = time.Time{}
			s.step(n, func(m *Machine) Output { return m.Tick(s.now) })
		}
	}
}

func (s *sim) flush() {
	for _, n := range s.names {
		s.step(n, func(m *Machine) Output { return m.Flush(s.now) })
	}
}

// settle heals every link, delivers everything in order and runs timers
// until nothing moves, then checks every node holds every other node's
// table exactly, and is synced with it.
func (s *sim) settle() {
	s.tb.Helper()
	s.connectAll()
	s.flush()
	for range 100_000 {
		if len(s.queue) > 0 {
			s.deliver(0, false)
			continue
		}
		if s.idle() {
			break
		}
		s.advance(10 * time.Millisecond)
	}
	if !s.idle() {
		var st []string
		for _, n := range s.names {
			for _, p := range s.nodes[n].m.peers {
				st = append(st, fmt.Sprintf("%s->%s up=%v conn=%v inflight=%d pending=%d needResync=%v resyncing=%v stream=%d acked=%d next=%d rto=%v",
					n, p.name, p.up, p.connected, len(p.inflight), len(p.pending), p.needResync, p.resyncing, p.stream, p.acked, p.nextSeq, p.rtoAt.Sub(t0)))
			}
		}
		s.tb.Fatalf("not idle after settling: %d queued, now %v: %v", len(s.queue), s.now.Sub(t0), st)
	}
	s.checkReplicas()
	for _, n := range s.names {
		if b := s.nodes[n].barriers; len(b) > 0 {
			s.tb.Fatalf("%s: %d barriers not complete after settling", n, len(b))
		}
	}
}

func (s *sim) idle() bool {
	for _, n := range s.names {
		for _, p := range s.nodes[n].m.peers {
			if len(p.inflight) > 0 || len(p.pending) > 0 || p.needResync || !p.up {
				return false
			}
		}
	}
	return len(s.queue) == 0
}

func (s *sim) checkReplicas() {
	s.tb.Helper()
	for _, r := range s.names {
		for _, f := range s.names {
			if r == f {
				continue
			}
			want := map[string]string{}
			for k, v := range s.nodes[f].own {
				want[KeyOf(7, []byte(k))] = v
			}
			got := s.nodes[r].applied[f]
			if !maps.Equal(got, want) {
				s.tb.Fatalf("%s holds %d records from %s, which has %d (diff %s)", r, len(got), f, len(want), diff(got, want))
			}
			if !s.nodes[r].m.Synced(f) {
				s.tb.Fatalf("%s not synced with %s after settling", r, f)
			}
		}
	}
}

func diff(got, want map[string]string) string {
	for k, v := range want {
		if got[k] != v {
			return fmt.Sprintf("key %q: have %x want %x", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			return fmt.Sprintf("key %q held, gone at the producer", k)
		}
	}
	return "none"
}

// chaos runs random operations driven by rng; used by the table and fuzz tests.
func (s *sim) chaos(rng *rand.Rand, steps int, keys int) {
	for range steps {
		a := s.names[rng.IntN(len(s.names))]
		b := s.names[rng.IntN(len(s.names))]
		key := fmt.Sprintf("k%d", rng.IntN(keys))
		op := rng.IntN(100)
		if debug {
			fmt.Println("op", op, a, b, key, len(s.queue))
		}
		switch {
		case op < 30:
			s.put(a, key)
		case op < 38:
			s.del(a, key)
		case op < 45:
			s.flush()
		case op < 65 && len(s.queue) > 0:
			s.deliver(0, false)
		case op < 72 && len(s.queue) > 0:
			s.deliver(rng.IntN(len(s.queue)), false) // reordered
		case op < 75 && len(s.queue) > 0:
			s.deliver(rng.IntN(len(s.queue)), true) // duplicated
		case op < 78 && len(s.queue) > 0:
			i := rng.IntN(len(s.queue)) // dropped
			s.queue = slices.Delete(s.queue, i, i+1)
		case op < 80 && a != b:
			s.cut(a, b)
		case op < 86 && a != b:
			s.connect(a, b)
		case op < 87:
			s.restart(a)
		case op < 89 && len(s.queue) > 0:
			s.sendGarbage(rng)
		case op < 90:
			s.barrier(a)
		default:
			s.advance(time.Duration(1+rng.IntN(100)) * time.Millisecond)
		}
	}
}

// sendGarbage delivers a message cut short (or with a bad version) on a
// live connection: the receiver must close it and apply nothing.
func (s *sim) sendGarbage(rng *rand.Rand) {
	msg := s.queue[rng.IntN(len(s.queue))]
	if s.conn[pair(msg.from, msg.to)] != msg.conn {
		return
	}
	b := slices.Clone(msg.data)
	if rng.IntN(2) == 0 && len(b) > 1 {
		b = b[:rng.IntN(len(b)-1)]
	} else {
		b[0] = byte(2 + rng.IntN(200))
	}
	s.garbage = true
	out := s.step(msg.to, func(m *Machine) Output { return m.Receive(s.now, msg.from, b) })
	s.garbage = false
	if len(out.Close) != 1 {
		s.tb.Fatalf("garbage %x from %s: closes %v", b, msg.from, out.Close)
	}
}
