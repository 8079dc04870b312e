package ngap

import (
	"testing"

	"github.com/free5gc/ngap/ngapType"
)

// UE Retention Information round-trips in NG Setup Request and Response,
// and its absence reads as "not retained".
func TestUERetentionInformation(t *testing.T) {
	must := mustFn(t)
	for _, retained := range []bool{false, true} {
		req := must(NGSetupRequest(NGSetupRequestParams{PLMN: testPLMN, GNBID: 7, TACs: []uint32{1}, Slices: []SNSSAI{{SST: 1}}, UEsRetained: retained}))
		_, pdu, err := Decode(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := SetupRequestRetainsUEs(pdu); got != retained {
			t.Errorf("request built with UEsRetained=%v reads %v", retained, got)
		}
		resp := SetupResponse{AMFName: "amf1", Served: []ngapType.ServedGUAMIItem{ServedGUAMI(testG)}, PLMNSupport: []ngapType.PLMNSupportItem{PLMNSupport(testPLMN, SNSSAI{SST: 1})}, UEsRetained: retained}
		_, pdu, err = Decode(must(NGSetupResponse(resp)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseSetupResponse(pdu)
		if err != nil {
			t.Fatal(err)
		}
		if got.UEsRetained != retained {
			t.Errorf("response built with UEsRetained=%v reads %v", retained, got.UEsRetained)
		}
	}
	if SetupRequestRetainsUEs(nil) {
		t.Error("nil PDU reads as retained")
	}
}
