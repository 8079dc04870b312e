package diam_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// The world: one agent machine, clients and servers that speak Diameter
// through go-diameter (requests built and answers read by a stack we did
// not write), and a clock. Every action is carried out at once: sends are
// delivered, dials connect (or fail for a server that is down), closes
// close. Invariants are checked after every step.

const (
	agentHost  = "agent.example.org"
	agentRealm = "example.org"
	srvRealm   = "ocs.example.org"
	vendorX    = 99999
)

type fakeServer struct {
	name string // the agent's name for it
	host string
	up   bool
	// mode: "" answers, "busy" answers 3004, "mute" never answers, "drop"
	// answers nothing but watchdogs.
	mode  string
	conn  agent.ConnID
	got   [][]byte // requests received (application)
	dwrs  int
	dprs  int
	seen  map[string]int // Session-Id -> requests
	apps  []uint32
	realm string
}

type fakeClient struct {
	host    string
	conn    agent.ConnID
	answers map[uint32][][]byte // by hop-by-hop
	open    bool
	cea     uint32
	got     [][]byte // requests the agent sent us
}

type world struct {
	t       testing.TB
	m       *agent.Machine
	now     time.Time
	next    agent.ConnID
	servers []*fakeServer
	clients []*fakeClient
	byConn  map[agent.ConnID]any
	queue   []agent.Event
	counts  map[string]int
	hbh     uint32
	// refs, when not nil, are the references handed out with every
	// message the world gives the agent (see message): a shell that
	// recycles its buffers, poisoning each once released.
	refs map[*testRef]bool
}

// testRef plays a shell's recycled read buffer: once the last reference
// is released its bytes, spare capacity included, are overwritten, so
// that anything the agent still sends from them arrives corrupted; a
// release past zero, or a retain after it, fails the test.
type testRef struct {
	w   *world
	buf []byte
	n   int
}

func (r *testRef) Retain() {
	if r.n <= 0 {
		r.w.t.Fatalf("buffer retained after its last release")
	}
	r.n++
}

func (r *testRef) Release() {
	r.n--
	switch {
	case r.n < 0:
		r.w.t.Fatalf("buffer released more often than retained")
	case r.n == 0:
		b := r.buf[:cap(r.buf)]
		for i := range b {
			b[i] = 0xEE
		}
		delete(r.w.refs, r)
	}
}

// message is what the world gives the agent for b on id: with refs on, a
// copy with room for the Route-Record (so the agent edits it in place)
// and a reference to it.
func (w *world) message(id agent.ConnID, b []byte) agent.Message {
	if w.refs == nil {
		return agent.Message{Conn: id, Data: b}
	}
	r := &testRef{w: w, buf: append(make([]byte, 0, len(b)+96), b...), n: 1}
	w.refs[r] = true
	return agent.Message{Conn: id, Data: r.buf, Ref: r}
}

func newWorld(t testing.TB, n int, tweak func(*agent.Config)) *world {
	w := &world{t: t, now: time.Unix(1_700_000_000, 0), byConn: map[agent.ConnID]any{}, counts: map[string]int{}}
	cfg := agent.Config{Identity: diameter.Identity{Host: agentHost, Realm: agentRealm}, Tw: 6 * time.Second, Tc: 2 * time.Second,
		RequestTimeout: 5 * time.Second, OriginStateID: 42}
	for i := range n {
		cfg.Servers = append(cfg.Servers, agent.Server{Name: fmt.Sprintf("srv%d", i)})
		w.servers = append(w.servers, &fakeServer{name: fmt.Sprintf("srv%d", i), host: fmt.Sprintf("ocs%d.%s", i, srvRealm), realm: srvRealm, up: true,
			seen: map[string]int{}, apps: []uint32{diameter.AppCC}})
	}
	if tweak != nil {
		tweak(&cfg)
	}
	m, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.m = m
	w.step(agent.Tick{})
	return w
}

// reconfigure gives the agent the servers listed, in that order (new ones
// made with newServer), and the policy; the world's server indexes follow.
func (w *world) reconfigure(p agent.Policy, servers ...*fakeServer) {
	var cfg []agent.Server
	for _, s := range servers {
		cfg = append(cfg, agent.Server{Name: s.name, Weight: 1})
	}
	w.servers = servers
	w.step(agent.Reconfigure{Servers: cfg, Policy: p})
}

