package steer

import (
	"testing"

	"github.com/free5gc/ngap/ngapType"
)

func (s *sim) addFakeAMF() {
	idx := len(s.amfs)
	s.amfs = append(s.amfs, &fakeAMF{idx: idx, alive: true, nextID: 1, ues: map[uint64]*simUE{}, assocs: map[AssocID]AssocID{}, got: map[int64]int{}})
}

// registerRange registers UEs ran from..to-1, alternating the two gNBs.
func registerRange(s *sim, from, to uint32) map[uint32]AssocID {
	where := map[uint32]AssocID{}
	for ran := from; ran < to; ran++ {
		g := gnbA
		if ran%2 == 1 {
			g = gnbB
		}
		where[ran] = g
		s.initialUE(g, ran, nil)
		s.uplinkNAS(g, ran)
	}
	return where
}

func TestAMFsAddedAndRemovedAtRunTime(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	old := registerRange(s, 1000, 1300)
	owner := map[uint32]int{}
	for ran, g := range old {
		owner[ran] = s.owner(g, ran)
	}

	// Scale out: the new AMF gets an association per gNB, the gNBs learn
	// its GUAMI, and new UEs spread over three AMFs; old UEs stay put.
	s.addFakeAMF()
	s.run(AddAMF{AMF: AMF{Name: "amf2"}})
	if _, ups := s.m.AssociationsUp(); ups != 6 {
		t.Fatalf("%d upstream associations after adding an AMF, want 6", ups)
	}
	for _, g := range []AssocID{gnbA, gnbB} {
		if n := s.gnbs[g].inbox[ngapType.ProcedureCodeAMFConfigurationUpdate]; n != 1 {
			t.Errorf("gNB %d got %d AMF Configuration Updates, want 1", g, n)
		}
	}
	registerRange(s, 2000, 2300)
	if got := s.m.UEs(); got[2] != 100 || sum(got) != 600 {
		t.Errorf("UE contexts per AMF = %v, want 100 new ones on the added AMF and 600 in total", got)
	}
	for ran, g := range old {
		s.uplinkNAS(g, ran)
		if o := s.owner(g, ran); o != owner[ran] {
			t.Fatalf("UE %d moved from AMF %d to %d", ran, owner[ran], o)
		}
	}

	// Scale in: AMF 0's UEs are released toward their gNBs, its GUAMI is
	// announced unavailable, its associations close for good; the others'
	// UEs do not notice.
	released := s.m.UEs()[0]
	relBefore := s.gnbs[gnbA].inbox[ngapType.ProcedureCodeUEContextRelease] + s.gnbs[gnbB].inbox[ngapType.ProcedureCodeUEContextRelease]
	s.run(RemoveAMF{Name: "amf0"})
	s.amfs[0].ues = map[uint64]*simUE{} // the AMF forgets what the proxy no longer sends it
	relAfter := s.gnbs[gnbA].inbox[ngapType.ProcedureCodeUEContextRelease] + s.gnbs[gnbB].inbox[ngapType.ProcedureCodeUEContextRelease]
	if relAfter-relBefore != released || released == 0 {
		t.Errorf("%d UE Context Release Commands toward the gNBs, want the removed AMF's %d UEs", relAfter-relBefore, released)
	}
	for _, g := range []AssocID{gnbA, gnbB} {
		if n := s.gnbs[g].inbox[ngapType.ProcedureCodeAMFStatusIndication]; n != 1 {
			t.Errorf("gNB %d got %d AMF Status Indications, want 1", g, n)
		}
	}
	if got := s.m.UEs(); got[0] != 0 || got[1]+got[2] != 600-released {
		t.Errorf("UE contexts after removal = %v", got)
	}
	if act := s.m.Active(); act[0] || !act[1] || !act[2] {
		t.Errorf("Active() = %v, want AMF 0 retired", act)
	}
	s.now = s.now.Add(10 * s.m.cfg.RedialMax)
	s.run(Tick{})
	if _, ups := s.m.AssociationsUp(); ups != 4 {
		t.Errorf("%d upstream associations after removal and redial time, want 4 (no redial of the removed AMF)", ups)
	}
	registerRange(s, 3000, 3100)
	for ran := uint32(3000); ran < 3100; ran++ {
		if s.owner(gnbA, ran) == 0 || s.owner(gnbB, ran) == 0 {
			t.Fatalf("new UE %d steered to the removed AMF", ran)
		}
	}
	for ran, g := range old {
		if owner[ran] != 0 {
			s.uplinkNAS(g, ran)
		}
	}
	if n := totalMisrouted(s); n != 0 {
		t.Fatalf("%d messages reached the wrong AMF", n)
	}

	// Bad requests are refused without changing anything; a removed name
	// comes back under its old index.
	for _, ev := range []Event{AddAMF{AMF: AMF{Name: "amf1"}}, AddAMF{AMF: AMF{}}, RemoveAMF{Name: "nope"}, RemoveAMF{Name: "amf0"}} {
		before := sum(mapValues(s.fails))
		s.run(ev)
		if sum(mapValues(s.fails)) != before+1 {
			t.Errorf("%T %+v was not refused", ev, ev)
		}
	}
	s.run(AddAMF{AMF: AMF{Name: "amf0"}})
	if act := s.m.Active(); len(act) != 3 || !act[0] {
		t.Fatalf("re-added AMF: Active() = %v", act)
	}
	if _, ups := s.m.AssociationsUp(); ups != 6 {
		t.Errorf("%d upstream associations after re-adding, want 6", ups)
	}
}

func TestTheLastAMFCannotBeRemoved(t *testing.T) {
	s := newSim(t, 1, RoundRobin)
	s.addGNB(gnbA)
	s.run(RemoveAMF{Name: "amf0"})
	if act := s.m.Active(); !act[0] {
		t.Fatal("the only AMF was removed")
	}
	if s.fails["refusing to remove the last AMF"] != 1 {
		t.Errorf("failures = %v", s.fails)
	}
}

func mapValues(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
