package steer

// Takeover: UEs a peer proxy replicated (replicate.go) are adopted when
// their gNB reconnects here with UE Retention Information "ues-retained".

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
	m.log.Info("UE contexts adopted from a peer proxy", "gnb", g.name, "adopted", adopted, "noSuchAMF", lost)
}

// confirmAdopted settles the adopted UEs of upstream up once its AMF
// answered NG Setup: kept when it retained them, dropped otherwise.
func (m *Machine) confirmAdopted(g *gnb, up *upstream, retained bool) {
	if m.rep == nil {
		return
	}
	for _, u := range m.uesOf(g.id, up.id) {
		if u.flags&ueAdopted == 0 {
			continue
		}
		if !retained {
			m.removeUE(u)
			continue
		}
		u.flags &^= ueAdopted
		m.touchUE(u)
		if g.state == gnbSetupPending {
			g.retained = true
		}
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
