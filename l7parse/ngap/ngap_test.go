package ngap

import (
	"errors"
	"io"
	"testing"

	aperlog "github.com/free5gc/aper/logger"

	"github.com/free5gc/ngap/ngapType"
)

var (
	testPLMN = [3]byte{0x02, 0xf8, 0x39} // 208/93
	testLoc  = Location{PLMN: testPLMN, TAC: 1, CellID: 0x10}
	testG    = GUAMI{PLMN: testPLMN, Region: 0xca, SetID: 1016, Pointer: 5}
	testS    = STMSI{SetID: 1016, Pointer: 5, TMSI: 0xdeadbeef}
)

func mustFn(t testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }
func u16(v uint16) *uint16 { return &v }

// samplePDUs are real PDUs of the procedures the proxy handles, with the key
// the decoder must find in each.
func samplePDUs(t testing.TB) []struct {
	name string
	pdu  []byte
	want Key
} {
	must := mustFn(t)
	cause := Cause(ngapType.CausePresentNas, ngapType.CauseNasPresentNormalRelease)
	return []struct {
		name string
		pdu  []byte
		want Key
	}{
		{"ng setup request is non-UE", must(NGSetupRequest(NGSetupRequestParams{PLMN: testPLMN, GNBID: 1, GNBIDBits: 24, Name: "gnb1", TACs: []uint32{1}, Slices: []SNSSAI{{SST: 1, HasSD: true, SD: 0x010203}}})),
			Key{Procedure: 21, Type: Initiating}},
		{"ng setup response carries no UE", must(NGSetupResponse(SetupResponse{AMFName: "amf1", Served: []ngapType.ServedGUAMIItem{ServedGUAMI(testG)}, Capacity: 10, PLMNSupport: []ngapType.PLMNSupportItem{PLMNSupport(testPLMN, SNSSAI{SST: 1})}})),
			Key{Procedure: 21, Type: Successful}},
		{"ng setup failure", must(NGSetupFailure(Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), int(ngapType.TimeToWaitPresentV10s))),
			Key{Procedure: 21, Type: Unsuccessful}},
		{"initial UE message with 5G-S-TMSI", must(InitialUEMessage(InitialUE{RANUEID: 7, Location: testLoc, RRCCause: ngapType.RRCEstablishmentCausePresentMoSignalling, STMSI: &testS})),
			Key{Procedure: 15, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 7, HasSTMSI: true, STMSI: testS}},
		{"initial UE message with AMF set after reroute", must(InitialUEMessage(InitialUE{RANUEID: 4294967295, Location: testLoc, AMFSetID: u16(1023)})),
			Key{Procedure: 15, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 4294967295, HasAMFSetID: true, AMFSetID: 1023}},
		{"uplink NAS with 40-bit AMF UE ID", must(UplinkNASTransport(1<<40-1, 9, []byte{0x7e, 0x00, 0x41}, testLoc)),
			Key{Procedure: 46, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 1<<40 - 1}},
		{"downlink NAS", must(DownlinkNASTransport(3, 9, nil)),
			Key{Procedure: 4, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"initial context setup request carries GUAMI", must(InitialContextSetupRequest(3, 9, testG, []SNSSAI{{SST: 1}}, nil)),
			Key{Procedure: 14, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3, HasGUAMI: true, GUAMI: testG}},
		{"initial context setup response", must(InitialContextSetupResponse(3, 9)),
			Key{Procedure: 14, Type: Successful, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"release command with ID pair", must(UEContextReleaseCommand(3, u32(9), cause)),
			Key{Procedure: 41, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"release command with AMF ID only", must(UEContextReleaseCommand(3, nil, cause)),
			Key{Procedure: 41, Type: Initiating, UEAssociated: true, HasAMFUEID: true, AMFUEID: 3}},
		{"release complete", must(UEContextReleaseComplete(3, 9)),
			Key{Procedure: 41, Type: Successful, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"release request", must(UEContextReleaseRequest(3, 9, cause)),
			Key{Procedure: 42, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"paging is non-UE", must(Paging(testS, []TAI{{PLMN: testPLMN, TAC: 1}})),
			Key{Procedure: 24, Type: Initiating}},
		{"error indication naming a UE is UE-associated", must(ErrorIndication(u64(3), u32(9), cause)),
			Key{Procedure: 9, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 9, HasAMFUEID: true, AMFUEID: 3}},
		{"error indication without UE is not", must(ErrorIndication(nil, nil, cause)),
			Key{Procedure: 9, Type: Initiating}},
		{"ng reset", must(NGReset(cause, []ConnItem{{HasAMFUEID: true, AMFUEID: 3}})), Key{Procedure: 20, Type: Initiating}},
		{"ng reset acknowledge", must(NGResetAcknowledge(nil)), Key{Procedure: 20, Type: Successful}},
		{"amf status indication", must(AMFStatusIndication([]ngapType.GUAMI{NGAPGUAMI(testG)})), Key{Procedure: 1, Type: Initiating}},
		{"amf configuration update", must(AMFConfigurationUpdate(SetupResponse{Served: []ngapType.ServedGUAMIItem{ServedGUAMI(testG)}})), Key{Procedure: 0, Type: Initiating}},
		{"amf configuration update ack", must(AMFConfigurationUpdateAcknowledge()), Key{Procedure: 0, Type: Successful}},
		{"path switch request carries source AMF UE ID", must(PathSwitchRequest(11, 3, testLoc)),
			Key{Procedure: 25, Type: Initiating, UEAssociated: true, HasRANUEID: true, RANUEID: 11, HasSourceAMFUEID: true, SourceAMFUEID: 3}},
	}
}

func TestDecodeExtractsSteeringKey(t *testing.T) {
	for _, tc := range samplePDUs(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, pdu, err := Decode(tc.pdu)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if pdu == nil {
				t.Fatal("Decode returned no PDU")
			}
			if steeringOnly(got) != tc.want {
				t.Errorf("key\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecoderRejectsMalformedAndCounts(t *testing.T) {
	must := mustFn(t)
	good := must(DownlinkNASTransport(3, 9, nil))
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)/2]},
		{"unknown PDU choice", []byte{0x60, 0x00}},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"huge length", []byte{0x00, 0x0f, 0x40, 0xff, 0xff, 0xff}},
	}
	d := NewDecoder(DecoderConfig{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := d.Decode(tc.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%x) error = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
	if _, _, err := d.Decode(good); err != nil {
		t.Fatalf("good PDU: %v", err)
	}
	st := d.Stats()
	if st.Malformed != uint64(len(tests)) || st.Decoded != 1 {
		t.Errorf("stats = %+v, want %d malformed and 1 decoded", st, len(tests))
	}
}

func TestParseTerminatedProcedures(t *testing.T) {
	must := mustFn(t)
	resp := SetupResponse{AMFName: "amf1", Served: []ngapType.ServedGUAMIItem{ServedGUAMI(testG)}, Capacity: 300, PLMNSupport: []ngapType.PLMNSupportItem{PLMNSupport(testPLMN, SNSSAI{SST: 1})}}
	_, pdu, err := Decode(must(NGSetupResponse(resp)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSetupResponse(pdu)
	if err != nil {
		t.Fatal(err)
	}
	if got.AMFName != "amf1" || len(got.Served) != 1 || got.Capacity != 255 || !got.HasCapacity || len(got.PLMNSupport) != 1 {
		t.Errorf("setup response parsed as %+v (capacity must be capped at 255)", got)
	}
	g, err := GUAMIOf(&got.Served[0].GUAMI)
	if err != nil || g != testG {
		t.Errorf("served GUAMI = %+v, %v; want %+v", g, err, testG)
	}

	_, pdu, err = Decode(must(AMFStatusIndication([]ngapType.GUAMI{NGAPGUAMI(testG)})))
	if err != nil {
		t.Fatal(err)
	}
	un, err := ParseAMFStatusIndication(pdu)
	if err != nil || len(un) != 1 || un[0] != testG {
		t.Errorf("unavailable = %+v, %v", un, err)
	}

	resetTests := []struct {
		name  string
		items []ConnItem
		full  bool
	}{
		{"full reset", nil, true},
		{"partial reset", []ConnItem{{HasAMFUEID: true, AMFUEID: 1}, {HasRANUEID: true, RANUEID: 2}, {HasAMFUEID: true, AMFUEID: 3, HasRANUEID: true, RANUEID: 4}}, false},
	}
	for _, tc := range resetTests {
		t.Run(tc.name, func(t *testing.T) {
			_, pdu, err := Decode(must(NGReset(Cause(ngapType.CausePresentMisc, 5), tc.items)))
			if err != nil {
				t.Fatal(err)
			}
			full, items, err := ParseNGReset(pdu)
			if err != nil || full != tc.full || len(items) != len(tc.items) {
				t.Fatalf("ParseNGReset = %v %+v %v", full, items, err)
			}
			for i := range items {
				if items[i] != tc.items[i] {
					t.Errorf("item %d = %+v, want %+v", i, items[i], tc.items[i])
				}
			}
		})
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		err  func() error
	}{
		{"IE the message cannot carry", func() error {
			_, err := Build(Initiating, ngapType.ProcedureCodePaging, Ignore, IE{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(1)})
			return err
		}},
		{"nil IE value", func() error {
			_, err := Build(Initiating, ngapType.ProcedureCodePaging, Ignore, IE{ngapType.ProtocolIEIDTAIListForPaging, Reject, (*ngapType.TAIListForPaging)(nil)})
			return err
		}},
		{"unknown procedure", func() error { _, err := Build(Initiating, 99, Ignore); return err }},
		{"no such outcome", func() error { _, err := Build(Successful, ngapType.ProcedureCodePaging, Ignore); return err }},
		{"gNB ID too short", func() error {
			_, err := NGSetupRequest(NGSetupRequestParams{GNBIDBits: 8, TACs: []uint32{1}})
			return err
		}},
		{"setup request without slices", func() error {
			_, err := NGSetupRequest(NGSetupRequestParams{GNBIDBits: 22, TACs: []uint32{1}})
			return err
		}},
		{"setup response without GUAMIs", func() error { _, err := NGSetupResponse(SetupResponse{AMFName: "x"}); return err }},
		{"paging without TAI", func() error { _, err := Paging(testS, nil); return err }},
		{"empty status indication", func() error { _, err := AMFStatusIndication(nil); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.err(); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range samplePDUs(f) {
		f.Add(s.pdu)
	}
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x0f, 0x40, 0xff, 0xff, 0xff})
	d := NewDecoder(DecoderConfig{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, pdu, err := d.Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if pdu == nil || k.Type < Initiating || k.Type > Unsuccessful {
			t.Fatalf("accepted PDU with key %+v pdu %v", k, pdu)
		}
		if k.AMFUEID >= 1<<40 {
			t.Fatalf("AMF UE NGAP ID %d exceeds 40 bits", k.AMFUEID)
		}
		// The parsers of terminated procedures see whatever decoded: they
		// may refuse it, never panic.
		_, _ = ParseSetupResponse(pdu)
		_, _, _ = ParseNGReset(pdu)
		_, _ = ParseAMFStatusIndication(pdu)
	})
}

func BenchmarkDecodeUplinkNAS(b *testing.B) {
	pdu, err := UplinkNASTransport(1<<39, 7, nil, testLoc)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder(DecoderConfig{})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(pdu); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSilenceLibraryLogsDiscardsAperOutput(t *testing.T) {
	prev := aperlog.GetLogger().Out
	t.Cleanup(func() { aperlog.GetLogger().SetOutput(prev) })
	SilenceLibraryLogs()
	if out := aperlog.GetLogger().Out; out != io.Discard {
		t.Fatalf("aper logger writes to %T", out)
	}
	// The decoder still reports what it no longer prints.
	if _, _, err := Decode([]byte{0x00, 0x0f, 0x40, 0xff, 0xff, 0xff}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
}

// steeringOnly drops what the sample table does not spell out (the IE set,
// the envelope criticality, the NAS identity); the fast and full paths are
// compared on every field elsewhere.
func steeringOnly(k Key) Key {
	k.IEs, k.Criticality, k.NAS, k.TrafficLoadReduction = IESet{}, 0, NASIdentity{}, 0
	return k
}
