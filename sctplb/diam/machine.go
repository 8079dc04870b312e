package diam

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// Machine is the agent's state; it is not safe for concurrent use.
type Machine struct {
	cfg  Config
	log  *slog.Logger
	caps diameter.Capabilities

	servers []*server
	conns   map[ConnID]*conn
	// clients maps an open client's Origin-Host (lower case) to its
	// connection, for server-initiated requests and duplicate detection.
	clients map[string]*conn
	// byE2E finds a client's pending request by (Origin-Host, End-to-End):
	// a copy re-sent with the T flag is not forwarded twice. The key is
	// the client's host number and the End-to-End (e2eKey): hashing the
	// Origin-Host string three times per request (index, look up, delete)
	// was a tenth of the machine's time.
	byE2E map[uint64]*pending
	// hosts numbers the Origin-Hosts of open clients and of pending
	// requests in byE2E (hostName); freeHosts are numbers to reuse.
	hosts     map[string]*hostName
	freeHosts []uint32
	nextHost  uint32
	// waiting lists the pending requests in the order they were sent,
	// which is the order they expire in (one RequestTimeout for all); a
	// request leaves it when answered, so nothing answered is kept.
	waiting pendList

	sessions  map[string]binding
	start     time.Time
	lastSweep time.Time

	rr       int
	hbh      uint32
	now      time.Time
	shutdown bool
	out      []Action
	msg      diameter.Msg
	// cur is the reference to the memory of the message being stepped
	// while no one took it (Message.Ref): released when the step ends.
	cur Ref
	// free are pending records of answered or failed requests, reused:
	// no allocation per request.
	free []*pending
}

// maxFreePending bounds the records kept for reuse after a burst.
const maxFreePending = 1024

func (m *Machine) newPending() *pending {
	if n := len(m.free); n > 0 {
		p := m.free[n-1]
		m.free[n-1] = nil
		m.free = m.free[:n-1]
		return p
	}
	return &pending{}
}

// recycle ends p: answered or failed, it is in no table, list or
// connection any more, and is never sent again.
func (m *Machine) recycle(p *pending) {
	p.drop()
	*p = pending{}
	if len(m.free) < maxFreePending {
		m.free = append(m.free, p)
	}
}

type server struct {
	cfg      Server
	conn     *conn
	state    State
	nextDial time.Time
	everUp   bool
	sessions int
	current  int // smooth weighted round robin
	// learned from the server's CEA
	host, realm string
	apps        appSet
}

type conn struct {
	id     ConnID
	side   Side
	server int // -1 for a client
	state  State
	host   string
	// hostNum is a client's host numbered (nil before its CER).
	hostNum *hostName
	realm   string
	apps    appSet
	// watchdog (RFC 3539): wd is the timer, dwrOut a DWR unanswered,
	// numDWA the DWAs counted in Reopen.
	wd     time.Time
	dwrOut bool
	numDWA int
	// pend are the requests sent on this connection awaiting an answer,
	// by the hop-by-hop identifier the agent gave them.
	pend map[uint32]*pending
	// dprCause is a DPR's Disconnect-Cause (a server's, for the redial
	// delay), -1 if none.
	dprCause int64
}

// pending is a request the agent forwarded and awaits the answer to.
type pending struct {
	from    ConnID // where it came from
	origHBH uint32
	// e2e is its key in byE2E (0: not indexed, a server's request) and
	// host the number it holds there.
	e2e    uint64
	host   *hostName
	to     ConnID // where it went
	hbh    uint32 // the agent's hop-by-hop on `to`
	server int    // -1 when `to` is a client
	tried  []int  // servers it was sent to
	// triedBuf holds tried for the usual one or two servers: no
	// allocation per request.
	triedBuf [2]int
	data     []byte // as first forwarded (Route-Record appended)
	// ref holds data's memory while the request may be sent again (nil:
	// a copy the garbage collector keeps).
	ref  Ref
	end  bool // a session-termination request
	app  uint32
	cmd  uint32
	sent time.Time
	// prev and next link it into Machine.waiting while it awaits its
	// answer.
	prev, next *pending
	linked     bool
}

