package steer

import (
	"errors"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// --- gNB side ---

func (m *Machine) gnbUp(e GNBUp) {
	if e.Assoc&UpstreamBit != 0 {
		m.log.Error("gNB association ID uses the upstream range", "assoc", e.Assoc)
		m.out = append(m.out, Action{Kind: Close, Assoc: e.Assoc})
		return
	}
	if old, ok := m.gnbs[e.Assoc]; ok {
		// A reused ID means the shell missed a down event; start clean.
		m.dropGNB(old)
	}
	m.gnbs[e.Assoc] = &gnb{id: e.Assoc, out: e.OutStreams, ups: make([]AssocID, len(m.cfg.AMFs)), served: map[ngapl.GUAMI]bool{}, pending: map[int64][]int{}}
	if e.Abort.Valid() {
		m.gnbs[e.Assoc].abortT = e.Abort
	}
	m.log.Info("gNB association up", "assoc", e.Assoc, "streams", e.OutStreams)
}

func (m *Machine) fromGNB(e GNBMessage) {
	g, ok := m.gnbs[e.Assoc]
	if !ok || g.state == gnbDraining {
		m.fail("unknown gNB association", "assoc", e.Assoc)
		return
	}
	k, pdu, err := m.decode(e.Data)
	if errors.Is(err, ngapl.ErrUnknownMessage) {
		m.unknownMessage(g.id, Uplink, k)
		return
	}
	if err != nil {
		m.out = append(m.out, Action{Kind: Malformed, Assoc: e.Assoc, Dir: Uplink})
		m.warn("malformed NGAP from gNB", "assoc", e.Assoc, "err", err)
		m.errorIndication(g.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentTransferSyntaxError))
		return
	}
	m.out = append(m.out, Action{Kind: CountMessage, Procedure: k.Procedure, Dir: Uplink})
	if !m.validate(g.id, Uplink, k) {
		return
	}
	if k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Initiating {
		// The Global RAN Node ID is mandatory (validate checked it is
		// present); one that cannot be formatted leaves the gNB unnamed.
		if name, err := ngapl.RANNodeID(pdu); err == nil {
			g.name = name
		}
		m.gnbSetup(g, e.Data, ngapl.SetupRequestRetainsUEs(pdu))
		return
	}
	if g.state != gnbReady {
		m.fail("message before NG Setup", "assoc", g.id, "procedure", ngapl.ProcedureName(k.Procedure))
		m.errorIndication(g.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentMessageNotCompatibleWithReceiverState))
		return
	}
	if k.UEAssociated {
		m.uplinkUE(g, k, e.Data)
		return
	}
	m.uplinkNonUE(g, k, pdu, e.Data)
}

func (m *Machine) gnbSetup(g *gnb, req []byte, retains bool) {
	if g.state == gnbReady {
		m.repeatedSetup(g, req)
		return
	}
	g.setupReq = req
	g.state = gnbSetupPending
	g.deadline = m.now.Add(m.cfg.SetupTimeout)
	g.answerBy = time.Time{}
	for i := range m.cfg.AMFs {
		if m.retired[i] {
			continue
		}
		u := m.ups[g.ups[i]]
		switch {
		case u == nil:
			m.dial(g, i, m.cfg.RedialMin)
		case u.state == upSettingUp || u.state == upReady:
			u.state = upSettingUp
			m.send(u.id, 0, req)
		case u.state == upDown:
			m.redial(u)
		}
	}
	m.adopt(g, retains)
}

func (m *Machine) dial(g *gnb, amf int, backoff time.Duration) *upstream {
	m.nextUp++
	id := UpstreamBit | (m.nextUp &^ UpstreamBit)
	u := &upstream{id: id, gnb: g.id, amf: amf, state: upDialing, backoff: backoff, unavailable: map[ngapl.GUAMI]bool{}}
	m.ups[id] = u
	g.ups[amf] = id
	m.out = append(m.out, Action{Kind: Dial, Assoc: id, AMF: amf})
	return u
}

