package steer

import (
	"fmt"
	"sort"
)

// checkInvariants states what must hold between any two Steps, whatever
// arrived:
//   - every record in byRAN sits under its own (gNB, RAN-UE-NGAP-ID) and
//     claims it; every record in byAMF sits under its own (AMF,
//     AMF-UE-NGAP-ID) and claims it; no record is under two keys of an index;
//   - every record is reachable from each key it claims (a draining record
//     has given up its RAN key: its gNB is gone);
//   - every per-AMF count equals the records attached to that AMF, and every
//     upstream's count the records attached to it; orphans count nowhere;
//   - records refer to gNBs and upstreams that exist; upstreams to gNBs;
//   - the Initial UE Messages kept for re-steering belong to live records;
//     the uplinks held for adopted UEs belong to live adopted records, at
//     most maxHeldPerUE each, and heldN counts them;
//   - per AMF, the ready associations GNBLinks reports over the gNBs add up
//     to Links' Ready, and it has an entry per wanted association's
//     (gNB, AMF) pair (0 when not ready).
//
// It returns "" when they hold, else what broke.
func checkInvariants(m *Machine) string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	records := map[*ue]bool{}
	for k, u := range m.byRAN {
		records[u] = true
		if u.flags&ueHasRAN == 0 || u.gnb != k.gnb || u.ran != k.ran {
			bad("byRAN[%v] holds a record claiming gnb %d ran %d flags %b", k, u.gnb, u.ran, u.flags)
		}
	}
	for k, u := range m.byAMF {
		records[u] = true
		if u.flags&ueHasAMF == 0 || int32(u.amf) != k.amf || u.amfID != k.id || u.gnb != k.gnb {
			bad("byAMF[%v] holds a record claiming amf %d id %d flags %b", k, u.amf, u.amfID, u.flags)
		}
	}
	amfCount := make([]int, len(m.amfUEs))
	upCount := map[AssocID]int{}
	for u := range records {
		if u.flags&ueHasRAN != 0 && u.flags&ueDraining == 0 && m.byRAN[ranKey{u.gnb, u.ran}] != u {
			bad("record gnb %d ran %d not reachable by its RAN key", u.gnb, u.ran)
		}
		if u.flags&ueHasAMF != 0 && m.byAMF[akey(int(u.amf), u.gnb, u.amfID)] != u {
			bad("record amf %d id %d not reachable by its AMF key", u.amf, u.amfID)
		}
		if u.flags&(ueHasRAN|ueHasAMF) == 0 {
			bad("record with no identity")
		}
		if _, ok := m.gnbs[u.gnb]; !ok {
			bad("record of unknown gNB %d", u.gnb)
		}
		if u.flags&ueOrphan != 0 {
			if u.up != 0 || u.flags&ueHasAMF != 0 {
				bad("orphan still attached to upstream %d (flags %b)", u.up, u.flags)
			}
			continue
		}
		up, ok := m.ups[u.up]
		if !ok {
			bad("record gnb %d ran %d attached to unknown upstream %d", u.gnb, u.ran, u.up)
			continue
		}
		if up.amf != int(u.amf) || up.gnb != u.gnb {
			bad("record (gnb %d, amf %d) attached to upstream of gnb %d amf %d", u.gnb, u.amf, up.gnb, up.amf)
		}
		amfCount[u.amf]++
		upCount[u.up]++
	}
	for i, n := range m.amfUEs {
		if n != amfCount[i] {
			bad("AMF %d counts %d UEs, %d records reference it", i, n, amfCount[i])
		}
	}
	for id, up := range m.ups {
		if up.ues != upCount[id] {
			bad("upstream %d counts %d UEs, %d records reference it", id, up.ues, upCount[id])
		}
		if _, ok := m.gnbs[up.gnb]; !ok && up.state != upDown {
			bad("upstream %d of unknown gNB %d", id, up.gnb)
		}
	}
	links, perGNB := m.Links(), m.GNBLinks()
	ready := make([]int, len(links))
	for k, n := range perGNB {
		if k.AMF < 0 || k.AMF >= len(links) || n < 0 {
			bad("GNBLinks entry %+v = %d", k, n)
			continue
		}
		ready[k.AMF] += n
	}
	for i, l := range links {
		if ready[i] != l.Ready {
			bad("AMF %d: GNBLinks counts %d ready associations, Links %d", i, ready[i], l.Ready)
		}
		if l.Wanted > 0 && !hasAMF(perGNB, i) {
			bad("AMF %d: %d associations wanted, none in GNBLinks", i, l.Wanted)
		}
	}
	for u := range m.initial {
		if !records[u] {
			bad("kept Initial UE Message of a record no index reaches")
		}
	}
	held := 0
	for u, q := range m.held {
		held += len(q)
		if !records[u] || u.flags&ueAdopted == 0 || len(q) == 0 || len(q) > maxHeldPerUE {
			bad("%d uplinks held for a record that is not a live adopted UE (flags %b)", len(q), u.flags)
		}
	}
	if held != m.heldN {
		bad("heldN %d, %d uplinks held", m.heldN, held)
	}
	sort.Strings(errs)
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Sprintf("... and %d more", len(errs)-5))
	}
	if len(errs) == 0 {
		return ""
	}
	return fmt.Sprint(errs)
}

// checkEmpty: with every gNB and AMF gone, nothing may be left.
func checkEmpty(m *Machine) string {
	n := 0
	for _, c := range m.amfUEs {
		n += c
	}
	if len(m.gnbs)+len(m.ups)+len(m.byRAN)+len(m.byAMF)+len(m.initial)+len(m.held)+n != 0 {
		return fmt.Sprintf("left behind: %d gNBs, %d upstreams, %d/%d index entries, %d kept messages, %d held, %d counted UEs",
			len(m.gnbs), len(m.ups), len(m.byRAN), len(m.byAMF), len(m.initial), len(m.held), n)
	}
	return ""
}

func hasAMF(links map[GNBLink]int, amf int) bool {
	for k := range links {
		if k.AMF == amf {
			return true
		}
	}
	return false
}