// newServer is a server the agent does not know yet.
func (w *world) newServer(name string) *fakeServer {
	return &fakeServer{name: name, host: name + "." + srvRealm, realm: srvRealm, up: true, seen: map[string]int{}, apps: []uint32{diameter.AppCC}}
}

func (w *world) step(ev agent.Event) {
	w.queue = append(w.queue, ev)
	for len(w.queue) > 0 {
		e := w.queue[0]
		w.queue = w.queue[1:]
		acts := w.m.Step(w.now, e)
		if err := w.m.CheckInvariants(); err != nil {
			w.t.Fatalf("after %T: %v", e, err)
		}
		for _, a := range append([]agent.Action(nil), acts...) {
			w.do(a)
		}
	}
}

func (w *world) do(a agent.Action) {
	switch a.Kind {
	case agent.Send:
		w.deliver(a.Conn, append([]byte(nil), a.Data...))
		if a.Ref != nil {
			a.Ref.Release() // written
		}
	case agent.Dial:
		s := w.servers[a.Server]
		if !s.up {
			w.queue = append(w.queue, agent.DialFailed{Server: a.Server})
			return
		}
		w.next++
		s.conn = w.next
		w.byConn[w.next] = s
		w.queue = append(w.queue, agent.Dialed{Server: a.Server, Conn: w.next})
	case agent.Close:
		if p, ok := w.byConn[a.Conn]; ok {
			delete(w.byConn, a.Conn)
			if c, ok := p.(*fakeClient); ok {
				c.open = false
			}
			w.queue = append(w.queue, agent.Closed{Conn: a.Conn})
		}
	case agent.Rejected:
		w.counts["rejected:"+a.Reason]++
	case agent.Retransmitted:
		w.counts["retransmitted"]++
	}
}

func (w *world) deliver(id agent.ConnID, b []byte) {
	switch p := w.byConn[id].(type) {
	case *fakeServer:
		w.serverGets(p, id, b)
	case *fakeClient:
		h, err := diameter.ParseHeader(b)
		if err != nil {
			w.t.Fatalf("client got a malformed message: %v", err)
		}
		if h.IsRequest() {
			p.got = append(p.got, b)
			if h.Code == diameter.CmdDeviceWatchdog {
				w.queue = append(w.queue, w.message(id, diameter.Answer(h, nil, diameter.Identity{Host: p.host, Realm: agentRealm}, diameter.Success)))
			}
			return
		}
		if h.Code == diameter.CmdCapabilitiesExchange {
			m, _ := diameter.Parse(b)
			p.cea = m.ResultCode
			return
		}
		p.answers[h.HopByHop] = append(p.answers[h.HopByHop], b)
	}
}

// serverGets plays a go-diameter server: it reads the request with
// go-diameter and answers with go-diameter's Answer, echoing the unknown
// vendor AVP.
func (w *world) serverGets(s *fakeServer, id agent.ConnID, b []byte) {
	if !s.up || s.conn != id {
		return
	}
	h, err := diameter.ParseHeader(b)
	if err != nil {
		w.t.Fatalf("server got a malformed message: %v", err)
	}
	if !h.IsRequest() {
		return
	}
	reply := func(m *diam.Message) {
		out, err := m.Serialize()
		if err != nil {
			w.t.Fatal(err)
		}
		w.queue = append(w.queue, w.message(id, out))
	}
	req, err := diam.ReadMessage(bytes.NewReader(b), dict.Default)
	if err != nil {
		// A command go-diameter's dictionary lacks (the agent relays any,
		// corrupted ones included): a server answers 3001.
		m, perr := diameter.Parse(b)
		if perr != nil {
			w.t.Fatalf("agent forwarded a malformed message: %v", perr)
		}
		s.got = append(s.got, b)
		w.queue = append(w.queue, w.message(id, diameter.Answer(m.Header, m.SessionID,
			diameter.Identity{Host: s.host, Realm: s.realm}, diameter.CommandUnsupported)))
		return
	}
	ident := func(a *diam.Message) {
		a.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(s.host))
		a.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity(s.realm))
	}
	switch h.Code {
	case diameter.CmdCapabilitiesExchange:
		a := req.Answer(diam.Success)
		ident(a)
		for _, app := range s.apps {
			a.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(app))
		}
		reply(a)
		return
	case diameter.CmdDeviceWatchdog:
		s.dwrs++
		if s.mode == "drop" {
			return
		}
		a := req.Answer(diam.Success)
		ident(a)
		reply(a)
		return
	case diameter.CmdDisconnectPeer:
		s.dprs++
		a := req.Answer(diam.Success)
		ident(a)
		reply(a)
		return
	}
	s.got = append(s.got, b)
	m, _ := diameter.Parse(b)
	s.seen[string(m.SessionID)]++
	if s.mode == "mute" || s.mode == "drop" {
		return
	}
	code := uint32(diam.Success)
	if s.mode == "busy" {
		code = diameter.TooBusy
	}
	a := req.Answer(code)
	if code == diameter.TooBusy {
		a.Header.CommandFlags |= diam.ErrorFlag
	}
	sid, _ := req.FindAVP(avp.SessionID, 0)
	if sid != nil {
		a.InsertAVP(sid)
	}
	ident(a)
	for _, x := range req.AVP {
		if x.VendorID == vendorX {
			a.AddAVP(x)
		}
	}
	reply(a)
}