// pendList is a doubly linked list of pending requests, oldest first.
// drop lets go of the request's bytes: it is answered or failed and will
// never be sent again.
func (p *pending) drop() {
	p.data = nil
	if p.ref != nil {
		p.ref.Release()
		p.ref = nil
	}
}

type pendList struct {
	head, tail *pending
	n          int
}

func (l *pendList) push(p *pending) {
	if p.linked {
		l.remove(p)
	}
	p.prev, p.next, p.linked = l.tail, nil, true
	if l.tail != nil {
		l.tail.next = p
	} else {
		l.head = p
	}
	l.tail = p
	l.n++
}

func (l *pendList) remove(p *pending) {
	if !p.linked {
		return
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		l.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		l.tail = p.prev
	}
	p.prev, p.next, p.linked = nil, nil, false
	l.n--
}

// hostName is a client Origin-Host's number, held by each client
// connection under that host and each of its requests in byE2E: a number
// is reused only once nothing holds it, so no stale key of byE2E can
// match another host's request.
type hostName struct {
	name string
	num  uint32
	refs int
}

// e2eKey is byE2E's key of a request: its client's host number (never 0)
// and its End-to-End identifier.
func e2eKey(h *hostName, e2e uint32) uint64 { return uint64(h.num)<<32 | uint64(e2e) }

// holdHost returns name's number, held once more.
func (m *Machine) holdHost(name string) *hostName {
	h := m.hosts[name]
	if h == nil {
		h = &hostName{name: name}
		if n := len(m.freeHosts); n > 0 {
			h.num = m.freeHosts[n-1]
			m.freeHosts = m.freeHosts[:n-1]
		} else {
			m.nextHost++
			h.num = m.nextHost
		}
		m.hosts[name] = h
	}
	h.refs++
	return h
}

// dropHost lets go of one hold of h; its number is free once none is left.
func (m *Machine) dropHost(h *hostName) {
	if h.refs--; h.refs == 0 {
		delete(m.hosts, h.name)
		m.freeHosts = append(m.freeHosts, h.num)
	}
}

// unindex takes p out of byE2E if it is there.
func (m *Machine) unindex(p *pending) {
	if p.host != nil && m.byE2E[p.e2e] == p {
		delete(m.byE2E, p.e2e)
		m.dropHost(p.host)
	}
	p.e2e, p.host = 0, nil
}

// binding is a Session-Id's server; last counts seconds since the machine
// started (8 bytes per session beside the key).
type binding struct {
	server int32
	last   uint32
}

type appSet struct {
	relay bool
	ids   []uint32
	// adv keeps the form the peer advertised them in, for our CEA.
	auth, acct []uint32
	vs         []diameter.VSApp
}

func (a appSet) has(app uint32) bool {
	if a.relay || app == diameter.AppCommon {
		return true
	}
	for _, x := range a.ids {
		if x == app {
			return true
		}
	}
	return false
}

func appsOf(m *diameter.Msg) appSet {
	var s appSet
	add := func(x uint32) {
		if x == diameter.AppRelay {
			s.relay = true
		}
		s.ids = append(s.ids, x)
	}
	for _, x := range m.Apps.Auth {
		add(x)
		s.auth = append(s.auth, x)
	}
	for _, x := range m.Apps.Acct {
		add(x)
		s.acct = append(s.acct, x)
	}
	for _, v := range m.Apps.VS {
		if v.Auth != 0 {
			add(v.Auth)
		}
		if v.Acct != 0 {
			add(v.Acct)
		}
		s.vs = append(s.vs, v)
	}
	return s
}

