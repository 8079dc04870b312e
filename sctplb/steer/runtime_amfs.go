package steer

// --- AMFs added and removed at run time ---

func (m *Machine) addAMF(a AMF) {
	if a.Name == "" || a.Weight < 0 {
		m.fail("AMF added without a name or with a negative weight", "name", a.Name)
		return
	}
	idx := -1
	for i, x := range m.cfg.AMFs {
		if x.Name != a.Name {
			continue
		}
		if !m.retired[i] {
			m.fail("AMF added twice", "name", a.Name)
			return
		}
		idx = i
	}
	if idx < 0 {
		if len(m.cfg.AMFs) >= 1<<15 {
			m.fail("too many AMFs", "name", a.Name)
			return
		}
		idx = len(m.cfg.AMFs)
		m.cfg.AMFs = append(m.cfg.AMFs, a)
		m.amfUEs = append(m.amfUEs, 0)
		m.wrr = append(m.wrr, 0)
		m.retired = append(m.retired, false)
		for _, g := range m.gnbs {
			g.ups = append(g.ups, 0)
		}
	}
	m.cfg.AMFs[idx], m.retired[idx], m.wrr[idx] = a, false, 0
	m.log.Info("AMF added", "amf", a.Name, "index", idx)
	for _, g := range m.gnbs {
		if g.state != gnbDraining && g.setupReq != nil {
			m.dial(g, idx, m.cfg.RedialMin)
		}
	}
}

func (m *Machine) removeAMF(name string) {
	idx := -1
	for i, x := range m.cfg.AMFs {
		if x.Name == name && !m.retired[i] {
			idx = i
		}
	}
	if idx < 0 {
		m.fail("removed AMF is not configured", "name", name)
		return
	}
	active := 0
	for _, r := range m.retired {
		if !r {
			active++
		}
	}
	if active == 1 {
		m.fail("refusing to remove the last AMF", "name", name)
		return
	}
	m.retired[idx] = true
	m.log.Info("AMF removed", "amf", name, "index", idx)
	for _, g := range m.gnbs {
		u := m.ups[g.ups[idx]]
		g.ups[idx] = 0
		if u == nil {
			continue
		}
		wasReady := u.state == upReady
		if g.state != gnbDraining {
			m.releaseLost(g, u)
		}
		// Closed before the announcement, so its GUAMIs no longer count as
		// served by a ready association.
		m.closeUp(u)
		switch {
		case g.state == gnbDraining:
			m.closeIdleUps(g)
		case wasReady && g.state == gnbReady:
			m.announceUnavailable(g, u)
		case g.state == gnbSetupPending:
			m.maybeAnswerSetup(g)
		}
	}
}