func (w *world) connect(host string) *fakeClient {
	w.next++
	c := &fakeClient{host: host, conn: w.next, answers: map[uint32][][]byte{}, open: true}
	w.byConn[c.conn] = c
	w.clients = append(w.clients, c)
	w.step(agent.Accepted{Conn: c.conn})
	cer := diam.NewRequest(diam.CapabilitiesExchange, 0, dict.Default)
	cer.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(host))
	cer.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
	cer.NewAVP(avp.HostIPAddress, avp.Mbit, 0, datatype.Address([]byte{10, 0, 0, 1}))
	cer.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(0))
	cer.NewAVP(avp.ProductName, 0, 0, datatype.UTF8String("go-diameter"))
	cer.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(diameter.AppCC))
	w.clientSends(c, w.ser(cer))
	return c
}

func (w *world) ser(m *diam.Message) []byte {
	b, err := m.Serialize()
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *world) clientSends(c *fakeClient, b []byte) { w.step(w.message(c.conn, b)) }

// ccr builds a Credit-Control-Request with go-diameter; destHost may be "".
func (w *world) ccr(c *fakeClient, session string, typ uint32, destHost string, opts ...func(*diam.Message)) ([]byte, uint32) {
	w.hbh++
	m := diam.NewRequest(diam.CreditControl, diameter.AppCC, dict.Default)
	m.Header.CommandFlags |= diam.ProxiableFlag
	m.Header.HopByHopID, m.Header.EndToEndID = w.hbh, w.hbh
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(session))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(c.host))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
	m.NewAVP(avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity(srvRealm))
	if destHost != "" {
		m.NewAVP(avp.DestinationHost, avp.Mbit, 0, datatype.DiameterIdentity(destHost))
	}
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(diameter.AppCC))
	m.NewAVP(avp.ServiceContextID, avp.Mbit, 0, datatype.UTF8String("32251@3gpp.org"))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(0))
	m.AddAVP(diam.NewAVP(4242, avp.Mbit|avp.Vbit, vendorX, datatype.OctetString("opaque\x00\x01")))
	for _, o := range opts {
		o(m)
	}
	return w.ser(m), w.hbh
}

func (w *world) advance(d time.Duration) {
	end := w.now.Add(d)
	for w.now.Before(end) {
		w.now = w.now.Add(min(500*time.Millisecond, end.Sub(w.now)))
		w.step(agent.Tick{})
	}
}

// answerOf returns the single answer to hbh, failing on none or several.
func (w *world) answerOf(c *fakeClient, hbh uint32) diameter.Msg {
	w.t.Helper()
	as := c.answers[hbh]
	if len(as) != 1 {
		w.t.Fatalf("client %s got %d answers to %#x", c.host, len(as), hbh)
	}
	m, err := diameter.Parse(as[0])
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

func (w *world) serverOf(session string) int {
	found := -1
	for i, s := range w.servers {
		if s.seen[session] > 0 {
			if found >= 0 {
				return -2
			}
			found = i
		}
	}
	return found
}
