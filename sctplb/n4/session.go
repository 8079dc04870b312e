package n4

import (
	"sort"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// maxHeld bounds the SMF requests a session holds while it is replayed.
const maxHeld = 16

// rewrite returns a copy of b with its F-SEID (if any) set to (sid, addr
// of side) and its Node ID (if any) set to the proxy's.
func (m *Machine) rewrite(b []byte, msg pfcp.Msg, sid uint64, side Side) []byte {
	type repl struct {
		span pfcp.Span
		ie   []byte
	}
	addr := m.cfg.UPFSide
	if side == SMFSide {
		addr = m.cfg.SMFSide
	}
	var rs []repl
	if msg.FSEIDSpan.Present() {
		rs = append(rs, repl{msg.FSEIDSpan, pfcp.FSEIDIE(sid, addr)})
	}
	if msg.NodeIDSpan.Present() {
		rs = append(rs, repl{msg.NodeIDSpan, pfcp.NodeIDIE(m.cfg.NodeID)})
	}
	// The later IE first: the earlier one's offset stays valid.
	sort.Slice(rs, func(i, j int) bool { return rs[i].span.Off > rs[j].span.Off })
	out := append([]byte(nil), b...)
	for _, r := range rs {
		var err error
		if out, err = pfcp.ReplaceIE(out, r.span, r.ie); err != nil {
			// Only a message near 64 KiB grows past the length field.
			return nil
		}
	}
	return out
}

func (m *Machine) establish(d Datagram, msg pfcp.Msg) {
	s := m.smfs[d.From]
	if s == nil {
		m.fail("no PFCP association with the SMF")
		m.reject(SMFSide, d.From, msg, msg.FSEID.SEID, pfcp.CauseNoAssociation, 0)
		return
	}
	allowed, rule := m.allowed(d.Data)
	i := m.pick(-1, allowed)
	if i < 0 && rule >= 0 {
		m.fail("no UPF available for the steering rule")
		m.reject(SMFSide, d.From, msg, msg.FSEID.SEID, pfcp.CauseNoResources, 0)
		return
	}
	if i < 0 {
		m.fail("no UPF available")
		m.reject(SMFSide, d.From, msg, msg.FSEID.SEID, pfcp.CauseNoResources, 0)
		return
	}
	sid := m.sid()
	out := m.rewrite(d.Data, msg, sid, UPFSide)
	if out == nil {
		m.reject(SMFSide, d.From, msg, msg.FSEID.SEID, pfcp.CauseInvalidLength, 0)
		return
	}
	pfcp.SetSEID(out, 0)
	x := &session{sid: sid, smf: s, cpSEID: msg.FSEID.SEID, upf: i, state: sessEstablishing, est: out}
	m.sessions[sid] = x
	m.upfs[i].sessions++
	s.sessions++
	m.request(&txn{kind: txRelay, to: m.upfs[i].cfg.Addr, side: UPFSide, data: append([]byte(nil), out...),
		upf: i, sess: x, from: d.From, fromSeq: msg.Seq, reqType: msg.Type})
}

// sessionRequest relays an SMF's Modification or Deletion Request.
func (m *Machine) sessionRequest(d Datagram, msg pfcp.Msg) {
	x := m.sessions[msg.SEID]
	if x == nil || x.smf != m.smfs[d.From] || x.state == sessDeleting {
		m.fail("unknown SEID")
		m.reject(SMFSide, d.From, msg, 0, pfcp.CauseSessionNotFound, 0)
		return
	}
	if x.state != sessUp {
		if len(x.held) >= maxHeld {
			m.fail("session busy")
			m.reject(SMFSide, d.From, msg, x.cpSEID, pfcp.CauseSystemFailure, 0)
			return
		}
		x.held = append(x.held, Datagram{From: d.From, Data: append([]byte(nil), d.Data...)})
		return
	}
	out := append([]byte(nil), d.Data...)
	if msg.FSEIDSpan.Present() {
		// The SMF moved its end of the session (a new CP F-SEID).
		x.cpSEID = msg.FSEID.SEID
		m.touch(x)
		if out = m.rewrite(d.Data, msg, x.sid, UPFSide); out == nil {
			m.reject(SMFSide, d.From, msg, x.cpSEID, pfcp.CauseInvalidLength, 0)
			return
		}
	}
	pfcp.SetSEID(out, x.upSEID)
	t := &txn{kind: txRelay, to: m.upfs[x.upf].cfg.Addr, side: UPFSide, data: out, upf: x.upf, sess: x,
		from: d.From, fromSeq: msg.Seq, reqType: msg.Type}
	if msg.Type == pfcp.SessionModificationReq {
		t.mod = append([]byte(nil), out...)
	} else {
		x.state = sessDeleting
	}
	m.request(t)
}

// report relays a UPF's Session Report Request to the session's SMF.
func (m *Machine) report(i int, d Datagram, msg pfcp.Msg) {
	x := m.sessions[msg.SEID]
	if x == nil || x.upf != i {
		m.fail("unknown SEID")
		m.reject(UPFSide, d.From, msg, 0, pfcp.CauseSessionNotFound, 0)
		return
	}
	out := append([]byte(nil), d.Data...)
	pfcp.SetSEID(out, x.cpSEID)
	m.request(&txn{kind: txRelay, to: x.smf.addr, side: SMFSide, data: out, upf: i, sess: x,
		from: d.From, fromSeq: msg.Seq, reqType: msg.Type})
}

// relayAnswered sends a peer's answer to a relayed request back to the
// requester, with the requester's SEID and sequence number.
func (m *Machine) relayAnswered(t *txn, d Datagram, msg pfcp.Msg) {
	x := t.sess
	live := x != nil && m.sessions[x.sid] == x
	back := SMFSide
	if t.side == SMFSide {
		back = UPFSide
	}
	out := append([]byte(nil), d.Data...)
	switch msg.Type {
	case pfcp.SessionEstablishmentResp:
		if !live {
			return // dropped meanwhile (its SMF released); nothing to answer
		}
		if msg.Cause == pfcp.CauseAccepted {
			if !msg.FSEIDSpan.Present() || msg.Bad == pfcp.IEFSEID {
				m.fail("establishment accepted without a UP F-SEID")
				m.reject(SMFSide, t.from, pfcp.Msg{Type: t.reqType, Seq: t.fromSeq}, x.cpSEID, pfcp.CauseSystemFailure, 0)
				m.dropSession(x)
				return
			}
			x.upSEID, x.hasUP, x.state = msg.FSEID.SEID, true, sessUp
			m.touch(x)
		}
		if out = m.rewrite(d.Data, msg, x.sid, SMFSide); out == nil {
			return
		}
		pfcp.SetSEID(out, x.cpSEID)
		pfcp.SetSeq(out, t.fromSeq)
		m.answer(back, t.from, t.fromSeq, out)
		if msg.Cause != pfcp.CauseAccepted {
			m.dropSession(x)
		} else {
			m.releaseHeld(x)
		}
		return
	case pfcp.SessionModificationResp, pfcp.SessionDeletionResp:
		cp := uint64(0)
		if live {
			cp = x.cpSEID
		}
		pfcp.SetSEID(out, cp)
		pfcp.SetSeq(out, t.fromSeq)
		m.answer(back, t.from, t.fromSeq, out)
		if !live {
			return
		}
		switch {
		case msg.Type == pfcp.SessionModificationResp && msg.Cause == pfcp.CauseAccepted:
			x.mods = append(x.mods, t.mod)
			m.touch(x)
		case msg.Type == pfcp.SessionDeletionResp && (msg.Cause == pfcp.CauseAccepted || msg.Cause == pfcp.CauseSessionNotFound):
			m.dropSession(x)
		case msg.Type == pfcp.SessionDeletionResp:
			x.state = sessUp
		}
	case pfcp.SessionReportResp:
		up := uint64(0)
		if live && x.hasUP {
			up = x.upSEID
		}
		pfcp.SetSEID(out, up)
		pfcp.SetSeq(out, t.fromSeq)
		m.answer(back, t.from, t.fromSeq, out)
	}
}

// deleteOnUPF deletes a session the SMF no longer holds.
func (m *Machine) deleteOnUPF(x *session) {
	x.dropping = true
	if !x.hasUP || x.state == sessReplaying {
		m.dropSession(x)
		return
	}
	b, err := pfcp.Session(pfcp.SessionDeletionReq, x.upSEID, 0, "", 0, 0)
	if err != nil {
		panic(err)
	}
	x.state = sessDeleting
	m.touch(x)
	m.request(&txn{kind: txDelete, to: m.upfs[x.upf].cfg.Addr, side: UPFSide, data: b, upf: x.upf, sess: x})
}

func (m *Machine) deleteAnswered(t *txn, _ pfcp.Msg) {
	if x := t.sess; x != nil && m.sessions[x.sid] == x {
		m.dropSession(x)
	}
}

// dropSession forgets a session; requests it held get "Session context
// not found".
func (m *Machine) dropSession(x *session) {
	delete(m.sessions, x.sid)
	m.touch(x)
	m.upfs[x.upf].sessions--
	x.smf.sessions--
	for _, d := range x.held {
		if msg, err := pfcp.Parse(d.Data); err == nil {
			m.reject(SMFSide, d.From, msg, 0, pfcp.CauseSessionNotFound, 0)
		}
	}
	x.held = nil
}

func (m *Machine) releaseHeld(x *session) {
	held := x.held
	x.held = nil
	for _, d := range held {
		if msg, err := pfcp.Parse(d.Data); err == nil {
			m.sessionRequest(d, msg)
		}
	}
}

func (m *Machine) sessionsOf(i int) []*session {
	var out []*session
	for _, x := range m.sessions {
		if x.upf == i {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].sid < out[b].sid })
	return out
}

