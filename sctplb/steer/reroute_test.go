package steer

import (
	"bytes"
	"testing"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

const otherSet = 513

// rerouteSim: AMF 0 in set amfSet, AMFs 1 and 2 in otherSet; a UE on gNB A
// (RAN-UE-NGAP-ID 7) registering through AMF 0 (its 5G-S-TMSI names it).
func rerouteSim(t *testing.T) (*sim, []byte) {
	s := newSim(t, 3, RoundRobin)
	s.sets = map[int]uint16{1: otherSet, 2: otherSet}
	s.addGNB(gnbA)
	nas := ngapl.RegistrationRequestGUTI(plmn, 0xca, amfSet, guamiOf(0).Pointer, 99)
	initial := s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 7, Location: loc, NAS: nas,
		STMSI: &ngapl.STMSI{SetID: amfSet, Pointer: guamiOf(0).Pointer, TMSI: 99}}))
	s.gnbs[gnbA].ues[7] = &gnbUE{}
	s.run(GNBMessage{Assoc: gnbA, Stream: 1, Data: initial})
	if s.owner(gnbA, 7) != 0 {
		t.Fatalf("UE not on AMF 0: %d", s.owner(gnbA, 7))
	}
	return s, initial
}

// amfReroutes makes fake AMF amf drop UE ran and send Reroute NAS Request.
func amfReroutes(s *sim, amf int, ran uint32, initial []byte, set uint16) []Action {
	var id *uint64
	for k, u := range s.amfs[amf].ues {
		if u.ran == ran {
			x := k
			id = &x
			delete(s.amfs[amf].ues, k)
		}
	}
	return s.m.Step(s.now, AMFMessage{Assoc: s.upstreamOf(gnbA, amf), Stream: 1, Data: s.must(ngapl.RerouteNASRequest(ran, id, initial, set))})
}

func TestRerouteNASRequestMovesTheUEToTheTargetSet(t *testing.T) {
	s, initial := rerouteSim(t)
	acts := amfReroutes(s, 0, 7, initial, otherSet)
	var sent []byte
	to := -1
	for _, a := range acts {
		if a.Kind == Send {
			if a.Assoc&UpstreamBit == 0 {
				t.Fatalf("the gNB got %x; a reroute the proxy can serve stays between proxy and AMFs", a.Data)
			}
			sent, to = a.Data, s.upAMF[a.Assoc]
		}
	}
	if to != 1 && to != 2 {
		t.Fatalf("rerouted Initial UE Message went to AMF %d, want one of set %d", to, otherSet)
	}
	k, _, err := ngapl.Decode(sent)
	if err != nil {
		t.Fatalf("rerouted message does not decode: %v", err)
	}
	if k.Procedure != ngapType.ProcedureCodeInitialUEMessage || k.RANUEID != 7 || !k.HasAMFSetID || k.AMFSetID != otherSet || k.NAS.Kind != ngapl.NASGUTI {
		t.Fatalf("rerouted message key %+v", k)
	}
	if _, _, _, ies, _ := ngapl.SplitPDU(sent); !bytes.Contains(initial, ies[1].Value) {
		t.Error("NAS-PDU not relayed unchanged")
	}
	s.run(replay(s, acts)...)
	if got := s.m.UEs(); got[0] != 0 || got[to] != 1 {
		t.Fatalf("UEs per AMF after reroute = %v", got)
	}
	s.uplinkNAS(gnbA, 7)
	if n := totalMisrouted(s); n != 0 || s.owner(gnbA, 7) != to {
		t.Fatalf("UE continues on AMF %d (%d misrouted), want %d", s.owner(gnbA, 7), n, to)
	}
	if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeRerouteNASRequest] != 0 {
		t.Error("gNB saw the Reroute NAS Request")
	}
}

func TestRerouteAfterTheAMFAnswered(t *testing.T) {
	// The AMF already sent Downlink NAS (authentication) before rerouting:
	// the proxy no longer keeps the message and uses the request's copy.
	s, initial := rerouteSim(t)
	if len(s.m.initial) != 0 {
		t.Fatal("Initial UE Message still kept after the AMF answered")
	}
	s.run(replay(s, amfReroutes(s, 0, 7, initial, otherSet))...)
	if got := s.owner(gnbA, 7); got != 1 && got != 2 {
		t.Fatalf("UE on AMF %d after reroute", got)
	}
	s.uplinkNAS(gnbA, 7)
	if n := totalMisrouted(s); n != 0 {
		t.Fatalf("%d misrouted", n)
	}
}

func TestRerouteToASetTheProxyDoesNotReach(t *testing.T) {
	s, initial := rerouteSim(t)
	s.run(replay(s, amfReroutes(s, 0, 7, initial, 77))...)
	if s.gnbs[gnbA].inbox[ngapType.ProcedureCodeRerouteNASRequest] != 1 {
		t.Fatal("a reroute the proxy cannot serve must reach the gNB")
	}
	if got := s.m.UEs(); sum(got) != 0 {
		t.Fatalf("record kept after relaying the reroute: %v", got)
	}
}

func TestRerouteOfUnknownUE(t *testing.T) {
	s, initial := rerouteSim(t)
	before := snapshot(s.m)
	acts := s.m.Step(s.now, AMFMessage{Assoc: s.upstreamOf(gnbA, 1), Stream: 1, Data: s.must(ngapl.RerouteNASRequest(7, nil, initial, otherSet))})
	got := sendsTo(acts, s.upstreamOf(gnbA, 1))
	if len(got) != 1 {
		t.Fatalf("AMF that does not hold the UE got %d answers, want an Error Indication", len(got))
	}
	if proc, _ := causeOf(t, got[0].Data); proc != ngapType.ProcedureCodeErrorIndication {
		t.Fatalf("answer is %s", ngapl.ProcedureName(proc))
	}
	if snapshot(s.m) != before {
		t.Error("state changed")
	}
}
