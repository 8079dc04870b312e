// Package memory is an in-process SCTP stand-in: associations are pairs of
// channels, addressed by Endpoint. It keeps message boundaries, streams and
// PPIDs, which is all the N2 proxy relies on, so the proxy loop can be tested
// end to end with real NGAP bytes and no SCTP stack.
package memory

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync"

	"github.com/telcolb/telcolb/sctplb/transport"
)

// Config configures a Network.
type Config struct {
	// Streams is the number of outbound streams every association gets
	// (default 16).
	Streams uint16
	// Queue is the per-direction message buffer (default 1024).
	Queue int
}

// Network is a set of listeners reachable by address.
type Network struct {
	cfg       Config
	mu        sync.Mutex
	listeners map[netip.AddrPort]*listener
	seq       int
}

// New returns an empty Network.
func New(cfg Config) *Network {
	if cfg.Streams == 0 {
		cfg.Streams = 16
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	return &Network{cfg: cfg, listeners: map[netip.AddrPort]*listener{}}
}

var _ transport.Transport = (*Network)(nil)

// Listen registers a listener on every address of local (which must name at
// least one: there are no interfaces to enumerate).
func (n *Network) Listen(local transport.Endpoint) (transport.Listener, error) {
	if len(local.Addrs) == 0 || local.Port == 0 {
		return nil, fmt.Errorf("memory: listen %v: need an address and a port", local)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range local.Addrs {
		if _, busy := n.listeners[netip.AddrPortFrom(a, local.Port)]; busy {
			return nil, fmt.Errorf("memory: listen %v: address in use", netip.AddrPortFrom(a, local.Port))
		}
	}
	l := &listener{net: n, local: local, accept: make(chan *conn, 64), done: make(chan struct{})}
	for _, a := range local.Addrs {
		n.listeners[netip.AddrPortFrom(a, local.Port)] = l
	}
	return l, nil
}

// Dial connects to the first address of remote that has a listener.
func (n *Network) Dial(ctx context.Context, _ []netip.Addr, remote transport.Endpoint) (transport.Conn, error) {
	n.mu.Lock()
	var l *listener
	for _, a := range remote.Addrs {
		if x := n.listeners[netip.AddrPortFrom(a, remote.Port)]; x != nil {
			l = x
			break
		}
	}
	n.seq++
	seq := n.seq
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("memory: dial %v: connection refused", remote)
	}
	a2b, b2a := make(chan transport.Message, n.cfg.Queue), make(chan transport.Message, n.cfg.Queue)
	shared := &pair{done: make(chan struct{})}
	client := &conn{pair: shared, in: b2a, out: a2b, streams: n.cfg.Streams, remote: remote.String()}
	server := &conn{pair: shared, in: a2b, out: b2a, streams: n.cfg.Streams, remote: fmt.Sprintf("memory-client-%d", seq)}
	select {
	case l.accept <- server:
		return client, nil
	case <-l.done:
		return nil, fmt.Errorf("memory: dial %v: connection refused", remote)
	case <-ctx.Done():
		return nil, fmt.Errorf("memory: dial %v: %w", remote, ctx.Err())
	}
}

type listener struct {
	net    *Network
	local  transport.Endpoint
	accept chan *conn
	once   sync.Once
	done   chan struct{}
}

func (l *listener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		for _, a := range l.local.Addrs {
			delete(l.net.listeners, netip.AddrPortFrom(a, l.local.Port))
		}
		l.net.mu.Unlock()
	})
	return nil
}

// pair is the association both conns share: closing either end ends it.
type pair struct {
	once sync.Once
	done chan struct{}
}

type conn struct {
	*pair
	in, out chan transport.Message
	streams uint16
	remote  string
}

func (c *conn) Send(ctx context.Context, m transport.Message) error {
	if m.Stream >= c.streams {
		return fmt.Errorf("memory: send on stream %d of %d", m.Stream, c.streams)
	}
	m.Data = append([]byte(nil), m.Data...)
	select {
	case <-c.done:
		return transport.ErrClosed
	default:
	}
	select {
	case c.out <- m:
		return nil
	case <-c.done:
		return transport.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conn) Recv(ctx context.Context) (transport.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	default:
	}
	select {
	case m := <-c.in:
		return m, nil
	case <-c.done:
		return transport.Message{}, io.EOF
	case <-ctx.Done():
		return transport.Message{}, ctx.Err()
	}
}

func (c *conn) OutStreams() uint16 { return c.streams }
func (c *conn) Remote() string     { return c.remote }

func (c *conn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}
