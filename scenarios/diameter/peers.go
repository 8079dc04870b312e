// Package diameter is the Diameter lab: go-diameter clients and servers
// (a Diameter stack we did not write) around telcolb's Diameter agent, and
// freeDiameterd as a real peer on either side.
package diameter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"github.com/fiorix/go-diameter/v4/diam/sm"
)

// VendorX is a vendor ID nobody's dictionary knows; its AVP 4242 rides in
// every CCR the lab client sends and every CCA the lab server returns.
const (
	VendorX   = 99999
	AVPOpaque = 4242
	AppCC     = 4
)

func init() {
	// go-diameter v4.0.4 decodes AVPs its dictionary lacks as
	// datatype.Unknown, a slice of a pooled read buffer that goes back to
	// the pool when ReadMessage returns: the next message read on any
	// connection overwrites them (seen here: a CCA echoing another
	// session's vendor AVP). A pooled buffer of just the header's length
	// makes every message body get its own buffer (bodies of at most 20
	// bytes, which carry no vendor AVP here, still use the pool).
	diam.MessageBufferLength = diam.HeaderLength
}

// Server is a go-diameter credit-control server: it answers every CCR
// with DIAMETER_SUCCESS (or 3004 while Busy), echoing the unknown vendor
// AVP, and records which sessions it saw.
type Server struct {
	Host, Realm string
	Addr        string
	// Busy makes it answer 3004 (DIAMETER_TOO_BUSY).
	Busy atomic.Bool

	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	sessions map[string]int
	opaque   map[string][]byte // the vendor AVP as received, per session
	requests int
	retrans  int
}

// StartServer listens on addr ("ip:port"; port 0 picks one).
func StartServer(addr, host, realm string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Host: host, Realm: realm, Addr: ln.Addr().String(), sessions: map[string]int{}, opaque: map[string][]byte{}}
	s.ln = &trackingListener{Listener: ln, s: s}
	mux := sm.New(&sm.Settings{OriginHost: datatype.DiameterIdentity(host), OriginRealm: datatype.DiameterIdentity(realm),
		VendorID: 13, ProductName: "go-diameter-lab-server", FirmwareRevision: 1})
	mux.Handle(diam.CCR, diam.HandlerFunc(s.ccr))
	go func() {
		for range mux.ErrorReports() {
		}
	}()
	srv := &diam.Server{Network: "tcp", Handler: mux, Dict: dict.Default}
	go func() { _ = srv.Serve(s.ln) }()
	return s, nil
}

func (s *Server) ccr(c diam.Conn, m *diam.Message) {
	sid := ""
	if a, err := m.FindAVP(avp.SessionID, 0); err == nil {
		sid = string(a.Data.(datatype.UTF8String))
	}
	s.mu.Lock()
	s.sessions[sid]++
	s.requests++
	if m.Header.CommandFlags&diam.RetransmittedFlag != 0 {
		s.retrans++
	}
	var echo []*diam.AVP
	for _, a := range m.AVP {
		if a.VendorID == VendorX {
			echo = append(echo, a)
			if b, err := a.Serialize(); err == nil {
				s.opaque[sid] = b
			}
		}
	}
	s.mu.Unlock()
	code := uint32(diam.Success)
	if s.Busy.Load() {
		code = diam.TooBusy
	}
	a := m.Answer(code)
	if code == diam.TooBusy {
		a.Header.CommandFlags |= diam.ErrorFlag
	}
	a.InsertAVP(diam.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(sid)))
	a.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(s.Host))
	a.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity(s.Realm))
	a.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(AppCC))
	for _, k := range []uint32{avp.CCRequestType, avp.CCRequestNumber} {
		if x, err := m.FindAVP(k, 0); err == nil {
			a.AddAVP(x)
		}
	}
	for _, x := range echo {
		a.AddAVP(x)
	}
	_, _ = a.WriteTo(c)
}

// Kill stops listening and drops every connection, as a crash would.
func (s *Server) Kill() {
	_ = s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.mu.Lock()
		l.s.conns = append(l.s.conns, c)
		l.s.mu.Unlock()
	}
	return c, err
}

// Sessions returns how many requests of each Session-Id the server got.
func (s *Server) Sessions() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.sessions))
	for k, v := range s.sessions {
		out[k] = v
	}
	return out
}

// Opaque returns the vendor AVP bytes as the server received them.
func (s *Server) Opaque(sid string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opaque[sid]
}

// Accepted counts the connections the server accepted (a peer that
// reconnects shows here).
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Counts returns the requests received and those with the T flag.
func (s *Server) Counts() (requests, retransmitted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.retrans
}

// Client is a go-diameter credit-control client with one connection.
type Client struct {
	Host, Realm string
	// DestHost, when set, goes into every request as Destination-Host.
	DestHost string
	conn     diam.Conn
	mu       sync.Mutex
	waiting  map[uint32]chan *diam.Message // by end-to-end
	e2e      atomic.Uint32
	answers  atomic.Int64
	dup      atomic.Int64
}

