// Package transport is the SCTP contract between the N2 proxy's I/O shell and
// the stacks that carry it: kernel SCTP (transport/kernel, production),
// usrsctp in raw-IP mode (transport/userspace, machines without kernel
// SCTP) and an in-memory network for tests (transport/memory).
package transport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/telcolb/telcolb/sctplb/abort"
)

// Message is one SCTP user message. PPID is in host byte order (NGAP: 60);
// each implementation converts for the wire.
type Message struct {
	Stream uint16
	PPID   uint32
	Data   []byte
}

// Endpoint is a (possibly multi-homed) SCTP endpoint: every address shares
// one port. No address means every local address (listen) or is invalid
// (dial).
type Endpoint struct {
	Addrs []netip.Addr
	Port  uint16
}

func (e Endpoint) String() string { return fmt.Sprintf("%v:%d", e.Addrs, e.Port) }

// ParseEndpoint reads "addr[,addr...]:port", e.g. "10.0.0.1,10.1.0.1:38412"
// or "[fd00::1]:38412".
func ParseEndpoint(s string) (Endpoint, error) {
	i := lastColon(s)
	if i < 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q: want addr[,addr...]:port", s)
	}
	port, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil || port == 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q: bad port", s)
	}
	e := Endpoint{Port: uint16(port)}
	host := s[:i]
	if host == "" || host == "*" {
		return e, nil
	}
	for _, part := range strings.Split(host, ",") {
		part = strings.TrimSuffix(strings.TrimPrefix(part, "["), "]")
		a, err := netip.ParseAddr(part)
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %q: %w", s, err)
		}
		e.Addrs = append(e.Addrs, a)
	}
	return e, nil
}

// lastColon finds the port separator; a colon inside "[v6]" is not one.
func lastColon(s string) int {
	i := strings.LastIndexByte(s, ':')
	if i < strings.LastIndexByte(s, ']') {
		return -1
	}
	return i
}

// Transport opens SCTP associations.
type Transport interface {
	// Listen accepts associations on local.
	Listen(local Endpoint) (Listener, error)
	// Dial sets up an association to remote from the given local addresses
	// (none: any) and returns once it is established.
	Dial(ctx context.Context, local []netip.Addr, remote Endpoint) (Conn, error)
}

// Listener accepts associations.
type Listener interface {
	Accept(ctx context.Context) (Conn, error)
	Close() error
}

// Conn is one association. Send and Recv may be called concurrently with
// each other (one sender and one receiver at a time); Close unblocks both.
type Conn interface {
	Send(ctx context.Context, m Message) error
	// Recv returns the next user message; an error (io.EOF after a graceful
	// shutdown) means the association is over.
	Recv(ctx context.Context) (Message, error)
	// OutStreams is the number of outbound streams negotiated.
	OutStreams() uint16
	// Remote describes the peer for logs.
	Remote() string
	Close() error
}

// AbortTargeter is implemented by the Conns whose stack tells the
// association's verification tags (userspace: usrsctp's
// SCTP_GET_NONCE_VALUES; kernel: no socket option returns them, so it reads
// sctp_diag netlink through sctplb/kdiag, failing where the sctp_diag module
// is missing). What it returns lets another node end the association with
// an ABORT once this process is gone (an HA takeover: sctplb/abort).
type AbortTargeter interface {
	AbortTarget() (abort.Target, error)
}

// ErrClosed is returned by operations on a closed Conn or Listener.
var ErrClosed = errors.New("transport: closed")
