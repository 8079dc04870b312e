package steer

// AMFLink is the state of the proxy's NG associations to one AMF: one per
// gNB that is set up (or setting up), each either ready (SCTP up and NG
// Setup answered) or not.
type AMFLink struct {
	// Ready associations completed NG Setup; Wanted is every gNB's
	// association to this AMF (Ready <= Wanted).
	Ready, Wanted int
	// Overloaded associations are under Overload Start.
	Overloaded int
}

// Links reports, by AMF index, the state of the associations to each AMF.
func (m *Machine) Links() []AMFLink {
	out := make([]AMFLink, len(m.cfg.AMFs))
	for _, g := range m.gnbs {
		if g.state != gnbReady && g.state != gnbSetupPending {
			continue
		}
		for i, id := range g.ups {
			if m.retired[i] {
				continue
			}
			out[i].Wanted++
			if u := m.ups[id]; u != nil && u.state == upReady {
				out[i].Ready++
				if u.overload != 0 {
					out[i].Overloaded++
				}
			}
		}
	}
	return out
}
