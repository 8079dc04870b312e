package steer

import (
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// bindAMF files u under key. An AMF that reuses an AMF-UE-NGAP-ID on one
// gNB for a second UE breaks TS 38.413 10.6; the gNB, which gets the message,
// reacts to that. The proxy keeps its indexes exact: the newest binding
// holds the key, the older record keeps only its RAN-UE-NGAP-ID.
func (m *Machine) bindAMF(u *ue, key amfKey) {
	m.touchUE(u)
	if old := m.byAMF[key]; old != nil && old != u {
		m.touchUE(old)
		m.warn("AMF reused an AMF-UE-NGAP-ID on one gNB", "amf", m.cfg.AMFs[key.amf].Name, "gnb", key.gnb, "id", key.id)
		old.flags &^= ueHasAMF
		if old.flags&ueHasRAN == 0 {
			m.removeUE(old)
		}
	}
	m.byAMF[key] = u
}

func (m *Machine) removeUE(u *ue) {
	if u.flags&ueHasRAN != 0 {
		if m.byRAN[ranKey{u.gnb, u.ran}] == u {
			delete(m.byRAN, ranKey{u.gnb, u.ran})
		}
	}
	if u.flags&ueHasAMF != 0 {
		if k := akey(int(u.amf), u.gnb, u.amfID); m.byAMF[k] == u {
			delete(m.byAMF, k)
		}
	}
	delete(m.initial, u)
	m.dropHeld(u)
	m.detach(u)
}

func (m *Machine) gnbDown(id AssocID) {
	g, ok := m.gnbs[id]
	if !ok || g.state == gnbDraining {
		return
	}
	m.log.Info("gNB association down", "assoc", id)
	m.touchGNB(id)
	g.state = gnbDraining
	g.deadline = m.now.Add(m.cfg.DrainTimeout)
	cause := ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentRadioConnectionWithUeLost)
	for _, u := range m.uesOf(g.id, 0) {
		up := m.ups[u.up]
		if u.flags&ueHasAMF == 0 || u.flags&ueOrphan != 0 || up == nil || up.state != upReady {
			m.removeUE(u)
			continue
		}
		if u.flags&ueHasRAN != 0 {
			delete(m.byRAN, ranKey{u.gnb, u.ran})
		}
		m.touchUE(u)
		u.flags |= ueDraining
		if b, ok := m.build(ngapl.UEContextReleaseRequest(u.amfID, u.ran, cause)); ok {
			m.send(up.id, streamFor(up.out, u.streamID()), b)
		}
	}
	m.closeIdleUps(g)
}

// closeIdleUps closes the upstreams of a draining gNB that no longer carry
// UEs and forgets the gNB once none is left.
func (m *Machine) closeIdleUps(g *gnb) {
	left := 0
	for i, id := range g.ups {
		u := m.ups[id]
		if u == nil {
			continue
		}
		if u.ues > 0 && u.state == upReady {
			left++
			continue
		}
		m.closeUp(u)
		g.ups[i] = 0
	}
	if left == 0 {
		m.touchGNB(g.id)
		delete(m.gnbs, g.id)
	}
}

func (m *Machine) closeUp(u *upstream) {
	m.touchGNB(u.gnb)
	for _, x := range m.uesOf(u.gnb, u.id) {
		m.removeUE(x)
	}
	if u.state != upDown {
		m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
	}
	delete(m.ups, u.id)
}

// dropGNB forgets a gNB at once (drain deadline passed, or ID reuse).
func (m *Machine) dropGNB(g *gnb) {
	m.touchGNB(g.id)
	for _, u := range m.uesOf(g.id, 0) {
		m.removeUE(u)
	}
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil {
			m.closeUp(u)
		}
	}
	delete(m.gnbs, g.id)
}

// uesOf lists the UEs of gNB g (and of upstream up when non-zero). It scans
// every record: association losses are rare next to per-message lookups,
// and a per-association list would cost memory on every UE.
func (m *Machine) uesOf(g AssocID, up AssocID) []*ue {
	seen := map[*ue]bool{}
	var out []*ue
	add := func(u *ue) {
		if u.gnb == g && (up == 0 || u.up == up) && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, u := range m.byRAN {
		add(u)
	}
	for _, u := range m.byAMF {
		add(u)
	}
	return out
}
