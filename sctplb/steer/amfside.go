package steer

import (
	"errors"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// --- AMF side ---

func (m *Machine) amfUp(e AMFUp) {
	u, ok := m.ups[e.Assoc]
	if !ok || u.state != upDialing {
		m.out = append(m.out, Action{Kind: Close, Assoc: e.Assoc})
		return
	}
	g := m.gnbs[u.gnb]
	if g == nil || g.state == gnbDraining || g.setupReq == nil {
		m.closeUp(u)
		return
	}
	u.out, u.state = e.OutStreams, upSettingUp
	m.log.Info("AMF association up", "assoc", u.id, "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
	m.send(u.id, 0, g.setupReq)
}

func (m *Machine) amfDown(id AssocID) {
	u, ok := m.ups[id]
	if !ok || u.state == upDown {
		return
	}
	g := m.gnbs[u.gnb]
	m.log.Warn("AMF association down", "assoc", id, "amf", m.cfg.AMFs[u.amf].Name, "gnb", u.gnb)
	wasReady := u.state == upReady
	m.touchGNB(u.gnb)
	u.state = upDown
	u.retryAt = m.now.Add(u.backoff)
	u.backoff = min(2*u.backoff, m.cfg.RedialMax)
	if g == nil {
		delete(m.ups, id)
		return
	}
	if g.state == gnbDraining {
		m.closeUp(u)
		m.closeIdleUps(g)
		return
	}
	m.releaseLost(g, u)
	if wasReady && g.state == gnbReady {
		m.announceUnavailable(g, u)
	}
	if g.state == gnbSetupPending {
		m.maybeAnswerSetup(g)
	}
}

// releaseLost handles the UEs of an AMF association that is gone. UEs the
// AMF never answered are re-steered to another AMF (their Initial UE Message
// is replayed, the UE notices nothing). Established UEs are released toward
// the gNB with UE Context Release Command (TS 38.413 8.3.3, cause
// transport-resource-unavailable): from the gNB's side its AMF (the proxy)
// releases them, the gNB frees radio resources and answers Release Complete,
// which the proxy absorbs; each UE comes back with a new Initial UE Message
// carrying its 5G-S-TMSI and lands on an AMF of its set. Other AMFs' UEs are
// untouched.
func (m *Machine) releaseLost(g *gnb, lost *upstream) {
	cause := ngapl.Cause(ngapType.CausePresentTransport, ngapType.CauseTransportPresentTransportResourceUnavailable)
	for _, u := range m.uesOf(g.id, lost.id) {
		if u.flags&ueAdopted != 0 {
			// Never confirmed by the AMF, which still holds it: it waits
			// for the redial's NG Setup (adopt.go; redial moves it).
			continue
		}
		if data, pending := m.initial[u]; pending {
			k, err := m.dec.Key(data)
			if err == nil {
				if up := m.pickAMF(g, k, lost.amf); up != nil {
					m.detach(u)
					m.attach(u, up)
					m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
					continue
				}
			}
			m.fail("no AMF to re-steer UE", "ran", u.ran)
			m.removeUE(u)
			m.errorIndication(g.id, nil, &u.ran, cause)
			continue
		}
		if u.flags&ueHasRAN == 0 || u.flags&ueHasAMF == 0 {
			m.removeUE(u)
			continue
		}
		// Orphaned: out of the AMF index and counts, kept by RAN ID only.
		ran, amfID := u.ran, u.amfID
		m.orphan(u)
		m.releaseOrphan(g, amfID, ran)
	}
}

// announceUnavailable tells the gNB (AMF Status Indication) that the GUAMIs
// only the lost AMF served are gone, so it stops steering UEs at them.
func (m *Machine) announceUnavailable(g *gnb, lost *upstream) {
	still := map[ngapl.GUAMI]bool{}
	for _, u := range m.readyUps(g) {
		for _, it := range u.resp.Served {
			if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil {
				still[x] = true
			}
		}
	}
	var gone []ngapType.GUAMI
	for _, it := range lost.resp.Served {
		if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil && !still[x] {
			gone = append(gone, it.GUAMI)
			delete(g.served, x)
		}
	}
	if len(gone) == 0 {
		return
	}
	if b, ok := m.build(ngapl.AMFStatusIndication(gone)); ok {
		m.send(g.id, 0, b)
	}
}

func (m *Machine) fromAMF(e AMFMessage) {
	u, ok := m.ups[e.Assoc]
	if !ok || u.state == upDown || u.state == upDialing {
		m.fail("unknown AMF association", "assoc", e.Assoc)
		return
	}
	g := m.gnbs[u.gnb]
	if g == nil {
		m.closeUp(u)
		return
	}
	k, pdu, err := m.decode(e.Data)
	if errors.Is(err, ngapl.ErrUnknownMessage) {
		m.unknownMessage(u.id, Downlink, k)
		return
	}
	if err != nil {
		m.out = append(m.out, Action{Kind: Malformed, Assoc: e.Assoc, Dir: Downlink})
		m.warn("malformed NGAP from AMF", "assoc", e.Assoc, "amf", m.cfg.AMFs[u.amf].Name, "err", err)
		m.errorIndication(u.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentTransferSyntaxError))
		return
	}
	m.out = append(m.out, Action{Kind: CountMessage, Procedure: k.Procedure, Dir: Downlink})
	if !m.validate(u.id, Downlink, k) {
		return
	}
	if g.state == gnbDraining {
		m.drainingDownlink(g, u, k)
		return
	}
	if k.UEAssociated {
		m.downlinkUE(g, u, k, e.Data)
		return
	}
	m.downlinkNonUE(g, u, k, pdu, e.Data)
}
