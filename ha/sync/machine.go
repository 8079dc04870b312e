// Package sync replicates opaque keyed records (conntrack entries, SCTP
// associations, N2 UE contexts: Record.Kind says which) from every node of
// an HA group to the others. It never interprets the records.
//
// The protocol is a pure state machine (Machine: producer calls, messages,
// connection events and clock readings in; messages to send, records to
// apply, resync completions, connections to close and a wake-up time out;
// no I/O), like ha/member, with a TCP + mutual TLS shell in transport.go.
// Its design follows conntrackd's FTFW mode (read, not copied):
//
//   - Every node streams its own table to each peer: data messages carry
//     batches of records, numbered per stream; the receiver applies them
//     strictly in order and acknowledges cumulatively (a gap is answered
//     with a Nack, duplicates are re-acknowledged and dropped). The sender
//     keeps at most Window unacknowledged messages and resends them
//     (go-back-N) when the retransmission timer expires or a Nack arrives.
//   - Changes are coalesced: a key changed several times before it is sent
//     is sent once, with the value it has when the message is built. Keys
//     new to the table (a flow's first record) are sent before changes of
//     keys the peer has (refreshes) that were queued earlier.
//   - Bulk resync: a new stream opens with a Begin message, carries a
//     snapshot of the local table (interleaved with live changes) and
//     closes with End. At End the receiver drops what it held from that
//     sender and did not see again, and only then reports Synced. A resync
//     starts when a peer joins or rejoins (its hello does not show it
//     following our current stream at a point we can resend from), and
//     when a peer falls behind by more than MaxPending changed keys
//     (back-pressure: memory stays bounded, the peer is caught up by a
//     snapshot instead).
//   - A peer that sends anything unparsable gets its connection closed;
//     nothing of that message is applied.
package sync

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults for Config.
const (
	DefaultWindow            = 64
	DefaultBatchBytes        = 16 << 10
	DefaultMaxPending        = 1 << 18
	DefaultRetransmitTimeout = 200 * time.Millisecond
	DefaultNackHoldoff       = 20 * time.Millisecond
	DefaultKeepaliveInterval = time.Second
	DefaultPeerTimeout       = 4 * time.Second
	// maxBackoff caps the retransmission timeout at this many times
	// RetransmitTimeout after repeated timeouts.
	maxBackoff = 16
)

// Config configures one node's machine.
type Config struct {
	// Self is this node's name, Peers the other members of the group.
	Self  string
	Peers []string
	// Window is how many data messages may be unacknowledged per peer.
	Window int
	// BatchBytes is the size a data message is filled to before it is sent
	// without an explicit Flush.
	BatchBytes int
	// MaxPending is how many changed keys may wait for a peer before it is
	// switched to a bulk resync.
	MaxPending int
	// RetransmitTimeout is how long a message may stay unacknowledged
	// before the window is resent.
	RetransmitTimeout time.Duration
	// NackHoldoff is the least time between two resends caused by Nacks.
	NackHoldoff time.Duration
	// KeepaliveInterval is the longest a connection to an up peer stays
	// without a message from us: when nothing else went out for that
	// long, a hello does (liveness.go). Negative: no keepalives (and the
	// hello does not offer them).
	KeepaliveInterval time.Duration
	// PeerTimeout is how long an up peer that offered keepalives may stay
	// silent before its connection is closed as lost (Close.Lost); a peer
	// that did not offer them (an older version) is never timed out.
	// Negative: off. It must exceed KeepaliveInterval.
	PeerTimeout time.Duration
}

// Output is what a step asks the shell to do.
type Output struct {
	// Sends are messages to write, in order, to the peer's connection.
	Sends []Send
	// Applied are records received from peers, in the order to apply them.
	Applied []Applied
	// Synced names the peers whose bulk resync to us completed in this step.
	Synced []string
	// Barriers are the barriers (see Barrier) completed in this step.
	Barriers []uint64
	// Close names connections to close (the peer sent garbage).
	Close []Close
	// Wake, when not zero, is when Tick must be called at the latest.
	Wake time.Time
}

// Send is one message for one peer. Data must not be modified.
type Send struct {
	Peer string
	Data []byte
}

// Applied is one record from a peer.
type Applied struct {
	From   string
	Record Record
}

