package steer

import (
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

func (m *Machine) downlinkNonUE(g *gnb, u *upstream, k ngapl.Key, pdu *ngapType.NGAPPDU, data []byte) {
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGSetup:
		m.setupAnswer(g, u, k, pdu)
	case u.state != upReady:
		m.fail("AMF message before NG Setup", "assoc", u.id, "procedure", ngapl.ProcedureName(k.Procedure))
	case k.Procedure == ngapType.ProcedureCodeAMFConfigurationUpdate && k.Type == ngapl.Initiating:
		upd, err := ngapl.ParseSetupResponse(pdu)
		if err != nil {
			m.fail("bad AMF Configuration Update", "err", err)
			return
		}
		if upd.AMFName != "" {
			u.resp.AMFName = upd.AMFName
		}
		if len(upd.Served) > 0 {
			u.resp.Served = upd.Served
			clear(u.unavailable)
		}
		if upd.HasCapacity {
			u.resp.Capacity, u.resp.HasCapacity = upd.Capacity, true
		}
		if len(upd.PLMNSupport) > 0 {
			u.resp.PLMNSupport = upd.PLMNSupport
		}
		m.touchGNB(g.id)
		if b, ok := m.build(ngapl.AMFConfigurationUpdateAcknowledge()); ok {
			m.send(u.id, 0, b)
		}
		m.updateGNBView(g)
	case k.Procedure == ngapType.ProcedureCodeAMFStatusIndication:
		gone, err := ngapl.ParseAMFStatusIndication(pdu)
		if err != nil {
			m.fail("bad AMF Status Indication", "err", err)
			return
		}
		for _, x := range gone {
			u.unavailable[x] = true
			delete(g.served, x)
		}
		m.send(g.id, 0, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		m.resetFromAMF(g, u, pdu, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset, k.Procedure == ngapType.ProcedureCodeRANConfigurationUpdate:
		// Answers to requests the proxy fanned out and already answered.
	case k.Procedure == ngapType.ProcedureCodeOverloadStart:
		// Overload of one AMF must not throttle the gNB for all of them:
		// the proxy stops steering new UEs there instead.
		m.overloadStart(u, k)
	case k.Procedure == ngapType.ProcedureCodeOverloadStop:
		m.overloadStop(u)
	case k.Procedure == ngapType.ProcedureCodeErrorIndication:
		m.warn("non-UE Error Indication from AMF", "assoc", u.id, "amf", m.cfg.AMFs[u.amf].Name)
	case k.Type == ngapl.Initiating:
		// Paging, PWS, configuration transfer, NRPPa: the AMF addressed this
		// gNB by using its association.
		if k.Procedure == ngapType.ProcedureCodeWriteReplaceWarning || k.Procedure == ngapType.ProcedureCodePWSCancel {
			q := append(g.pending[k.Procedure], u.amf)
			if len(q) > maxPendingAnswers {
				// A gNB that never answers must not grow this without bound.
				q = q[len(q)-maxPendingAnswers:]
			}
			g.pending[k.Procedure] = q
		}
		m.send(g.id, 0, data)
	default:
		m.fail("unsolicited non-UE answer from AMF", "procedure", ngapl.ProcedureName(k.Procedure))
	}
}

func (m *Machine) downlinkUE(g *gnb, up *upstream, k ngapl.Key, data []byte) {
	if up.state != upReady {
		m.fail("AMF message before NG Setup", "assoc", up.id)
		return
	}
	if k.Procedure == ngapType.ProcedureCodeRerouteNASRequest {
		m.reroute(g, up, k, data)
		return
	}
	var u *ue
	if k.HasRANUEID {
		u = m.byRAN[ranKey{g.id, k.RANUEID}]
		if u != nil && u.up != up.id {
			// Not this AMF's UE: forward (the gNB judges) but learn nothing.
			m.warn("AMF names a UE steered elsewhere", "amf", m.cfg.AMFs[up.amf].Name, "ran", k.RANUEID)
			u = nil
		}
	} else if k.HasAMFUEID {
		if x := m.byAMF[akey(up.amf, g.id, k.AMFUEID)]; x != nil {
			u = x
		}
	}
	if u == nil && k.HasAMFUEID && !k.HasRANUEID &&
		k.Procedure == ngapType.ProcedureCodeHandoverResourceAllocation && k.Type == ngapl.Initiating {
		// Handover Request toward a target gNB: the UE exists here first
		// under its AMF-UE-NGAP-ID; the acknowledge brings the RAN ID.
		u = &ue{gnb: g.id, amfID: k.AMFUEID, flags: ueHasAMF}
		m.attach(u, up)
		m.byAMF[akey(up.amf, g.id, u.amfID)] = u
	}
	if u != nil && k.HasAMFUEID && (u.flags&ueHasAMF == 0 || u.amfID != k.AMFUEID) {
		if u.flags&ueHasAMF != 0 {
			if old := akey(up.amf, g.id, u.amfID); m.byAMF[old] == u {
				delete(m.byAMF, old)
			}
		}
		u.amfID, u.flags = k.AMFUEID, u.flags|ueHasAMF
		m.bindAMF(u, akey(up.amf, g.id, u.amfID))
		delete(m.initial, u)

	}
	id := uint64(k.RANUEID)
	if u != nil {
		id = u.streamID()
	} else if !k.HasRANUEID {
		id = k.AMFUEID
	}
	m.send(g.id, streamFor(g.out, id), data)
}

// drainingDownlink answers, for a lost gNB, the AMF's UE Context Release
// Commands that follow the proxy's UE Context Release Requests.
func (m *Machine) drainingDownlink(g *gnb, up *upstream, k ngapl.Key) {
	if k.Procedure != ngapType.ProcedureCodeUEContextRelease || k.Type != ngapl.Initiating || !k.HasAMFUEID {
		return
	}
	u := m.byAMF[akey(up.amf, g.id, k.AMFUEID)]
	if u == nil {
		return
	}
	if b, ok := m.build(ngapl.UEContextReleaseComplete(u.amfID, u.ran)); ok {
		m.send(up.id, streamFor(up.out, u.streamID()), b)
	}
	m.removeUE(u)
	if up.ues == 0 {
		m.closeIdleUps(g)
	}
}
