package steer

import (
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// Regression tests for the two bugs of issue 9, found by feeding the
// machine PDUs no simulator produces.

// A malformed Initial UE Message (no RAN-UE-NGAP-ID, or under a type of
// message the procedure does not define) used to be keyed as RAN-UE-NGAP-ID
// 0: the live UE 0 of that gNB was evicted, a phantom was steered elsewhere,
// and the real UE's next Uplink NAS Transport reached the wrong AMF.
func TestMalformedInitialUEMessageLeavesLiveUEAlone(t *testing.T) {
	initial := func(s *sim) []byte {
		return s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 0, Location: loc}))
	}
	for _, tc := range []struct {
		name string
		pdu  func(s *sim) []byte
	}{
		{"without RAN-UE-NGAP-ID", func(s *sim) []byte { return s.must(ngapl.WithoutIE(initial(s), ngapType.ProtocolIEIDRANUENGAPID)) }},
		{"as a successful outcome", func(s *sim) []byte { return s.must(ngapl.AsType(initial(s), ngapl.Successful)) }},
		{"as an unsuccessful outcome", func(s *sim) []byte { return s.must(ngapl.AsType(initial(s), ngapl.Unsuccessful)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 3, RoundRobin)
			g := s.addGNB(gnbA)
			s.initialUE(gnbA, 0, nil)
			s.uplinkNAS(gnbA, 0)
			owner := s.owner(gnbA, 0)
			before := s.m.UEs()

			s.run(GNBMessage{Assoc: gnbA, Stream: 1, Data: tc.pdu(s)})

			if got := s.m.UEs(); !equalInts(got, before) {
				t.Fatalf("UEs per AMF %v -> %v: the malformed message created or moved a UE", before, got)
			}
			if g.errInd != 1 {
				t.Errorf("gNB got %d Error Indications, want 1", g.errInd)
			}
			s.uplinkNAS(gnbA, 0)
			if n := totalMisrouted(s); n != 0 {
				t.Fatalf("%d messages misrouted after the malformed Initial UE Message", n)
			}
			if got := s.owner(gnbA, 0); got != owner {
				t.Fatalf("UE 0 now held by AMF %d, was %d", got, owner)
			}
		})
	}
}

// An AMF may hand the same AMF-UE-NGAP-ID to two gNBs (it is unique per NG
// interface instance, TS 38.413 9.3.3.1). The second Handover Request used to
// overwrite the first record's index entry and leave it counted forever.
func TestSameAMFUEIDOnTwoGNBsKeepsCountsTrue(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	req := s.must(ngapl.Build(ngapl.Initiating, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
		ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 900})))
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Stream: 1, Data: req})
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbB, 0), Stream: 1, Data: req})
	if got := s.m.UEs(); got[0] != 2 {
		t.Fatalf("UEs per AMF = %v, want 2 handover targets on AMF 0", got)
	}
	if msg := checkInvariants(s.m); msg != "" {
		t.Fatal(msg)
	}
	// Each target acknowledges with its own RAN-UE-NGAP-ID and reaches AMF 0.
	for _, g := range []AssocID{gnbA, gnbB} {
		ack := s.must(ngapl.Build(ngapl.Successful, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
			ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 900}),
			ie(ngapType.ProtocolIEIDRANUENGAPID, &ngapType.RANUENGAPID{Value: 77})))
		if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: g, Stream: 1, Data: ack}), s.upstreamOf(g, 0)); len(got) != 1 {
			t.Fatalf("gNB %d: handover acknowledge did not reach AMF 0", g)
		}
	}
	s.run(GNBDown{Assoc: gnbA}, GNBDown{Assoc: gnbB})
	s.now = s.now.Add(6 * time.Second) // past the default DrainTimeout
	s.run(Tick{})
	if got := s.m.UEs(); got[0] != 0 || got[1] != 0 {
		t.Fatalf("UEs per AMF with both gNBs gone = %v", got)
	}
	if msg := checkEmpty(s.m); msg != "" {
		t.Fatal(msg)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
