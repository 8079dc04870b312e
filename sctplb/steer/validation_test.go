package steer

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// snapshot renders everything a PDU could change in the machine, so a test
// can show that a refused PDU changed nothing.
func snapshot(m *Machine) string {
	var lines []string
	seen := map[*ue]bool{}
	rec := func(u *ue) {
		if !seen[u] {
			seen[u] = true
			lines = append(lines, fmt.Sprintf("ue gnb=%d ran=%d amf=%d id=%d up=%d flags=%b initial=%v", u.gnb, u.ran, u.amf, u.amfID, u.up, u.flags, m.initial[u] != nil))
		}
	}
	for _, u := range m.byRAN {
		rec(u)
	}
	for _, u := range m.byAMF {
		rec(u)
	}
	for id, g := range m.gnbs {
		lines = append(lines, fmt.Sprintf("gnb %d state=%d ups=%v served=%d pending=%v setup=%x", id, g.state, g.ups, len(g.served), g.pending, g.setupReq))
	}
	for id, u := range m.ups {
		lines = append(lines, fmt.Sprintf("up %d gnb=%d amf=%d state=%d ues=%d overload=%d unavailable=%d", id, u.gnb, u.amf, u.state, u.ues, u.overload, len(u.unavailable)))
	}
	sort.Strings(lines)
	return fmt.Sprintf("amfUEs=%v byRAN=%d byAMF=%d\n%s", m.amfUEs, len(m.byRAN), len(m.byAMF), strings.Join(lines, "\n"))
}

// causeOf returns the procedure of a PDU the proxy sent and, for an Error
// Indication or NG Setup Failure, its protocol cause (noCause when none).
const noCause aper.Enumerated = 255

func causeOf(t *testing.T, b []byte) (int64, aper.Enumerated) {
	t.Helper()
	_, pdu, err := ngapl.Decode(b)
	if err != nil {
		t.Fatalf("proxy sent undecodable PDU: %v", err)
	}
	var c *ngapType.Cause
	switch {
	case pdu.InitiatingMessage != nil && pdu.InitiatingMessage.Value.ErrorIndication != nil:
		for _, ie := range pdu.InitiatingMessage.Value.ErrorIndication.ProtocolIEs.List {
			if ie.Value.Cause != nil {
				c = ie.Value.Cause
			}
		}
		if c != nil && c.Protocol != nil {
			return ngapType.ProcedureCodeErrorIndication, c.Protocol.Value
		}
		return ngapType.ProcedureCodeErrorIndication, noCause
	case pdu.UnsuccessfulOutcome != nil && pdu.UnsuccessfulOutcome.Value.NGSetupFailure != nil:
		for _, ie := range pdu.UnsuccessfulOutcome.Value.NGSetupFailure.ProtocolIEs.List {
			if ie.Value.Cause != nil {
				c = ie.Value.Cause
			}
		}
		if c != nil && c.Protocol != nil {
			return ngapType.ProcedureCodeNGSetup, c.Protocol.Value
		}
		return ngapType.ProcedureCodeNGSetup, noCause
	}
	k, _, _ := ngapl.Decode(b)
	return k.Procedure, noCause
}

// validationSim: two gNBs set up toward two AMFs, a registered UE on gNB A
// (RAN-UE-NGAP-ID 1), a handover target pending on gNB B.
func validationSim(t *testing.T) *sim {
	s := newSim(t, 2, RoundRobin)
	s.addGNB(gnbA)
	s.addGNB(gnbB)
	s.initialUE(gnbA, 1, nil)
	s.uplinkNAS(gnbA, 1)
	s.initialUE(gnbA, 2, nil) // not yet answered by its AMF once re-steered
	return s
}

type probe struct {
	name string
	up   bool // from an AMF (the upstream of gNB A to the UE's AMF)
	pdu  func(s *sim) []byte
}