// redial replaces a down upstream with a fresh association ID, so that late
// events about the old one cannot be mistaken for the new one.
func (m *Machine) redial(u *upstream) {
	g := m.gnbs[u.gnb]
	var waiting []*ue
	if u.ues > 0 {
		// Adopted UEs waiting for this AMF (adopt.go): the only ones a
		// down upstream keeps.
		waiting = m.uesOf(u.gnb, u.id)
	}
	if g == nil || g.state == gnbDraining {
		for _, x := range waiting {
			m.removeUE(x)
		}
		delete(m.ups, u.id)
		return
	}
	delete(m.ups, u.id)
	nu := m.dial(g, u.amf, u.backoff)
	for _, x := range waiting {
		x.up = nu.id
		nu.ues++
	}
}

func (m *Machine) uplinkNonUE(g *gnb, k ngapl.Key, pdu *ngapType.NGAPPDU, data []byte) {
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		m.resetFromGNB(g, pdu, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset,
		k.Procedure == ngapType.ProcedureCodeAMFConfigurationUpdate,
		k.Procedure == ngapType.ProcedureCodeAMFStatusIndication:
		// Answers to procedures the proxy itself started toward the gNB.
	case k.Procedure == ngapType.ProcedureCodeRANConfigurationUpdate && k.Type == ngapl.Initiating:
		g.ranCfg = data
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
		if b, ok := m.build(ngapl.RANConfigurationUpdateAcknowledge()); ok {
			m.send(g.id, 0, b)
		}
	case k.Procedure == ngapType.ProcedureCodeErrorIndication:
		m.warn("non-UE Error Indication from gNB", "assoc", g.id)
	case k.Type != ngapl.Initiating:
		// The gNB answers an AMF-initiated non-UE request: back to its sender.
		q := g.pending[k.Procedure]
		if len(q) == 0 {
			m.fail("unsolicited non-UE answer", "assoc", g.id, "procedure", ngapl.ProcedureName(k.Procedure))
			return
		}
		amf := q[0]
		g.pending[k.Procedure] = q[1:]
		if u := m.ups[g.ups[amf]]; u != nil && u.state == upReady {
			m.send(u.id, 0, data)
		} else {
			m.fail("AMF gone before answer", "procedure", ngapl.ProcedureName(k.Procedure))
		}
	case k.Procedure == ngapType.ProcedureCodePWSRestartIndication, k.Procedure == ngapType.ProcedureCodePWSFailureIndication:
		// Every AMF may have warnings running in this gNB.
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
	default:
		// Uplink RAN Configuration Transfer, non-UE NRPPa, private messages:
		// any AMF can relay them; spread them.
		ups := m.readyUps(g)
		if len(ups) == 0 {
			m.fail("no AMF for non-UE message", "procedure", ngapl.ProcedureName(k.Procedure))
			return
		}
		m.rr++
		m.send(ups[m.rr%len(ups)].id, 0, data)
	}
}

func (m *Machine) readyUps(g *gnb) []*upstream {
	var out []*upstream
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil && u.state == upReady {
			out = append(out, u)
		}
	}
	return out
}

func (m *Machine) uplinkUE(g *gnb, k ngapl.Key, data []byte) {
	switch k.Procedure {
	case ngapType.ProcedureCodeInitialUEMessage:
		m.initialUE(g, k, data)
		return
	case ngapType.ProcedureCodePathSwitchRequest:
		m.pathSwitch(g, k, data)
		return
	}
	var u *ue
	if k.HasRANUEID {
		u = m.byRAN[ranKey{g.id, k.RANUEID}]
	}
	if u == nil && k.HasAMFUEID {
		// Handover target: the AMF named the UE first, the gNB's answer
		// brings the RAN-UE-NGAP-ID to learn.
		u = m.uniqueByAMF(g, k.AMFUEID)
		if u != nil && u.flags&ueHasRAN == 0 && k.HasRANUEID {
			u.ran, u.flags = k.RANUEID, u.flags|ueHasRAN
			m.byRAN[ranKey{g.id, u.ran}] = u
			m.touchUE(u)
		}
	}
	if u == nil {
		m.fail("unknown UE", "assoc", g.id, "ran", k.RANUEID, "procedure", ngapl.ProcedureName(k.Procedure))
		var amf *uint64
		var ran *uint32
		if k.HasAMFUEID {
			amf = &k.AMFUEID
		}
		if k.HasRANUEID {
			ran = &k.RANUEID
		}
		m.errorIndication(g.id, amf, ran, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUnknownLocalUENGAPID))
		return
	}
	release := k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Successful
	if u.flags&ueOrphan != 0 {
		if release {
			m.removeUE(u)
		}
		return
	}
	up := m.ups[u.up]
	if up == nil || up.state != upReady {
		if u.flags&ueAdopted != 0 && m.hold(u, data) {
			return // sent once the AMF confirms the UE (adopt.go)
		}
		m.fail("AMF unavailable", "assoc", g.id, "ran", u.ran)
		return
	}
	m.send(up.id, streamFor(up.out, u.streamID()), data)
	if release {
		m.removeUE(u)
	}
}