// New validates cfg and returns a machine whose servers are all down; the
// first Step dials them.
func New(cfg Config) (*Machine, error) {
	if cfg.Identity.Host == "" || cfg.Identity.Realm == "" {
		return nil, errors.New("diam: Origin-Host and Origin-Realm required")
	}
	if cfg.Mode == Proxy && len(cfg.Applications) == 0 {
		return nil, errors.New("diam: a proxy agent needs its applications")
	}
	if err := ValidateServers(cfg.Servers); err != nil {
		return nil, err
	}
	if cfg.Tw <= 0 {
		cfg.Tw = 30 * time.Second
	}
	if cfg.Tc <= 0 {
		cfg.Tc = 30 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = time.Hour
	}
	if cfg.MaxTries <= 0 {
		cfg.MaxTries = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Machine{cfg: cfg, log: cfg.Logger, conns: map[ConnID]*conn{}, clients: map[string]*conn{},
		byE2E: map[uint64]*pending{}, hosts: map[string]*hostName{}, sessions: map[string]binding{}, hbh: cfg.OriginStateID}
	m.caps = diameter.Capabilities{Identity: cfg.Identity, HostIPs: cfg.HostIPs, ProductName: "telcolb",
		OriginState: cfg.OriginStateID}
	if cfg.Mode == Relay {
		m.caps.AuthApps = []uint32{diameter.AppRelay}
	} else {
		m.caps.AuthApps = append([]uint32(nil), cfg.Applications...)
	}
	for _, s := range cfg.Servers {
		m.servers = append(m.servers, &server{cfg: s})
	}
	return m, nil
}

// Step feeds one event at time now and returns the actions to carry out,
// in order. The returned slice is reused by the next Step.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.out = m.out[:0]
	m.now = now
	if m.start.IsZero() {
		m.start, m.lastSweep = now, now
	}
	switch e := ev.(type) {
	case Accepted:
		m.accepted(e.Conn)
	case Dialed:
		m.dialed(e.Server, e.Conn)
	case DialFailed:
		if e.Server >= 0 && e.Server < len(m.servers) && m.servers[e.Server].state == Connecting {
			m.serverDown(m.servers[e.Server], m.cfg.Tc)
		}
	case Message:
		m.cur = e.Ref
		if c := m.conns[e.Conn]; c != nil {
			m.message(c, e.Data)
		}
		if m.cur != nil {
			// Neither kept nor sent: the shell may reuse the memory.
			m.cur.Release()
			m.cur = nil
		}
	case Closed:
		if c := m.conns[e.Conn]; c != nil {
			m.closed(c)
		}
	case Tick:
		m.tick()
	case Shutdown:
		m.stop()
	case Reconfigure:
		m.reconfigure(e)
	}
	return m.out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) send(c *conn, b []byte) { m.emit(Action{Kind: Send, Conn: c.id, Data: b}) }

// sendRef sends b with a reference to its memory for the shell to release
// once written (nil: none).
func (m *Machine) sendRef(c *conn, b []byte, ref Ref) {
	m.emit(Action{Kind: Send, Conn: c.id, Data: b, Ref: ref})
}

// takeRef hands on the reference of the message being stepped (nil if
// it has none): the step no longer releases it.
func (m *Machine) takeRef() Ref {
	r := m.cur
	m.cur = nil
	return r
}

func (m *Machine) reject(reason string, result uint32) {
	m.emit(Action{Kind: Rejected, Reason: reason, Result: result})
}

func (m *Machine) setState(c *conn, st State) {
	c.state = st
	if c.side == ClientSide && st == Closing && m.clients[c.host] == c {
		delete(m.clients, c.host)
	}
	if c.side == ServerSide {
		m.servers[c.server].state = st
		m.emit(Action{Kind: PeerState, Server: c.server, State: st})
	}
}

func (m *Machine) accepted(id ConnID) {
	if id == 0 || m.conns[id] != nil {
		return
	}
	c := &conn{id: id, side: ClientSide, server: -1, state: WaitCE, wd: m.now.Add(m.cfg.Tw), pend: map[uint32]*pending{}, dprCause: -1}
	m.conns[id] = c
	if m.shutdown {
		m.emit(Action{Kind: Close, Conn: id})
	}
}