// Close asks the shell to drop the connection to Peer.
type Close struct {
	Peer, Reason string
	// Lost: the peer was silent past PeerTimeout. The connection is
	// closed here, but for the peer's or the network's reason: the shell
	// reports the peer lost (NodeConfig.OnPeerLost).
	Lost bool
}

type flight struct {
	seq     uint64
	data    []byte
	records int
	end     bool
	first   time.Time // earliest change carried, zero for snapshot only
	// qEnd is each queue's sent count once this message was built
	// (barriers): [fresh, changed].
	qEnd [2]uint64
}

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
	backoff    time.Duration // current retransmission timeout
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

// Machine is one node's sync state. It is not safe for concurrent use.
type Machine struct {
	cfg   Config
	inc   uint64
	table map[string][]byte // table key -> value
	peers map[string]*peer
	names []string // sorted peer names
	stats Stats
	buf   []Record
	// barriers not complete yet, in the order taken (barrier.go).
	barriers    []*barrier
	lastBarrier uint64
}

// New builds a machine. incarnation must grow at every process start (the
// shell uses the start time in nanoseconds): receivers prefer the newest.
func New(cfg Config, incarnation uint64) (*Machine, error) {
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.RetransmitTimeout == 0 {
		cfg.RetransmitTimeout = DefaultRetransmitTimeout
	}
	if cfg.NackHoldoff == 0 {
		cfg.NackHoldoff = DefaultNackHoldoff
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if cfg.PeerTimeout == 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	switch {
	case cfg.Self == "" || len(cfg.Self) > maxNameLen:
		return nil, fmt.Errorf("sync: self name %q: want 1..%d bytes", cfg.Self, maxNameLen)
	case cfg.Window < 1:
		return nil, fmt.Errorf("sync: window %d, want >= 1", cfg.Window)
	case cfg.BatchBytes < 64 || cfg.BatchBytes > MaxFrame/2:
		return nil, fmt.Errorf("sync: batch bytes %d, want 64..%d", cfg.BatchBytes, MaxFrame/2)
	case cfg.MaxPending < 1:
		return nil, fmt.Errorf("sync: max pending %d, want >= 1", cfg.MaxPending)
	case cfg.RetransmitTimeout <= 0 || cfg.NackHoldoff < 0:
		return nil, errors.New("sync: retransmit timeout must be > 0 and nack holdoff >= 0")
	case cfg.PeerTimeout > 0 && cfg.KeepaliveInterval > 0 && cfg.PeerTimeout <= cfg.KeepaliveInterval:
		return nil, fmt.Errorf("sync: peer timeout %v must exceed the keepalive interval %v (a live peer would be timed out)", cfg.PeerTimeout, cfg.KeepaliveInterval)
	case incarnation == 0:
		return nil, errors.New("sync: incarnation 0 is reserved for 'none'")
	}
	m := &Machine{cfg: cfg, inc: incarnation, table: map[string][]byte{}, peers: map[string]*peer{}}
	for _, n := range cfg.Peers {
		switch {
		case n == "" || len(n) > maxNameLen:
			return nil, fmt.Errorf("sync: peer name %q: want 1..%d bytes", n, maxNameLen)
		case n == cfg.Self:
			return nil, fmt.Errorf("sync: peer %q is self", n)
		case m.peers[n] != nil:
			return nil, fmt.Errorf("sync: peer %q listed twice", n)
		}
		m.peers[n] = &peer{name: n, pending: map[string]time.Time{}, rKeys: map[string]uint64{}, nextSeq: 1}
		m.names = append(m.names, n)
	}
	slices.Sort(m.names)
	return m, nil
}

// tableKey is the kind (2 bytes, big endian) followed by the key.
func tableKey(kind uint16, key []byte) string {
	b := make([]byte, 2+len(key))
	b[0], b[1] = byte(kind>>8), byte(kind)
	copy(b[2:], key)
	return string(b)
}

func splitKey(tk string) (uint16, []byte) {
	return uint16(tk[0])<<8 | uint16(tk[1]), []byte(tk[2:])
}

// Incarnation is this machine's incarnation.
func (m *Machine) Incarnation() uint64 { return m.inc }

// Len is how many records the local table holds.
func (m *Machine) Len() int { return len(m.table) }

// Synced says whether the bulk resync from peer has completed (and no
// newer one has begun since): we then hold a complete copy of its table.
func (m *Machine) Synced(peer string) bool {
	p := m.peers[peer]
	return p != nil && p.synced
}

// Up says whether peer is connected and has said hello.
func (m *Machine) Up(peer string) bool {
	p := m.peers[peer]
	return p != nil && p.up
}

// Put sets a record in the local table and queues it for every peer.
// Messages are sent only when a batch is full: call Flush after a burst.
func (m *Machine) Put(now time.Time, r Record) (Output, error) {
	if err := checkRecord(r); err != nil {
		return Output{}, err
	}
	if r.Deleted {
		return m.Delete(now, r.Kind, r.Key)
	}
	tk := tableKey(r.Kind, r.Key)
	_, had := m.table[tk]
	m.table[tk] = slices.Clone(r.Value)
	if m.table[tk] == nil {
		m.table[tk] = []byte{}
	}
	q := qChanged
	if !had {
		q = qFresh
	}
	return m.changed(now, tk, q), nil
}

// Delete removes a record from the local table and queues its removal.
func (m *Machine) Delete(now time.Time, kind uint16, key []byte) (Output, error) {
	if err := checkRecord(Record{Key: key}); err != nil {
		return Output{}, err
	}
	tk := tableKey(kind, key)
	if _, ok := m.table[tk]; !ok {
		return m.finish(now, Output{}), nil
	}
	delete(m.table, tk)
	return m.changed(now, tk, qChanged), nil
}

// changed queues tk for every peer in queue q, unless it waits already
// (in whichever queue: a key is in one queue at most, so its changes reach
// the peer in order).
func (m *Machine) changed(now time.Time, tk string, q int) Output {
	var out Output
	for _, n := range m.names {
		p := m.peers[n]
		if p.needResync {
			continue // the snapshot will carry it
		}
		if _, ok := p.pending[tk]; ok {
			m.stats.Coalesced++
			continue
		}
		p.pending[tk] = now
		p.queues[q].keys = append(p.queues[q].keys, tk)
		p.queues[q].total++
		p.pendBytes += recordHdrLen + len(tk) + len(m.table[tk])
		if len(p.pending) > m.cfg.MaxPending {
			m.stats.Overflows++
			if p.up && p.resyncing && !p.endSent && len(p.snap)-p.snapPos+len(p.pending) <= len(m.table)+m.cfg.MaxPending {
				// A snapshot is under way: its tail takes the changed keys
				// rather than starting over and losing what was sent. The
				// tail stays under a fresh snapshot's size plus MaxPending.
				for i := range p.queues {
					p.snap = append(p.snap, p.queues[i].keys...)
				}
				p.dropQueued() // the snapshot carries them now
				m.stats.Folded++
			} else {
				m.resync(now, p, &out)
			}
			continue
		}
		m.fill(now, p, false, &out)
	}
	return m.finish(now, out)
}

// Flush sends what waits for every peer, as far as windows allow.
func (m *Machine) Flush(now time.Time) Output {
	var out Output
	for _, n := range m.names {
		m.fill(now, m.peers[n], true, &out)
	}
	return m.finish(now, out)
}

// Tick runs the retransmission timers and flushes.
func (m *Machine) Tick(now time.Time) Output {
	var out Output
	for _, n := range m.names {
		p := m.peers[n]
		if p.connected && !p.up && !now.Before(p.helloAt) {
			m.sayHello(now, p, &out)
		}
		if p.up && len(p.inflight) > 0 && !p.rtoAt.IsZero() && !now.Before(p.rtoAt) {
			m.stats.Timeouts++
			// Back off: over TCP a timeout means a slow peer more often
			// than a lost message, and resending the window to a slow
			// peer only adds to its load.
			p.backoff = min(max(p.backoff, m.cfg.RetransmitTimeout)*2, maxBackoff*m.cfg.RetransmitTimeout)
			m.resend(now, p, &out)
		}
		m.fill(now, p, true, &out)
		m.liveness(now, p, &out)
	}
	return m.finish(now, out)
}

// Connected says a connection to peer is open: a hello goes out first.
func (m *Machine) Connected(now time.Time, peer string) Output {
	var out Output
	p := m.peers[peer]
	if p == nil {
		return out
	}
	p.up = false
	p.connected = true
	p.heardAt = now
	m.sayHello(now, p, &out)
	return m.finish(now, out)
}

// sayHello sends a hello, and again each retransmission timeout until the
// peer's hello arrives (a lossy link can lose it).
func (m *Machine) sayHello(now time.Time, p *peer, out *Output) {
	p.helloAt = now.Add(m.cfg.RetransmitTimeout)
	out.Sends = append(out.Sends, Send{Peer: p.name, Data: AppendHello(nil, Hello{
		Name: m.cfg.Self, Incarnation: m.inc, PeerInc: p.rInc, Stream: p.rStream, Expected: p.rExpected, Heard: p.up,
		Keepalive: m.cfg.KeepaliveInterval > 0,
	})})
}

// Disconnected says the connection to peer is gone. What we received from
// it stays; what we owe it is kept (bounded) to resume or resync later.
func (m *Machine) Disconnected(now time.Time, peer string) Output {
	p := m.peers[peer]
	if p != nil && p.up {
		p.up = false
		m.stats.PeerLosses++
	}
	if p != nil {
		p.connected = false
		p.rtoAt = time.Time{}
	}
	return m.finish(now, Output{})
}

// Receive handles one message from peer's connection.
func (m *Machine) Receive(now time.Time, peer string, b []byte) Output {
	var out Output
	p := m.peers[peer]
	if p == nil {
		m.stats.UnknownPeer++
		return out
	}
	msg, err := Parse(b)
	if err != nil {
		m.stats.Malformed++
		out.Close = append(out.Close, Close{Peer: peer, Reason: err.Error()})
		return m.finish(now, out)
	}
	p.heardAt = now
	switch {
	case msg.Hello != nil:
		m.hello(now, p, msg.Hello, &out)
	case msg.Ack != nil:
		m.ack(now, p, msg.Ack, &out)
	case msg.Data != nil:
		m.data(now, p, msg.Data, &out)
	}
	return m.finish(now, out)
}

func (m *Machine) hello(now time.Time, p *peer, h *Hello, out *Output) {
	if h.Name != p.name {
		m.stats.Malformed++
		out.Close = append(out.Close, Close{Peer: p.name, Reason: fmt.Sprintf("hello names %q on the connection of %q", h.Name, p.name)})
		return
	}
	p.keepalive = h.Keepalive
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

// fill sends data messages to p while its window allows. Without force a
// message goes out only when full (or when it opens or closes a stream).
func (m *Machine) fill(now time.Time, p *peer, force bool, out *Output) {
	if !p.up {
		return
	}
	for len(p.inflight) < m.cfg.Window {
		d := Data{Incarnation: m.inc, Stream: p.stream, Seq: p.nextSeq, Begin: p.nextSeq == 1}
		snapshotting := p.resyncing && !p.endSent
		if !d.Begin && len(p.pending) == 0 && !snapshotting {
			return
		}
		if !force && !d.Begin && !snapshotting && p.pendBytes < m.cfg.BatchBytes {
			return // not a full batch yet: wait for Flush
		}
		size := dataHdrLen
		var first time.Time
		recs := m.buf[:0]
		var taken [2]int // keys taken from each queue, fresh first
		for i := range p.queues {
			q := p.queues[i].keys
			for ; taken[i] < len(q) && size < m.cfg.BatchBytes; taken[i]++ {
				tk := q[taken[i]]
				at := p.pending[tk]
				if first.IsZero() || at.Before(first) {
					first = at
				}
				r := m.record(tk)
				recs = append(recs, r)
				size += recordLen(r)
			}
		}
		si := p.snapPos
		if p.resyncing {
			for ; si < len(p.snap) && size < m.cfg.BatchBytes; si++ {
				// A key deleted since goes as a deletion: it may have been
				// sent earlier in this stream (folded keys are sent again).
				r := m.record(p.snap[si])
				recs = append(recs, r)
				size += recordLen(r)
			}
			d.End = si == len(p.snap) && !p.endSent
		}
		if !force && !d.Begin && !d.End && size < m.cfg.BatchBytes {
			m.buf = recs
			return
		}
		for i := range p.queues {
			q := &p.queues[i]
			for _, tk := range q.keys[:taken[i]] {
				delete(p.pending, tk)
			}
			q.keys = q.keys[taken[i]:]
			q.sent += uint64(taken[i])
			if len(q.keys) == 0 {
				q.keys = nil
			}
		}
		if len(p.pending) == 0 {
			p.pendBytes = 0
		} else {
			p.pendBytes = max(0, p.pendBytes-(size-dataHdrLen))
		}
		p.snapPos = si
		if d.End {
			p.endSent = true
		}
		d.Records = recs
		b := AppendData(make([]byte, 0, size), d)
		m.buf = recs[:0]
		p.inflight = append(p.inflight, flight{seq: d.Seq, data: b, records: len(recs), end: d.End, first: first, qEnd: [2]uint64{p.queues[qFresh].sent, p.queues[qChanged].sent}})
		p.nextSeq++
		if p.rtoAt.IsZero() {
			p.rtoAt = now.Add(m.cfg.RetransmitTimeout)
		}
		m.stats.SentMessages++
		m.stats.SentRecords += uint64(len(recs))
		m.stats.SentBytes += uint64(len(b) + FrameHeader)
		out.Sends = append(out.Sends, Send{Peer: p.name, Data: b})
	}
	if len(p.inflight) >= m.cfg.Window {
		m.stats.WindowFull++
	}
}

func (m *Machine) record(tk string) Record {
	kind, key := splitKey(tk)
	v, ok := m.table[tk]
	if !ok {
		return Record{Kind: kind, Key: key, Deleted: true}
	}
	return Record{Kind: kind, Key: key, Value: v}
}

func (m *Machine) resend(now time.Time, p *peer, out *Output) {
	for _, f := range p.inflight {
		m.stats.ResentMessages++
		m.stats.ResentRecords += uint64(f.records)
		m.stats.SentBytes += uint64(len(f.data) + FrameHeader)
		out.Sends = append(out.Sends, Send{Peer: p.name, Data: f.data})
	}
	p.rtoAt = now.Add(max(p.backoff, m.cfg.RetransmitTimeout))
}

func (m *Machine) ack(now time.Time, p *peer, a *Ack, out *Output) {
	if a.Incarnation != m.inc || a.Stream != p.stream || !p.up {
		m.stats.StaleAcks++
		return
	}
	if a.Seq >= p.nextSeq {
		// Acknowledging what was never sent: a broken peer.
		m.stats.Malformed++
		out.Close = append(out.Close, Close{Peer: p.name, Reason: fmt.Sprintf("ack of seq %d, only %d sent", a.Seq, p.nextSeq-1)})
		return
	}
	m.ackUpTo(now, p, a.Seq)
	if a.Nack && len(p.inflight) > 0 && (p.lastNack.IsZero() || now.Sub(p.lastNack) >= m.cfg.NackHoldoff) {
		p.lastNack = now
		m.stats.Nacks++
		m.resend(now, p, out)
	}
	m.fill(now, p, true, out)
}

func (m *Machine) ackUpTo(now time.Time, p *peer, seq uint64) {
	if seq <= p.acked {
		return
	}
	n := 0
	for n < len(p.inflight) && p.inflight[n].seq <= seq {
		f := p.inflight[n]
		if !f.first.IsZero() {
			m.stats.Lag.observe(now.Sub(f.first))
		}
		for i := range p.queues {
			p.queues[i].acked = f.qEnd[i]
		}
		if f.end {
			p.endAcked = p.stream
			p.resyncing = false
			p.snap = p.snap[:0]
			p.snapPos = 0
		}
		n++
	}
	p.inflight = append(p.inflight[:0], p.inflight[n:]...)
	p.acked = seq
	p.backoff = 0
	p.rtoAt = time.Time{}
	if len(p.inflight) > 0 {
		p.rtoAt = now.Add(m.cfg.RetransmitTimeout)
	}
}

func (m *Machine) finish(now time.Time, out Output) Output {
	m.checkBarriers(&out)
	m.noteSends(now, out.Sends)
	for _, n := range m.names {
		p := m.peers[n]
		if w := m.livenessWake(p); !w.IsZero() && (out.Wake.IsZero() || w.Before(out.Wake)) {
			out.Wake = w
		}
		if p.up && !p.rtoAt.IsZero() && (out.Wake.IsZero() || p.rtoAt.Before(out.Wake)) {
			out.Wake = p.rtoAt
		}
		if p.connected && !p.up && (out.Wake.IsZero() || p.helloAt.Before(out.Wake)) {
			out.Wake = p.helloAt
		}
	}
	return out
}
