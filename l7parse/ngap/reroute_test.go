package ngap

import (
	"bytes"
	"testing"

	"github.com/free5gc/ngap/ngapType"
)

func TestRerouteInitialUE(t *testing.T) {
	must := mustFn(t)
	nas := RegistrationRequestGUTI(testPLMN, 1, 2, 3, 4)
	initial := must(InitialUEMessage(InitialUE{RANUEID: 77, NAS: nas, Location: testLoc, STMSI: &testS}))
	amf := uint64(9)
	req := must(RerouteNASRequest(77, &amf, initial, 513))
	k, pdu, err := Decode(req)
	if err != nil {
		t.Fatalf("reroute NAS request does not decode: %v", err)
	}
	if k.Procedure != ngapType.ProcedureCodeRerouteNASRequest || !k.HasRANUEID || k.RANUEID != 77 || !k.HasAMFSetID || k.AMFSetID != 513 {
		t.Fatalf("reroute key %+v", k)
	}
	if msg := pdu.InitiatingMessage.Value.RerouteNASRequest.ProtocolIEs.List[2].Value.NGAPMessage; msg == nil || !bytes.Equal(*msg, initial) {
		t.Fatal("NGAP-Message does not carry the initial UE message")
	}
	for name, stored := range map[string][]byte{"stored message": initial, "message from the request": nil} {
		t.Run(name, func(t *testing.T) {
			out, err := RerouteInitialUE(stored, req)
			if err != nil {
				t.Fatal(err)
			}
			k, _, err := Decode(out)
			if err != nil {
				t.Fatalf("rerouted message does not decode: %v", err)
			}
			want := Key{Procedure: 15, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 77, HasSTMSI: true, STMSI: testS, HasAMFSetID: true, AMFSetID: 513}
			if steeringOnly(k) != want {
				t.Errorf("rerouted key %+v", k)
			}
			if k.NAS.Kind != NASGUTI {
				t.Errorf("NAS identity lost: %+v", k.NAS)
			}
			// Rerouting twice replaces the AMF Set ID, never repeats it.
			again, err := RerouteInitialUE(out, must(RerouteNASRequest(77, nil, out, 7)))
			if err != nil {
				t.Fatal(err)
			}
			if k2, _, err := Decode(again); err != nil || k2.AMFSetID != 7 {
				t.Errorf("second reroute: %+v %v", k2, err)
			}
			if _, _, _, ies, _ := SplitPDU(again); len(ies) != 6 {
				t.Errorf("second reroute carries %d IEs, want 6", len(ies))
			}
		})
	}
	if _, err := RerouteInitialUE(nil, must(WithoutIE(req, ngapType.ProtocolIEIDAMFSetID))); err == nil {
		t.Error("a reroute without AMF Set ID must fail")
	}
	if _, err := RerouteInitialUE(must(UplinkNASTransport(1, 77, nil, testLoc)), req); err == nil {
		t.Error("rerouting a message other than Initial UE Message must fail")
	}
}
