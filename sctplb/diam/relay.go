package diam

import (
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// request routes a request (not CER, DWR, DPR) from c.
func (m *Machine) request(c *conn, msg *diameter.Msg) {
	if c.side == ServerSide {
		m.serverRequest(c, msg)
		return
	}
	// A copy re-sent with the T flag (the client failed over to us, or
	// retransmits) while the original is pending: its answer will come
	// once (RFC 6733 §5.5.4: duplicates are detected by End-to-End and
	// Origin-Host).
	key := e2eKey(c.hostNum, msg.EndToEnd)
	indexed := m.byE2E[key]
	if msg.IsRetransmit() {
		if p := indexed; p != nil {
			// The answer goes to the latest copy (the client may have
			// failed over from the connection the first came on).
			p.from, p.origHBH = c.id, msg.HopByHop
			m.reject("duplicate", 0)
			return
		}
	}
	if msg.HasRouteRecord(m.cfg.Identity.Host) {
		m.answerLocal(c, msg, diameter.LoopDetected, "loop")
		return
	}
	if m.cfg.Mode == Proxy && !contains(m.cfg.Applications, msg.AppID) {
		m.answerLocal(c, msg, diameter.ApplicationUnsupported, "application-unsupported")
		return
	}
	if msg.DestRealm == nil {
		m.answerLocal(c, msg, diameter.MissingAVP, "no-destination-realm",
			diameter.Grouped(diameter.AVPFailedAVP, diameter.AVPMandatory, diameter.Str(diameter.AVPDestinationRealm, "")))
		return
	}
	if msg.DestHost != nil && diameter.EqualIdentity(msg.DestHost, m.cfg.Identity.Host) {
		// Addressed to the agent itself: it serves no application.
		m.answerLocal(c, msg, diameter.CommandUnsupported, "addressed-to-agent")
		return
	}
	s, result := m.route(msg, msg.SessionID, nil)
	if s < 0 {
		m.answerLocal(c, msg, result, "no-route")
		return
	}
	p := m.newPending()
	*p = pending{from: c.id, origHBH: msg.HopByHop, server: -1, app: msg.AppID, cmd: msg.Code}
	p.tried = p.triedBuf[:0]
	if len(msg.SessionID) > 0 {
		// The Session-Id is read again from data when needed (3004,
		// failover, end of session): no copy per request.
		p.end = msg.Code == diameter.CmdSessionTermination ||
			(msg.Code == diameter.CmdCreditControl && msg.CCRequestType == diameter.CCTermination)
	}
	// Route-Record: the identity of the peer the request came from (RFC
	// 6733 §6.7.1); everything else byte for byte.
	// The message's buffer is the machine's (Message): the AVP goes into
	// its spare capacity where the shell left room, without a copy.
	p.data = diameter.AppendRouteRecord(msg.Raw, c.host)
	if len(p.data) > 0 && len(msg.Raw) > 0 && &p.data[0] == &msg.Raw[0] {
		// Edited in place: the request holds the message's memory until
		// it is answered or failed (a failover re-sends these bytes).
		p.ref = m.takeRef()
	}
	if indexed != nil {
		// An earlier request with this End-to-End, pending, came without
		// the T flag: the latest one is indexed.
		m.unindex(indexed)
	}
	m.byE2E[key] = p
	p.e2e, p.host = key, c.hostNum
	c.hostNum.refs++
	m.forward(p, s, false)
}

// route picks the server of a request: Destination-Host naming a server
// picks it; else the Session-Id's binding if its server is still eligible;
// else the policy among the servers of the Destination-Realm serving the
// application. exclude lists servers already tried. It returns -1 and the
// Result-Code when there is no route.
func (m *Machine) route(msg *diameter.Msg, session []byte, exclude []int) (int, uint32) {
	app := msg.AppID
	if msg.DestHost != nil {
		for i, sv := range m.servers {
			if sv.host != "" && diameter.EqualIdentity(msg.DestHost, sv.host) {
				if m.eligible(i, app, nil, exclude) {
					m.bind(session, i)
					return i, 0
				}
				return -1, diameter.UnableToDeliver
			}
		}
		// A host that is not a server here: route on the realm (RFC
		// 6733 §6.1.4).
	}
	realm := msg.DestRealm
	if diameter.EqualIdentity(realm, m.cfg.Identity.Realm) {
		realm = nil // the agent's own realm: every server
	} else {
		known, unknown := false, false
		for _, sv := range m.servers {
			known = known || sv.realm != "" && diameter.EqualIdentity(realm, sv.realm)
			unknown = unknown || sv.realm == ""
		}
		if !known {
			if unknown {
				// A server never reached yet may serve the realm.
				return -1, diameter.UnableToDeliver
			}
			return -1, diameter.RealmNotServed
		}
	}
	if len(session) > 0 {
		if b, ok := m.sessions[string(session)]; ok {
			if m.eligible(int(b.server), app, realm, exclude) {
				// bind's touch without its second lookup.
				if now := m.secs(); b.last != now {
					m.sessions[string(session)] = binding{server: b.server, last: now}
				}
				return int(b.server), 0
			}
		}
	}
	s := m.pick(app, realm, exclude)
	if s < 0 {
		return -1, diameter.UnableToDeliver
	}
	m.bind(session, s)
	return s, 0
}

func (m *Machine) secs() uint32 { return uint32(m.now.Sub(m.start) / time.Second) }

// bind (re)binds a session to server s.
func (m *Machine) bind(session []byte, s int) {
	if len(session) == 0 {
		return
	}
	now := m.secs()
	if b, ok := m.sessions[string(session)]; ok {
		if int(b.server) == s {
			if b.last != now {
				// Storing copies the key (an allocation): at most once
				// a second per session, not per request.
				m.sessions[string(session)] = binding{server: b.server, last: now}
			}
			return
		}
		m.servers[b.server].sessions--
	}
	m.sessions[string(session)] = binding{server: int32(s), last: now}
	m.servers[s].sessions++
}

func (m *Machine) unbind(session []byte) {
	if b, ok := m.sessions[string(session)]; ok {
		m.servers[b.server].sessions--
		delete(m.sessions, string(session))
	}
}

func (m *Machine) eligible(s int, app uint32, realm []byte, exclude []int) bool {
	sv := m.servers[s]
	if sv.conn == nil || sv.state != Okay || !sv.apps.has(app) {
		return false
	}
	if realm != nil && !diameter.EqualIdentity(realm, sv.realm) {
		return false
	}
	for _, x := range exclude {
		if x == s {
			return false
		}
	}
	return true
}

// pick applies the policy among the eligible servers.
func (m *Machine) pick(app uint32, realm []byte, exclude []int) int {
	n := len(m.servers)
	switch m.cfg.Policy {
	case LeastSessions:
		best := -1
		for i := range n {
			if m.eligible(i, app, realm, exclude) && (best < 0 || m.servers[i].sessions < m.servers[best].sessions) {
				best = i
			}
		}
		return best
	case Weighted:
		best, total := -1, 0
		for i, sv := range m.servers {
			if !m.eligible(i, app, realm, exclude) {
				continue
			}
			w := max(sv.cfg.Weight, 1)
			sv.current += w
			total += w
			if best < 0 || sv.current > m.servers[best].current {
				best = i
			}
		}
		if best >= 0 {
			m.servers[best].current -= total
		}
		return best
	default:
		for k := range n {
			i := (m.rr + k) % n
			if m.eligible(i, app, realm, exclude) {
				m.rr = i + 1
				return i
			}
		}
		return -1
	}
}

// forward sends p to server s with a fresh hop-by-hop identifier; retrans
// sets the T flag (a re-send after the first server failed).
func (m *Machine) forward(p *pending, s int, retrans bool) {
	c := m.servers[s].conn
	b, ref := p.data, p.ref
	if len(p.tried) > 0 {
		// A copy: p.data stays as first sent, for the next re-send.
		b, ref = append([]byte(nil), p.data...), nil
	}
	if retrans {
		diameter.SetRetransmit(b)
		m.emit(Action{Kind: Retransmitted, Server: s})
	}
	p.hbh = m.nextHBH(c)
	diameter.SetHopByHop(b, p.hbh)
	p.to, p.server, p.sent = c.id, s, m.now
	p.tried = append(p.tried, s)
	c.pend[p.hbh] = p
	m.waiting.push(p)
	if ref != nil {
		ref.Retain() // the write's, beside the request's own
	}
	m.sendRef(c, b, ref)
}

// answerLocal answers a client's request from the agent.
func (m *Machine) answerLocal(c *conn, msg *diameter.Msg, result uint32, reason string, extra ...[]byte) {
	m.send(c, diameter.Answer(msg.Header, msg.SessionID, m.cfg.Identity, result, extra...))
	m.reject(reason, result)
}

// answer relays an answer back to where its request came from.
func (m *Machine) answer(c *conn, msg *diameter.Msg) {
	p := c.pend[msg.HopByHop]
	if p == nil {
		// Late (after a timeout or failover) or unknown: never relayed,
		// so the client never sees two answers.
		m.reject("unknown-answer", 0)
		return
	}
	delete(c.pend, msg.HopByHop)
	if c.side == ClientSide {
		m.complete(p, msg.Raw)
		return
	}
	if msg.Result() == diameter.TooBusy && len(p.tried) < m.cfg.MaxTries {
		// RFC 6733 §7.1.3: 3004 means try another server.
		req := p.request()
		if s, _ := m.route(&diameter.Msg{Header: msg.Header, DestRealm: req.DestRealm, SessionID: msg.SessionID}, req.SessionID, p.tried); s >= 0 {
			m.reject("busy-retried", diameter.TooBusy)
			m.forward(p, s, false)
			return
		}
	}
	if p.end && msg.Result() >= 2000 && msg.Result() < 3000 {
		m.unbind(p.request().SessionID)
	}
	m.complete(p, msg.Raw)
}

// request parses a pending request's bytes again (kept as bytes only, to
// keep pending small and copy nothing per request); zero if they do not
// parse.
func (p *pending) request() diameter.Msg {
	var x diameter.Msg
	if x.ParseInto(p.data) != nil {
		return diameter.Msg{}
	}
	return x
}

// complete restores the hop-by-hop identifier and sends the answer (the
// message being stepped) where the request came from, if that connection
// is still there.
func (m *Machine) complete(p *pending, ans []byte) {
	m.waiting.remove(p)
	m.unindex(p)
	fromID, hbh := p.from, p.origHBH
	m.recycle(p)
	from := m.conns[fromID]
	if from == nil {
		m.reject("requester-gone", 0)
		return
	}
	diameter.SetHopByHop(ans, hbh)
	m.sendRef(from, ans, m.takeRef())
}

// failRequest ends a pending request with a local answer to its sender.
func (m *Machine) failRequest(p *pending, result uint32, reason string) {
	m.waiting.remove(p)
	m.unindex(p)
	m.reject(reason, result)
	// The answer is built from the request's bytes (copied), which are
	// let go of afterwards.
	defer m.recycle(p)
	from := m.conns[p.from]
	if from == nil {
		return
	}
	var x diameter.Msg
	if x.ParseInto(p.data) != nil {
		return
	}
	h := x.Header
	h.HopByHop = p.origHBH
	m.send(from, diameter.Answer(h, x.SessionID, m.cfg.Identity, result))
}

// failover moves the requests pending on a failed server connection to
// other servers with the T flag (RFC 6733 §5.5.4), or answers 3002 where
// there is none.
func (m *Machine) failover(c *conn) {
	if len(c.pend) == 0 {
		return
	}
	pend := c.pend
	c.pend = map[uint32]*pending{}
	for _, p := range pend {
		if p.server < 0 || m.conns[p.from] == nil {
			m.failRequest(p, diameter.UnableToDeliver, "failover-no-requester")
			continue
		}
		s := -1
		if len(p.tried) < m.cfg.MaxTries {
			var x diameter.Msg
			if x.ParseInto(p.data) == nil {
				x.DestHost = nil // the named host is the one that failed
				s, _ = m.route(&x, x.SessionID, p.tried)
			}
		}
		if s < 0 {
			m.failRequest(p, diameter.UnableToDeliver, "failover-no-server")
			continue
		}
		m.forward(p, s, true)
	}
}

// serverRequest routes a server-initiated request (RAR, ASR...) to the
// client its Destination-Host names.
func (m *Machine) serverRequest(c *conn, msg *diameter.Msg) {
	if msg.HasRouteRecord(m.cfg.Identity.Host) {
		m.send(c, diameter.Answer(msg.Header, msg.SessionID, m.cfg.Identity, diameter.LoopDetected))
		m.reject("loop", diameter.LoopDetected)
		return
	}
	var to *conn
	if msg.DestHost != nil {
		to = m.clients[lower(msg.DestHost)]
	}
	if to == nil || to.state != Okay {
		m.send(c, diameter.Answer(msg.Header, msg.SessionID, m.cfg.Identity, diameter.UnableToDeliver))
		m.reject("no-route", diameter.UnableToDeliver)
		return
	}
	p := m.newPending()
	*p = pending{from: c.id, origHBH: msg.HopByHop, server: -1, app: msg.AppID, cmd: msg.Code,
		data: diameter.AppendAVP(append([]byte(nil), msg.Raw...), diameter.RouteRecord(c.host)), sent: m.now}
	p.hbh = m.nextHBH(to)
	p.to = to.id
	diameter.SetHopByHop(p.data, p.hbh)
	p.sent = m.now
	to.pend[p.hbh] = p
	m.waiting.push(p)
	m.send(to, p.data)
}

// expire answers 3002 for requests unanswered for RequestTimeout.
func (m *Machine) expire() {
	for p := m.waiting.head; p != nil && !m.now.Before(p.sent.Add(m.cfg.RequestTimeout)); p = m.waiting.head {
		m.waiting.remove(p)
		if c := m.conns[p.to]; c != nil && c.pend[p.hbh] == p {
			delete(c.pend, p.hbh)
		}
		m.failRequest(p, diameter.UnableToDeliver, "timeout")
	}
}

// sweep ends bindings idle for SessionIdle.
func (m *Machine) sweep() {
	m.lastSweep = m.now
	idle := uint32(m.cfg.SessionIdle / time.Second)
	now := m.secs()
	for k, b := range m.sessions {
		if now-b.last >= idle {
			m.servers[b.server].sessions--
			delete(m.sessions, k)
		}
	}
}
