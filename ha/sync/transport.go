package sync

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/telcolb/telcolb/internal/certfile"
)

// Peer is one other member of the group: its name (which its certificate
// must carry as a DNS SAN) and where it listens.
type Peer struct {
	Name string
	Addr string // host:port
}

// NodeConfig configures the TCP + mutual TLS shell around a Machine.
type NodeConfig struct {
	Self   string
	Listen string // host:port; ":0" picks a port (see Node.Addr)
	Peers  []Peer
	// CertFile and KeyFile are this node's certificate (its SAN must name
	// Self) and key; CAFile is the group CA (a bundle during a CA
	// rotation) every member's certificate must chain to. The files are
	// read again when they change (a cert-manager renewal): new
	// handshakes use the new set, established connections keep theirs.
	CertFile, KeyFile, CAFile string
	// Initial is the local table at start. It is in the machine before the
	// node listens or dials, so the first bulk resync a peer gets carries
	// it: a node restarting with an empty table would otherwise wipe what
	// its peers hold from it.
	Initial []Record
	// Machine tunes the protocol (Self and Peers are filled in).
	Machine Config
	// Apply receives the records peers send, from the node's goroutine, in
	// order. It must not block for long. Keys and values may be retained.
	// A message is acknowledged only once Apply has returned for its
	// records (Barrier relies on it).
	Apply func([]Applied)
	// OnSynced is called (from the node's goroutine) when a peer's bulk
	// resync to us completes.
	OnSynced func(peer string)
	// OnPeerLost is called (from the node's goroutine; it must not block)
	// when an established connection with a peer ends from the peer's
	// side or the network's: end of stream, reset, a read error, or the
	// peer silent past Machine.PeerTimeout (liveness.go; then this node
	// closes the connection, within PeerTimeout plus a tick). Not when
	// this node closed it (a peer that stopped reading, a protocol error,
	// a connection replaced by the peer's new one): a slow peer is not a
	// lost one. It is the sync's verdict that the peer is down, nothing
	// more: a cut sync link looks the same.
	OnPeerLost func(peer string)
	// MaxQueuedBytes bounds the messages waiting to be written to one
	// peer (DefaultMaxQueuedBytes if zero); past it the connection is
	// closed (NodeStats.SlowPeers).
	MaxQueuedBytes int
	// RedialInterval is how often a missing connection is dialled again
	// (default 1 s). The member with the lower name dials.
	RedialInterval time.Duration
	Logger         *slog.Logger
	// Impair, when set, is asked about every message sent (a test hook:
	// it loses messages within one connection, which TCP never lets a
	// lossy link do; scenarios/vm runs the sync over a real netem link).
	// See Fault.
	Impair func(peer string) Fault
}

// Fault is what the Impair hook does to one outgoing message.
type Fault struct {
	Drop bool
	// Delay holds the message back until after the next one to the same
	// peer (a reordering) or the next timer tick.
	Delay bool
}

// NodeStats is the machine's counters plus the transport's.
type NodeStats struct {
	Stats
	// Refused counts connections refused: TLS handshake failures
	// (unknown CA, expired, no certificate) and certificates naming no
	// member of the group.
	Refused uint64
	// BadFrames counts connections closed for an oversized frame.
	BadFrames uint64
	// SlowPeers counts connections closed because the peer stopped
	// reading and the write queue passed its bound.
	SlowPeers uint64
	Dials     uint64
	// WireBytes counts bytes written to TCP connections (TLS records,
	// handshakes and acknowledgements included; TCP/IP headers not).
	WireBytes uint64
	// TLSReloadErrors counts changed TLS file sets that did not load (the
	// previous set stays in use); TLSReloads those that did.
	TLSReloadErrors, TLSReloads uint64
	// CertNotAfter is when the certificate in use expires.
	CertNotAfter time.Time
}

