package ngap

import (
	"errors"
	"testing"

	"github.com/free5gc/ngap/ngapType"
)

// TestMissingNamesTheRemovedIE removes each enforced IE from the messages
// the proxy acts on and expects Missing to name it with the ASN.1
// criticality, from both key paths.
func TestMissingNamesTheRemovedIE(t *testing.T) {
	for _, s := range samplePDUs(t) {
		k, err := peek(s.pdu)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := k.Missing(); ok {
			t.Errorf("%s: complete message reported missing %s", s.name, IEName(r.ID))
		}
		for _, req := range Required(k.Type, k.Procedure) {
			b, err := WithoutIE(s.pdu, req.ID)
			if err != nil {
				t.Fatal(err)
			}
			fast, err := peek(b)
			if err != nil {
				t.Fatalf("%s without %s: %v", s.name, IEName(req.ID), err)
			}
			got, ok := fast.Missing()
			if !ok || got.ID != req.ID || got.Criticality != req.Criticality {
				t.Errorf("%s without %s: Missing = %+v %v, want %+v", s.name, IEName(req.ID), got, ok, req)
			}
			if full, _, err := Decode(b); err == nil && full != fast {
				t.Errorf("%s without %s: full key %+v differs from fast %+v", s.name, IEName(req.ID), full, fast)
			}
		}
	}
}

func TestUndefinedMessageTypeIsRejected(t *testing.T) {
	must := mustFn(t)
	for _, tc := range []struct {
		name string
		pdu  []byte
		typ  MessageType
	}{
		{"initial UE message as successful outcome", must(InitialUEMessage(InitialUE{RANUEID: 1, Location: testLoc})), Successful},
		{"uplink NAS as unsuccessful outcome", must(UplinkNASTransport(1, 1, nil, testLoc)), Unsuccessful},
		{"paging as successful outcome", must(Paging(testS, []TAI{{PLMN: testPLMN, TAC: 1}})), Successful},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AsType(tc.pdu, tc.typ)
			if err != nil {
				t.Fatal(err)
			}
			k, err := NewDecoder(DecoderConfig{}).Key(b)
			if !errors.Is(err, ErrUnknownMessage) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrUnknownMessage", err)
			}
			if k.Type != tc.typ || k.Procedure == 0 {
				t.Errorf("key = %+v, want procedure and type kept for the reaction", k)
			}
		})
	}
	// An unknown procedure code keeps its criticality.
	b, err := JoinPDU(Initiating, 200, Reject, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewDecoder(DecoderConfig{}).Key(b)
	if !errors.Is(err, ErrUnknownMessage) || k.Procedure != 200 || k.Criticality != uint8(Reject) {
		t.Errorf("unknown procedure: key %+v err %v", k, err)
	}
}

func TestSentBy(t *testing.T) {
	for _, tc := range []struct {
		typ  MessageType
		proc int64
		want Side
	}{
		{Initiating, ngapType.ProcedureCodeInitialUEMessage, RAN},
		{Initiating, ngapType.ProcedureCodeDownlinkNASTransport, AMF},
		{Successful, ngapType.ProcedureCodeNGSetup, AMF},
		{Unsuccessful, ngapType.ProcedureCodeNGSetup, AMF},
		{Successful, ngapType.ProcedureCodeUEContextRelease, RAN},
		{Successful, ngapType.ProcedureCodeHandoverResourceAllocation, RAN},
		{Initiating, ngapType.ProcedureCodeNGReset, Both},
		{Initiating, ngapType.ProcedureCodeErrorIndication, Both},
		{Initiating, ngapType.ProcedureCodeOverloadStart, AMF},
		{Initiating, ngapType.ProcedureCodeRerouteNASRequest, AMF},
	} {
		if got := SentBy(tc.typ, tc.proc); got != tc.want {
			t.Errorf("SentBy(%s, %s) = %s, want %s", tc.typ, ProcedureName(tc.proc), got, tc.want)
		}
	}
	// Every procedure the library knows has a side.
	for k := range messageIEs {
		if _, ok := initiator[k.proc]; !ok && k.proc != ngapType.ProcedureCodeNGReset &&
			k.proc != ngapType.ProcedureCodeErrorIndication && k.proc != ngapType.ProcedureCodePrivateMessage {
			t.Errorf("procedure %s has no initiator", ProcedureName(k.proc))
		}
	}
}