func (m *Machine) sessionsOfSMF(s *smf) []*session {
	var out []*session
	for _, x := range m.sessions {
		if x.smf == s {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].sid < out[b].sid })
	return out
}

// Replay.

// replayAll queues every session of UPF i (which lost them) for replay.
func (m *Machine) replayAll(i int) {
	u := m.upfs[i]
	u.replayQ = u.replayQ[:0]
	for _, x := range m.sessionsOf(i) {
		switch x.state {
		case sessUp, sessReplaying:
			x.state, x.hasUP, x.step = sessReplaying, false, 0
			u.replayQ = append(u.replayQ, x)
			m.touch(x)
		case sessDeleting:
			m.dropSession(x) // gone with the restart; the SMF's answer is lost
		}
	}
}

// move places session x on UPF j and queues its replay there.
func (m *Machine) move(x *session, j int) {
	m.upfs[x.upf].sessions--
	m.upfs[j].sessions++
	x.upf, x.state, x.hasUP, x.step = j, sessReplaying, false, 0
	m.upfs[j].replayQ = append(m.upfs[j].replayQ, x)
	m.touch(x)
	m.pump(j)
}

// pump sends replay establishments to UPF i up to ReplayWindow.
func (m *Machine) pump(i int) {
	u := m.upfs[i]
	for u.state == upfUp && u.replaying < m.cfg.ReplayWindow && len(u.replayQ) > 0 {
		x := u.replayQ[0]
		u.replayQ = u.replayQ[1:]
		if m.sessions[x.sid] != x || x.state != sessReplaying || x.upf != i {
			continue
		}
		u.replaying++
		x.step = 0
		b := append([]byte(nil), x.est...)
		pfcp.SetSEID(b, 0)
		m.request(&txn{kind: txReplay, to: u.cfg.Addr, side: UPFSide, data: b, upf: i, sess: x})
	}
	if len(u.replayQ) == 0 {
		u.replayQ = nil
	}
}

