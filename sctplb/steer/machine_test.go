package steer

import (
	"runtime"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

const (
	gnbA AssocID = 1
	gnbB AssocID = 2
)

func totalMisrouted(s *sim) int {
	n := 0
	for _, f := range s.amfs {
		n += f.misrouted
	}
	return n
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

// register brings n UEs up on alternating gNBs through registration: Initial
// UE Message, Downlink NAS, Uplink NAS, Initial Context Setup.
func register(t *testing.T, s *sim, n int) map[uint32]AssocID {
	t.Helper()
	where := map[uint32]AssocID{}
	for i := 0; i < n; i++ {
		ran := uint32(1000 + i)
		g := gnbA
		if i%2 == 1 {
			g = gnbB
		}
		where[ran] = g
		s.initialUE(g, ran, nil)
		s.uplinkNAS(g, ran)
	}
	return where
}

func TestThousandUEsAcrossThreeAMFs(t *testing.T) {
	s := newSim(t, 3, RoundRobin)
	ga, gb := s.addGNB(gnbA), s.addGNB(gnbB)
	if !ga.setupOK || !gb.setupOK {
		t.Fatal("gNBs did not complete NG Setup")
	}
	if g, u := s.m.AssociationsUp(); g != 2 || u != 6 {
		t.Fatalf("associations up = %d gNB, %d upstream; want 2 and 6", g, u)
	}

	// Registrations spread over the AMFs; every message of a UE reaches the
	// AMF that allocated its AMF-UE-NGAP-ID (the fakes allocate from 1, so
	// IDs collide across AMFs).
	where := register(t, s, 1000)
	counts := s.m.UEs()
	for i, c := range counts {
		if c < 300 || c > 367 {
			t.Errorf("AMF %d holds %d UEs, want a fair third of 1000", i, c)
		}
	}
	if sum(counts) != 1000 {
		t.Fatalf("UE contexts = %v, want 1000 in total", counts)
	}
	if n := totalMisrouted(s); n != 0 {
		t.Fatalf("%d messages reached the wrong AMF", n)
	}
	for _, f := range s.amfs {
		if f.got[ngapType.ProcedureCodeInitialContextSetup] == 0 {
			t.Errorf("AMF %d saw no Initial Context Setup Response", f.idx)
		}
	}
	owner := map[uint32]int{}
	for ran, g := range where {
		owner[ran] = s.owner(g, ran)
		if owner[ran] < 0 {
			t.Fatalf("UE %d has no AMF", ran)
		}
	}

	t.Run("releases remove contexts", func(t *testing.T) {
		for ran, g := range where {
			if ran%2 == 0 {
				s.releaseRequest(g, ran)
			}
		}
		if got := sum(s.m.UEs()); got != 500 {
			t.Fatalf("UE contexts after 500 releases = %d", got)
		}
		if len(s.m.byRAN) != 500 || len(s.m.byAMF) != 500 {
			t.Fatalf("index sizes %d/%d, want 500", len(s.m.byRAN), len(s.m.byAMF))
		}
	})

	t.Run("service requests with 5G-S-TMSI return to their AMF", func(t *testing.T) {
		for ran, g := range where {
			if ran%2 != 0 {
				continue
			}
			tmsi := ngapl.STMSI{SetID: amfSet, Pointer: uint8(owner[ran] + 1), TMSI: ran}
			s.initialUE(g, ran, &tmsi)
			if got := s.owner(g, ran); got != owner[ran] {
				t.Fatalf("UE %d came back to AMF %d, its 5G-S-TMSI names AMF %d", ran, got, owner[ran])
			}
			s.uplinkNAS(g, ran)
		}
		if n := totalMisrouted(s); n != 0 {
			t.Fatalf("%d messages misrouted", n)
		}
	})

	t.Run("paging reaches the gNB the AMF addressed on stream 0", func(t *testing.T) {
		before := s.gnbs[gnbB].inbox[ngapType.ProcedureCodePaging]
		s.run(AMFMessage{Assoc: s.upstreamOf(gnbB, 0), Stream: 0, Data: s.must(ngapl.Paging(ngapl.STMSI{SetID: amfSet, Pointer: 1, TMSI: 7}, []ngapl.TAI{{PLMN: plmn, TAC: 1}}))})
		if s.gnbs[gnbB].inbox[ngapType.ProcedureCodePaging] != before+1 || s.gnbs[gnbA].inbox[ngapType.ProcedureCodePaging] != 0 {
			t.Fatalf("paging inbox A=%d B=%d", s.gnbs[gnbA].inbox[ngapType.ProcedureCodePaging], s.gnbs[gnbB].inbox[ngapType.ProcedureCodePaging])
		}
	})

	t.Run("AMF loss releases only its UEs and re-steers them in the set", func(t *testing.T) {
		lost := 1
		lostUEs := s.m.UEs()[lost]
		relBefore := s.gnbs[gnbA].inbox[ngapType.ProcedureCodeUEContextRelease] + s.gnbs[gnbB].inbox[ngapType.ProcedureCodeUEContextRelease]
		s.kill(lost)
		rel := s.gnbs[gnbA].inbox[ngapType.ProcedureCodeUEContextRelease] + s.gnbs[gnbB].inbox[ngapType.ProcedureCodeUEContextRelease] - relBefore
		if rel != lostUEs {
			t.Fatalf("gNBs got %d UE Context Release Commands, AMF %d held %d UEs", rel, lost, lostUEs)
		}
		if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeAMFStatusIndication] != 1 || s.gnbs[gnbB].inbox[ngapType.ProcedureCodeAMFStatusIndication] != 1 {
			t.Error("each gNB must get one AMF Status Indication for the lost GUAMI")
		}
		if s.m.UEs()[lost] != 0 {
			t.Fatalf("lost AMF still has %d contexts", s.m.UEs()[lost])
		}
		if len(s.fails) != 0 || s.gnbs[gnbA].errInd+s.gnbs[gnbB].errInd != 0 {
			t.Fatalf("release completes for released UEs caused failures %v / error indications", s.fails)
		}
		// Everyone else continues.
		for ran, g := range where {
			if owner[ran] != lost {
				s.uplinkNAS(g, ran)
			}
		}
		if n := totalMisrouted(s); n != 0 || len(s.fails) != 0 {
			t.Fatalf("after AMF loss: %d misrouted, failures %v", n, s.fails)
		}
		// The lost AMF's UEs come back with its GUAMI and land in the set.
		for ran, g := range where {
			if owner[ran] != lost {
				continue
			}
			tmsi := ngapl.STMSI{SetID: amfSet, Pointer: uint8(lost + 1), TMSI: ran}
			s.initialUE(g, ran, &tmsi)
			if o := s.owner(g, ran); o < 0 || o == lost {
				t.Fatalf("UE %d re-registered at AMF %d", ran, o)
			}
			owner[ran] = s.owner(g, ran)
		}
		if got := sum(s.m.UEs()); got != 1000 {
			t.Fatalf("contexts after re-registration = %d, want 1000", got)
		}

		// The AMF restarts: the machine redials after its backoff, sets the
		// gNBs up again and widens their view with AMF Configuration Update.
		s.amfs[lost].alive = true
		s.now = s.now.Add(time.Minute)
		s.run(Tick{})
		if _, u := s.m.AssociationsUp(); u != 6 {
			t.Fatalf("upstreams after AMF restart = %d, want 6", u)
		}
		for _, g := range []AssocID{gnbA, gnbB} {
			if s.gnbs[g].inbox[ngapType.ProcedureCodeAMFConfigurationUpdate] != 1 {
				t.Errorf("gNB %d got %d AMF Configuration Updates, want 1", g, s.gnbs[g].inbox[ngapType.ProcedureCodeAMFConfigurationUpdate])
			}
		}
	})

	t.Run("partial NG Reset from a gNB is split by owner", func(t *testing.T) {
		var items []ngapl.ConnItem
		var rans []uint32
		for ran, g := range where {
			if g == gnbA && len(items) < 30 {
				items = append(items, ngapl.ConnItem{HasRANUEID: true, RANUEID: ran})
				rans = append(rans, ran)
			}
		}
		resetsBefore := [3]int{s.amfs[0].resets, s.amfs[1].resets, s.amfs[2].resets}
		total := sum(s.m.UEs())
		s.run(GNBMessage{Assoc: gnbA, Data: s.must(ngapl.NGReset(ngapl.Cause(ngapType.CausePresentMisc, 5), items))})
		if got := sum(s.m.UEs()); got != total-30 {
			t.Fatalf("contexts after reset of 30 = %d, want %d", got, total-30)
		}
		involved := map[int]bool{}
		for _, ran := range rans {
			involved[owner[ran]] = true
			if o := s.owner(gnbA, ran); o >= 0 {
				t.Fatalf("AMF %d still holds reset UE %d", o, ran)
			}
			delete(where, ran)
		}
		for i := range s.amfs {
			if want := resetsBefore[i] + map[bool]int{true: 1}[involved[i]]; s.amfs[i].resets != want {
				t.Errorf("AMF %d got %d resets, want %d", i, s.amfs[i].resets, want)
			}
		}
		if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeNGReset] != 1 {
			t.Error("gNB did not get its NG Reset Acknowledge")
		}
		if n := totalMisrouted(s); n != 0 {
			t.Fatalf("%d reset items reached the wrong AMF", n)
		}
	})

	t.Run("full NG Reset from an AMF only resets that AMF's UEs on the gNB", func(t *testing.T) {
		amf := 0
		mine, others := 0, 0
		for ran, g := range where {
			if g == gnbB {
				if owner[ran] == amf {
					mine++
				} else {
					others++
				}
			}
		}
		before := s.gnbs[gnbB].inbox[ngapType.ProcedureCodeNGReset]
		s.run(AMFMessage{Assoc: s.upstreamOf(gnbB, amf), Data: s.must(ngapl.NGReset(ngapl.Cause(ngapType.CausePresentMisc, 5), nil))})
		if s.gnbs[gnbB].inbox[ngapType.ProcedureCodeNGReset] != before+1 {
			t.Fatal("gNB did not get a partial NG Reset")
		}
		left := 0
		for ran, g := range where {
			if g == gnbB && s.m.byRAN[ranKey{gnbB, ran}] != nil {
				left++
			}
		}
		if left != others || mine == 0 {
			t.Fatalf("gNB B keeps %d UEs, want the %d of other AMFs (reset %d)", left, others, mine)
		}
		for ran, g := range where {
			if g == gnbB && owner[ran] == amf {
				delete(where, ran)
			}
		}
	})

	t.Run("gNB loss releases its UEs toward their AMFs", func(t *testing.T) {
		onB := 0
		for _, g := range where {
			if g == gnbB {
				onB++
			}
		}
		reqs := s.amfs[0].relReqs + s.amfs[1].relReqs + s.amfs[2].relReqs
		s.run(GNBDown{Assoc: gnbB})
		got := s.amfs[0].relReqs + s.amfs[1].relReqs + s.amfs[2].relReqs - reqs
		if got != onB {
			t.Fatalf("AMFs got %d UE Context Release Requests, gNB B had %d UEs", got, onB)
		}
		for ran, g := range where {
			if g == gnbB && s.owner(gnbB, ran) >= 0 {
				t.Fatalf("AMF still holds UE %d of the lost gNB", ran)
			}
		}
		if _, ok := s.m.gnbs[gnbB]; ok {
			t.Fatal("lost gNB still known after its UEs were released")
		}
		if g, u := s.m.AssociationsUp(); g != 1 || u != 3 {
			t.Fatalf("associations = %d gNB %d upstream, want 1 and 3", g, u)
		}
		for ran, g := range where {
			if g == gnbA {
				s.uplinkNAS(g, ran)
			}
		}
		if n := totalMisrouted(s); n != 0 {
			t.Fatalf("%d misrouted after gNB loss", n)
		}
	})

	for _, g := range s.gnbs {
		if g.badStream != 0 {
			t.Errorf("gNB %d got %d messages on the wrong stream", g.id, g.badStream)
		}
	}
}

