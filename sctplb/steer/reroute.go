package steer

import (
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// Reroute NAS Request (TS 38.413 8.6.5; TS 23.502 4.2.2.2.3): an AMF that
// cannot serve a registering UE asks the NG-RAN node to send the UE's
// Initial UE Message to an AMF of another AMF set. The proxy is that node
// toward the AMFs, so it acts: the Initial UE Message (the one it keeps
// until the AMF answers, else the request's NGAP-Message IE), with the
// request's AMF Set ID and Allowed NSSAI added as 8.6.5.2 says, goes to a
// live AMF of the target set on the same gNB, chosen by policy among those
// not overloaded. The UE's record moves to that AMF; the first AMF's
// AMF-UE-NGAP-ID (if it gave one) is forgotten, so its later messages for
// the UE reach nobody. The gNB sees nothing: its UE simply gets answers from
// the new AMF.
//
// When no AMF of the target set is reachable through the proxy, the request
// is relayed to the gNB unchanged and the record dropped: the gNB, which may
// have other NG connections, applies 8.6.5 itself, and its new Initial UE
// Message (carrying the AMF Set ID) is steered like any other.
func (m *Machine) reroute(g *gnb, from *upstream, k ngapl.Key, data []byte) {
	u := m.byRAN[ranKey{g.id, k.RANUEID}]
	if u == nil || u.up != from.id || u.flags&ueOrphan != 0 {
		m.fail("reroute of an unknown UE", "assoc", from.id, "ran", k.RANUEID)
		amf, ran := ids(k)
		m.errorIndication(from.id, amf, ran, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUnknownLocalUENGAPID))
		return
	}
	var cands []*upstream
	for _, x := range m.readyUps(g) {
		if x.amf != from.amf && x.inSet(k.AMFSetID) && x.admits() {
			cands = append(cands, x)
		}
	}
	if len(cands) == 0 {
		m.log.Info("reroute to an AMF set the proxy does not reach, relayed to the gNB", "set", k.AMFSetID, "gnb", g.id, "ran", k.RANUEID)
		m.removeUE(u)
		m.send(g.id, streamFor(g.out, uint64(k.RANUEID)), data)
		return
	}
	msg, err := ngapl.RerouteInitialUE(m.initial[u], data)
	if err != nil {
		m.fail("bad reroute NAS request", "assoc", from.id, "err", err)
		amf, ran := ids(k)
		m.errorIndication(from.id, amf, ran, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentSemanticError))
		return
	}
	to := m.byPolicy(cands)
	if u.flags&ueHasAMF != 0 {
		if key := akey(int(u.amf), u.gnb, u.amfID); m.byAMF[key] == u {
			delete(m.byAMF, key)
		}
		u.flags &^= ueHasAMF
	}
	m.detach(u)
	m.attach(u, to)
	m.initial[u] = msg
	m.log.Info("UE rerouted", "gnb", g.id, "ran", u.ran, "from", m.cfg.AMFs[from.amf].Name, "to", m.cfg.AMFs[to.amf].Name, "set", k.AMFSetID)
	m.send(to.id, streamFor(to.out, uint64(u.ran)), msg)
}
