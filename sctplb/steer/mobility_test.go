package steer

import (
	"testing"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// sendsTo returns the Send actions of acts addressed to assoc.
func sendsTo(acts []Action, assoc AssocID) []Action {
	var out []Action
	for _, a := range acts {
		if a.Kind == Send && a.Assoc == assoc {
			out = append(out, a)
		}
	}
	return out
}

func ie(id int64, v any) ngapl.IE { return ngapl.IE{ID: id, Criticality: ngapl.Reject, Value: v} }

func TestHandoverTargetLearnsRANIDFromAcknowledge(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	s.initialUE(gnbA, 5, nil)
	amf := s.owner(gnbA, 5)
	up := s.upstreamOf(gnbB, amf)

	req := s.must(ngapl.Build(ngapl.Initiating, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
		ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 900})))
	if got := sendsTo(s.m.Step(s.now, AMFMessage{Assoc: up, Data: req}), gnbB); len(got) != 1 || got[0].Stream == 0 {
		t.Fatalf("handover request to target gNB: %+v", got)
	}
	ack := s.must(ngapl.Build(ngapl.Successful, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
		ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 900}),
		ie(ngapType.ProtocolIEIDRANUENGAPID, &ngapType.RANUENGAPID{Value: 77})))
	if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbB, Stream: 1, Data: ack}), up); len(got) != 1 {
		t.Fatal("handover acknowledge did not reach the AMF")
	}
	ul := s.must(ngapl.UplinkNASTransport(900, 77, nil, loc))
	if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbB, Stream: 1, Data: ul}), up); len(got) != 1 {
		t.Fatal("uplink of the handed-over UE did not reach its AMF")
	}
}

func TestPathSwitch(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	for ran := uint32(5); ran <= 7; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	// The fake AMFs both number UEs from 1, so some ID is held by both AMFs
	// and some by one only.
	byID := map[uint64][]uint32{}
	for ran := uint32(5); ran <= 7; ran++ {
		id := s.gnbs[gnbA].ues[ran].amfID
		byID[id] = append(byID[id], ran)
	}
	var shared, unique uint64
	for id, rans := range byID {
		if len(rans) == 2 {
			shared = id
		} else {
			unique = id
		}
	}
	if shared == 0 || unique == 0 {
		t.Fatalf("test setup: AMF UE IDs %v", byID)
	}

	t.Run("ambiguous source AMF-UE-NGAP-ID is refused", func(t *testing.T) {
		acts := s.m.Step(s.now, GNBMessage{Assoc: gnbB, Stream: 1, Data: s.must(ngapl.PathSwitchRequest(87, shared, loc))})
		got := sendsTo(acts, gnbB)
		if len(got) != 1 {
			t.Fatalf("want one Error Indication to the gNB, got %+v", acts)
		}
		if k, _, err := ngapl.Decode(got[0].Data); err != nil || k.Procedure != ngapType.ProcedureCodeErrorIndication {
			t.Fatalf("answer is %+v (%v), want Error Indication", k, err)
		}
	})

	t.Run("unique source ID moves the UE to the new gNB", func(t *testing.T) {
		oldRAN := byID[unique][0]
		amf := s.owner(gnbA, oldRAN)
		before := s.m.UEs()[amf]
		upB, upA := s.upstreamOf(gnbB, amf), s.upstreamOf(gnbA, amf)
		if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbB, Stream: 1, Data: s.must(ngapl.PathSwitchRequest(88, unique, loc))}), upB); len(got) != 1 {
			t.Fatal("path switch request did not reach the source AMF over the new gNB's association")
		}
		ack := s.must(ngapl.Build(ngapl.Successful, ngapType.ProcedureCodePathSwitchRequest, ngapl.Reject,
			ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: int64(unique)}),
			ie(ngapType.ProtocolIEIDRANUENGAPID, &ngapType.RANUENGAPID{Value: 88})))
		if got := sendsTo(s.m.Step(s.now, AMFMessage{Assoc: upB, Data: ack}), gnbB); len(got) != 1 {
			t.Fatal("path switch acknowledge did not reach the new gNB")
		}
		if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbB, Stream: 1, Data: s.must(ngapl.UplinkNASTransport(unique, 88, nil, loc))}), upB); len(got) != 1 {
			t.Fatal("uplink after path switch not steered to the AMF")
		}
		// The AMF releases the source side; that removes only the old record.
		old := oldRAN
		if got := sendsTo(s.m.Step(s.now, AMFMessage{Assoc: upA, Data: s.must(ngapl.UEContextReleaseCommand(unique, &old, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentSuccessfulHandover)))}), gnbA); len(got) != 1 {
			t.Fatal("release of the source side did not reach the old gNB")
		}
		if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbA, Stream: 1, Data: s.must(ngapl.UEContextReleaseComplete(unique, oldRAN))}), upA); len(got) != 1 {
			t.Fatal("release complete from the old gNB did not reach the AMF")
		}
		if s.m.byRAN[ranKey{gnbA, oldRAN}] != nil || s.m.byRAN[ranKey{gnbB, 88}] == nil {
			t.Fatal("records after path switch and source release are wrong")
		}
		if u := s.m.byAMF[akey(amf, gnbB, unique)]; u == nil {
			t.Fatal("AMF-UE-NGAP-ID index does not point at the new gNB's record")
		}
		if got := s.m.UEs()[amf]; got != before {
			t.Fatalf("AMF %d holds %d contexts after the switch, want %d", amf, got, before)
		}
	})
}