func TestNGSetup(t *testing.T) {
	tests := []struct {
		name      string
		alive     []bool
		wantOK    bool
		wantTicks time.Duration
		served    int
	}{
		{"all AMFs up: merged response", []bool{true, true, true}, true, 0, 3},
		{"one AMF down: answer with the others", []bool{true, false, true}, true, 0, 2},
		{"no AMF: failure with time to wait", []bool{false, false}, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, len(tc.alive), RoundRobin)
			for i, a := range tc.alive {
				s.amfs[i].alive = a
			}
			g := s.addGNB(gnbA)
			if g.setupOK != tc.wantOK {
				t.Fatalf("setup ok = %v, want %v (failures %d)", g.setupOK, tc.wantOK, g.failures)
			}
			if tc.wantOK && len(s.m.gnbs[gnbA].served) != tc.served {
				t.Errorf("gNB sees %d GUAMIs, want %d", len(s.m.gnbs[gnbA].served), tc.served)
			}
			if !tc.wantOK {
				// Initial UE before setup is refused with an Error Indication.
				s.initialUE(gnbA, 1, nil)
				if g.errInd != 1 {
					t.Errorf("error indications = %d, want 1", g.errInd)
				}
			}
		})
	}
}

func TestNGSetupWaitsForSlowAMFUntilTimeout(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	// The shell never reports the second dial: the first answer starts the
	// SetupWait timer and the gNB is answered when it fires.
	s.gnbs[gnbA] = &fakeGNB{id: gnbA, inbox: map[int64]int{}, ues: map[uint32]*gnbUE{}}
	s.run(GNBUp{Assoc: gnbA, OutStreams: 4})
	acts := s.m.Step(s.now, GNBMessage{Assoc: gnbA, Data: s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: 1, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))})
	var dials []Action
	for _, a := range acts {
		if a.Kind == Dial {
			dials = append(dials, a)
		}
	}
	if len(dials) != 2 {
		t.Fatalf("dials = %d, want one per AMF", len(dials))
	}
	s.do(dials[0])
	s.run()
	if s.gnbs[gnbA].setupOK {
		t.Fatal("answered before the other AMF or the timer")
	}
	s.now = s.now.Add(2 * time.Second)
	s.run(Tick{})
	if !s.gnbs[gnbA].setupOK {
		t.Fatal("no NG Setup Response after SetupWait")
	}
}