// Dial connects to addr and exchanges capabilities (go-diameter's state
// machine, with its watchdog).
func Dial(addr, host, realm string) (*Client, error) {
	c := &Client{Host: host, Realm: realm, waiting: map[uint32]chan *diam.Message{}}
	c.e2e.Store(uint32(time.Now().UnixNano()))
	mux := sm.New(&sm.Settings{OriginHost: datatype.DiameterIdentity(host), OriginRealm: datatype.DiameterIdentity(realm),
		VendorID: 13, ProductName: "go-diameter-lab-client", OriginStateID: datatype.Unsigned32(time.Now().Unix()), FirmwareRevision: 1})
	mux.Handle(diam.CCA, diam.HandlerFunc(c.cca))
	go func() {
		for range mux.ErrorReports() {
		}
	}()
	cli := &sm.Client{Dict: dict.Default, Handler: mux, MaxRetransmits: 1, RetransmitInterval: 2 * time.Second,
		EnableWatchdog: true, WatchdogInterval: 5 * time.Second,
		AuthApplicationID: []*diam.AVP{diam.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(AppCC))}}
	conn, err := cli.DialNetwork("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("go-diameter client %s: %w", host, err)
	}
	c.conn = conn
	return c, nil
}

func (c *Client) cca(_ diam.Conn, m *diam.Message) {
	c.mu.Lock()
	ch := c.waiting[m.Header.EndToEndID]
	delete(c.waiting, m.Header.EndToEndID)
	c.mu.Unlock()
	if ch == nil {
		c.dup.Add(1)
		return
	}
	c.answers.Add(1)
	ch <- m
}

// Duplicates counts answers nobody waited for (a second answer to one
// request, or one after the timeout).
func (c *Client) Duplicates() int64 { return c.dup.Load() }

// Close ends the connection.
func (c *Client) Close() { c.conn.Close() }

// Answer is what CCR returns.
type Answer struct {
	Result    uint32
	Origin    string
	SessionID string
	// Opaque is the vendor AVP as it came back.
	Opaque []byte
}

// CCR sends a Credit-Control-Request of the given CC-Request-Type and
// waits for its answer.
func (c *Client) CCR(ctx context.Context, sid, destRealm string, typ, number uint32) (Answer, error) {
	m := diam.NewRequest(diam.CreditControl, AppCC, dict.Default)
	m.Header.CommandFlags |= diam.ProxiableFlag
	e2e := c.e2e.Add(1)
	m.Header.EndToEndID, m.Header.HopByHopID = e2e, e2e
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(sid))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(c.Host))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity(c.Realm))
	m.NewAVP(avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity(destRealm))
	if c.DestHost != "" {
		m.NewAVP(avp.DestinationHost, avp.Mbit, 0, datatype.DiameterIdentity(c.DestHost))
	}
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(AppCC))
	m.NewAVP(avp.ServiceContextID, avp.Mbit, 0, datatype.UTF8String("32251@3gpp.org"))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(number))
	m.AddAVP(diam.NewAVP(AVPOpaque, avp.Mbit|avp.Vbit, VendorX, datatype.OctetString(OpaqueValue(sid))))
	ch := make(chan *diam.Message, 1)
	c.mu.Lock()
	c.waiting[e2e] = ch
	c.mu.Unlock()
	if _, err := m.WriteTo(c.conn); err != nil {
		return Answer{}, err
	}
	select {
	case a := <-ch:
		var out Answer
		if x, err := a.FindAVP(avp.ResultCode, 0); err == nil {
			out.Result = uint32(x.Data.(datatype.Unsigned32))
		}
		if x, err := a.FindAVP(avp.SessionID, 0); err == nil {
			out.SessionID = string(x.Data.(datatype.UTF8String))
		}
		if x, err := a.FindAVP(avp.OriginHost, 0); err == nil {
			out.Origin = string(x.Data.(datatype.DiameterIdentity))
		}
		for _, x := range a.AVP {
			if x.VendorID == VendorX {
				out.Opaque, _ = x.Serialize()
			}
		}
		return out, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, e2e)
		c.mu.Unlock()
		return Answer{}, errors.New("no answer to " + sid)
	}
}

// OpaqueValue is the vendor AVP's payload for a session: odd length, so
// padding is exercised, and bytes no UTF-8 decoder accepts.
func OpaqueValue(sid string) string { return "\xff\x00opaque:" + sid + "\x01" }

// OpaqueAVP is the vendor AVP as the client encodes it.
func OpaqueAVP(sid string) []byte {
	b, _ := diam.NewAVP(AVPOpaque, avp.Mbit|avp.Vbit, VendorX, datatype.OctetString(OpaqueValue(sid))).Serialize()
	return b
}
