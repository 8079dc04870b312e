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

// GNBLink is the state of the proxy's NG associations between one gNB
// (by its Global RAN Node ID) and one AMF.
type GNBLink struct {
	// GNB is the Global RAN Node ID ("" when the gNB's NG Setup Request
	// carried none that could be read); AMF the AMF's index.
	GNB string
	AMF int
}

// GNBLinks reports, for every gNB that is set up (or setting up) and every
// configured AMF, how many of its NG associations to that AMF are ready:
// 0 for one that is wanted but not ready. Two associations of gNBs with
// the same identity add up. Summed over the gNBs, an AMF's count is its
// Links() Ready.
func (m *Machine) GNBLinks() map[GNBLink]int {
	out := map[GNBLink]int{}
	for _, g := range m.gnbs {
		if g.state != gnbReady && g.state != gnbSetupPending {
			continue
		}
		for i, id := range g.ups {
			if m.retired[i] {
				continue
			}
			k := GNBLink{GNB: g.name, AMF: i}
			out[k] += 0
			if u := m.ups[id]; u != nil && u.state == upReady {
				out[k]++
			}
		}
	}
	return out
}