// Node runs a Machine over TCP with mutual TLS 1.3.
type Node struct {
	cfg   NodeConfig
	log   *slog.Logger
	ln    net.Listener
	tls   *tls.Config // server side
	files *certfile.Reloader[*tlsFiles]
	peers map[string]Peer

	mu    stdsync.Mutex // guards m and waits
	m     *Machine
	waits map[uint64]*BarrierWait // barriers not done, by id

	opsMu stdsync.Mutex
	ops   []Record // Deleted records are deletions
	// barrierReqs are Barrier calls, answered after the ops queued before.
	barrierReqs []chan *BarrierWait
	opsWake     chan struct{}
	drop        chan string // tests: close the connection to a peer
	events      chan event

	refused, badFrames, slowPeers, dials, wireBytes atomic.Uint64
	// heard is when each peer was last heard (heard.go).
	heard heardTimes

	ctx    context.Context
	cancel context.CancelFunc
	wg     stdsync.WaitGroup
}

type event struct {
	kind int // evUp, evDown, evMsg
	peer string
	c    *conn
	data []byte
	// closedHere: evDown of a connection this node closed.
	closedHere bool
}

const (
	evUp = iota
	evDown
	evMsg
)

// tlsFiles is one loaded set of the node's TLS files.
type tlsFiles struct {
	cert *tls.Certificate
	pool *x509.CertPool
}

// loadTLS reads the node's certificate and key and the group CA bundle,
// to be read again when they change. The three are one set: a renewal
// that breaks any of them keeps the previous set whole.
func loadTLS(certFile, keyFile, caFile string, log *slog.Logger) (*certfile.Reloader[*tlsFiles], error) {
	r, err := certfile.New("HA sync TLS files", []string{certFile, keyFile, caFile}, func(c [][]byte) (*tlsFiles, error) {
		cert, err := certfile.KeyPair(certFile, keyFile, c[0], c[1])
		if err != nil {
			return nil, err
		}
		pool, _, err := certfile.CAPool(caFile, c[2])
		if err != nil {
			return nil, err
		}
		return &tlsFiles{cert: cert, pool: pool}, nil
	}, log)
	if err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	return r, nil
}

// Start listens and runs the node until ctx ends or Close is called.
func Start(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RedialInterval == 0 {
		cfg.RedialInterval = time.Second
	}
	if cfg.MaxQueuedBytes == 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	log := cfg.Logger.With("ha-sync", cfg.Self)
	files, err := loadTLS(cfg.CertFile, cfg.KeyFile, cfg.CAFile, log)
	if err != nil {
		return nil, err
	}
	mc := cfg.Machine
	mc.Self = cfg.Self
	mc.Peers = nil
	peers := map[string]Peer{}
	for _, p := range cfg.Peers {
		mc.Peers = append(mc.Peers, p.Name)
		peers[p.Name] = p
	}
	m, err := New(mc, uint64(time.Now().UnixNano()))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for i, r := range cfg.Initial {
		// No peer is connected: nothing to send yet.
		if _, err := m.Put(now, r); err != nil {
			return nil, fmt.Errorf("sync: initial record %d: %w", i, err)
		}
	}
	n := &Node{
		cfg: cfg, log: log, files: files, peers: peers, m: m, waits: map[uint64]*BarrierWait{},
		opsWake: make(chan struct{}, 1), drop: make(chan string), events: make(chan event, 1024),
	}
	n.tls = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Each handshake takes the files as they are now: the
		// certificate presented and the CA pool the client's chain is
		// verified against come from the same loaded set.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			f := n.files.Current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*f.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    f.pool,
				// The chain is verified by crypto/tls; the identity must
				// also be a member of the group.
				VerifyConnection: func(cs tls.ConnectionState) error {
					if _, ok := n.memberOf(cs); !ok {
						return errors.New("certificate names no member of the group")
					}
					return nil
				},
			}, nil
		},
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sync: listen on %s: %w", cfg.Listen, err)
	}
	n.ln = ln
	n.ctx, n.cancel = context.WithCancel(ctx)
	n.wg.Add(2)
	go n.accept()
	go n.loop()
	return n, nil
}