func (m *Machine) dialed(s int, id ConnID) {
	if s < 0 || s >= len(m.servers) || id == 0 || m.conns[id] != nil {
		return
	}
	sv := m.servers[s]
	if sv.state != Connecting || m.shutdown {
		m.emit(Action{Kind: Close, Conn: id})
		return
	}
	c := &conn{id: id, side: ServerSide, server: s, wd: m.now.Add(m.cfg.Tw), pend: map[uint32]*pending{}, dprCause: -1}
	m.conns[id] = c
	sv.conn = c
	m.setState(c, WaitCE)
	m.send(c, diameter.CER(m.caps, m.nextHBH(c), m.nextHBH(nil)))
}

// nextHBH allocates a hop-by-hop identifier not pending on c.
func (m *Machine) nextHBH(c *conn) uint32 {
	for {
		m.hbh++
		if c == nil || c.pend[m.hbh] == nil {
			return m.hbh
		}
	}
}

func (m *Machine) message(c *conn, b []byte) {
	msg := &m.msg
	if err := msg.ParseInto(b); err != nil {
		m.malformed(c, b, err)
		return
	}
	if msg.IsRequest() {
		m.emit(Action{Kind: Request, Side: c.side, App: msg.AppID, Cmd: msg.Code})
	} else {
		m.emit(Action{Kind: Answer, Side: c.side, App: msg.AppID, Cmd: msg.Code, Result: msg.Result()})
	}
	if msg.Code == diameter.CmdCapabilitiesExchange {
		m.capabilities(c, msg)
		return
	}
	if c.state == WaitCE {
		// RFC 6733 §5.6: nothing but CER/CEA before the exchange.
		m.reject("before-capabilities-exchange", 0)
		if c.side == ClientSide {
			m.closeConn(c)
		}
		return
	}
	m.heard(c, msg)
	switch msg.Code {
	case diameter.CmdDeviceWatchdog:
		if msg.IsRequest() {
			m.send(c, m.baseAnswer(msg.Header, true))
		}
		return
	case diameter.CmdDisconnectPeer:
		m.disconnect(c, msg)
		return
	}
	if c.state == Closing {
		if msg.IsRequest() {
			m.send(c, diameter.Answer(msg.Header, msg.SessionID, m.cfg.Identity, diameter.UnableToDeliver))
		}
		return
	}
	if msg.IsRequest() {
		m.request(c, msg)
	} else {
		m.answer(c, msg)
	}
}

func (m *Machine) malformed(c *conn, b []byte, err error) {
	var e *diameter.Error
	if !errors.As(err, &e) {
		m.reject("malformed", 0)
		return
	}
	if len(b) >= diameter.HeaderLen && b[4]&diameter.FlagRequest != 0 {
		if ans, ok := diameter.ErrorAnswer(b, e, m.cfg.Identity); ok {
			m.send(c, ans)
			m.reject("malformed-"+e.Kind.String(), e.Result())
			return
		}
	}
	m.reject("malformed-"+e.Kind.String(), 0)
}

// baseAnswer answers a DWR or DPR.
func (m *Machine) baseAnswer(h diameter.Header, state bool) []byte {
	var extra [][]byte
	if state && m.cfg.OriginStateID != 0 {
		extra = append(extra, diameter.U32(diameter.AVPOriginStateID, m.cfg.OriginStateID))
	}
	return diameter.Answer(diameter.Header{Code: h.Code, AppID: h.AppID, HopByHop: h.HopByHop, EndToEnd: h.EndToEnd},
		nil, m.cfg.Identity, diameter.Success, extra...)
}