func TestSteeringPolicies(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		weights []int
		preload []int // UEs registered at each AMF before the measured batch, by pointer
		n       int
		want    []int
	}{
		{"round robin is even", RoundRobin, nil, nil, 30, []int{10, 10, 10}},
		{"weighted follows weights", Weighted, []int{1, 2, 3}, nil, 60, []int{10, 20, 30}},
		{"least UEs fills the emptiest AMF", LeastUEs, nil, []int{10, 0, 5}, 15, []int{10, 10, 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 3, tc.policy, tc.weights...)
			s.addGNB(gnbA)
			ran := uint32(1)
			for amf, n := range tc.preload {
				for i := 0; i < n; i++ {
					tmsi := ngapl.STMSI{SetID: amfSet, Pointer: uint8(amf + 1)}
					s.initialUE(gnbA, ran, &tmsi)
					ran++
				}
			}
			for i := 0; i < tc.n; i++ {
				s.initialUE(gnbA, ran, nil)
				ran++
			}
			got := s.m.UEs()
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("UEs per AMF = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestBadInputIsAnsweredNotFatal(t *testing.T) {
	tests := []struct {
		name     string
		ev       func(s *sim) Event
		wantErr  int
		wantFail string
		wantMalf int
	}{
		{"garbage from gNB", func(s *sim) Event { return GNBMessage{Assoc: gnbA, Data: []byte{0xde, 0xad, 0xbe, 0xef}} }, 1, "", 1},
		{"unknown UE from gNB", func(s *sim) Event {
			return GNBMessage{Assoc: gnbA, Stream: 1, Data: s.must(ngapl.UplinkNASTransport(77, 77, nil, loc))}
		}, 1, "unknown UE", 0},
		{"message on unknown association", func(s *sim) Event {
			return GNBMessage{Assoc: 99, Data: []byte{0}}
		}, 0, "unknown gNB association", 0},
		{"garbage from AMF", func(s *sim) Event { return AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: []byte{0xff}} }, 0, "", 1},
		{"unsolicited answer from gNB", func(s *sim) Event {
			b, _ := ngapl.Build(ngapl.Successful, ngapType.ProcedureCodeWriteReplaceWarning, ngapl.Reject)
			return GNBMessage{Assoc: gnbA, Data: b}
		}, 0, "unsolicited non-UE answer", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 2, RoundRobin)
			g := s.addGNB(gnbA)
			s.run(tc.ev(s))
			if g.errInd != tc.wantErr {
				t.Errorf("error indications to gNB = %d, want %d", g.errInd, tc.wantErr)
			}
			if tc.wantFail != "" && s.fails[tc.wantFail] != 1 {
				t.Errorf("failures = %v, want one %q", s.fails, tc.wantFail)
			}
			if s.malf != tc.wantMalf {
				t.Errorf("malformed = %d, want %d", s.malf, tc.wantMalf)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no AMF", Config{}},
		{"empty name", Config{AMFs: []AMF{{}}}},
		{"duplicate", Config{AMFs: []AMF{{Name: "a"}, {Name: "a"}}}},
		{"negative weight", Config{AMFs: []AMF{{Name: "a", Weight: -1}}}},
		{"bad policy", Config{AMFs: []AMF{{Name: "a"}}, Policy: 9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	if _, err := ParsePolicy("bogus"); err == nil {
		t.Error("ParsePolicy accepted bogus")
	}
}

func TestAMFStatusIndicationSteersAway(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	g0 := ngapl.NGAPGUAMI(guamiOf(0))
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.AMFStatusIndication([]ngapType.GUAMI{g0}))})
	if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeAMFStatusIndication] != 1 {
		t.Fatal("status indication not relayed to gNB")
	}
	tmsi := ngapl.STMSI{SetID: amfSet, Pointer: 1}
	for ran := uint32(1); ran <= 4; ran++ {
		s.initialUE(gnbA, ran, &tmsi)
	}
	// The GUAMI is unavailable, so its UEs are placed by policy within the
	// set rather than all pinned to AMF 0.
	if got := s.m.UEs(); got[1] == 0 {
		t.Fatalf("UEs per AMF = %v: unavailable GUAMI still pins UEs", got)
	}
	// AMF Configuration Update re-announcing the GUAMI makes it steerable again.
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.AMFConfigurationUpdate(ngapl.SetupResponse{Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(guamiOf(0))}}))})
	before := s.m.UEs()[0]
	for ran := uint32(10); ran < 14; ran++ {
		s.initialUE(gnbA, ran, &tmsi)
	}
	if s.m.UEs()[0] != before+4 {
		t.Fatalf("after configuration update UEs per AMF = %v", s.m.UEs())
	}
}