// memberOf finds the group member a peer certificate names. A certificate
// naming several members (or self) could speak for any of them: refused.
func (n *Node) memberOf(cs tls.ConnectionState) (string, bool) {
	if len(cs.PeerCertificates) == 0 {
		return "", false
	}
	found := ""
	for _, name := range cs.PeerCertificates[0].DNSNames {
		if name == n.cfg.Self {
			return "", false
		}
		if _, ok := n.peers[name]; ok {
			if found != "" && found != name {
				return "", false
			}
			found = name
		}
	}
	return found, found != ""
}

// Addr is where the node listens.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Close stops the node and closes its connections.
func (n *Node) Close() error {
	n.cancel()
	err := n.ln.Close()
	n.wg.Wait()
	return err
}

// Put queues a record for the peers. It never blocks on the network.
func (n *Node) Put(r Record) error {
	if err := checkRecord(r); err != nil {
		return err
	}
	r.Key, r.Value = slices.Clone(r.Key), slices.Clone(r.Value)
	n.enqueue([]Record{r})
	return nil
}

// PutAll queues records for the peers in their order (a Deleted one is a
// removal) with one wake-up of the node's loop, which then sends them in
// as few messages as a batch holds. Records put one at a time while the
// loop runs on another CPU wake it for each one, and each wake-up may
// write a message of its own and draw an acknowledgement. A record that
// fails the checks is left out and named in the error; the others are
// queued. It never blocks on the network.
//
// PutAll takes rs: the slice, and the records' keys and values, are the
// node's from the call on, and the caller must not change them (Put
// copies). A producer's records are encoded for the sync and not used
// again: copying them was a third of what the sync allocated on a loaded
// node.
func (n *Node) PutAll(rs []Record) error {
	var errs []error
	q := rs[:0]
	for i, r := range rs {
		if err := checkRecord(r); err != nil {
			errs = append(errs, fmt.Errorf("record %d of %d: %w", i+1, len(rs), err))
			continue
		}
		q = append(q, r)
	}
	n.enqueue(q)
	return errors.Join(errs...)
}

// enqueue hands checked records, the node's own, to the loop and wakes
// it once.
func (n *Node) enqueue(q []Record) {
	if len(q) == 0 {
		return
	}
	n.opsMu.Lock()
	if n.ops == nil {
		n.ops = q // the loop took the last ones: q is the queue
	} else {
		n.ops = append(n.ops, q...)
	}
	n.opsMu.Unlock()
	select {
	case n.opsWake <- struct{}{}:
	default:
	}
}

// Delete queues the removal of a record.
func (n *Node) Delete(kind uint16, key []byte) error {
	return n.Put(Record{Kind: kind, Key: key, Deleted: true})
}

// Synced says whether peer's bulk resync to us has completed.
func (n *Node) Synced(peer string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Synced(peer)
}

// Up says whether peer is connected and has said hello.
func (n *Node) Up(peer string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Up(peer)
}

// Stats returns the counters.
func (n *Node) Stats() NodeStats {
	n.mu.Lock()
	s := n.m.Stats()
	n.mu.Unlock()
	// A scrape checks the files too, so the expiry reported follows a
	// renewal even while no handshake happens.
	f := n.files.Current()
	fs := n.files.Stats()
	return NodeStats{Stats: s, Refused: n.refused.Load(), BadFrames: n.badFrames.Load(), SlowPeers: n.slowPeers.Load(), Dials: n.dials.Load(), WireBytes: n.wireBytes.Load(),
		TLSReloadErrors: fs.Errors, TLSReloads: fs.Reloads, CertNotAfter: f.cert.Leaf.NotAfter}
}

func (n *Node) accept() {
	defer n.wg.Done()
	for {
		raw, err := n.ln.Accept()
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("accept", "err", err)
			}
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			tc := tls.Server(&countingConn{Conn: raw, n: &n.wireBytes}, n.tls)
			hctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				n.refused.Add(1)
				n.log.Warn("sync connection refused", "remote", raw.RemoteAddr(), "err", err)
				_ = raw.Close()
				return
			}
			peer, _ := n.memberOf(tc.ConnectionState())
			n.serve(peer, tc)
		}()
	}
}