// probes are the messages the proxy acts on, complete and well-formed.
func probes() []probe {
	cause := ngapl.Cause(ngapType.CausePresentNas, ngapType.CauseNasPresentNormalRelease)
	amfID := func(s *sim) uint64 { return s.gnbs[gnbA].ues[1].amfID }
	return []probe{
		{"NG Setup Request", false, func(s *sim) []byte {
			return s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: 1, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
		}},
		{"Initial UE Message", false, func(s *sim) []byte {
			return s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 1, Location: loc}))
		}},
		{"Uplink NAS Transport", false, func(s *sim) []byte { return s.must(ngapl.UplinkNASTransport(amfID(s), 1, nil, loc)) }},
		{"UE Context Release Request", false, func(s *sim) []byte { return s.must(ngapl.UEContextReleaseRequest(amfID(s), 1, cause)) }},
		{"UE Context Release Complete", false, func(s *sim) []byte { return s.must(ngapl.UEContextReleaseComplete(amfID(s), 1)) }},
		{"Initial Context Setup Response", false, func(s *sim) []byte { return s.must(ngapl.InitialContextSetupResponse(amfID(s), 1)) }},
		{"Path Switch Request", false, func(s *sim) []byte { return s.must(ngapl.PathSwitchRequest(9, amfID(s), loc)) }},
		{"NG Reset from gNB", false, func(s *sim) []byte {
			return s.must(ngapl.NGReset(cause, []ngapl.ConnItem{{HasRANUEID: true, RANUEID: 1}}))
		}},
		{"Downlink NAS Transport", true, func(s *sim) []byte { return s.must(ngapl.DownlinkNASTransport(amfID(s), 1, nil)) }},
		{"Initial Context Setup Request", true, func(s *sim) []byte {
			return s.must(ngapl.InitialContextSetupRequest(amfID(s), 1, guamiOf(0), []ngapl.SNSSAI{{SST: 1}}, nil))
		}},
		{"UE Context Release Command", true, func(s *sim) []byte {
			ran := uint32(1)
			return s.must(ngapl.UEContextReleaseCommand(amfID(s), &ran, cause))
		}},
		{"Handover Request", true, func(s *sim) []byte {
			return s.must(ngapl.Build(ngapl.Initiating, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
				ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 900})))
		}},
		{"NG Reset from AMF", true, func(s *sim) []byte {
			return s.must(ngapl.NGReset(cause, []ngapl.ConnItem{{HasAMFUEID: true, AMFUEID: amfID(s)}}))
		}},
		{"AMF Status Indication", true, func(s *sim) []byte {
			return s.must(ngapl.AMFStatusIndication([]ngapType.GUAMI{ngapl.NGAPGUAMI(guamiOf(0))}))
		}},
		{"Reroute NAS Request", true, func(s *sim) []byte {
			initial := s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 2, Location: loc}))
			return s.must(ngapl.RerouteNASRequest(2, nil, initial, amfSet))
		}},
		{"Overload Start", true, func(s *sim) []byte { return s.must(ngapl.OverloadStart(50)) }},
		{"Paging", true, func(s *sim) []byte {
			return s.must(ngapl.Paging(ngapl.STMSI{SetID: amfSet, Pointer: 1, TMSI: 7}, []ngapl.TAI{{PLMN: plmn, TAC: 1}}))
		}},
	}
}

// sender is the association a probe arrives on.
func (p probe) sender(s *sim) AssocID {
	if p.up {
		return s.upstreamOf(gnbA, s.owner(gnbA, 1))
	}
	return gnbA
}

