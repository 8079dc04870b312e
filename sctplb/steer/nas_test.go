package steer

import (
	"testing"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// TestGUTISteeringFromNAS: an Initial UE Message without 5G-S-TMSI is
// steered by the 5G-GUTI of its plain NAS Registration Request; any other
// NAS (SUCI, ciphered, malformed) leaves the choice to the policy, and the
// identity read is counted.
func TestGUTISteeringFromNAS(t *testing.T) {
	guti := func(amf int) []byte {
		g := guamiOf(amf)
		return ngapl.RegistrationRequestGUTI(g.PLMN, g.Region, g.SetID, g.Pointer, 0xc0ffee)
	}
	// A ciphered message whose ciphertext happens to hold AMF 0's GUTI at
	// the offset of a protected plain message: it must not be read.
	ciphered := append([]byte{0x7e, 0x02, 1, 2, 3, 4, 5}, guti(0)...)
	malformed := append([]byte(nil), guti(0)[:9]...)
	suci := []byte(nil) // the builder's default NAS: SUCI, null scheme
	for _, tc := range []struct {
		name  string
		nas   func(ran uint32) []byte
		want  func(ran uint32) int // AMF index, -1 for "spread by round robin"
		count string
	}{
		{"5G-GUTI naming each AMF", func(ran uint32) []byte { return guti(int(ran * 2 % 3)) }, func(ran uint32) int { return int(ran * 2 % 3) }, "5g-guti"},
		{"5G-GUTI naming AMF 1 always", func(uint32) []byte { return guti(1) }, func(uint32) int { return 1 }, "5g-guti"},
		{"integrity-protected 5G-GUTI", func(uint32) []byte { return append([]byte{0x7e, 0x01, 1, 2, 3, 4, 5}, guti(2)...) }, func(uint32) int { return 2 }, "5g-guti"},
		{"SUCI", func(uint32) []byte { return suci }, nil, "suci"},
		{"ciphered", func(uint32) []byte { return ciphered }, nil, "ciphered"},
		{"malformed", func(uint32) []byte { return malformed }, nil, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 3, RoundRobin)
			s.addGNB(gnbA)
			counted := 0
			for ran := uint32(1); ran <= 30; ran++ {
				s.gnbs[gnbA].ues[ran] = &gnbUE{}
				pdu := s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: loc, NAS: tc.nas(ran)}))
				acts := s.m.Step(s.now, GNBMessage{Assoc: gnbA, Stream: 1, Data: pdu})
				for _, a := range acts {
					if a.Kind == NASIdentity && a.Reason == tc.count {
						counted++
					}
				}
				s.run(replay(s, acts)...)
				if tc.want != nil {
					if got := s.owner(gnbA, ran); got != tc.want(ran) {
						t.Fatalf("UE %d landed on AMF %d, its NAS names AMF %d", ran, got, tc.want(ran))
					}
				}
			}
			if counted != 30 {
				t.Errorf("%d of 30 Initial UE Messages counted as %s", counted, tc.count)
			}
			if tc.want == nil {
				if got := s.m.UEs(); got[0] != 10 || got[1] != 10 || got[2] != 10 {
					t.Errorf("UEs per AMF %v, want round robin 10/10/10", got)
				}
			}
		})
	}
}

// TestSTMSIWinsOverNAS: the NGAP 5G-S-TMSI IE, which the gNB took from RRC,
// is authoritative; the NAS identity is read only without it.
func TestSTMSIWinsOverNAS(t *testing.T) {
	s := newSim(t, 3, RoundRobin)
	s.addGNB(gnbA)
	g := guamiOf(0)
	s.gnbs[gnbA].ues[1] = &gnbUE{}
	tmsi := ngapl.STMSI{SetID: amfSet, Pointer: guamiOf(2).Pointer, TMSI: 1}
	s.run(GNBMessage{Assoc: gnbA, Stream: 1, Data: s.must(ngapl.InitialUEMessage(ngapl.InitialUE{
		RANUEID: 1, Location: loc, STMSI: &tmsi, NAS: ngapl.RegistrationRequestGUTI(g.PLMN, g.Region, g.SetID, g.Pointer, 1),
	}))})
	if got := s.owner(gnbA, 1); got != 2 {
		t.Fatalf("UE landed on AMF %d, its 5G-S-TMSI names AMF 2", got)
	}
}

// replay turns actions already taken from a Step into the events the fakes
// produce, by performing them.
func replay(s *sim, acts []Action) []Event {
	for _, a := range append([]Action(nil), acts...) {
		s.do(a)
	}
	q := s.queue
	s.queue = nil
	return q
}