// heard runs the watchdog's receive transitions (RFC 3539 §3.4.1).
func (m *Machine) heard(c *conn, msg *diameter.Msg) {
	dwa := msg.Code == diameter.CmdDeviceWatchdog && !msg.IsRequest()
	switch c.state {
	case Okay:
		if dwa {
			c.dwrOut = false
		}
		c.wd = m.now.Add(m.cfg.Tw)
	case Suspect:
		if dwa {
			c.dwrOut = false
		}
		m.setState(c, Okay)
		c.wd = m.now.Add(m.cfg.Tw)
	case Reopen:
		if dwa && c.dwrOut {
			c.dwrOut = false
			c.numDWA++
			if c.numDWA >= 3 {
				m.setState(c, Okay)
			}
		}
	}
}

func lower(b []byte) string { return strings.ToLower(string(b)) }

func (m *Machine) capabilities(c *conn, msg *diameter.Msg) {
	if c.side == ClientSide {
		if !msg.IsRequest() {
			m.reject("unexpected-cea", 0)
			return
		}
		m.clientCER(c, msg)
		return
	}
	if msg.IsRequest() {
		// A server sending a CER on our connection: answer it like a
		// client's but keep the connection's role.
		m.send(c, diameter.CEA(msg.Header, m.caps, diameter.UnableToComply))
		return
	}
	if c.state != WaitCE {
		m.reject("unexpected-cea", 0)
		return
	}
	sv := m.servers[c.server]
	if msg.ResultCode != diameter.Success && msg.ResultCode != diameter.LimitedSuccess {
		m.log.Warn("server refused the capabilities exchange", "server", sv.cfg.Name, "result", msg.ResultCode)
		m.closeConn(c)
		return
	}
	apps := appsOf(msg)
	if m.cfg.Mode == Proxy && !m.common(apps) {
		m.log.Warn("server serves none of the proxy's applications", "server", sv.cfg.Name)
		m.closeConn(c)
		return
	}
	c.host, c.realm, c.apps = lower(msg.OriginHost), lower(msg.OriginRealm), apps
	sv.host, sv.realm, sv.apps = c.host, c.realm, apps
	c.wd = m.now.Add(m.cfg.Tw)
	if sv.everUp {
		// RFC 3539: back from DOWN, open once 3 watchdogs are answered.
		c.numDWA = 0
		m.setState(c, Reopen)
		m.sendDWR(c)
		return
	}
	sv.everUp = true
	m.setState(c, Okay)
}

// common reports whether a peer advertising apps shares an application
// with a proxy agent.
func (m *Machine) common(apps appSet) bool {
	for _, a := range m.cfg.Applications {
		if apps.has(a) {
			return true
		}
	}
	return false
}

func (m *Machine) clientCER(c *conn, msg *diameter.Msg) {
	if c.state != WaitCE {
		// A repeated CER on an open connection: answered, nothing changes.
		m.send(c, diameter.CEA(msg.Header, m.ceaCaps(), diameter.Success))
		return
	}
	apps := appsOf(msg)
	if m.cfg.Mode == Proxy && !m.common(apps) {
		m.send(c, diameter.CEA(msg.Header, m.ceaCaps(), diameter.NoCommonApplication))
		m.reject("no-common-application", diameter.NoCommonApplication)
		m.closeConn(c)
		return
	}
	host := lower(msg.OriginHost)
	if old := m.clients[host]; old != nil && old != c {
		// Two connections from one client identity. The election of RFC
		// 6733 §5.6.4 compares the two ends' identities; both of these
		// connections are the client's, so the one still answering wins:
		// an open old one keeps its place and the newcomer loses.
		if old.state == Okay {
			m.send(c, diameter.CEA(msg.Header, m.ceaCaps(), diameter.ElectionLost))
			m.reject("election-lost", diameter.ElectionLost)
			m.closeConn(c)
			return
		}
		m.closeConn(old)
	}
	c.host, c.realm, c.apps = host, lower(msg.OriginRealm), apps
	if c.hostNum == nil || c.hostNum.name != host {
		if c.hostNum != nil {
			m.dropHost(c.hostNum)
		}
		c.hostNum = m.holdHost(host)
	}
	m.clients[host] = c
	c.wd = m.now.Add(m.cfg.Tw)
	m.setState(c, Okay)
	m.send(c, diameter.CEA(msg.Header, m.ceaCaps(), diameter.Success))
}