// refuse feeds pdu from the probe's sender and checks the refusal: one
// Rejected action with reason, the reaction sent back to the sender and
// only to it, and no state change anywhere.
func refuse(t *testing.T, s *sim, from AssocID, pdu []byte, reason string, wantProc int64, wantCause aper.Enumerated) {
	t.Helper()
	before := snapshot(s.m)
	var ev Event = GNBMessage{Assoc: from, Stream: 1, Data: pdu}
	if from&UpstreamBit != 0 {
		ev = AMFMessage{Assoc: from, Stream: 1, Data: pdu}
	}
	acts := s.m.Step(s.now, ev)
	var rejected []string
	reacted := false
	for _, a := range acts {
		switch a.Kind {
		case Rejected:
			rejected = append(rejected, a.Reason)
		case Send:
			if a.Assoc != from {
				t.Errorf("refused PDU caused a send to %d", a.Assoc)
				continue
			}
			proc, c := causeOf(t, a.Data)
			if proc != wantProc || c != wantCause {
				t.Errorf("reaction: %s cause %d, want %s cause %d", ngapl.ProcedureName(proc), c, ngapl.ProcedureName(wantProc), wantCause)
			}
			reacted = true
		case Dial, Close:
			t.Errorf("refused PDU caused %s", a.Kind)
		}
	}
	if len(rejected) != 1 || rejected[0] != reason {
		t.Errorf("rejected reasons %q, want [%s]", rejected, reason)
	}
	if wantProc >= 0 && !reacted {
		t.Errorf("no %s sent back", ngapl.ProcedureName(wantProc))
	}
	if wantProc < 0 && reacted {
		t.Error("an answer was sent where the spec says ignore")
	}
	if after := snapshot(s.m); after != before {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
	if msg := checkInvariants(s.m); msg != "" {
		t.Error(msg)
	}
}

// TestEachRequiredIERemoved removes, one at a time, every IE the proxy
// enforces from every message it acts on.
func TestEachRequiredIERemoved(t *testing.T) {
	n := 0
	for _, p := range probes() {
		s := validationSim(t)
		full := p.pdu(s)
		k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(full)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		for _, r := range ngapl.Required(k.Type, k.Procedure) {
			n++
			t.Run(p.name+" without "+ngapl.IEName(r.ID), func(t *testing.T) {
				s := validationSim(t)
				b := s.must(ngapl.WithoutIE(p.pdu(s), r.ID))
				want := aper.Enumerated(ngapType.CauseProtocolPresentAbstractSyntaxErrorIgnoreAndNotify)
				if r.Criticality == ngapl.Reject {
					want = ngapType.CauseProtocolPresentAbstractSyntaxErrorReject
				}
				proc := int64(ngapType.ProcedureCodeErrorIndication)
				if k.Procedure == ngapType.ProcedureCodeNGSetup {
					proc = ngapType.ProcedureCodeNGSetup
				}
				refuse(t, s, p.sender(s), b, "missing-ie/"+ngapl.IEName(r.ID), proc, want)
			})
		}
	}
	if n < 20 {
		t.Fatalf("only %d removals tried", n)
	}
}

// TestWrongTypeOfMessage sends every message the proxy acts on under the
// two other types of message: undefined ones are answered per 10.3.4.1A,
// defined ones come from the wrong side.
func TestWrongTypeOfMessage(t *testing.T) {
	for _, p := range probes() {
		for _, typ := range []ngapl.MessageType{ngapl.Initiating, ngapl.Successful, ngapl.Unsuccessful} {
			s := validationSim(t)
			full := p.pdu(s)
			k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(full)
			if err != nil {
				t.Fatal(err)
			}
			side := ngapl.RAN
			if p.up {
				side = ngapl.AMF
			}
			if by := ngapl.SentBy(typ, k.Procedure); typ == k.Type || ngapl.KnownProcedure(k.Procedure) && by == side || by == ngapl.Both {
				// The same message, or another message this side may send
				// (Initial Context Setup Failure for the Response).
				if _, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(s.must(ngapl.AsType(full, typ))); err == nil {
					continue
				}
			}
			t.Run(fmt.Sprintf("%s as %s", p.name, typ), func(t *testing.T) {
				s := validationSim(t)
				b := s.must(ngapl.AsType(p.pdu(s), typ))
				reason, cause := "undefined-message", aper.Enumerated(ngapType.CauseProtocolPresentAbstractSyntaxErrorFalselyConstructedMessage)
				if _, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(b); err == nil {
					// Defined: an outcome of a procedure this side starts.
					reason, cause = "wrong-sender", ngapType.CauseProtocolPresentMessageNotCompatibleWithReceiverState
				}
				refuse(t, s, p.sender(s), b, reason, ngapType.ProcedureCodeErrorIndication, cause)
			})
		}
	}
}

// TestMessageFromTheWrongSide feeds every message the proxy acts on from
// the side that never sends it.
func TestMessageFromTheWrongSide(t *testing.T) {
	for _, p := range probes() {
		t.Run(p.name, func(t *testing.T) {
			s := validationSim(t)
			b := p.pdu(s)
			if k, _ := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(b); ngapl.SentBy(k.Type, k.Procedure) == ngapl.Both {
				return // either side sends it: no wrong side
			}
			other := probe{up: !p.up}
			refuse(t, s, other.sender(s), b, "wrong-sender", ngapType.ProcedureCodeErrorIndication, ngapType.CauseProtocolPresentMessageNotCompatibleWithReceiverState)
		})
	}
}

// TestUnknownProcedureByCriticality: a procedure code this release does not
// define is handled by the envelope's criticality (10.3.4.1).
func TestUnknownProcedureByCriticality(t *testing.T) {
	for _, tc := range []struct {
		crit  aper.Enumerated
		proc  int64
		cause aper.Enumerated
	}{
		{ngapl.Reject, ngapType.ProcedureCodeErrorIndication, ngapType.CauseProtocolPresentAbstractSyntaxErrorReject},
		{ngapl.Notify, ngapType.ProcedureCodeErrorIndication, ngapType.CauseProtocolPresentAbstractSyntaxErrorIgnoreAndNotify},
		{ngapl.Ignore, -1, 0},
	} {
		for _, up := range []bool{false, true} {
			t.Run(fmt.Sprintf("criticality %d from AMF %v", tc.crit, up), func(t *testing.T) {
				s := validationSim(t)
				b := s.must(ngapl.JoinPDU(ngapl.Initiating, 200, tc.crit, nil))
				refuse(t, s, probe{up: up}.sender(s), b, "undefined-message", tc.proc, tc.cause)
			})
		}
	}
}
