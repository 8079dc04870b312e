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
//     (go-back-N) when the retransmission timer expires or a Nack arrives;
//     the timer follows the peer's measured acknowledgement delay
//     (retransmit.go).
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
	// RetransmitTimeout (measured delays and repeated timeouts alike).
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
	// RetransmitTimeout is the least time a message stays unacknowledged
	// before the newest message in flight is sent again as a probe
	// (retransmit.go), and that time until a delay was
	// measured: the timeout follows each peer's measured acknowledgement
	// delay (RFC 6298, retransmit.go) up to maxBackoff times this.
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

// tableVal is a value of the local table and when it was put (since the
// machine's epoch): a message says how long it was held (Record.Held).
type tableVal struct {
	v  []byte
	at time.Duration
}

// heldAt is how long v has been held at now.
func (m *Machine) heldAt(now time.Time, v tableVal) time.Duration {
	return max(now.Sub(m.epoch)-v.at, 0)
}

// Machine is one node's sync state. It is not safe for concurrent use.
type Machine struct {
	cfg   Config
	inc   uint64
	table map[string]tableVal // table key -> value
	// epoch is the clock of the first put: a value's put time is kept as
	// the time since (tableVal.at), from the shell's monotonic clock.
	epoch time.Time
	// snapSent: the keys a resync's snapshot carried since they were
	// last put. Their values reached a peer later than they were put, so
	// the peer may take them for younger than they are: their Local
	// deletions are sent (see Record.Local).
	snapSent map[string]struct{}
	peers    map[string]*peer
	names    []string // sorted peer names
	stats    Stats
	buf      []sendRec
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
	m := &Machine{cfg: cfg, inc: incarnation, table: map[string]tableVal{}, snapSent: map[string]struct{}{}, peers: map[string]*peer{}}
	for _, n := range cfg.Peers {
		switch {
		case n == "" || len(n) > maxNameLen:
			return nil, fmt.Errorf("sync: peer name %q: want 1..%d bytes", n, maxNameLen)
		case n == cfg.Self:
			return nil, fmt.Errorf("sync: peer %q is self", n)
		case m.peers[n] != nil:
			return nil, fmt.Errorf("sync: peer %q listed twice", n)
		}
		m.peers[n] = &peer{name: n, pending: map[string]time.Time{}, rKeys: map[string]uint64{}, nextSeq: 1,
			rtt: newRTOEstimator(cfg.RetransmitTimeout)}
		m.names = append(m.names, n)
	}
	slices.Sort(m.names)
	return m, nil
}

// tableKey is r's key in the table (KeyOf): its ID when the caller gave
// it (checkRecord compared them).
func tableKey(r Record) string {
	if r.ID != "" {
		return r.ID
	}
	return KeyOf(r.Kind, r.Key)
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
	var out Output
	m.put(now, r, slices.Clone(r.Value), &out)
	return m.finish(now, out), nil
}

// putChecked puts records that passed checkRecord, in order (a Deleted
// one is a removal), with one Output: the wake-ups and barriers are
// worked out once for the burst, not once per record. Their values are
// the table's from now on (the Node's: Put copied them, PutAll took
// them).
func (m *Machine) putChecked(now time.Time, rs []Record) Output {
	var out Output
	for _, r := range rs {
		m.put(now, r, r.Value, &out)
	}
	return m.finish(now, out)
}

// put sets (or removes) checked record r, value the table's copy of its
// value, queueing the change for every peer (a Local deletion for none,
// unless a snapshot carried the key since its last put: a key already
// queued goes as the deletion it now is).
func (m *Machine) put(now time.Time, r Record, value []byte, out *Output) {
	tk := tableKey(r)
	_, had := m.table[tk]
	_, snapped := m.snapSent[tk]
	delete(m.snapSent, tk)
	if r.Deleted {
		if had {
			delete(m.table, tk)
			if !r.Local || snapped {
				m.queue(now, tk, qChanged, out)
			}
		}
		return
	}
	if value == nil {
		value = []byte{}
	}
	if m.epoch.IsZero() {
		m.epoch = now
	}
	m.table[tk] = tableVal{v: value, at: now.Sub(m.epoch)}
	q := qChanged
	if !had {
		q = qFresh
	}
	m.queue(now, tk, q, out)
}

// Delete removes a record from the local table and queues its removal.
func (m *Machine) Delete(now time.Time, kind uint16, key []byte) (Output, error) {
	if err := checkRecord(Record{Key: key}); err != nil {
		return Output{}, err
	}
	var out Output
	m.put(now, Record{Kind: kind, Key: key, Deleted: true}, nil, &out)
	return m.finish(now, out), nil
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
		m.retransmitDue(now, p, &out)
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
	p.rtt.resetBackoff()
	m.sayHello(now, p, &out)
	return m.finish(now, out)
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