func TestRANConfigurationUpdateAndPWSAnswers(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	acts := s.m.Step(s.now, GNBMessage{Assoc: gnbA, Data: s.must(ngapl.RANConfigurationUpdate("renamed"))})
	if len(sendsTo(acts, s.upstreamOf(gnbA, 0))) != 1 || len(sendsTo(acts, s.upstreamOf(gnbA, 1))) != 1 {
		t.Fatal("RAN Configuration Update not fanned out to every AMF")
	}
	ack := sendsTo(acts, gnbA)
	if len(ack) != 1 {
		t.Fatal("gNB not acknowledged")
	}
	if k, _, _ := ngapl.Decode(ack[0].Data); k.Procedure != ngapType.ProcedureCodeRANConfigurationUpdate || k.Type != ngapl.Successful {
		t.Fatalf("gNB answer %+v", k)
	}

	// A Write-Replace Warning from AMF 1: the gNB's answer goes back to AMF 1.
	req := s.must(ngapl.Build(ngapl.Initiating, ngapType.ProcedureCodeWriteReplaceWarning, ngapl.Reject))
	if got := sendsTo(s.m.Step(s.now, AMFMessage{Assoc: s.upstreamOf(gnbA, 1), Data: req}), gnbA); len(got) != 1 || got[0].Stream != 0 {
		t.Fatal("warning request not relayed on stream 0")
	}
	resp := s.must(ngapl.Build(ngapl.Successful, ngapType.ProcedureCodeWriteReplaceWarning, ngapl.Reject))
	if got := sendsTo(s.m.Step(s.now, GNBMessage{Assoc: gnbA, Data: resp}), s.upstreamOf(gnbA, 1)); len(got) != 1 {
		t.Fatal("warning response not returned to the requesting AMF")
	}
}

func TestOverloadedAMFGetsNoNewUEs(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.OverloadStart(0))})
	if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeOverloadStart] != 0 {
		t.Fatal("overload of one AMF must not reach the gNB")
	}
	for ran := uint32(1); ran <= 6; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	if got := s.m.UEs(); got[0] != 0 || got[1] != 6 {
		t.Fatalf("UEs per AMF during overload = %v", got)
	}
	s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Data: s.must(ngapl.OverloadStop())})
	for ran := uint32(10); ran < 16; ran++ {
		s.initialUE(gnbA, ran, nil)
	}
	if got := s.m.UEs(); got[0] != 3 {
		t.Fatalf("UEs per AMF after overload stop = %v", got)
	}
}
