package sctplb

// The Diameter agent's connections: how messages are read (framing,
// slabs) and written (inline by readers, else by a writer goroutine per
// connection), on TCP and on SCTP.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb/diam"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// dconn is one connection: a reader goroutine, and a writer goroutine fed
// by a queue so that a slow peer never blocks the machine. On TCP a reader
// that queued messages writes them itself first without blocking
// (flushInline); what the socket does not take at once goes to the writer.
type dconn struct {
	id   diam.ConnID
	p    peerIO
	raw  syscall.RawConn // nil: no inline writes (SCTP)
	done chan struct{}
	// wake tells the writer the queue went from empty to not empty (or
	// that closing was set): one wake-up per burst, not per message.
	wake chan struct{}
	qmu  sync.Mutex
	// queue is what waits to be written; spare is the other slice the
	// holder of the socket swaps with it. writing is held by whoever
	// writes (the writer or an inline flush): one at a time, in order.
	queue, spare []outMsg
	// iov is flushInline's writev vector and bufs the writer's, kept
	// across calls (used by the holder of writing only).
	iov  []unix.Iovec
	bufs net.Buffers
	// writevFn is flushInline's callback for raw.Write, made once (a
	// closure made per call escaped: an allocation per flush), with its
	// results in wn and werr.
	writevFn func(fd uintptr) bool
	wn       int
	werr     error
	writing  bool
	closing  bool
	shutOnce sync.Once
}

// outMsg is a message to write and the reference to its memory (nil: the
// garbage collector's), released once it is written.
type outMsg struct {
	b   []byte
	ref diam.Ref
}

func releaseRef(r diam.Ref) {
	if r != nil {
		r.Release()
	}
}

// maxQueued bounds a connection's queue: a peer that lets this many
// messages pile up is not reading.
const maxQueued = 1024

func newDconn(id diam.ConnID, p peerIO) *dconn {
	c := &dconn{id: id, p: p, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	if t, ok := p.(*tcpPeer); ok {
		if sc, ok := t.c.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				c.raw = raw
				c.writevFn = func(fd uintptr) bool {
					c.wn, c.werr = writevOnce(fd, c.iov)
					return true // never wait: waiting is the writer's job
				}
			}
		}
	}
	return c
}

// enqueue queues b; false if the queue is full (the peer does not read).
// With inline set (a reader's batch), a connection that can be written
// inline and has nobody writing is added to dirty instead of waking its
// writer: the reader flushes it after the machine's lock.
func (c *dconn) enqueue(b []byte, inline bool, dirty *[]*dconn) bool {
	return c.enqueueRef(b, nil, inline, dirty)
}

// enqueueRef is enqueue of b with the reference to its memory, which the
// queue releases once b is written (or dropped because the connection
// closes); false leaves ref to the caller.
func (c *dconn) enqueueRef(b []byte, ref diam.Ref, inline bool, dirty *[]*dconn) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		releaseRef(ref)
		return true
	}
	if len(c.queue) >= maxQueued {
		return false
	}
	c.queue = append(c.queue, outMsg{b, ref})
	if len(c.queue) == 1 && !c.writing {
		// While someone writes, it looks at the queue again when done.
		if inline && c.raw != nil {
			*dirty = append(*dirty, c)
		} else {
			c.signal()
		}
	}
	return true
}

func (c *dconn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeAfterWrites lets the writer flush what is queued, then close.
func (c *dconn) closeAfterWrites() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if !c.closing {
		c.closing = true
		if !c.writing {
			c.signal()
		}
	}
}

// shut closes the connection now.
func (c *dconn) shut() {
	c.shutOnce.Do(func() {
		close(c.done)
		_ = c.p.close()
	})
}

// take makes the caller the socket's only writer and hands it the whole
// queue; false if someone else writes, or if nothing is queued and
// closing was not asked. The two queue slices are swapped, so none is
// allocated once both have grown.
func (c *dconn) take() (batch []outMsg, closing, ok bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.writing || (len(c.queue) == 0 && !c.closing) {
		return nil, false, false
	}
	c.writing = true
	batch, c.queue, c.spare = c.queue, c.spare[:0], nil
	return batch, c.closing, true
}

// release gives the socket back, with rest (unwritten, in order) put
// before anything queued meanwhile; the writer is woken if anything is
// left or closing was asked meanwhile. The messages of batch before rest
// were written and their references released.
func (c *dconn) release(batch, rest []outMsg) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.writing = false
	if len(rest) > 0 {
		// rest is a suffix of batch: what was queued meanwhile goes
		// after it in batch's own array (its tail past rest is unused).
		n := len(rest)
		rest = append(rest, c.queue...)
		clear(c.queue)
		c.spare, c.queue = c.queue[:0], rest
		clear(batch[:len(batch)-n])
	} else {
		clear(batch)
		c.spare = batch[:0]
	}
	if len(c.queue) > 0 || c.closing {
		c.signal()
	}
}