// dial connects to the peers this node dials (those with a higher name).
func (n *Node) dial(peer Peer) {
	defer n.wg.Done()
	n.dials.Add(1)
	// The files as they are at this dial: the certificate presented and
	// the CA pool the peer's chain (and its DNS SAN naming peer.Name) is
	// verified against.
	f := n.files.Current()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*f.cert}, RootCAs: f.pool, ServerName: peer.Name}
	raw, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(n.ctx, "tcp", peer.Addr)
	if err != nil {
		n.dialFailed(peer.Name)
		return
	}
	tc := tls.Client(&countingConn{Conn: raw, n: &n.wireBytes}, cfg)
	hctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) {
			n.refused.Add(1)
			n.log.Warn("sync peer refused", "peer", peer.Name, "err", err)
		}
		n.dialFailed(peer.Name)
		return
	}
	n.serve(peer.Name, tc)
}

func (n *Node) dialFailed(peer string) {
	select {
	case n.events <- event{kind: evDown, peer: peer}:
	case <-n.ctx.Done():
	}
}

// countingConn counts the bytes a connection writes, TLS records included.
type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	c.n.Add(uint64(k))
	return k, err
}

// DefaultMaxQueuedBytes bounds what waits for one connection's writer. A
// peer that stops reading (frozen, its TCP window closed) would otherwise
// collect in memory what is sent to it; past the bound the connection is closed
// and the peer resumes or resyncs when it comes back.
const DefaultMaxQueuedBytes = 32 << 20

type conn struct {
	tc     *tls.Conn
	mu     stdsync.Mutex
	q      [][]byte
	queued int
	limit  int
	wake   chan struct{}
	done   chan struct{}
	once   stdsync.Once
	// silent: closed here because the peer was silent past the machine's
	// PeerTimeout (a loss, reported as one).
	silent atomic.Bool
}

// send queues b; false when the queue is over its bound (the caller
// closes the connection).
func (c *conn) send(b []byte) bool {
	c.mu.Lock()
	c.q = append(c.q, b)
	c.queued += len(b) + FrameHeader
	over := c.queued > c.limit
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return !over
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.tc.Close()
	})
}

// serve runs one authenticated connection: a writer and this reader.
func (n *Node) serve(peer string, tc *tls.Conn) {
	c := &conn{tc: tc, limit: n.cfg.MaxQueuedBytes, wake: make(chan struct{}, 1), done: make(chan struct{})}
	select {
	case n.events <- event{kind: evUp, peer: peer, c: c}:
	case <-n.ctx.Done():
		_ = tc.Close()
		return
	}
	n.wg.Add(1)
	go n.write(c)
	r := bufio.NewReaderSize(tc, 64<<10)
	var hdr [FrameHeader]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		l := binary.BigEndian.Uint32(hdr[:])
		if l > MaxFrame {
			n.badFrames.Add(1)
			n.log.Warn("sync peer sent an oversized frame, closing", "peer", peer, "bytes", l)
			break
		}
		b := make([]byte, l) // a fresh buffer: applied records alias it
		if _, err := io.ReadFull(r, b); err != nil {
			break
		}
		n.heard.note(peer, time.Now())
		select {
		case n.events <- event{kind: evMsg, peer: peer, c: c, data: b}:
		case <-n.ctx.Done():
		}
		if n.ctx.Err() != nil {
			break
		}
	}
	closedHere := false
	select {
	case <-c.done:
		closedHere = true // closed before the read failed: by this node
	default:
	}
	c.close()
	select {
	case n.events <- event{kind: evDown, peer: peer, c: c, closedHere: closedHere}:
	case <-n.ctx.Done():
	}
}

func (n *Node) write(c *conn) {
	defer n.wg.Done()
	w := bufio.NewWriterSize(c.tc, 64<<10)
	var hdr [FrameHeader]byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		case <-n.ctx.Done():
			c.close()
			return
		}
		c.mu.Lock()
		q := c.q
		c.q = nil
		c.mu.Unlock()
		for _, b := range q {
			binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
			_, _ = w.Write(hdr[:])
			_, _ = w.Write(b)
			c.mu.Lock()
			c.queued -= len(b) + FrameHeader
			c.mu.Unlock()
		}
		if err := w.Flush(); err != nil {
			c.close()
			return
		}
	}
}
