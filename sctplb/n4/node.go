package n4

import (
	"net/netip"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// Node-level procedures: associations, heartbeats, restarts and losses.

func (m *Machine) node(typ uint8, node pfcp.NodeID, cause uint8, extra ...[]byte) []byte {
	b, err := pfcp.Node(typ, 0, node, cause, 0, 0, extra...)
	if err != nil {
		panic(err) // extra IEs come from messages Parse accepted
	}
	return b
}

// nodeAnswer answers a node-level request with the proxy's Node ID and a
// cause, plus the proxy's Recovery Time Stamp where the response carries
// one.
func (m *Machine) nodeAnswer(side Side, d Datagram, msg pfcp.Msg, cause uint8, extra ...[]byte) {
	var rec uint32
	node := m.cfg.NodeID
	switch msg.Type {
	case pfcp.HeartbeatRequest:
		rec, node, cause = m.recovery, "", 0
	case pfcp.AssociationSetupRequest:
		rec = m.recovery
	case pfcp.PFDManagementRequest:
		node = ""
	}
	b, err := pfcp.Node(msg.Type+1, msg.Seq, node, cause, rec, 0, extra...)
	if err != nil {
		m.log.Warn("cannot build answer", "type", pfcp.TypeName(msg.Type), "err", err)
		return
	}
	m.answer(side, d.From, msg.Seq, b)
}

func (m *Machine) setupUPF(i int) {
	u := m.upfs[i]
	if u.setupOut {
		return
	}
	u.setupOut = true
	b, err := pfcp.Node(pfcp.AssociationSetupRequest, 0, m.cfg.NodeID, 0, m.recovery, 0)
	if err != nil {
		panic(err)
	}
	m.request(&txn{kind: txSetup, to: u.cfg.Addr, side: UPFSide, data: b, upf: i})
}

func (m *Machine) setupAnswered(t *txn, d Datagram, msg pfcp.Msg) {
	u := m.upfs[t.upf]
	u.setupOut = false
	if msg.Cause != pfcp.CauseAccepted {
		m.log.Warn("UPF refused the association", "upf", u.cfg.Name, "cause", msg.Cause)
		u.setupAt = m.now.Add(m.cfg.HeartbeatInterval)
		return
	}
	if f := pfcp.FindIE(d.Data, pfcp.IEUPFunctionFeature); f != nil {
		u.features = append([]byte(nil), f...)
	}
	m.upfAssociated(t.upf, msg.Recovery)
}

func (m *Machine) setupFailed(t *txn) {
	u := m.upfs[t.upf]
	u.setupOut = false
	u.setupAt = m.now.Add(m.cfg.T1)
	if u.state == upfSettingUp && u.downAt.IsZero() {
		u.downAt = m.now
	}
}

// upfAssociated: an association with UPF i is (again) established; a
// Recovery Time Stamp other than the last one seen means it restarted and
// lost every session: they are replayed.
func (m *Machine) upfAssociated(i int, rec uint32) {
	u := m.upfs[i]
	if u.recovery != 0 && rec != 0 && rec != u.recovery {
		u.needReplay = true
		m.forgetPeer(u.cfg.Addr)
	}
	if rec != 0 && rec != u.recovery {
		u.recovery = rec
		m.touchNode()
	}
	prev := u.state
	u.state, u.missed, u.hbOut, u.downAt = upfUp, 0, false, time.Time{}
	u.hbAt = m.now.Add(m.cfg.HeartbeatInterval)
	m.log.Info("UPF associated", "upf", u.cfg.Name, "was", prev.String(), "restarted", u.needReplay, "sessions", u.sessions)
	if m.pfd != nil {
		m.request(&txn{kind: txPFD, to: u.cfg.Addr, side: UPFSide, data: append([]byte(nil), m.pfd...), upf: i})
	}
	if u.needReplay {
		u.needReplay = false
		m.replayAll(i)
	}
	m.pump(i)
}

// upfRestarted: UPF i announced a new Recovery Time Stamp outside an
// association setup; it has no association any more.
func (m *Machine) upfRestarted(i int) {
	u := m.upfs[i]
	m.log.Info("UPF restarted", "upf", u.cfg.Name, "sessions", u.sessions)
	m.forgetPeer(u.cfg.Addr)
	u.needReplay = true
	u.state = upfSettingUp
	u.hbOut = false
	m.setupUPF(i)
}

func (m *Machine) heartbeat(side Side, to netip.AddrPort, upf int, s *smf) {
	b, err := pfcp.Node(pfcp.HeartbeatRequest, 0, "", 0, m.recovery, 0)
	if err != nil {
		panic(err)
	}
	m.request(&txn{kind: txHeartbeat, to: to, side: side, data: b, upf: upf, smf: s})
}

func (m *Machine) heartbeatAnswered(t *txn, msg pfcp.Msg) {
	if t.smf != nil {
		s := t.smf
		s.hbOut, s.missed = false, 0
		s.hbAt = m.now.Add(m.cfg.HeartbeatInterval)
		if m.smfs[s.addr] == s && msg.HasRecovery && s.recovery != 0 && msg.Recovery != s.recovery {
			m.smfRestarted(s, msg.Recovery)
		}
		return
	}
	u := m.upfs[t.upf]
	u.hbOut, u.missed = false, 0
	u.hbAt = m.now.Add(m.cfg.HeartbeatInterval)
	if msg.HasRecovery && u.recovery != 0 && msg.Recovery != u.recovery {
		m.upfRestarted(t.upf)
	}
}

func (m *Machine) heartbeatLost(t *txn) {
	if t.smf != nil {
		t.smf.hbOut = false
		t.smf.missed++
		t.smf.hbAt = m.now.Add(m.cfg.HeartbeatInterval)
		m.log.Warn("SMF does not answer heartbeats", "smf", t.smf.addr, "node", t.smf.node.String())
		return
	}
	u := m.upfs[t.upf]
	u.hbOut = false
	u.missed++
	if u.state == upfUp {
		m.log.Warn("UPF unreachable", "upf", u.cfg.Name, "sessions", u.sessions)
		u.state, u.downAt, u.setupAt = upfUnreachable, m.now, m.now
	}
}

// upfLost applies Config.OnLoss to the sessions of UPF i.
func (m *Machine) upfLost(i int) {
	u := m.upfs[i]
	u.state = upfLost
	m.log.Warn("UPF lost", "upf", u.cfg.Name, "sessions", u.sessions, "policy", m.cfg.OnLoss.String())
	for _, s := range m.sessionsOf(i) {
		j := -1
		if m.cfg.OnLoss == Move {
			allowed, _ := m.allowed(s.est)
			j = m.pick(i, allowed)
		}
		if j < 0 {
			m.fail("UPF lost")
			m.dropSession(s)
			continue
		}
		m.move(s, j)
	}
	u.replayQ, u.needReplay = nil, false
}

func (m *Machine) nodeTick() {
	for i, u := range m.upfs {
		switch u.state {
		case upfUp:
			if !u.hbOut && !m.now.Before(u.hbAt) {
				u.hbOut = true
				m.heartbeat(UPFSide, u.cfg.Addr, i, nil)
			}
			m.pump(i)
		default:
			if !u.setupOut && !m.now.Before(u.setupAt) {
				m.setupUPF(i)
			}
			if u.state != upfLost && !u.downAt.IsZero() && m.now.Sub(u.downAt) >= m.cfg.LossTimeout {
				m.upfLost(i)
			}
		}
	}
	for _, s := range m.smfs {
		if !s.hbOut && !m.now.Before(s.hbAt) {
			s.hbOut = true
			m.heartbeat(SMFSide, s.addr, -1, s)
		}
	}
}

func (m *Machine) fromUPF(i int, d Datagram, msg pfcp.Msg) {
	u := m.upfs[i]
	switch msg.Type {
	case pfcp.HeartbeatRequest:
		m.nodeAnswer(UPFSide, d, msg, 0)
		if u.recovery != 0 && msg.Recovery != u.recovery && u.state != upfSettingUp {
			m.upfRestarted(i)
		}
	case pfcp.AssociationSetupRequest:
		// A UP-initiated association (§6.2.6.1): accepted like ours.
		m.nodeAnswer(UPFSide, d, msg, pfcp.CauseAccepted)
		if f := pfcp.FindIE(d.Data, pfcp.IEUPFunctionFeature); f != nil {
			u.features = append([]byte(nil), f...)
		}
		m.upfAssociated(i, msg.Recovery)
	case pfcp.AssociationUpdateRequest, pfcp.NodeReportRequest:
		m.nodeAnswer(UPFSide, d, msg, pfcp.CauseAccepted)
	case pfcp.AssociationReleaseRequest:
		m.nodeAnswer(UPFSide, d, msg, pfcp.CauseAccepted)
		u.setupAt = m.now.Add(m.cfg.HeartbeatInterval)
		m.upfLost(i)
	case pfcp.SessionReportReq:
		m.report(i, d, msg)
	default:
		m.fail("request a UPF does not send")
		m.reject(UPFSide, d.From, msg, 0, pfcp.CauseRejected, 0)
	}
}

func (m *Machine) fromSMF(d Datagram, msg pfcp.Msg) {
	s := m.smfs[d.From]
	switch msg.Type {
	case pfcp.HeartbeatRequest:
		m.nodeAnswer(SMFSide, d, msg, 0)
		if s != nil && s.recovery != 0 && msg.Recovery != s.recovery {
			m.smfRestarted(s, msg.Recovery)
		}
	case pfcp.AssociationSetupRequest:
		m.smfSetup(d, msg)
	case pfcp.AssociationUpdateRequest:
		if s == nil {
			m.reject(SMFSide, d.From, msg, 0, pfcp.CauseNoAssociation, 0)
			return
		}
		m.nodeAnswer(SMFSide, d, msg, pfcp.CauseAccepted)
	case pfcp.AssociationReleaseRequest:
		m.nodeAnswer(SMFSide, d, msg, pfcp.CauseAccepted)
		if s != nil {
			m.releaseSMF(s)
			delete(m.smfs, s.addr)
			m.touchNode()
		}
	case pfcp.PFDManagementRequest:
		m.nodeAnswer(SMFSide, d, msg, pfcp.CauseAccepted)
		m.pfd = append(m.pfd[:0:0], d.Data...)
		for i, u := range m.upfs {
			if u.state == upfUp {
				m.request(&txn{kind: txPFD, to: u.cfg.Addr, side: UPFSide, data: append([]byte(nil), d.Data...), upf: i})
			}
		}
	case pfcp.SessionEstablishmentReq:
		m.establish(d, msg)
	case pfcp.SessionModificationReq, pfcp.SessionDeletionReq:
		m.sessionRequest(d, msg)
	default:
		// Session Set Deletion names FQ-CSIDs the proxy does not track;
		// the rest are requests an SMF does not send.
		m.fail("unsupported request from SMF: " + pfcp.TypeName(msg.Type))
		m.reject(SMFSide, d.From, msg, 0, pfcp.CauseRejected, 0)
	}
}

// smfSetup accepts an SMF's association. The same Node ID from a new
// address replaces the old association; a new Recovery Time Stamp means
// the SMF restarted, and its old sessions are deleted (§6.2.6.2.2).
func (m *Machine) smfSetup(d Datagram, msg pfcp.Msg) {
	var old *smf
	for _, s := range m.smfs {
		if s.node == msg.NodeID || s.addr == d.From {
			old = s
			break
		}
	}
	s := old
	if s == nil {
		s = &smf{}
	} else if s.recovery != msg.Recovery {
		m.smfRestarted(s, msg.Recovery)
	}
	delete(m.smfs, s.addr)
	s.node, s.addr, s.recovery = msg.NodeID, d.From, msg.Recovery
	s.hbAt = m.now.Add(m.cfg.HeartbeatInterval)
	m.smfs[d.From] = s
	m.touchNode()
	var extra [][]byte
	for _, u := range m.upfs {
		if u.features != nil {
			extra = append(extra, u.features)
			break
		}
	}
	m.nodeAnswer(SMFSide, d, msg, pfcp.CauseAccepted, extra...)
	m.log.Info("SMF associated", "smf", d.From, "node", msg.NodeID.String())
}

func (m *Machine) smfRestarted(s *smf, rec uint32) {
	m.log.Info("SMF restarted: deleting its sessions", "smf", s.addr, "sessions", s.sessions)
	s.recovery = rec
	m.touchNode()
	m.forgetPeer(s.addr)
	m.releaseSMF(s)
}

// releaseSMF deletes every session of s on its UPF.
func (m *Machine) releaseSMF(s *smf) {
	for _, x := range m.sessionsOfSMF(s) {
		m.deleteOnUPF(x)
	}
}
