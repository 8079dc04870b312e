// Package kernel is the production SCTP transport: Linux kernel SCTP through
// github.com/ishidawataru/sctp, one-to-one (SOCK_STREAM) sockets, one per
// association.
//
// PPID byte order: that library converts SndRcvInfo.PPID to network order
// inside SCTPWrite/SCTPRead but passes it raw in SetDefaultSentParam, so this
// package only ever sets the PPID per message (host order, NGAP = 60) and
// never through default send parameters.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/ishidawataru/sctp"

	"github.com/telcolb/telcolb/sctplb/transport"
)

// Config configures the transport.
type Config struct {
	// Streams is the number of inbound and outbound streams offered
	// (default 16; NGAP needs stream 0 plus UE-associated streams).
	Streams uint16
	// MaxMessage is the receive buffer per message (default 64 KiB, above
	// any NGAP PDU a gNB sends).
	MaxMessage int
	Logger     *slog.Logger
}

// Transport opens kernel SCTP associations.
type Transport struct {
	cfg Config
	log *slog.Logger
}

var _ transport.Transport = (*Transport)(nil)

// Available reports whether the kernel offers SCTP sockets (CONFIG_IP_SCTP),
// by opening and closing one.
func Available() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, syscall.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("kernel sctp: %w", err)
	}
	_ = syscall.Close(fd)
	return nil
}

// New returns a kernel SCTP transport. It does not probe the kernel: Listen
// and Dial fail with EPROTONOSUPPORT where SCTP is missing.
func New(cfg Config) *Transport {
	if cfg.Streams == 0 {
		cfg.Streams = 16
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Transport{cfg: cfg, log: cfg.Logger}
}

func (t *Transport) socketConfig() *sctp.SocketConfig {
	return &sctp.SocketConfig{
		InitMsg: sctp.InitMsg{NumOstreams: t.cfg.Streams, MaxInstreams: t.cfg.Streams},
		// Without a handler the library hands notifications back as data;
		// the proxy learns about association ends from read errors instead.
		NotificationHandler: func([]byte) error { return nil },
	}
}

func sctpAddr(addrs []netip.Addr, port uint16) *sctp.SCTPAddr {
	a := &sctp.SCTPAddr{Port: int(port)}
	for _, ip := range addrs {
		a.IPAddrs = append(a.IPAddrs, net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()})
	}
	return a
}

func network(addrs []netip.Addr) string {
	v4, v6 := false, false
	for _, a := range addrs {
		if a.Unmap().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	switch {
	case v4 && !v6:
		return "sctp4"
	case v6 && !v4:
		return "sctp6"
	}
	return "sctp"
}

// Listen binds every address of local (none: all) and listens.
func (t *Transport) Listen(local transport.Endpoint) (transport.Listener, error) {
	ln, err := t.socketConfig().Listen(network(local.Addrs), sctpAddr(local.Addrs, local.Port))
	if err != nil {
		return nil, fmt.Errorf("kernel sctp: listen %v: %w", local, err)
	}
	return &listener{t: t, ln: ln}, nil
}

// Dial connects to every address of remote (multi-homed peer) from local.
func (t *Transport) Dial(ctx context.Context, local []netip.Addr, remote transport.Endpoint) (transport.Conn, error) {
	if len(remote.Addrs) == 0 {
		return nil, fmt.Errorf("kernel sctp: dial %v: no address", remote)
	}
	var laddr *sctp.SCTPAddr
	if len(local) > 0 {
		laddr = sctpAddr(local, 0)
	}
	type result struct {
		c   *sctp.SCTPConn
		err error
	}
	ch := make(chan result, 1)
	// The library's connect blocks without a context; run it aside and
	// close a late result.
	go func() {
		c, err := t.socketConfig().Dial(network(append(append([]netip.Addr(nil), local...), remote.Addrs...)), laddr, sctpAddr(remote.Addrs, remote.Port))
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("kernel sctp: dial %v: %w", remote, r.err)
		}
		return t.wrap(r.c)
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, fmt.Errorf("kernel sctp: dial %v: %w", remote, ctx.Err())
	}
}

func (t *Transport) wrap(c *sctp.SCTPConn) (*conn, error) {
	// DATA_IO makes every read carry its SndRcvInfo (stream, PPID).
	if err := c.SubscribeEvents(sctp.SCTP_EVENT_DATA_IO); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("kernel sctp: subscribe events: %w", err)
	}
	out := t.cfg.Streams
	if st, err := c.GetStatus(); err == nil && st.Ostreams > 0 {
		out = st.Ostreams
	}
	remote := ""
	if a := c.RemoteAddr(); a != nil {
		remote = a.String()
	}
	return &conn{c: c, out: out, remote: remote, buf: make([]byte, t.cfg.MaxMessage)}, nil
}

type listener struct {
	t    *Transport
	ln   *sctp.SCTPListener
	once sync.Once
}

func (l *listener) Accept(ctx context.Context) (transport.Conn, error) {
	type result struct {
		c   *sctp.SCTPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.ln.AcceptSCTP()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("kernel sctp: accept: %w", r.err)
		}
		return l.t.wrap(r.c)
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil && r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (l *listener) Close() error {
	var err error
	l.once.Do(func() { err = l.ln.Close() })
	return err
}

// conn guards the socket's file descriptor: the library works on a raw fd,
// so closing it while another goroutine is about to send could make that
// send land on whatever socket reuses the number. Send and Recv hold mu for
// reading; Close first shuts the socket down (which wakes a blocked read
// and starts the graceful SHUTDOWN), then takes mu for writing, so the fd
// is released only once nobody can still use it.
type conn struct {
	c      *sctp.SCTPConn
	out    uint16
	remote string
	buf    []byte

	mu     sync.RWMutex
	closed bool
	once   sync.Once
}

func (c *conn) Send(ctx context.Context, m transport.Message) error {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return fmt.Errorf("kernel sctp: send: %w", transport.ErrClosed)
	}
	if _, err := c.c.SCTPWrite(m.Data, &sctp.SndRcvInfo{Stream: m.Stream, PPID: m.PPID}); err != nil {
		return fmt.Errorf("kernel sctp: send: %w", err)
	}
	return nil
}

func (c *conn) Recv(ctx context.Context) (transport.Message, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return transport.Message{}, fmt.Errorf("kernel sctp: recv: %w", transport.ErrClosed)
	}
	n, info, err := c.c.SCTPRead(c.buf)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return transport.Message{}, io.EOF
		}
		return transport.Message{}, fmt.Errorf("kernel sctp: recv: %w", err)
	}
	m := transport.Message{Data: append([]byte(nil), c.buf[:n]...)}
	if info != nil {
		m.Stream, m.PPID = info.Stream, info.PPID
	}
	return m, nil
}

func (c *conn) OutStreams() uint16 { return c.out }
func (c *conn) Remote() string     { return c.remote }

func (c *conn) Close() error {
	c.once.Do(func() {
		// Wake a blocked Recv (and start SHUTDOWN) without releasing the fd.
		if rc, err := c.c.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		}
		c.mu.Lock()
		c.closed = true
		_ = c.c.Close()
		c.mu.Unlock()
	})
	return nil
}
