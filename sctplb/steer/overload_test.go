package steer

import (
	"testing"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// TestOverloadReducesNewUEsInProportion: an AMF asking for a 75% traffic
// load reduction gets a quarter of the new UEs it would have got; its
// existing UEs stay and keep reaching it; Overload Stop restores its share.
func TestOverloadReducesNewUEsInProportion(t *testing.T) {
	s := newSim(t, 3, RoundRobin)
	g := s.addGNB(gnbA)
	for ran := uint32(1); ran <= 30; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	held := s.m.UEs()
	if held[0] != 10 {
		t.Fatalf("before overload: %v", held)
	}
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.OverloadStart(75))})
	if g.inbox[ngapType.ProcedureCodeOverloadStart] != 0 {
		t.Fatal("one AMF's overload must not reach the gNB")
	}
	for ran := uint32(1); ran <= 30; ran++ {
		s.uplinkNAS(gnbA, ran) // existing UEs keep their AMF
	}
	if n := totalMisrouted(s); n != 0 || !equalInts(s.m.UEs(), held) {
		t.Fatalf("overload moved existing UEs: %v, %d misrouted", s.m.UEs(), n)
	}
	const n = 1200
	for ran := uint32(100); ran < 100+n; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	got := s.m.UEs()
	// Offered a third of 1200 (400), admitted a quarter of those.
	if share := got[0] - held[0]; share < 80 || share > 120 {
		t.Errorf("overloaded AMF got %d of %d new UEs, want about 100 (25%% of its 400)", share, n)
	}
	if got[1]-held[1] < 500 || got[2]-held[2] < 500 {
		t.Errorf("the other AMFs took %v", got)
	}
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.OverloadStop())})
	before := s.m.UEs()
	for ran := uint32(5000); ran < 5300; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	if share := s.m.UEs()[0] - before[0]; share != 100 {
		t.Errorf("after Overload Stop the AMF got %d of 300 new UEs, want 100", share)
	}
}

// TestOverloadIsPerAMFAssociation: the AMF overloads toward one gNB; new UEs
// of another gNB still reach it.
func TestOverloadIsPerAMFAssociation(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.OverloadStart(0))})
	for ran := uint32(1); ran <= 10; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	for ran := uint32(1); ran <= 10; ran++ {
		s.initialUE(gnbB, ran, nil)
	}
	onA, onB := 0, 0
	for ran := uint32(1); ran <= 10; ran++ {
		if s.owner(gnbA, ran) == 0 {
			onA++
		}
		if s.owner(gnbB, ran) == 0 {
			onB++
		}
	}
	if onA != 0 || onB != 5 {
		t.Errorf("AMF 0 got %d UEs of the gNB it is overloaded toward and %d of the other, want 0 and 5", onA, onB)
	}
}
