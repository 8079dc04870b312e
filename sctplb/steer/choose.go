package steer

import (
	"slices"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// pickAMF chooses the upstream for a new UE on g: the AMF its 5G-S-TMSI
// names when that AMF is up and serves the GUAMI, else by policy, preferring
// AMFs of the UE's AMF set (they can fetch its context). exclude is an AMF
// index to avoid (-1 for none).
func (m *Machine) pickAMF(g *gnb, k ngapl.Key, exclude int) *upstream {
	var cands []*upstream
	for _, u := range m.readyUps(g) {
		if u.amf != exclude && u.overload != fullOverload {
			cands = append(cands, u)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	set, hasSet := k.AMFSetID, k.HasAMFSetID
	sid, ptr, named := k.STMSI.SetID, k.STMSI.Pointer, k.HasSTMSI
	if !named && (k.NAS.Kind == ngapl.NASGUTI || k.NAS.Kind == ngapl.NASSTMSI) {
		// No 5G-S-TMSI IE, but the UE's plain NAS names its AMF (TS 24.501
		// 9.11.3.4): a 5G-GUTI in a Registration Request, a 5G-S-TMSI in a
		// Service Request.
		sid, ptr, named = k.NAS.SetID, k.NAS.Pointer, true
	}
	if named {
		for _, u := range cands {
			if u.serves(sid, ptr) && u.admits() {
				return u
			}
		}
		set, hasSet = sid, true
	}
	if hasSet {
		var inSet []*upstream
		for _, u := range cands {
			if u.inSet(set) {
				inSet = append(inSet, u)
			}
		}
		if len(inSet) > 0 {
			cands = inSet
		}
	}
	// The policy picks as if nobody were overloaded; a partly overloaded
	// pick is kept only for its admitted share (overload.go) and the UE
	// goes to the policy's next choice among the others.
	u := m.byPolicy(cands)
	for !u.admits() {
		cands = slices.DeleteFunc(cands, func(x *upstream) bool { return x == u })
		if len(cands) == 0 {
			return nil
		}
		if m.cfg.Policy == RoundRobin {
			// A rotation of its own, so the refused share spreads evenly
			// instead of following the main rotation's phase.
			m.spill++
			u = cands[m.spill%len(cands)]
			continue
		}
		u = m.byPolicy(cands)
	}
	return u
}

func (u *upstream) serves(set uint16, ptr uint8) bool {
	for _, it := range u.resp.Served {
		g, err := ngapl.GUAMIOf(&it.GUAMI)
		if err == nil && g.SetID == set && g.Pointer == ptr && !u.unavailable[g] {
			return true
		}
	}
	return false
}

func (u *upstream) inSet(set uint16) bool {
	for _, it := range u.resp.Served {
		if g, err := ngapl.GUAMIOf(&it.GUAMI); err == nil && g.SetID == set {
			return true
		}
	}
	return false
}

func (m *Machine) byPolicy(c []*upstream) *upstream {
	switch m.cfg.Policy {
	case LeastUEs:
		best := c[0]
		for _, u := range c[1:] {
			if m.amfUEs[u.amf] < m.amfUEs[best.amf] {
				best = u
			}
		}
		return best
	case Weighted:
		// Smooth weighted round robin (as nginx): deterministic and even.
		total, best := 0, c[0]
		for _, u := range c {
			w := max(m.cfg.AMFs[u.amf].Weight, 1)
			m.wrr[u.amf] += w
			total += w
			if m.wrr[u.amf] > m.wrr[best.amf] {
				best = u
			}
		}
		m.wrr[best.amf] -= total
		return best
	default:
		m.rr++
		return c[m.rr%len(c)]
	}
}