// TestMemoryPerUEContext reports what one UE context costs, records and both
// indexes included, and holds it to the 1 KiB budget (1M contexts < 1 GiB).
func TestMemoryPerUEContext(t *testing.T) {
	m, err := New(Config{AMFs: []AMF{{Name: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		u := &ue{gnb: 1, up: UpstreamBit | 1, ran: uint32(i), amfID: uint64(i), flags: ueHasRAN | ueHasAMF}
		m.byRAN[ranKey{1, u.ran}] = u
		m.byAMF[akey(0, u.gnb, u.amfID)] = u
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per UE context", per)
	if per > 1024 {
		t.Fatalf("%.0f bytes per UE context, budget 1024", per)
	}
	runtime.KeepAlive(m)
}

// BenchmarkUplinkStep is the machine's per-message cost for the common case:
// an Uplink NAS Transport of an established UE, relayed to its AMF.
func BenchmarkUplinkStep(b *testing.B) {
	s := newSim(b, 3, RoundRobin)
	s.addGNB(gnbA)
	for ran := uint32(1); ran <= 1000; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	msgs := make([][]byte, 1000)
	for ran := uint32(1); ran <= 1000; ran++ {
		msgs[ran-1] = s.must(ngapl.UplinkNASTransport(s.gnbs[gnbA].ues[ran].amfID, ran, nil, loc))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		acts := s.m.Step(s.now, GNBMessage{Assoc: gnbA, Stream: 1, Data: msgs[i%len(msgs)]})
		if len(acts) != 2 || acts[1].Kind != Send {
			b.Fatalf("actions %+v", acts)
		}
		i++
	}
}