// uniqueByAMF finds the UE of gNB g that some AMF knows as id; nil when none
// or when AMFs collide on the ID.
func (m *Machine) uniqueByAMF(g *gnb, id uint64) *ue {
	var found *ue
	for i := range m.cfg.AMFs {
		if u := m.byAMF[akey(i, g.id, id)]; u != nil {
			if found != nil {
				return nil
			}
			found = u
		}
	}
	return found
}

func (m *Machine) initialUE(g *gnb, k ngapl.Key, data []byte) {
	if old := m.byRAN[ranKey{g.id, k.RANUEID}]; old != nil {
		// The gNB reused a RAN-UE-NGAP-ID: its old connection is gone.
		m.removeUE(old)
	}
	if !k.HasSTMSI {
		m.out = append(m.out, Action{Kind: NASIdentity, Assoc: g.id, Reason: k.NAS.Kind.String()})
	}
	up := m.pickAMF(g, k, -1)
	if up == nil {
		m.fail("no AMF available", "assoc", g.id, "ran", k.RANUEID)
		m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentTransport, ngapType.CauseTransportPresentTransportResourceUnavailable))
		return
	}
	u := &ue{gnb: g.id, up: up.id, amf: int16(up.amf), ran: k.RANUEID, flags: ueHasRAN}
	m.byRAN[ranKey{g.id, u.ran}] = u
	m.initial[u] = data
	m.attach(u, up)
	m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
}

func (m *Machine) attach(u *ue, up *upstream) {
	m.touchUE(u)
	u.up, u.amf = up.id, int16(up.amf)
	up.ues++
	m.amfUEs[up.amf]++
}

func (m *Machine) detach(u *ue) {
	m.touchUE(u)
	if up := m.ups[u.up]; up != nil {
		up.ues--
	}
	if u.flags&ueOrphan == 0 {
		m.amfUEs[u.amf]--
	}
}

func (m *Machine) pathSwitch(g *gnb, k ngapl.Key, data []byte) {
	if !k.HasSourceAMFUEID || !k.HasRANUEID {
		m.fail("path switch without IDs", "assoc", g.id)
		return
	}
	var src *ue
	for i := range m.cfg.AMFs {
		for gid := range m.gnbs {
			u := m.byAMF[akey(i, gid, k.SourceAMFUEID)]
			if u == nil || gid == g.id {
				continue
			}
			if src != nil {
				m.fail("ambiguous source AMF-UE-NGAP-ID", "id", k.SourceAMFUEID)
				m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentInconsistentRemoteUENGAPID))
				return
			}
			src = u
		}
	}
	var up *upstream
	if src != nil {
		up = m.ups[g.ups[src.amf]]
	}
	if up == nil || up.state != upReady {
		m.fail("path switch to unavailable AMF", "id", k.SourceAMFUEID)
		m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUnknownLocalUENGAPID))
		return
	}
	// The source gNB's record stays until the AMF releases it there; the
	// new record takes over the AMF-UE-NGAP-ID index once the AMF answers.
	u := &ue{gnb: g.id, ran: k.RANUEID, flags: ueHasRAN}
	if old := m.byRAN[ranKey{g.id, u.ran}]; old != nil {
		m.removeUE(old)
	}
	m.byRAN[ranKey{g.id, u.ran}] = u
	m.attach(u, up)
	m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
}