// flushInline writes the queue with one non-blocking writev from the
// calling reader; what the socket does not take at once (or an
// interrupted call) is left to the writer goroutine, which may block.
func (c *dconn) flushInline() {
	batch, closing, ok := c.take()
	if !ok {
		return
	}
	if closing || len(batch) == 0 {
		// Closing is the writer's to carry out, after the last write.
		c.release(batch, batch)
		return
	}
	c.iov = iovecs(c.iov[:0], batch)
	err := c.raw.Write(c.writevFn)
	n, werr := c.wn, c.werr
	c.werr = nil
	clear(c.iov) // keeps no message alive
	if err == nil && werr != nil && !errors.Is(werr, syscall.EAGAIN) && !errors.Is(werr, syscall.EINTR) {
		err = werr
	}
	if err != nil {
		for _, m := range batch {
			releaseRef(m.ref) // never to be written: the connection is shut
		}
		c.release(batch, nil)
		c.shut()
		return
	}
	rest := written(batch, n)
	c.release(batch, rest)
}

// iovecs appends the vector of msgs to iov.
func iovecs(iov []unix.Iovec, msgs []outMsg) []unix.Iovec {
	for _, m := range msgs {
		if b := m.b; len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	return iov
}

// written releases the messages of msgs the n bytes written cover, and
// returns what is left: a suffix of msgs, its first element cut where the
// write stopped (it keeps its reference).
func written(msgs []outMsg, n int) []outMsg {
	for i := range msgs {
		b := msgs[i].b
		if n < len(b) {
			msgs[i].b = b[n:]
			return msgs[i:]
		}
		n -= len(b)
		releaseRef(msgs[i].ref)
		msgs[i] = outMsg{}
	}
	return nil
}

// writer sends what inline flushes left and what other steps (timers,
// accepts, dials) queued: it takes the whole queue at each wake-up and,
// on TCP, writes it in one writev (a system call and a wake-up per
// message cost the agent most of its throughput against a plain relay).
func (c *dconn) writer() {
	bw, batching := c.p.(batchWriter)
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		batch, closing, ok := c.take()
		if !ok {
			// Someone else writes, and wakes us when done if needed.
			continue
		}
		var err error
		if batching && len(batch) > 0 {
			for _, m := range batch {
				c.bufs = append(c.bufs, m.b)
			}
			err = bw.writeBatch(c.bufs)
			clear(c.bufs)
			c.bufs = c.bufs[:0]
		} else {
			for _, m := range batch {
				if err = c.p.write(m.b); err != nil {
					break
				}
			}
		}
		// Written, or never to be (the connection is shut on error).
		for _, m := range batch {
			releaseRef(m.ref)
		}
		c.release(batch, nil)
		if err != nil {
			c.shut()
			return
		}
		if closing {
			// Taken with the queue under one lock, and enqueue adds
			// nothing once closing: everything queued is written.
			c.shut()
			return
		}
	}
}

// batchWriter writes several messages at once (TCP: one writev).
type batchWriter interface {
	writeBatch(net.Buffers) error
}

func (p *tcpPeer) writeBatch(b net.Buffers) error {
	_, err := b.WriteTo(p.c)
	return err
}

// peerIO reads and writes whole Diameter messages.
type peerIO interface {
	// readRef returns the next message and, when its memory is a
	// recycled slab, a reference to it the caller must release (through
	// the machine).
	readRef() ([]byte, diam.Ref, error)
	// finish releases what the reader holds of its read buffers; the
	// reader calls it once, when it stops reading.
	finish()
	// ready reports whether read would return a whole message without
	// waiting for the network.
	ready() bool
	write([]byte) error
	close() error
	remote() string
}

// routeRecordRoom is the spare capacity left after each message read: a
// Route-Record AVP for an Origin-Host of up to 80 bytes.
const routeRecordRoom = 88

type tcpPeer struct {
	c net.Conn
	r *bufio.Reader
	// slab is where the next messages read are carved from: one
	// allocation per slabSize bytes rather than one per message (no
	// pool), or cur from off on, a slab of pool (recycled).
	slab []byte
	pool *slabPool
	cur  *slab
	off  int
}

// slabSize is the size of a read slab. A slab lives as long as one of its
// messages is referenced (queued, or pending an answer): at most this
// much is kept per message still held.
const slabSize = 32 << 10

// slab is a read buffer messages are cut from, recycled through its pool
// once nothing refers to it: the reader while it cuts from it, and each
// message cut from it until written and, for a forwarded request, until
// answered or failed (the machine's reference, diam.Message). Recycling
// took the garbage collector's share of the agent's CPU (most of what it
// allocated per request was slab) away.
type slab struct {
	buf  []byte
	refs atomic.Int32
	pool *slabPool
}

func (s *slab) Retain() { s.refs.Add(1) }

func (s *slab) Release() {
	switch n := s.refs.Add(-1); {
	case n == 0:
		s.pool.put(s)
	case n < 0:
		// Its bytes may already be another message's: carrying on
		// would send them.
		panic("sctplb: Diameter read slab released more often than retained")
	}
}

// slabPool keeps released slabs for the readers of one agent, last in
// first out (the most recently used memory is the likeliest cached).
type slabPool struct {
	mu   sync.Mutex
	free []*slab
}