// ceaCaps is what clients are told: a relay advertises the relay
// application; a proxy its applications in the form the servers advertised
// them (Auth, Acct or Vendor-Specific), or as Auth-Application-Id while no
// server has answered.
func (m *Machine) ceaCaps() diameter.Capabilities {
	if m.cfg.Mode == Relay {
		return m.caps
	}
	c := m.caps
	c.AuthApps = nil
	seen := map[uint32]bool{}
	for _, sv := range m.servers {
		if sv.host == "" {
			continue
		}
		for _, a := range m.cfg.Applications {
			if seen[a] {
				continue
			}
			switch {
			case contains(sv.apps.auth, a):
				c.AuthApps = append(c.AuthApps, a)
			case contains(sv.apps.acct, a):
				c.AcctApps = append(c.AcctApps, a)
			default:
				for _, v := range sv.apps.vs {
					if v.Auth == a || v.Acct == a {
						c.VSApps = append(c.VSApps, v)
						break
					}
				}
			}
			seen[a] = sv.apps.has(a) && !sv.apps.relay || seen[a]
		}
	}
	for _, a := range m.cfg.Applications {
		if !seen[a] {
			c.AuthApps = append(c.AuthApps, a)
		}
	}
	return c
}

func contains(s []uint32, x uint32) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func (m *Machine) disconnect(c *conn, msg *diameter.Msg) {
	if !msg.IsRequest() {
		if c.state == Closing {
			m.closeConn(c)
		}
		return
	}
	m.send(c, m.baseAnswer(msg.Header, false))
	if msg.HasDisconnectCause {
		c.dprCause = int64(msg.DisconnectCause)
	}
	if c.side == ServerSide {
		m.failover(c)
	}
	m.setState(c, Closing)
	// RFC 6733 §5.4: the DPR's sender closes; closing after the DPA is
	// written frees the connection if it does not.
	m.emit(Action{Kind: Close, Conn: c.id})
}

func (m *Machine) sendDWR(c *conn) {
	c.dwrOut = true
	c.wd = m.now.Add(m.cfg.Tw)
	m.send(c, diameter.DWR(m.cfg.Identity, m.cfg.OriginStateID, m.nextHBH(nil), m.nextHBH(nil)))
}

// closeConn asks the shell to close c; the state goes when Closed comes.
// Until then it is Closing: nothing is routed to it.
func (m *Machine) closeConn(c *conn) {
	if c.side == ServerSide && c.state != Closing {
		m.failover(c)
	}
	if c.side == ClientSide && m.clients[c.host] == c {
		delete(m.clients, c.host)
	}
	if c.state != Closing {
		m.setState(c, Closing)
	}
	m.emit(Action{Kind: Close, Conn: c.id})
}

func (m *Machine) closed(c *conn) {
	delete(m.conns, c.id)
	if c.side == ClientSide {
		if m.clients[c.host] == c {
			delete(m.clients, c.host)
		}
		if c.hostNum != nil {
			// Its requests in byE2E keep the number: a copy re-sent
			// on a new connection is still recognised.
			m.dropHost(c.hostNum)
			c.hostNum = nil
		}
		// Requests the client had pending stay pending upstream: their
		// answers are dropped when they come (the client is gone). The
		// server-initiated requests sent to it get 3002.
		for _, p := range c.pend {
			m.failRequest(p, diameter.UnableToDeliver, "client-gone")
		}
		c.pend = nil
		return
	}
	m.failover(c)
	delay := m.cfg.Tc
	switch c.dprCause {
	case int64(diameter.DisconnectBusy):
		delay = 4 * m.cfg.Tc
	case int64(diameter.DisconnectDoNotWantToTalk):
		delay = 10 * m.cfg.Tc
	case int64(diameter.DisconnectRebooting):
		delay = m.cfg.Tc / 2
	}
	sv := m.servers[c.server]
	if sv.conn == c {
		sv.conn = nil
		m.serverDown(sv, delay)
	}
}