func (m *Machine) replayAnswered(t *txn, _ Datagram, msg pfcp.Msg) {
	u := m.upfs[t.upf]
	u.replaying--
	x := t.sess
	if m.sessions[x.sid] != x || x.upf != t.upf || x.state != sessReplaying {
		m.pump(t.upf)
		return
	}
	if msg.Cause != pfcp.CauseAccepted || (x.step == 0 && (!msg.FSEIDSpan.Present() || msg.Bad == pfcp.IEFSEID)) {
		m.fail("replay refused")
		m.dropSession(x)
		m.pump(t.upf)
		return
	}
	if x.step == 0 {
		x.upSEID, x.hasUP = msg.FSEID.SEID, true
	}
	x.step++
	if x.step-1 < len(x.mods) {
		b := append([]byte(nil), x.mods[x.step-1]...)
		pfcp.SetSEID(b, x.upSEID)
		u.replaying++
		m.request(&txn{kind: txReplay, to: u.cfg.Addr, side: UPFSide, data: b, upf: t.upf, sess: x})
		return
	}
	x.state = sessUp
	m.touch(x)
	m.emit(Action{Kind: Replayed, UPF: t.upf})
	m.releaseHeld(x)
	m.pump(t.upf)
}

func (m *Machine) replayFailed(t *txn) {
	m.upfs[t.upf].replaying--
	if x := t.sess; m.sessions[x.sid] == x && x.state == sessReplaying {
		m.fail("replay unanswered")
		m.dropSession(x)
	}
}
