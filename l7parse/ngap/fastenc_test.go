package ngap

import (
	"bytes"
	"testing"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"
)

// libraryPDU encodes the same message with free5gc, the reference.
func libraryPDU(t testing.TB, typ MessageType, proc int64, crit aper.Enumerated, ies ...IE) []byte {
	t.Helper()
	b, err := Build(typ, proc, crit, ies...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFastEncodersMatchLibrary(t *testing.T) {
	causes := []*ngapType.Cause{
		Cause(ngapType.CausePresentRadioNetwork, 0), Cause(ngapType.CausePresentRadioNetwork, 46),
		Cause(ngapType.CausePresentTransport, 1), Cause(ngapType.CausePresentNas, 3),
		Cause(ngapType.CausePresentProtocol, 6), Cause(ngapType.CausePresentMisc, 5),
	}
	amfs := []uint64{0, 1, 255, 256, 65535, 1 << 24, 1<<32 - 1, 1 << 32, 1<<40 - 1}
	rans := []uint32{0, 1, 255, 256, 1<<24 - 1, 1 << 24, 1<<32 - 1}
	for _, c := range causes {
		for i, amf := range amfs {
			ran := rans[i%len(rans)]
			cases := []struct {
				name      string
				fast      func() ([]byte, error)
				reference []byte
			}{
				{"release command pair", func() ([]byte, error) { return UEContextReleaseCommand(amf, &ran, c) },
					libraryPDU(t, Initiating, ngapType.ProcedureCodeUEContextRelease, Reject,
						IE{ngapType.ProtocolIEIDUENGAPIDs, Reject, &ngapType.UENGAPIDs{Present: ngapType.UENGAPIDsPresentUENGAPIDPair, UENGAPIDPair: &ngapType.UENGAPIDPair{AMFUENGAPID: *amfID(amf), RANUENGAPID: *ranID(ran)}}},
						IE{ngapType.ProtocolIEIDCause, Ignore, c})},
				{"release command AMF ID", func() ([]byte, error) { return UEContextReleaseCommand(amf, nil, c) },
					libraryPDU(t, Initiating, ngapType.ProcedureCodeUEContextRelease, Reject,
						IE{ngapType.ProtocolIEIDUENGAPIDs, Reject, &ngapType.UENGAPIDs{Present: ngapType.UENGAPIDsPresentAMFUENGAPID, AMFUENGAPID: amfID(amf)}},
						IE{ngapType.ProtocolIEIDCause, Ignore, c})},
				{"release request", func() ([]byte, error) { return UEContextReleaseRequest(amf, ran, c) },
					libraryPDU(t, Initiating, ngapType.ProcedureCodeUEContextReleaseRequest, Ignore,
						IE{ngapType.ProtocolIEIDAMFUENGAPID, Reject, amfID(amf)}, IE{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)},
						IE{ngapType.ProtocolIEIDCause, Ignore, c})},
				{"release complete", func() ([]byte, error) { return UEContextReleaseComplete(amf, ran) },
					libraryPDU(t, Successful, ngapType.ProcedureCodeUEContextRelease, Reject,
						IE{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfID(amf)}, IE{ngapType.ProtocolIEIDRANUENGAPID, Ignore, ranID(ran)})},
				{"error indication", func() ([]byte, error) { return ErrorIndication(&amf, &ran, c) },
					libraryPDU(t, Initiating, ngapType.ProcedureCodeErrorIndication, Ignore,
						IE{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfID(amf)}, IE{ngapType.ProtocolIEIDRANUENGAPID, Ignore, ranID(ran)},
						IE{ngapType.ProtocolIEIDCause, Ignore, c})},
				{"error indication without IDs", func() ([]byte, error) { return ErrorIndication(nil, nil, c) },
					libraryPDU(t, Initiating, ngapType.ProcedureCodeErrorIndication, Ignore, IE{ngapType.ProtocolIEIDCause, Ignore, c})},
			}
			for _, tc := range cases {
				got, err := tc.fast()
				if err != nil {
					t.Fatalf("%s amf=%d ran=%d cause=%d: %v", tc.name, amf, ran, c.Present, err)
				}
				if !bytes.Equal(got, tc.reference) {
					t.Fatalf("%s amf=%d ran=%d cause=%d:\n fast %x\n lib  %x", tc.name, amf, ran, c.Present, got, tc.reference)
				}
			}
		}
	}
}

func TestFastEncodersRejectBadCause(t *testing.T) {
	tests := []struct {
		name  string
		cause *ngapType.Cause
	}{
		{"nil", nil},
		{"out of range", Cause(ngapType.CausePresentTransport, 7)},
		{"no alternative", &ngapType.Cause{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UEContextReleaseRequest(1, 1, tc.cause); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func BenchmarkUEContextReleaseCommand(b *testing.B) {
	ran := uint32(7)
	c := Cause(ngapType.CausePresentTransport, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UEContextReleaseCommand(1<<39, &ran, c); err != nil {
			b.Fatal(err)
		}
	}
}
