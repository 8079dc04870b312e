package ngap

import (
	"encoding/hex"
	"errors"
	"regexp"
	"testing"

	"github.com/free5gc/ngap/ngapType"
)

// TestRANNodeIDOfForeignSetupRequest: srsRAN's NG Setup Request test
// vector (ng_setup_request_packed, encoded by its own ASN.1 packer): PLMN
// 001/01, a 22-bit gNB ID 411 (srsRAN's default; 0x00066c holds 411 << 2).
func TestRANNodeIDOfForeignSetupRequest(t *testing.T) {
	b, err := hex.DecodeString("00150033000004001b00080000f1100000066c0052400a0380747374676e6230310066000d00000000070000f110000000080015400160")
	if err != nil {
		t.Fatal(err)
	}
	_, pdu, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := RANNodeID(pdu)
	if err != nil || got != "00101-gnb-411" {
		t.Fatalf("RANNodeID = %q, %v; want 00101-gnb-411", got, err)
	}
}

// TestRANNodeIDOfOwnSetupRequests: the identities our builder encodes come
// back (3-digit MNC, 32-bit and 22-bit IDs), and messages without one are
// refused with ErrMalformed.
func TestRANNodeIDOfOwnSetupRequests(t *testing.T) {
	for _, c := range []struct {
		plmn [3]byte
		id   uint32
		bits uint8
		want string
	}{
		{[3]byte{0x02, 0xf8, 0x39}, 1, 22, "20893-gnb-1"},
		{[3]byte{0x13, 0x00, 0x14}, 0xfffffffe, 32, "310410-gnb-4294967294"},
		{[3]byte{0x00, 0xf1, 0x10}, 0x3fffff, 22, "00101-gnb-4194303"},
	} {
		b, err := NGSetupRequest(NGSetupRequestParams{PLMN: c.plmn, GNBID: c.id, GNBIDBits: c.bits, TACs: []uint32{1}, Slices: []SNSSAI{{SST: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		_, pdu, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := RANNodeID(pdu); err != nil || got != c.want {
			t.Errorf("RANNodeID = %q, %v; want %q", got, err, c.want)
		}
	}
	if _, err := RANNodeID(&ngapType.NGAPPDU{Present: ngapType.NGAPPDUPresentSuccessfulOutcome}); !errors.Is(err, ErrMalformed) {
		t.Errorf("RANNodeID of a successful outcome: %v, want ErrMalformed", err)
	}
	noID := &ngapType.NGAPPDU{Present: ngapType.NGAPPDUPresentInitiatingMessage, InitiatingMessage: &ngapType.InitiatingMessage{}}
	noID.InitiatingMessage.Value.NGSetupRequest = &ngapType.NGSetupRequest{}
	if _, err := RANNodeID(noID); !errors.Is(err, ErrMalformed) {
		t.Errorf("RANNodeID without the IE: %v, want ErrMalformed", err)
	}
	if _, err := RANNodeID(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("RANNodeID(nil): %v", err)
	}
	if _, err := plmnString([]byte{0x0a, 0xf1, 0x10}); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-BCD PLMN: %v", err)
	}
}

// FuzzRANNodeID: whatever decodes, RANNodeID returns an identity of the
// documented shape or an ErrMalformed error, never a panic.
func FuzzRANNodeID(f *testing.F) {
	for _, s := range samplePDUs(f) {
		f.Add(s.pdu)
	}
	srs, _ := hex.DecodeString("00150033000004001b00080000f1100000066c0052400a0380747374676e6230310066000d00000000070000f110000000080015400160")
	f.Add(srs)
	shape := regexp.MustCompile(`^[0-9]{5,6}-(gnb|ngenb|n3iwf)-[0-9]+$`)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, pdu, err := Decode(b)
		if err != nil {
			return
		}
		id, err := RANNodeID(pdu)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !shape.MatchString(id) {
			t.Fatalf("RANNodeID = %q", id)
		}
	})
}
