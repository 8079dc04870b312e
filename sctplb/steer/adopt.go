package steer

import (
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// Takeover: UEs a peer proxy replicated (replicate.go) are adopted when
// their gNB reconnects here with UE Retention Information "ues-retained".
//
// An adopted UE waits for its AMF: the association dialled for it may
// fail or be refused (a lost INIT, an AMF that restarts, an ABORT) while
// the other AMFs confirm theirs and the gNB is told "ues-retained". The
// AMF still holds the UE, so the UE waits on the redial (its uplinks held,
// up to maxHeldPerUE each and maxHeld in all) until that AMF confirms it,
// refuses retention, or the gNB's adoptBy passes (Config.SetupTimeout
// after the gNB's NG Setup). A UE given up is released toward the gNB
// (UE Context Release Command) if the gNB was, or is about to be, told
// "ues-retained": it holds the UE, and a silent drop would leave it
// sending uplinks the proxy answers with Error Indications.

const (
	maxHeldPerUE = 4
	maxHeld      = 1 << 16
)

// adopt moves the parked UEs of g's name onto g and the upstreams just
// dialled for it. They carry ueAdopted until their AMF's NG Setup Response
// confirms it retained them (confirmAdopted). Parked UEs of a gNB that does
// not ask for retention are discarded: its NG Setup re-initialises every
// UE context (TS 38.413 8.7.1.2), and so does the AMF's.
func (m *Machine) adopt(g *gnb, retains bool) {
	if m.rep == nil || g.name == "" {
		return
	}
	p := m.rep.parked[g.name]
	if p == nil {
		return
	}
	delete(m.rep.parked, g.name)
	if o, ok := m.rep.owner[g.name]; ok && o != g.id && m.gnbs[o] != nil {
		// This node serves that gNB on another association already: what
		// it holds is newer than a peer's copy.
		return
	}
	if !retains || !p.hasSetup {
		m.log.Info("imported UE contexts discarded: the gNB did not ask for UE retention", "gnb", g.name, "ues", len(p.ues))
		return
	}
	byName := map[string]int{}
	for i, a := range m.cfg.AMFs {
		if !m.retired[i] {
			byName[a.Name] = i
		}
	}
	adopted, lost := 0, 0
	for ran, pu := range p.ues {
		i, ok := byName[pu.amf]
		up := m.ups[g.ups[i]]
		if !ok || up == nil || pu.amfID >= 1<<40 {
			lost++
			continue
		}
		u := &ue{gnb: g.id, ran: ran, amfID: pu.amfID, flags: ueHasRAN | ueHasAMF | ueAdopted}
		// g is a new association: nothing of it is indexed yet, so an
		// adopted UE cannot collide with a local one.
		m.byRAN[ranKey{g.id, ran}] = u
		m.byAMF[akey(i, g.id, pu.amfID)] = u
		m.attach(u, up)
		adopted++
	}
	if adopted > 0 {
		g.adoptBy = m.now.Add(m.cfg.SetupTimeout)
	}
	m.log.Info("UE contexts adopted from a peer proxy", "gnb", g.name, "adopted", adopted, "noSuchAMF", lost)
}

// confirmAdopted settles the adopted UEs of upstream up once its AMF
// answered NG Setup: kept when it retained them (their held uplinks go to
// it now), given up otherwise.
func (m *Machine) confirmAdopted(g *gnb, up *upstream, retained bool) {
	if m.rep == nil {
		return
	}
	for _, u := range m.uesOf(g.id, up.id) {
		if u.flags&ueAdopted == 0 {
			continue
		}
		if !retained {
			m.giveUpAdopted(g, u)
			continue
		}
		u.flags &^= ueAdopted
		m.touchUE(u)
		if g.state == gnbSetupPending {
			g.retained = true
		}
		for _, data := range m.held[u] {
			m.send(up.id, streamFor(up.out, u.streamID()), data)
		}
		m.dropHeld(u)
	}
}

// giveUpAdopted ends adopted UE u of g, which its AMF will not confirm.
// It becomes an orphan (kept by RAN ID only, to absorb the gNB's UE
// Context Release Complete), released toward the gNB now if the gNB has
// its NG Setup Response, else once the response says "ues-retained"
// (answerSetup).
func (m *Machine) giveUpAdopted(g *gnb, u *ue) {
	ran, amfID := u.ran, u.amfID
	m.orphan(u)
	if g.state == gnbReady {
		m.releaseOrphan(g, amfID, ran)
		return
	}
	g.releaseOnAnswer = append(g.releaseOnAnswer, ran)
}

// orphan takes u out of the AMF index and counts: the proxy released, or
// is about to release, it toward the gNB.
func (m *Machine) orphan(u *ue) {
	m.touchUE(u)
	if k := akey(int(u.amf), u.gnb, u.amfID); m.byAMF[k] == u {
		delete(m.byAMF, k)
	}
	m.dropHeld(u)
	m.detach(u)
	u.flags = (u.flags | ueOrphan) &^ (ueHasAMF | ueAdopted)
	u.up = 0
}

// releaseOrphan sends the gNB the UE Context Release Command of an
// orphaned UE (TS 38.413 8.3.3): its AMF association is unavailable to it.
func (m *Machine) releaseOrphan(g *gnb, amfID uint64, ran uint32) {
	cause := ngapl.Cause(ngapType.CausePresentTransport, ngapType.CauseTransportPresentTransportResourceUnavailable)
	if b, ok := m.build(ngapl.UEContextReleaseCommand(amfID, &ran, cause)); ok {
		m.send(g.id, streamFor(g.out, uint64(ran)), b)
	}
}

// answered settles what waited for the gNB's NG Setup Response: with
// "ues-retained" the UEs given up meanwhile are released toward the gNB;
// without it the gNB re-initialised every UE context (TS 38.413 8.7.1.2),
// so every adopted UE and those given up go silently.
func (m *Machine) answered(g *gnb, retained bool) {
	pending := g.releaseOnAnswer
	g.releaseOnAnswer = nil
	for _, ran := range pending {
		u := m.byRAN[ranKey{g.id, ran}]
		if u == nil || u.flags&ueOrphan == 0 {
			continue
		}
		if retained {
			m.releaseOrphan(g, u.amfID, ran)
		} else {
			m.removeUE(u)
		}
	}
	if !retained {
		m.dropAdopted(g)
	}
}

// expireAdopted gives up the adopted UEs of g no AMF confirmed by its
// adoptBy.
func (m *Machine) expireAdopted(g *gnb) {
	g.adoptBy = time.Time{}
	n := 0
	for _, u := range m.uesOf(g.id, 0) {
		if u.flags&ueAdopted != 0 {
			m.giveUpAdopted(g, u)
			n++
		}
	}
	if n > 0 {
		m.warn("adopted UE contexts given up: their AMF did not confirm them in time", "gnb", g.name, "ues", n)
	}
}

func (m *Machine) dropAdopted(g *gnb) {
	if m.rep == nil {
		return
	}
	for _, u := range m.uesOf(g.id, 0) {
		if u.flags&ueAdopted != 0 {
			m.removeUE(u)
		}
	}
}

// hold keeps an uplink of adopted UE u for its AMF's confirmation; false
// when u holds maxHeldPerUE already or the machine maxHeld.
func (m *Machine) hold(u *ue, data []byte) bool {
	if len(m.held[u]) >= maxHeldPerUE || m.heldN >= maxHeld {
		return false
	}
	m.held[u] = append(m.held[u], data)
	m.heldN++
	return true
}

func (m *Machine) dropHeld(u *ue) {
	if q, ok := m.held[u]; ok {
		m.heldN -= len(q)
		delete(m.held, u)
	}
}
