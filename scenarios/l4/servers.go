package l4

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Reply is what every test server answers: who answered and the source
// address it saw, so a test can check both the selection and the mode's
// source rewriting.
type Reply struct {
	Server string
	Source netip.AddrPort
}

func formatReply(id string, remote string) string { return id + " " + remote + "\n" }

func parseReply(s string) (Reply, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Reply{}, fmt.Errorf("malformed server reply %q", s)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return Reply{}, fmt.Errorf("malformed server reply %q: %w", s, err)
	}
	return Reply{Server: f[0], Source: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// Server is a listener running in a lab host.
type Server struct {
	closers []io.Closer
	wg      sync.WaitGroup
}

// Close stops the server and waits for its goroutines.
func (s *Server) Close() error {
	var errs []error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

func listen(h *lab.Host, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ServeHTTP serves GET / on addr inside h, answering "<id> <client addr:port>".
// Also serves /healthz for HTTP probes. Connections are kept open while the
// client keeps them, so a test can hold one across a daemon restart.
func ServeHTTP(h *lab.Host, addr, id string) (*Server, error) {
	ln, err := listen(h, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s in %s: %w", addr, h.Name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		_, _ = io.WriteString(w, formatReply(id, r.RemoteAddr))
	}), ReadHeaderTimeout: 5 * time.Second}
	s := &Server{closers: []io.Closer{srv}}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = srv.Serve(ln) }()
	return s, nil
}

// ServeUDP answers every datagram on addr inside h with "<id> <source>".
func ServeUDP(h *lab.Host, addr, id string) (*Server, error) {
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		// SO_REUSEADDR lets a VIP-bound socket (DSR) sit beside the
		// wildcard one; the more specific binding gets the VIP's datagrams.
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		}}
		pc, err = lc.ListenPacket(context.Background(), "udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("udp listen %s in %s: %w", addr, h.Name, err)
	}
	s := &Server{closers: []io.Closer{pc}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(formatReply(id, from.String())), from)
		}
	}()
	return s, nil
}

// ServeTCPEcho answers each line on a TCP connection with "<id> <client>",
// for tests that hold one connection open across events.
func ServeTCPEcho(h *lab.Host, addr, id string) (*Server, error) {
	ln, err := listen(h, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp listen %s in %s: %w", addr, h.Name, err)
	}
	s := &Server{closers: []io.Closer{ln}}
	var mu sync.Mutex
	var conns []net.Conn
	s.closers = append(s.closers, closerFunc(func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
		return nil
	}))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := io.WriteString(c, formatReply(id, c.RemoteAddr().String())); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// HTTPGet makes one request on a new connection from h to url.
func HTTPGet(ctx context.Context, h *lab.Host, url string) (Reply, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: HostDialer(h), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Reply{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Reply{}, fmt.Errorf("GET %s from %s: %w", url, h.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("GET %s from %s: %w", url, h.Name, err)
	}
	return parseReply(string(b))
}

// UDPAsk sends one datagram from h to addr (from a fresh socket, so a fresh
// source port and a fresh flow) and returns the reply.
func UDPAsk(ctx context.Context, h *lab.Host, addr string) (Reply, error) {
	c, err := HostDialer(h)(ctx, "udp", addr)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	return udpExchange(c)
}

func udpExchange(c net.Conn) (Reply, error) {
	var lastErr error
	buf := make([]byte, 2048)
	// UDP may lose the first datagram while a neighbour resolves: retry.
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte("ask\n")); err != nil {
			return Reply{}, err
		}
		_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return parseReply(string(buf[:n]))
		}
		lastErr = err
	}
	return Reply{}, fmt.Errorf("udp %s: no reply: %w", c.RemoteAddr(), lastErr)
}

// TCPSession is a held-open line-echo connection.
type TCPSession struct {
	c net.Conn
	r *bufio.Reader
}

// DialTCPSession opens one TCP connection from h to addr.
func DialTCPSession(ctx context.Context, h *lab.Host, addr string) (*TCPSession, error) {
	c, err := HostDialer(h)(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &TCPSession{c: c, r: bufio.NewReader(c)}, nil
}

// Ask sends a line and reads the answer.
func (s *TCPSession) Ask() (Reply, error) {
	_ = s.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s.c, "ask\n"); err != nil {
		return Reply{}, err
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	return parseReply(line)
}

// LocalAddr is the client side of the connection.
func (s *TCPSession) LocalAddr() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s.c.LocalAddr().String())
	return ap
}

// Close closes the connection.
func (s *TCPSession) Close() error { return s.c.Close() }

// Retransmits is how many segments the kernel retransmitted on this
// connection (TCP_INFO total_retrans): a lossless path leaves it at zero.
func (s *TCPSession) Retransmits() (uint32, error) {
	tc, ok := s.c.(*net.TCPConn)
	if !ok {
		return 0, fmt.Errorf("tcp session over %T", s.c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		info *unix.TCPInfo
		gerr error
	)
	if err := raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("TCP_INFO: %w", gerr)
	}
	return info.Total_retrans, nil
}
