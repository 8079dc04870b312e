// Package userspace adapts the usrsctp stack (sctplb/transport/usrsctp,
// raw-IP mode) to transport.Transport, for machines whose kernel has no SCTP
// sockets. The stack is process-global and lives in the network namespace
// where it was initialised; the caller owns it (Init/Close).
package userspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

// Config configures the adapter.
type Config struct {
	Stack *usrsctp.Stack
	// Streams is what the stack was configured to offer (usrsctp.Config.
	// Streams); it is reported as each association's outbound stream count.
	// 0 means usrsctp's default of 10.
	Streams uint16
}

// Transport is a transport.Transport over one usrsctp stack.
type Transport struct{ cfg Config }

var _ transport.Transport = (*Transport)(nil)

// New returns the adapter.
func New(cfg Config) (*Transport, error) {
	if cfg.Stack == nil {
		return nil, errors.New("userspace sctp: no usrsctp stack")
	}
	if cfg.Streams == 0 {
		cfg.Streams = 10
	}
	return &Transport{cfg: cfg}, nil
}

// Listen binds local (every address: multi-homed) and listens.
func (t *Transport) Listen(local transport.Endpoint) (transport.Listener, error) {
	ln, err := t.cfg.Stack.Listen(local.Addrs, local.Port)
	if err != nil {
		return nil, fmt.Errorf("userspace sctp: listen %v: %w", local, err)
	}
	return &listener{t: t, ln: ln}, nil
}

// Dial sets up an association to every address of remote.
func (t *Transport) Dial(ctx context.Context, local []netip.Addr, remote transport.Endpoint) (transport.Conn, error) {
	c, err := t.cfg.Stack.Dial(ctx, local, remote.Addrs, remote.Port)
	if err != nil {
		return nil, fmt.Errorf("userspace sctp: dial %v: %w", remote, err)
	}
	return t.wrap(ctx, c)
}

// commUpWait bounds the wait for the COMM_UP notification that carries the
// negotiated stream count.
const commUpWait = time.Second

// wrap reads up to the association's COMM_UP notification to learn how many
// outbound streams the peer granted: sending on a stream beyond that fails
// and would cost the association. Data read meanwhile is kept for Recv.
func (t *Transport) wrap(ctx context.Context, c *usrsctp.Conn) (*conn, error) {
	out := &conn{c: c, out: t.cfg.Streams}
	wctx, cancel := context.WithTimeout(ctx, commUpWait)
	defer cancel()
	for {
		m, err := c.RecvMsg(wctx)
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				break // no COMM_UP seen: keep the configured count
			}
			_ = c.Close()
			return nil, fmt.Errorf("userspace sctp: waiting for COMM_UP: %w", err)
		}
		if m.Notification == nil {
			out.pending = append(out.pending, transport.Message{Stream: m.Stream, PPID: m.PPID, Data: m.Data})
			continue
		}
		if ac, ok := m.Notification.(*usrsctp.AssocChange); ok && ac.State == usrsctp.CommUp {
			if ac.OutboundStreams > 0 && ac.OutboundStreams < out.out {
				out.out = ac.OutboundStreams
			}
			break
		}
	}
	out.remote = remoteOf(c)
	return out, nil
}

func remoteOf(c *usrsctp.Conn) string {
	peers, err := c.PeerAddrs()
	if err != nil {
		return ""
	}
	parts := make([]string, len(peers))
	for i, p := range peers {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

type listener struct {
	t  *Transport
	ln *usrsctp.Listener
}

func (l *listener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.ln.Accept(ctx)
	if err != nil {
		return nil, fmt.Errorf("userspace sctp: %w", err)
	}
	return l.t.wrap(ctx, c)
}

func (l *listener) Close() error { return l.ln.Close() }

type conn struct {
	c       *usrsctp.Conn
	out     uint16
	remote  string
	pending []transport.Message // data read before COMM_UP; only Recv touches it
}

func (c *conn) Send(ctx context.Context, m transport.Message) error {
	return c.c.SendMsg(ctx, m.Data, m.Stream, m.PPID)
}

// Recv returns the next data message. Notifications are consumed here: a
// lost or shut down association ends the stream of messages like EOF.
func (c *conn) Recv(ctx context.Context) (transport.Message, error) {
	if len(c.pending) > 0 {
		m := c.pending[0]
		c.pending = c.pending[1:]
		return m, nil
	}
	for {
		m, err := c.c.RecvMsg(ctx)
		if err != nil {
			return transport.Message{}, err
		}
		switch n := m.Notification.(type) {
		case nil:
			return transport.Message{Stream: m.Stream, PPID: m.PPID, Data: m.Data}, nil
		case *usrsctp.AssocChange:
			if n.State == usrsctp.CommLost || n.State == usrsctp.ShutdownComp {
				return transport.Message{}, fmt.Errorf("userspace sctp: association %s: %w", n.State, io.EOF)
			}
		case *usrsctp.ShutdownEvent:
			return transport.Message{}, fmt.Errorf("userspace sctp: peer shut down: %w", io.EOF)
		}
	}
}

// AbortTarget names the association for an ABORT from another node: the
// tag this end puts in its packets (the peer's own, RFC 9260 8.5), the
// peer's first address (an ABORT to any address of the association
// reaches it) and a local address of the same family (the listener's
// VIP), with the ports.
func (c *conn) AbortTarget() (abort.Target, error) {
	_, peerTag, err := c.c.Tags()
	if err != nil {
		return abort.Target{}, err
	}
	peers, err := c.c.PeerAddrs()
	if err != nil {
		return abort.Target{}, fmt.Errorf("userspace sctp: peer addresses: %w", err)
	}
	locals, err := c.c.LocalAddrs()
	if err != nil {
		return abort.Target{}, fmt.Errorf("userspace sctp: local addresses: %w", err)
	}
	t, err := abort.TargetOf(locals, peers, peerTag)
	if err != nil {
		return abort.Target{}, fmt.Errorf("userspace sctp: %w", err)
	}
	return t, nil
}

var _ transport.AbortTargeter = (*conn)(nil)

func (c *conn) OutStreams() uint16 { return c.out }
func (c *conn) Remote() string     { return c.remote }
func (c *conn) Close() error       { return c.c.Close() }