func (m *Machine) serverDown(sv *server, delay time.Duration) {
	sv.nextDial = m.now.Add(delay)
	sv.state = Down
	for i, x := range m.servers {
		if x == sv {
			m.emit(Action{Kind: PeerState, Server: i, State: Down})
		}
	}
}

func (m *Machine) tick() {
	m.dialDue()
	for _, c := range m.conns {
		if m.now.Before(c.wd) {
			continue
		}
		m.watchdogTimer(c)
	}
	m.expire()
	if m.now.Sub(m.lastSweep) >= max(m.cfg.SessionIdle/8, time.Second) {
		m.sweep()
	}
}

// dialDue dials the servers down for their Tc.
func (m *Machine) dialDue() {
	for i, sv := range m.servers {
		if sv.state == Down && sv.conn == nil && !m.shutdown && !m.now.Before(sv.nextDial) {
			sv.state = Connecting
			m.emit(Action{Kind: PeerState, Server: i, State: Connecting})
			m.emit(Action{Kind: Dial, Server: i})
		}
	}
}

// watchdogTimer runs the watchdog's timer transitions (RFC 3539 §3.4.1);
// connections that never finished the capabilities exchange, or a DPR,
// are closed after Tw.
func (m *Machine) watchdogTimer(c *conn) {
	c.wd = m.now.Add(m.cfg.Tw)
	switch c.state {
	case WaitCE, Closing:
		m.reject("timeout-"+c.state.String(), 0)
		m.closeConn(c)
	case Okay:
		if !c.dwrOut {
			m.sendDWR(c)
			return
		}
		if c.side == ServerSide {
			m.failover(c)
		}
		m.setState(c, Suspect)
	case Suspect:
		m.closeConn(c)
	case Reopen:
		if c.dwrOut {
			m.closeConn(c)
			return
		}
		m.sendDWR(c)
	}
}

// stop sends every open peer a DPR.
func (m *Machine) stop() {
	if m.shutdown {
		return
	}
	m.shutdown = true
	for _, c := range m.conns {
		switch c.state {
		case Okay, Suspect, Reopen:
			m.send(c, diameter.DPR(m.cfg.Identity, diameter.DisconnectRebooting, m.nextHBH(nil), m.nextHBH(nil)))
			if c.side == ServerSide {
				m.failover(c)
			}
			m.setState(c, Closing)
			c.wd = m.now.Add(m.cfg.Tw)
		default:
			m.closeConn(c)
		}
	}
}

// ServerNames lists the servers' names in configuration order.
func (m *Machine) ServerNames() []string {
	out := make([]string, len(m.servers))
	for i, s := range m.servers {
		out[i] = s.cfg.Name
	}
	return out
}

// Sessions returns the Session-Id bindings per server.
func (m *Machine) Sessions() []int {
	out := make([]int, len(m.servers))
	for i, s := range m.servers {
		out[i] = s.sessions
	}
	return out
}

// States returns each server's watchdog state.
func (m *Machine) States() []State {
	out := make([]State, len(m.servers))
	for i, s := range m.servers {
		out[i] = s.state
	}
	return out
}

// Clients counts the open client connections.
func (m *Machine) Clients() int { return len(m.clients) }

// Pending counts the requests awaiting an answer.
func (m *Machine) Pending() int {
	n := 0
	for _, c := range m.conns {
		n += len(c.pend)
	}
	return n
}

// Bound returns the server index a Session-Id is bound to, or -1.
func (m *Machine) Bound(sessionID string) int {
	if b, ok := m.sessions[sessionID]; ok {
		return int(b.server)
	}
	return -1
}
