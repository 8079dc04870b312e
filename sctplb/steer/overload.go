package steer

import (
	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// Overload Start / Overload Stop (TS 38.413 8.7.6, 8.7.7) stay with the
// proxy: relayed, one AMF's overload would throttle the gNB for all of them.
// The proxy instead admits fewer new UEs to the overloaded AMF: with an AMF
// Traffic Load Reduction Indication of r percent it offers that AMF only
// (100-r) of every 100 new UEs it would have been offered (a deterministic
// credit, so the share is exact over any 100 offers); without one (or with
// only an AMF Overload Response) it gets no new UEs. UEs it already holds,
// and every message of theirs, are untouched. Overload Start NSSAI List
// (per-slice overload) is not read: a slice-specific overload throttles the
// AMF as a whole only when it also carries a reduction.

const fullOverload = 100

func (m *Machine) overloadStart(u *upstream, k ngapl.Key) {
	u.overload, u.credit = fullOverload, 0
	if k.TrafficLoadReduction > 0 {
		u.overload = k.TrafficLoadReduction
	}
	m.log.Info("AMF overload start", "amf", m.cfg.AMFs[u.amf].Name, "gnb", u.gnb, "reduction_percent", u.overload)
}

func (m *Machine) overloadStop(u *upstream) {
	if u.overload != 0 {
		m.log.Info("AMF overload stop", "amf", m.cfg.AMFs[u.amf].Name, "gnb", u.gnb)
	}
	u.overload, u.credit = 0, 0
}

// admits says whether u may be offered one more new UE.
func (u *upstream) admits() bool {
	switch u.overload {
	case 0:
		return true
	case fullOverload:
		return false
	}
	u.credit += fullOverload - int(u.overload)
	if u.credit >= fullOverload {
		u.credit -= fullOverload
		return true
	}
	return false
}
