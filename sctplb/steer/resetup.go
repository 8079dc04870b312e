package steer

import (
	"bytes"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// A repeated NG Setup from a gNB that is already set up (TS 38.413 8.7.1.2:
// it re-initialises the UE-related contexts of both nodes, like a full NG
// Reset) is answered by the proxy from its merged view of the AMFs. It is
// not fanned out to every AMF each time (issue 11, item 10: one PDU from a
// gNB must not cost every AMF a procedure):
//   - the same request as before: each AMF that held UEs of the gNB gets a
//     full NG Reset on that gNB's association instead (the proxy absorbs the
//     acknowledgement); AMFs without its UEs see nothing;
//   - a changed request (new TAs, slices, name): it is the gNB's new
//     configuration, which the AMFs must learn; it is forwarded to every
//     ready AMF at most once per RedialMin per gNB (their answers refresh
//     the merged view), and kept for AMFs that come up later. Within that
//     time the request is only kept.
//
// Either way the gNB's UE records are dropped, and the gNB gets its NG Setup
// Response at once.
func (m *Machine) repeatedSetup(g *gnb, req []byte) {
	changed := !bytes.Equal(req, g.setupReq)
	g.setupReq = req
	forward := changed && (g.lastFanout.IsZero() || !m.now.Before(g.lastFanout.Add(m.cfg.RedialMin)))
	held := map[AssocID]bool{}
	for _, u := range m.readyUps(g) {
		if u.ues > 0 {
			held[u.id] = true
		}
	}
	if len(held) > 0 {
		for _, u := range m.uesOf(g.id, 0) {
			m.removeUE(u)
		}
	}
	if forward {
		g.lastFanout = m.now
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, req)
		}
	} else {
		for _, u := range m.readyUps(g) {
			if !held[u.id] {
				continue
			}
			if b, ok := m.build(ngapl.NGReset(ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), nil)); ok {
				m.send(u.id, 0, b)
			}
		}
	}
	m.answerSetup(g)
}
