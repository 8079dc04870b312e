package steer

import (
	"maps"
	"testing"
)

// TestGNBLinksPerGNBAndAMF: the per-gNB view of the NG associations names
// each gNB by its Global RAN Node ID (PLMN 208/93, the sim's gNB IDs),
// shows 0 for an association that is wanted but down, and forgets a gNB
// that left. checkInvariants (run after every step) holds it to Links.
func TestGNBLinksPerGNBAndAMF(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	want := map[GNBLink]int{
		{GNB: "20893-gnb-1", AMF: 0}: 1, {GNB: "20893-gnb-1", AMF: 1}: 1,
		{GNB: "20893-gnb-2", AMF: 0}: 1, {GNB: "20893-gnb-2", AMF: 1}: 1,
	}
	if got := s.m.GNBLinks(); !maps.Equal(got, want) {
		t.Fatalf("both gNBs set up: GNBLinks = %v, want %v", got, want)
	}

	s.kill(1) // AMF 1 down: both gNBs still want their association to it
	want[GNBLink{GNB: "20893-gnb-1", AMF: 1}] = 0
	want[GNBLink{GNB: "20893-gnb-2", AMF: 1}] = 0
	if got := s.m.GNBLinks(); !maps.Equal(got, want) {
		t.Fatalf("AMF 1 down: GNBLinks = %v, want %v", got, want)
	}

	s.run(GNBDown{Assoc: gnbB})
	delete(want, GNBLink{GNB: "20893-gnb-2", AMF: 0})
	delete(want, GNBLink{GNB: "20893-gnb-2", AMF: 1})
	if got := s.m.GNBLinks(); !maps.Equal(got, want) {
		t.Fatalf("gNB 2 gone: GNBLinks = %v, want %v", got, want)
	}
}
