package usrsctp

/*
#include "tlb_usrsctp.h"
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Compile-time checks that notify.go's offsets match usrsctp.h.
var (
	_ [unsafe.Offsetof(C.struct_sctp_paddr_change{}.spc_state) - paddrStateOff]struct{}
	_ [paddrStateOff - unsafe.Offsetof(C.struct_sctp_paddr_change{}.spc_state)]struct{}
	_ [unsafe.Offsetof(C.struct_sctp_paddr_change{}.spc_aaddr) - paddrAddrOff]struct{}
	_ [paddrAddrOff - unsafe.Offsetof(C.struct_sctp_paddr_change{}.spc_aaddr)]struct{}
	_ [unsafe.Offsetof(C.struct_sctp_assoc_change{}.sac_assoc_id) - 16]struct{}
	_ [16 - unsafe.Offsetof(C.struct_sctp_assoc_change{}.sac_assoc_id)]struct{}
	_ [unsafe.Offsetof(C.struct_sctp_remote_error{}.sre_assoc_id) - 12]struct{}
	_ [12 - unsafe.Offsetof(C.struct_sctp_remote_error{}.sre_assoc_id)]struct{}
	_ [unsafe.Offsetof(C.struct_sctp_send_failed_event{}.ssfe_assoc_id) - sendFailedAssocOff]struct{}
	_ [sendFailedAssocOff - unsafe.Offsetof(C.struct_sctp_send_failed_event{}.ssfe_assoc_id)]struct{}
)

const (
	// maxMessage bounds reassembly of one message (SCTP messages may span
	// several reads with partial delivery).
	maxMessage = 1 << 20
	// pollInterval re-checks a socket even without an upcall: a safety net,
	// readiness normally arrives through the upcall at once.
	pollInterval = 100 * time.Millisecond
)

// ErrClosed is returned by operations on a closed socket or stack.
var ErrClosed = errors.New("usrsctp: closed")

// socket is a non-blocking usrsctp socket with an upcall-driven wakeup.
type socket struct {
	stack *Stack
	id    uintptr
	kind  string // "dial", "accepted", "listener": for Stack.Close's error
	ready chan struct{}
	done  chan struct{}

	mu     sync.RWMutex // held shared across C calls, exclusively by close
	so     *C.struct_socket
	closed bool
}

func (s *Stack) newSocket(domain C.int, kind string) (*socket, error) {
	so, err := C.tlb_socket(domain)
	if so == nil {
		return nil, fmt.Errorf("usrsctp: socket: %w", errnoOr(err))
	}
	return s.wrap(so, kind)
}

// wrap makes so non-blocking, subscribes to the events this package
// surfaces, and registers its upcall.
func (s *Stack) wrap(so *C.struct_socket, kind string) (*socket, error) {
	sk := &socket{stack: s, kind: kind, so: so, ready: make(chan struct{}, 1), done: make(chan struct{})}
	if r, err := C.usrsctp_set_non_blocking(so, 1); r != 0 {
		C.usrsctp_close(so)
		return nil, fmt.Errorf("usrsctp: set non-blocking: %w", errnoOr(err))
	}
	if r, err := C.tlb_subscribe(so); r != 0 {
		C.usrsctp_close(so)
		return nil, fmt.Errorf("usrsctp: subscribe to events: %w", errnoOr(err))
	}
	if err := s.track(sk); err != nil {
		C.usrsctp_close(so)
		return nil, err
	}
	sk.id = upcallID.Add(1)
	upcalls.Store(sk.id, sk)
	if r, err := C.tlb_set_upcall(so, C.uintptr_t(sk.id)); r != 0 {
		sk.close()
		return nil, fmt.Errorf("usrsctp: set upcall: %w", errnoOr(err))
	}
	return sk, nil
}

func (sk *socket) wake() {
	select {
	case sk.ready <- struct{}{}:
	default:
	}
}

// wait blocks until the socket may be ready again, ctx ends or it closes.
func (sk *socket) wait(ctx context.Context) error {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-sk.ready:
		return nil
	case <-t.C:
		return nil
	case <-sk.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call runs fn with the C socket unless it is closed.
func (sk *socket) call(fn func(so *C.struct_socket) error) error {
	sk.mu.RLock()
	defer sk.mu.RUnlock()
	if sk.closed {
		return ErrClosed
	}
	return fn(sk.so)
}

// abort sends ABORT and frees the association immediately instead of a
// SHUTDOWN exchange, then closes.
func (sk *socket) abort() string { return sk.shut(true) }

// close closes gracefully: the SHUTDOWN exchange runs in the background
// and the socket is closed once it is done (release.go).
func (sk *socket) close() { sk.shut(false) }

// shut closes the socket and returns the association state it had (for
// Stack.Close's error), "" if it was already closed.
func (sk *socket) shut(abort bool) string {
	sk.mu.Lock()
	if sk.closed {
		sk.mu.Unlock()
		return ""
	}
	sk.closed = true
	upcalls.Delete(sk.id)
	so := sk.so
	state := assocState(so)
	sk.stack.recordClose(closeRecord{kind: sk.kind, abort: abort, state: state, port: localPort(so), at: time.Now()})
	sk.so = nil
	close(sk.done)
	sk.mu.Unlock()
	sk.stack.untrack(sk)
	// The association ends before the socket is closed (release.go).
	sk.stack.release(so, abort)
	return state
}

func wouldBlock(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		errors.Is(err, syscall.EINPROGRESS) || errors.Is(err, syscall.EALREADY)
}

func domainFor(addrs ...[]netip.Addr) C.int {
	for _, list := range addrs {
		for _, a := range list {
			if a.Is6() && !a.Is4In6() {
				return C.AF_INET6
			}
		}
	}
	return C.AF_INET
}

func packAddrs(addrs []netip.Addr, port uint16) ([]byte, error) {
	var b []byte
	for _, a := range addrs {
		if !a.IsValid() {
			return nil, errors.New("invalid address")
		}
		b = appendSockaddr(b, a, port)
	}
	return b, nil
}

func (sk *socket) bindx(addrs []netip.Addr, port uint16) error {
	packed, err := packAddrs(addrs, port)
	if err != nil {
		return fmt.Errorf("usrsctp: bind %v: %w", addrs, err)
	}
	cbuf := C.CBytes(packed)
	defer C.free(cbuf)
	return sk.call(func(so *C.struct_socket) error {
		if r, err := C.usrsctp_bindx(so, (*C.struct_sockaddr)(cbuf), C.int(len(addrs)), C.SCTP_BINDX_ADD_ADDR); r != 0 {
			return fmt.Errorf("usrsctp: bindx %v port %d: %w", addrs, port, errnoOr(err))
		}
		return nil
	})
}

// Listener accepts associations on a one-to-one (SOCK_STREAM) socket.
type Listener struct{ sk *socket }

// Listen binds the given local addresses (all of them: a multi-homed
// endpoint; none: every address of the namespace) on port and listens.
func (s *Stack) Listen(addrs []netip.Addr, port uint16) (*Listener, error) {
	if port == 0 {
		return nil, errors.New("usrsctp: listen: port 0")
	}
	sk, err := s.newSocket(domainFor(addrs), "listener")
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.IPv4Unspecified()}
	}
	if s.cfg.Streams > 0 {
		if err := sk.call(func(so *C.struct_socket) error {
			if r, err := C.tlb_set_initmsg(so, C.uint16_t(s.cfg.Streams), C.uint16_t(s.cfg.Streams)); r != 0 {
				return fmt.Errorf("usrsctp: initmsg: %w", errnoOr(err))
			}
			return nil
		}); err != nil {
			sk.close()
			return nil, err
		}
	}
	if err := sk.bindx(addrs, port); err != nil {
		sk.close()
		return nil, err
	}
	if err := sk.call(func(so *C.struct_socket) error {
		if r, err := C.usrsctp_listen(so, 128); r != 0 {
			return fmt.Errorf("usrsctp: listen: %w", errnoOr(err))
		}
		return nil
	}); err != nil {
		sk.close()
		return nil, err
	}
	return &Listener{sk: sk}, nil
}

// Accept waits for the next association.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		var nso *C.struct_socket
		err := l.sk.call(func(so *C.struct_socket) error {
			r, err := C.usrsctp_accept(so, nil, nil)
			if r == nil {
				return errnoOr(err)
			}
			nso = r
			return nil
		})
		if err == nil {
			sk, err := l.sk.stack.wrap(nso, "accepted")
			if err != nil {
				return nil, err
			}
			return &Conn{sk: sk}, nil
		}
		if !wouldBlock(err) {
			return nil, fmt.Errorf("usrsctp: accept: %w", err)
		}
		if err := l.sk.wait(ctx); err != nil {
			return nil, fmt.Errorf("usrsctp: accept: %w", err)
		}
	}
}

// Close stops listening; accepted associations stay open.
func (l *Listener) Close() error {
	l.sk.close()
	return nil
}

// Conn is one association on a one-to-one socket.
type Conn struct {
	sk *socket

	recvMu  sync.Mutex
	pending []Message
	partial []byte
}

// Message is what RecvMsg returns: user data (Notification nil) or an event.
type Message struct {
	Data   []byte
	Stream uint16
	PPID   uint32
	// Notification is set for events (association, peer address changes...).
	Notification Notification
	// Flags are the raw msg_flags (MSG_EOR, MSG_NOTIFICATION).
	Flags int
}

// Dial sets up an association from the local addresses (bound all together:
// multi-homing; none: any address) to the peer's addresses on port, and
// returns once it is established (COMM_UP). Events that arrive meanwhile
// are kept for RecvMsg. The local port is one usrsctp picks.
func (s *Stack) Dial(ctx context.Context, local, remote []netip.Addr, port uint16) (*Conn, error) {
	return s.DialFrom(ctx, local, 0, remote, port)
}

// DialFrom is Dial from a chosen local port (0: one usrsctp picks). Several
// usrsctp stacks in one namespace each pick their ports on their own and
// may pick the same one; callers running several stacks side by side give
// each its own range.
func (s *Stack) DialFrom(ctx context.Context, local []netip.Addr, localPort uint16, remote []netip.Addr, port uint16) (*Conn, error) {
	if len(remote) == 0 {
		return nil, errors.New("usrsctp: dial: no remote address")
	}
	if port == 0 {
		return nil, errors.New("usrsctp: dial: port 0")
	}
	packed, err := packAddrs(remote, port)
	if err != nil {
		return nil, fmt.Errorf("usrsctp: dial %v: %w", remote, err)
	}
	sk, err := s.newSocket(domainFor(local, remote), "dial")
	if err != nil {
		return nil, err
	}
	c := &Conn{sk: sk}
	// An association that never came up is aborted: nothing to shut down
	// gracefully, and a redial from the same port needs it gone at once.
	fail := func(err error) (*Conn, error) {
		sk.abort()
		return nil, err
	}
	if s.cfg.Streams > 0 {
		if err := sk.call(func(so *C.struct_socket) error {
			if r, err := C.tlb_set_initmsg(so, C.uint16_t(s.cfg.Streams), C.uint16_t(s.cfg.Streams)); r != 0 {
				return fmt.Errorf("usrsctp: initmsg: %w", errnoOr(err))
			}
			return nil
		}); err != nil {
			return fail(err)
		}
	}
	switch {
	case len(local) > 0:
		if err := sk.bindx(local, localPort); err != nil {
			return fail(err)
		}
	case localPort != 0:
		any := netip.IPv4Unspecified()
		if domainFor(remote) == C.AF_INET6 {
			any = netip.IPv6Unspecified()
		}
		if err := sk.bindx([]netip.Addr{any}, localPort); err != nil {
			return fail(err)
		}
	}
	cbuf := C.CBytes(packed)
	defer C.free(cbuf)
	err = sk.call(func(so *C.struct_socket) error {
		var id C.sctp_assoc_t
		if r, err := C.usrsctp_connectx(so, (*C.struct_sockaddr)(cbuf), C.int(len(remote)), &id); r != 0 {
			return errnoOr(err)
		}
		return nil
	})
	if err != nil && !wouldBlock(err) {
		return fail(fmt.Errorf("usrsctp: connectx %v port %d: %w", remote, port, err))
	}
	for {
		m, err := c.readMessage(ctx)
		if err != nil {
			return fail(fmt.Errorf("usrsctp: dial %v port %d: %w", remote, port, err))
		}
		if ac, ok := m.Notification.(*AssocChange); ok {
			switch ac.State {
			case CommUp:
				c.pending = append(c.pending, m)
				return c, nil
			case CantStrAssoc, CommLost:
				return fail(fmt.Errorf("usrsctp: dial %v port %d: %s", remote, port, ac.State))
			}
		}
		c.pending = append(c.pending, m)
	}
}

// SendMsg sends b as one message on stream with the payload protocol
// identifier ppid (host order; usrsctp wants it in network order on the
// wire, which this converts). It waits while the send buffer is full.
func (c *Conn) SendMsg(ctx context.Context, b []byte, stream uint16, ppid uint32) error {
	if len(b) == 0 {
		return errors.New("usrsctp: send: empty message")
	}
	if len(b) > maxMessage {
		return fmt.Errorf("usrsctp: send: %d bytes exceeds %d", len(b), maxMessage)
	}
	cbuf := C.CBytes(b)
	defer C.free(cbuf)
	for {
		err := c.sk.call(func(so *C.struct_socket) error {
			n, err := C.tlb_send(so, cbuf, C.size_t(len(b)), C.uint16_t(stream), C.uint32_t(htonl(ppid)))
			if n < 0 {
				return errnoOr(err)
			}
			if int(n) != len(b) {
				return fmt.Errorf("short send %d of %d", n, len(b))
			}
			return nil
		})
		if err == nil {
			return nil
		}
		if !wouldBlock(err) && !errors.Is(err, syscall.ENOBUFS) {
			return fmt.Errorf("usrsctp: send on stream %d: %w", stream, err)
		}
		if err := c.sk.wait(ctx); err != nil {
			return fmt.Errorf("usrsctp: send: %w", err)
		}
	}
}

// htonl swaps between host and network byte order (its own inverse).
func htonl(v uint32) uint32 {
	return binary.NativeEndian.Uint32(binary.BigEndian.AppendUint32(nil, v))
}

// RecvMsg returns the next complete message or notification. It returns
// io.EOF once the peer has shut the association down and everything was
// read.
func (c *Conn) RecvMsg(ctx context.Context) (Message, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	select {
	case <-c.sk.done:
		return Message{}, ErrClosed
	default:
	}
	if len(c.pending) > 0 {
		m := c.pending[0]
		c.pending = c.pending[1:]
		return m, nil
	}
	return c.readMessage(ctx)
}

// readMessage reads until MSG_EOR; the caller holds recvMu (or owns c).
func (c *Conn) readMessage(ctx context.Context) (Message, error) {
	buf := (*[65536]byte)(C.malloc(65536))
	defer C.free(unsafe.Pointer(buf))
	for {
		var (
			flags, hasInfo C.int
			sid            C.uint16_t
			ppid           C.uint32_t
			n              C.ssize_t
		)
		err := c.sk.call(func(so *C.struct_socket) error {
			var err error
			n, err = C.tlb_recv(so, unsafe.Pointer(buf), C.size_t(len(buf)), &flags, &sid, &ppid, &hasInfo)
			if n < 0 {
				return errnoOr(err)
			}
			return nil
		})
		if err != nil {
			if wouldBlock(err) {
				if err := c.sk.wait(ctx); err != nil {
					return Message{}, err
				}
				continue
			}
			return Message{}, fmt.Errorf("usrsctp: recv: %w", err)
		}
		if n == 0 && len(c.partial) == 0 {
			return Message{}, io.EOF
		}
		if len(c.partial)+int(n) > maxMessage {
			c.partial = nil
			return Message{}, fmt.Errorf("usrsctp: recv: message exceeds %d bytes", maxMessage)
		}
		c.partial = append(c.partial, buf[:n]...)
		if flags&C.MSG_EOR == 0 && n > 0 {
			continue
		}
		data := c.partial
		c.partial = nil
		m := Message{Flags: int(flags)}
		if flags&C.MSG_NOTIFICATION != 0 {
			nt, err := parseNotification(data)
			if err != nil {
				return Message{}, err
			}
			m.Notification = nt
			return m, nil
		}
		m.Data = data
		if hasInfo != 0 {
			m.Stream = uint16(sid)
			m.PPID = htonl(uint32(ppid)) // byte swap back to host order
		}
		return m, nil
	}
}

// PeerAddrs returns the peer's addresses of the association.
func (c *Conn) PeerAddrs() ([]netip.AddrPort, error) { return c.addrs(false) }

// LocalAddrs returns the local addresses of the association.
func (c *Conn) LocalAddrs() ([]netip.AddrPort, error) { return c.addrs(true) }

func (c *Conn) addrs(local bool) ([]netip.AddrPort, error) {
	const max = 32
	out := (*[max * 20]byte)(C.malloc(max * 20))
	defer C.free(unsafe.Pointer(out))
	var n C.int
	err := c.sk.call(func(so *C.struct_socket) error {
		l := C.int(0)
		if local {
			l = 1
		}
		var err error
		n, err = C.tlb_paddrs(so, l, (*C.uint8_t)(unsafe.Pointer(out)), max)
		if n < 0 {
			return errnoOr(err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("usrsctp: addresses: %w", err)
	}
	res := make([]netip.AddrPort, 0, int(n))
	for i := 0; i < int(n); i++ {
		e := out[i*20 : i*20+20]
		port := uint16(e[2])<<8 | uint16(e[3])
		switch e[0] {
		case 4:
			res = append(res, netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[4:8])), port))
		case 6:
			res = append(res, netip.AddrPortFrom(netip.AddrFrom16([16]byte(e[4:20])), port))
		}
	}
	return res, nil
}

// Tags returns the association's verification tags: local is the one the
// peer puts in every packet it sends here, peer the one this end puts in
// its packets (RFC 9260 8.5). They are what an ABORT for this association
// sent from elsewhere must carry.
func (c *Conn) Tags() (local, peer uint32, err error) {
	var l, p C.uint32_t
	err = c.sk.call(func(so *C.struct_socket) error {
		if r, err := C.tlb_tags(so, &l, &p); r != 0 {
			return errnoOr(err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("usrsctp: verification tags: %w", err)
	}
	return uint32(l), uint32(p), nil
}

// SendQueue is what an association's stack holds of the data sent on it.
type SendQueue struct {
	// Queued is every byte sent by the application and not yet
	// acknowledged by the peer: in the stream queues (not yet given a
	// TSN) and in flight.
	Queued uint32
	// Unacked is the DATA chunks sent and not yet acknowledged.
	Unacked uint16
}

// Stuck says whether the stack holds data it has not transmitted while
// nothing is in flight. Right after a send that is normal for an instant
// (SendMsg may return before the stack gives the message a TSN); held for
// seconds it is a stream the stack no longer schedules (usrsctp 0.9.5
// does this under load, docs/testing.md).
func (q SendQueue) Stuck() bool { return q.Queued > 0 && q.Unacked == 0 }

// SendQueue reads the association's send queue (usrsctp's
// SCTP_GET_SNDBUF_USE and SCTP_STATUS).
func (c *Conn) SendQueue() (SendQueue, error) {
	var q, u C.uint32_t
	err := c.sk.call(func(so *C.struct_socket) error {
		if r, err := C.tlb_sendq(so, &q, &u); r != 0 {
			return errnoOr(err)
		}
		return nil
	})
	if err != nil {
		return SendQueue{}, fmt.Errorf("usrsctp: send queue: %w", err)
	}
	return SendQueue{Queued: uint32(q), Unacked: uint16(u)}, nil
}

// SetPrimary makes addr the peer address new data goes to first.
func (c *Conn) SetPrimary(addr netip.Addr) error {
	packed, err := packAddrs([]netip.Addr{addr}, 0)
	if err != nil {
		return fmt.Errorf("usrsctp: set primary: %w", err)
	}
	cbuf := C.CBytes(packed)
	defer C.free(cbuf)
	return c.sk.call(func(so *C.struct_socket) error {
		if r, err := C.tlb_set_primary(so, (*C.struct_sockaddr)(cbuf)); r != 0 {
			return fmt.Errorf("usrsctp: set primary %s: %w", addr, errnoOr(err))
		}
		return nil
	})
}

// Close shuts the association down gracefully (SHUTDOWN) in the background.
func (c *Conn) Close() error {
	c.sk.close()
	return nil
}

// Abort tears the association down at once with an ABORT chunk (failure
// injection, or when the peer is known to be gone).
func (c *Conn) Abort() error {
	c.sk.abort()
	return nil
}
