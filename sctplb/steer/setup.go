package steer

import (
	"bytes"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

func (m *Machine) setupAnswer(g *gnb, u *upstream, k ngapl.Key, pdu *ngapType.NGAPPDU) {
	m.touchGNB(g.id) // its record lists the AMFs' setup results
	if u.state == upReady && g.state == gnbReady {
		// The answer to a repeated NG Setup the proxy forwarded.
		if k.Type != ngapl.Successful {
			m.warn("AMF refused a repeated NG Setup", "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
			// Its AMFDown releases what it held, as for any lost AMF.
			m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
			return
		}
		if resp, err := ngapl.ParseSetupResponse(pdu); err == nil {
			u.resp = resp
			m.updateGNBView(g)
		}
		return
	}
	if u.state != upSettingUp {
		m.fail("unexpected NG Setup answer", "assoc", u.id)
		return
	}
	if k.Type != ngapl.Successful {
		m.warn("AMF refused NG Setup", "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
		m.confirmAdopted(g, u, false)
		m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
		u.state = upDown
		u.retryAt = m.now.Add(u.backoff)
		u.backoff = min(2*u.backoff, m.cfg.RedialMax)
		if g.state == gnbSetupPending {
			m.maybeAnswerSetup(g)
		}
		return
	}
	resp, err := ngapl.ParseSetupResponse(pdu)
	if err != nil {
		m.fail("bad NG Setup Response", "err", err)
		return
	}
	m.confirmAdopted(g, u, resp.UEsRetained)
	u.resp, u.state, u.backoff = resp, upReady, m.cfg.RedialMin
	clear(u.unavailable)
	switch g.state {
	case gnbSetupPending:
		if g.answerBy.IsZero() {
			g.answerBy = m.now.Add(m.cfg.SetupWait)
		}
		m.maybeAnswerSetup(g)
	case gnbReady:
		// A late or returning AMF: bring it up to date and widen the gNB's view.
		if g.ranCfg != nil {
			m.send(u.id, 0, g.ranCfg)
		}
		m.updateGNBView(g)
	}
}

// maybeAnswerSetup answers a pending gNB NG Setup once every AMF answered
// (or failed), or when the timers in tick expire.
func (m *Machine) maybeAnswerSetup(g *gnb) {
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil && (u.state == upDialing || u.state == upSettingUp) {
			return
		}
	}
	m.answerSetup(g)
}

func (m *Machine) answerSetup(g *gnb) {
	merged, ok := m.merged(g)
	if !g.retained {
		// The gNB's answer will not say "ues-retained": it drops its UE
		// contexts, so adopted ones no AMF confirmed in time go too.
		m.answered(g, false)
	}
	if !ok {
		m.log.Warn("no AMF accepted the gNB, NG Setup Failure", "gnb", g.id)
		if b, ok := m.build(ngapl.NGSetupFailure(ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), int(ngapType.TimeToWaitPresentV10s))); ok {
			m.send(g.id, 0, b)
		}
		g.state = gnbConnected
		return
	}
	merged.UEsRetained = g.retained
	b, ok := m.build(ngapl.NGSetupResponse(merged))
	if !ok {
		return
	}
	g.state = gnbReady
	g.served = guamiSet(merged.Served)
	retained := g.retained
	g.retained = false // a later repeated NG Setup retains nothing
	m.claimName(g)
	m.send(g.id, 0, b)
	if retained {
		// After the response: UEs given up meanwhile are released now.
		m.answered(g, true)
	}
}

// updateGNBView sends the gNB an AMF Configuration Update when the merged
// set of served GUAMIs grew or changed, so returning AMFs become eligible
// for GUAMI-based selection again.
func (m *Machine) updateGNBView(g *gnb) {
	merged, ok := m.merged(g)
	if !ok {
		return
	}
	now := guamiSet(merged.Served)
	if sameSet(now, g.served) {
		return
	}
	g.served = now
	merged.AMFName = ""
	if b, ok := m.build(ngapl.AMFConfigurationUpdate(merged)); ok {
		m.send(g.id, 0, b)
	}
}

// merged is the NG Setup Response the gNB sees: the union of served GUAMIs
// and of PLMN support (slices merged per PLMN) of every ready AMF, and their
// relative capacities summed and capped at 255.
func (m *Machine) merged(g *gnb) (ngapl.SetupResponse, bool) {
	ups := m.readyUps(g)
	if len(ups) == 0 {
		return ngapl.SetupResponse{}, false
	}
	r := ngapl.SetupResponse{AMFName: m.cfg.ProxyName, HasCapacity: true}
	seen := map[ngapl.GUAMI]bool{}
	plmnIdx := map[string]int{}
	for _, u := range ups {
		for _, it := range u.resp.Served {
			x, err := ngapl.GUAMIOf(&it.GUAMI)
			if err != nil || seen[x] {
				continue
			}
			seen[x] = true
			r.Served = append(r.Served, it)
		}
		r.Capacity = min(r.Capacity+u.resp.Capacity, 255)
		for _, p := range u.resp.PLMNSupport {
			key := string(p.PLMNIdentity.Value)
			i, ok := plmnIdx[key]
			if !ok {
				plmnIdx[key] = len(r.PLMNSupport)
				cp := p
				cp.SliceSupportList.List = append([]ngapType.SliceSupportItem(nil), p.SliceSupportList.List...)
				r.PLMNSupport = append(r.PLMNSupport, cp)
				continue
			}
			for _, s := range p.SliceSupportList.List {
				if !hasSlice(r.PLMNSupport[i].SliceSupportList.List, s) {
					r.PLMNSupport[i].SliceSupportList.List = append(r.PLMNSupport[i].SliceSupportList.List, s)
				}
			}
		}
	}
	if len(r.Served) == 0 || len(r.PLMNSupport) == 0 {
		return ngapl.SetupResponse{}, false
	}
	return r, true
}

func hasSlice(l []ngapType.SliceSupportItem, s ngapType.SliceSupportItem) bool {
	for _, x := range l {
		if bytes.Equal(x.SNSSAI.SST.Value, s.SNSSAI.SST.Value) && (x.SNSSAI.SD == nil) == (s.SNSSAI.SD == nil) &&
			(x.SNSSAI.SD == nil || bytes.Equal(x.SNSSAI.SD.Value, s.SNSSAI.SD.Value)) {
			return true
		}
	}
	return false
}

func guamiSet(l []ngapType.ServedGUAMIItem) map[ngapl.GUAMI]bool {
	s := map[ngapl.GUAMI]bool{}
	for _, it := range l {
		if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil {
			s[x] = true
		}
	}
	return s
}

func sameSet(a, b map[ngapl.GUAMI]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