// maxFreeSlabs bounds the memory idle in a pool (2 MiB): past it a
// released slab is left to the garbage collector.
const maxFreeSlabs = 64

// get returns a slab whose only reference is the caller's.
func (p *slabPool) get() *slab {
	p.mu.Lock()
	var s *slab
	if n := len(p.free); n > 0 {
		s = p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
	}
	p.mu.Unlock()
	if s == nil {
		s = &slab{buf: make([]byte, slabSize), pool: p}
	}
	s.refs.Store(1)
	return s
}

func (p *slabPool) put(s *slab) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < maxFreeSlabs {
		p.free = append(p.free, s)
	}
}

// buffer returns room for a message of n bytes plus room (a
// Route-Record), capacity clipped so that appending never reaches the
// next message, and the slab it was cut from (nil: not a pool's).
func (p *tcpPeer) buffer(n, room int) ([]byte, *slab) {
	need := n + room
	if need > slabSize/4 {
		return make([]byte, n, need), nil
	}
	if p.pool == nil {
		if need > len(p.slab) {
			p.slab = make([]byte, slabSize)
		}
		b := p.slab[:n:need]
		p.slab = p.slab[need:]
		return b, nil
	}
	if p.cur == nil || need > slabSize-p.off {
		if p.cur != nil {
			p.cur.Release() // done cutting from it
		}
		p.cur, p.off = p.pool.get(), 0
	}
	b := p.cur.buf[p.off : p.off+n : p.off+need]
	p.off += need
	return b, p.cur
}

func newTCPPeer(c net.Conn) *tcpPeer { return &tcpPeer{c: c, r: bufio.NewReaderSize(c, 64<<10)} }

// newPooledTCPPeer is the agent's peer: its messages are cut from pool's
// slabs, and it reads with raw system calls (diameter_rawio.go) where the
// connection has a file descriptor.
func newPooledTCPPeer(c net.Conn, pool *slabPool) *tcpPeer {
	p := newTCPPeer(c)
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			p.r.Reset(newRawReader(raw))
		}
	}
	p.pool = pool
	return p
}

// read is readRef for a peer without a pool.
func (p *tcpPeer) read() ([]byte, error) {
	b, _, err := p.readRef()
	return b, err
}

func (p *tcpPeer) finish() {
	if p.cur != nil {
		p.cur.Release()
		p.cur = nil
	}
}

// readRef splits the stream with the header's length. A header that cannot be
// framed (bad version or length) ends the connection: its first bytes are
// returned with the error, so the machine can answer 5011/5015.
func (p *tcpPeer) readRef() ([]byte, diam.Ref, error) {
	h, err := p.r.Peek(4)
	if err != nil {
		return nil, nil, err
	}
	n, ferr := diameter.FrameLen(h)
	if ferr != nil {
		hdr, _ := p.r.Peek(diameter.HeaderLen)
		return append([]byte(nil), hdr...), nil, ferr
	}
	// Room for the Route-Record the agent appends to a request (diam
	// Message: the machine edits the buffer in place); an answer is
	// relayed as it is. A framed message has a whole header.
	room := 0
	if h, err = p.r.Peek(5); err != nil {
		return nil, nil, err
	}
	if h[4]&diameter.FlagRequest != 0 {
		room = routeRecordRoom
	}
	b, s := p.buffer(n, room)
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, nil, err
	}
	if s == nil {
		return b, nil, nil
	}
	s.Retain() // the message's
	return b, s, nil
}

func (p *tcpPeer) ready() bool {
	if p.r.Buffered() < 4 {
		return false
	}
	h, _ := p.r.Peek(4)
	n, err := diameter.FrameLen(h)
	return err == nil && n <= p.r.Buffered()
}

func (p *tcpPeer) write(b []byte) error {
	_, err := p.c.Write(b)
	return err
}

func (p *tcpPeer) close() error   { return p.c.Close() }
func (p *tcpPeer) remote() string { return p.c.RemoteAddr().String() }

// sctpPeer carries one Diameter message per SCTP user message, on stream
// 0 (RFC 6733 §2.1.1 leaves the stream to the sender).
type sctpPeer struct {
	c   transport.Conn
	ctx context.Context
}

func (p *sctpPeer) readRef() ([]byte, diam.Ref, error) {
	m, err := p.c.Recv(p.ctx)
	if err != nil {
		return nil, nil, err
	}
	// Clipped: the machine appends in place (diam.Message), and a
	// transport may hand out slices of a buffer it shares.
	return m.Data[:len(m.Data):len(m.Data)], nil, nil
}

func (p *sctpPeer) finish() {}

// ready is false: each SCTP user message is one receive call.
func (p *sctpPeer) ready() bool { return false }

func (p *sctpPeer) write(b []byte) error {
	return p.c.Send(p.ctx, transport.Message{Stream: 0, PPID: diameter.PPID, Data: b})
}

func (p *sctpPeer) close() error   { return p.c.Close() }
func (p *sctpPeer) remote() string { return p.c.Remote() }
