package steer

import (
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// --- NG Reset ---

// resetFromGNB: a full reset is fanned out to every AMF; a partial one is
// split by owner, each AMF getting only its own connections. The proxy
// acknowledges the gNB itself once its records are gone and absorbs the
// AMFs' acknowledgements.
func (m *Machine) resetFromGNB(g *gnb, pdu *ngapType.NGAPPDU, data []byte) {
	full, items, err := ngapl.ParseNGReset(pdu)
	if err != nil {
		m.fail("bad NG Reset", "err", err)
		return
	}
	cause := ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified)
	if full {
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
		for _, u := range m.uesOf(g.id, 0) {
			m.removeUE(u)
		}
		if b, ok := m.build(ngapl.NGResetAcknowledge(nil)); ok {
			m.send(g.id, 0, b)
		}
		return
	}
	split := map[AssocID][]ngapl.ConnItem{}
	for _, it := range items {
		var u *ue
		if it.HasRANUEID {
			u = m.byRAN[ranKey{g.id, it.RANUEID}]
		}
		if u == nil && it.HasAMFUEID {
			u = m.uniqueByAMF(g, it.AMFUEID)
		}
		if u == nil {
			continue
		}
		if u.flags&ueOrphan == 0 && u.up != 0 {
			split[u.up] = append(split[u.up], ngapl.ConnItem{
				HasAMFUEID: u.flags&ueHasAMF != 0, AMFUEID: u.amfID,
				HasRANUEID: u.flags&ueHasRAN != 0, RANUEID: u.ran,
			})
		}
		m.removeUE(u)
	}
	for _, id := range g.ups {
		if l := split[id]; len(l) > 0 && m.ups[id] != nil && m.ups[id].state == upReady {
			if b, ok := m.build(ngapl.NGReset(cause, l)); ok {
				m.send(id, 0, b)
			}
		}
	}
	if b, ok := m.build(ngapl.NGResetAcknowledge(items)); ok {
		m.send(g.id, 0, b)
	}
}

// resetFromAMF: a full reset from one AMF must not touch other AMFs' UEs on
// the gNB, so it becomes a partial reset listing that AMF's UEs. The proxy
// acknowledges the AMF itself and absorbs the gNB's acknowledgement.
func (m *Machine) resetFromAMF(g *gnb, up *upstream, pdu *ngapType.NGAPPDU, data []byte) {
	full, items, err := ngapl.ParseNGReset(pdu)
	if err != nil {
		m.fail("bad NG Reset", "err", err)
		return
	}
	var ack []ngapl.ConnItem
	if full {
		var list []ngapl.ConnItem
		for _, u := range m.uesOf(g.id, up.id) {
			if u.flags&ueHasRAN != 0 {
				list = append(list, ngapl.ConnItem{HasAMFUEID: u.flags&ueHasAMF != 0, AMFUEID: u.amfID, HasRANUEID: true, RANUEID: u.ran})
			}
			m.removeUE(u)
		}
		for len(list) > 0 {
			n := min(len(list), 65536)
			if b, ok := m.build(ngapl.NGReset(ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), list[:n])); ok {
				m.send(g.id, 0, b)
			}
			list = list[n:]
		}
	} else {
		for _, it := range items {
			var u *ue
			if it.HasAMFUEID {
				if x := m.byAMF[akey(up.amf, g.id, it.AMFUEID)]; x != nil {
					u = x
				}
			}
			if u == nil && it.HasRANUEID {
				if x := m.byRAN[ranKey{g.id, it.RANUEID}]; x != nil && x.up == up.id {
					u = x
				}
			}
			if u != nil {
				m.removeUE(u)
			}
		}
		ack = items
		m.send(g.id, 0, data)
	}
	if b, ok := m.build(ngapl.NGResetAcknowledge(ack)); ok {
		m.send(up.id, 0, b)
	}
}
