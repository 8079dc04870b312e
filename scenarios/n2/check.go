package n2

import (
	"fmt"
	"strconv"
	"strings"
)

// ParsePointers reads AMF pointers (0..63) separated by white space, as
// gnbsim's --lost-file holds them.
func ParsePointers(s string) ([]uint8, error) {
	var out []uint8
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseUint(f, 10, 6)
		if err != nil {
			return nil, fmt.Errorf("AMF pointer %q: want 0..63", f)
		}
		out = append(out, uint8(v))
	}
	return out, nil
}

// Verdict is the outcome of Check: Problems is empty when the run
// behaved; the counts say what was exercised.
type Verdict struct {
	Problems []string
	// Registered counts UEs per AMF pointer at registration.
	Registered map[uint8]int
	// ServiceRequests counts service requests that landed on the AMF their
	// 5G-S-TMSI named; Rehomed those of the dead AMF's UEs that landed on a
	// live AMF.
	ServiceRequests, Rehomed, NetworkReleased int
}

func (v *Verdict) problem(format string, args ...any) {
	if len(v.Problems) < 40 {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	}
}

type ueKey struct {
	gnb string
	ran uint32
}

// Check compares what the gNBs and the live AMFs report after a run in which
// the AMF with pointer dead (-1: none) stopped between the phases:
//   - every UE registered, and the AMF its AMF-UE-NGAP-ID names recorded it
//     (same gNB, RAN-UE-NGAP-ID and AMF-UE-NGAP-ID);
//   - UEs of live AMFs: uplink answered by their AMF, no network release,
//     paged, and the service request with their 5G-S-TMSI taken by their own
//     AMF, which knew the TMSI;
//   - UEs of the dead AMF: released by the network toward their gNB, and
//     their service request taken by a live AMF;
//   - every Paging reached the gNB of the UE it names;
//   - no errors reported by anyone.
func Check(gnbs []GNBReport, amfs []AMFReport, dead int) Verdict {
	v := Verdict{Registered: map[uint8]int{}}
	seen := map[uint8]map[ueKey]UERecord{}
	for _, a := range amfs {
		for _, e := range a.Errors {
			v.problem("amf %s: %s", a.Name, e)
		}
		m := map[ueKey]UERecord{}
		for _, r := range a.UEs {
			m[ueKey{r.GNB, r.RANUEID}] = r
		}
		seen[a.Pointer] = m
	}
	for _, g := range gnbs {
		for _, e := range g.Errors {
			v.problem("gnb %s: %s", g.Name, e)
		}
		if g.UnknownPages > 0 {
			v.problem("gnb %s: %d pages for UEs it does not serve", g.Name, g.UnknownPages)
		}
		for _, u := range g.UEs {
			if u.Error != "" {
				v.problem("gnb %s ue %d: %s", g.Name, u.Index, u.Error)
				continue
			}
			if !u.Registered {
				v.problem("gnb %s ue %d: not registered", g.Name, u.Index)
				continue
			}
			v.Registered[u.RegPointer]++
			isDead := int(u.RegPointer) == dead
			if !isDead {
				r, ok := seen[u.RegPointer][ueKey{g.Name, u.RANUEID}]
				if !ok || r.AMFUEID != u.AMFUEID {
					v.problem("gnb %s ue %d (ran %d): AMF %d has no matching record (%+v)", g.Name, u.Index, u.RANUEID, u.RegPointer, r)
				} else if !r.Setup || r.Uplinks < 2 {
					v.problem("gnb %s ue %d: AMF %d saw context setup %v, %d uplinks", g.Name, u.Index, u.RegPointer, r.Setup, r.Uplinks)
				}
			}
			switch {
			case isDead:
				if !u.NetworkReleased {
					v.problem("gnb %s ue %d: its AMF %d died but the UE was not released", g.Name, u.Index, dead)
				}
				if u.SRPointer == dead || u.SRPointer < 0 || !u.SRComplete {
					v.problem("gnb %s ue %d: service request after AMF loss went to %d (complete %v)", g.Name, u.Index, u.SRPointer, u.SRComplete)
				} else {
					v.Rehomed++
				}
				v.NetworkReleased++
			default:
				if u.NetworkReleased {
					v.problem("gnb %s ue %d: released by the network although AMF %d lives", g.Name, u.Index, u.RegPointer)
				}
				if u.UplinkPointer != int(u.RegPointer) {
					v.problem("gnb %s ue %d: uplink answered by AMF %d, registered with %d", g.Name, u.Index, u.UplinkPointer, u.RegPointer)
				}
				if !u.Paged {
					v.problem("gnb %s ue %d: not paged", g.Name, u.Index)
				}
				if u.SRPointer != int(u.RegPointer) || !u.SRComplete {
					v.problem("gnb %s ue %d: service request with 5G-S-TMSI of AMF %d went to %d (complete %v)", g.Name, u.Index, u.RegPointer, u.SRPointer, u.SRComplete)
					continue
				}
				r, ok := seen[u.RegPointer][ueKey{g.Name, u.SRRANUEID}]
				if !ok || !r.STMSI || !r.Known || !r.Released {
					v.problem("gnb %s ue %d: AMF %d's record of the service request: %+v", g.Name, u.Index, u.RegPointer, r)
					continue
				}
				v.ServiceRequests++
			}
		}
	}
	return v
}
