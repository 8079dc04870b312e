package sync

// Per-peer state: a peer's queues of changed keys, our stream to it and
// its stream to us, the hello exchange that brings it up and the resync
// that opens a new stream to it.

import (
	"fmt"
	"slices"
	"time"
)

// Changed keys wait for a peer in one of two queues: fresh (keys new to
// the table: a flow's first record) and changed (a key already there
// changed again, a deletion, a refresh). fill sends the fresh queue first:
// a flow opened just before a failure must reach the peer, while a counter
// refresh of an established flow can wait; behind a burst of thousands of
// refreshes young flows were lost (issue 15). Within a queue keys leave in
// order, so each queue counts for barriers on its own.
const (
	qFresh = iota
	qChanged
)

// keyQueue is one of a peer's two queues of changed keys. total keys were
// queued, sent of them left the queue (sent, or handed to a snapshot),
// acked were in messages the peer acknowledged.
type keyQueue struct {
	keys               []string
	total, sent, acked uint64
}

type peer struct {
	name      string
	connected bool
	up        bool      // connected and its hello received
	helloAt   time.Time // when to say hello again while not up
	// Liveness (liveness.go): when we last heard from the peer and last
	// sent to it; keepalive says its hello offered keepalives.
	heardAt, sentAt time.Time
	keepalive       bool
	// held says its hello offered FeatureHeld: records go to it with
	// their hold time.
	held bool

	// Our stream to the peer.
	stream     uint32
	nextSeq    uint64
	acked      uint64
	inflight   []flight
	pending    map[string]time.Time // key -> when it first changed unsent
	queues     [2]keyQueue          // pending keys in order of change: qFresh, qChanged
	pendBytes  int                  // about what the queues take on the wire
	needResync bool                 // start a resync when the peer is up
	resyncing  bool                 // snapshot being sent, End not acked
	snap       []string
	snapPos    int
	endSent    bool
	rtoAt      time.Time
	rtt        rtoEstimator // the retransmission timeout (retransmit.go)
	lastNack   time.Time
	// endAcked is the last stream whose End the peer acknowledged.
	endAcked uint32

	// The peer's stream to us.
	peerInc   uint64 // from its hello
	rInc      uint64
	rStream   uint32
	rExpected uint64
	rGen      uint64
	rKeys     map[string]uint64 // key -> generation that last refreshed it
	synced    bool
}

// sayHello sends a hello, and again each retransmission timeout until the
// peer's hello arrives (a lossy link can lose it).
func (m *Machine) sayHello(now time.Time, p *peer, out *Output) {
	p.helloAt = now.Add(m.cfg.RetransmitTimeout)
	out.Sends = append(out.Sends, Send{Peer: p.name, Data: AppendHello(nil, Hello{
		Name: m.cfg.Self, Incarnation: m.inc, PeerInc: p.rInc, Stream: p.rStream, Expected: p.rExpected, Heard: p.up,
		Keepalive: m.cfg.KeepaliveInterval > 0, Held: true,
	})})
}

func (m *Machine) hello(now time.Time, p *peer, h *Hello, out *Output) {
	if h.Name != p.name {
		m.stats.Malformed++
		out.Close = append(out.Close, Close{Peer: p.name, Reason: fmt.Sprintf("hello names %q on the connection of %q", h.Name, p.name)})
		return
	}
	p.keepalive = h.Keepalive
	p.held = h.Held
	if p.up {
		// The peer may have lost our hello: answer, unless it says it has it.
		// A keepalive is such a hello, with Heard set: nothing to do.
		if !h.Heard {
			m.sayHello(now, p, out)
		}
		return
	}
	p.up = true
	p.peerInc = h.Incarnation
	m.stats.PeerUps++
	// Resume only if the peer follows our current stream from a point we
	// still hold: everything after h.Expected-1 is in flight or pending.
	if !p.needResync && p.stream != 0 && h.PeerInc == m.inc && h.Stream == p.stream &&
		h.Expected >= p.acked+1 && h.Expected <= p.nextSeq {
		m.stats.Resumes++
		m.ackUpTo(now, p, h.Expected-1)
		if len(p.inflight) > 0 {
			m.resend(now, p, out)
		}
		m.fill(now, p, true, out)
		return
	}
	m.resync(now, p, out)
}

// resync opens a new stream to p carrying a snapshot of the table, or
// marks p for one when it is not up.
func (m *Machine) resync(now time.Time, p *peer, out *Output) {
	p.dropQueued() // the snapshot carries them
	p.inflight = nil
	p.acked = p.nextSeq - 1 // the stream is abandoned
	p.rtoAt = time.Time{}
	if !p.up {
		p.needResync = true
		return
	}
	m.stats.Resyncs++
	p.needResync = false
	p.stream++
	p.nextSeq, p.acked = 1, 0
	p.resyncing, p.endSent = true, false
	p.snap = p.snap[:0]
	for tk := range m.table {
		p.snap = append(p.snap, tk)
	}
	slices.Sort(p.snap) // deterministic order for tests
	p.snapPos = 0
	m.fill(now, p, true, out)
}

// dropQueued empties both queues: their keys went to a snapshot.
func (p *peer) dropQueued() {
	clear(p.pending)
	for i := range p.queues {
		q := &p.queues[i]
		q.keys = q.keys[:0]
		q.sent = q.total
	}
	p.pendBytes = 0
}
