package pfcp

import (
	"reflect"
	"testing"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"
)

// establishment builds a Session Establishment Request with go-pfcp (not
// our builder), carrying the given steering IEs.
func establishment(t testing.TB, ies ...*ie.IE) []byte {
	t.Helper()
	all := append([]*ie.IE{ie.NewNodeID("10.0.0.1", "", ""), ie.NewFSEID(1, ip("10.0.0.1").AsSlice(), nil)}, ies...)
	b, err := message.NewSessionEstablishmentRequest(0, 0, 0, 7, 0, all...).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSessionSteeringKeys(t *testing.T) {
	pdr := func(ni *ie.IE) *ie.IE {
		return ie.NewCreatePDR(ie.NewPDRID(1), ie.NewPrecedence(100), ie.NewPDI(ie.NewSourceInterface(ie.SrcInterfaceAccess), ni))
	}
	far := func(ni *ie.IE) *ie.IE {
		return ie.NewCreateFAR(ie.NewFARID(1), ie.NewApplyAction(2), ie.NewForwardingParameters(ie.NewDestinationInterface(ie.DstInterfaceCore), ni))
	}
	for _, c := range []struct {
		name string
		ies  []*ie.IE
		want SteeringKeys
	}{
		{"none", nil, SteeringKeys{}},
		{"DNN as labels", []*ie.IE{ie.NewAPNDNN("Internet.mnc001.mcc001.gprs")}, SteeringKeys{DNN: "internet.mnc001.mcc001.gprs"}},
		{"S-NSSAI with SD", []*ie.IE{ie.NewSNSSAI(1, 0x010203)}, SteeringKeys{SNSSAI: "1-010203"}},
		{"every key", []*ie.IE{pdr(ie.NewNetworkInstance("access")), far(ie.NewNetworkInstanceFQDN("internet.n6")), pdr(ie.NewNetworkInstance("access")),
			ie.NewAPNDNN("ims"), ie.NewSNSSAI(2, 0xabcdef)},
			SteeringKeys{DNN: "ims", SNSSAI: "2-abcdef", NetworkInstances: []string{"access", "internet.n6"}}},
		// A Network Instance where it does not name the session's network
		// (top level) is not a steering key.
		{"stray network instance", []*ie.IE{ie.NewNetworkInstance("nowhere")}, SteeringKeys{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := SessionSteeringKeys(establishment(t, c.ies...)); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("keys %+v, want %+v", got, c.want)
			}
		})
	}
}

// A grouped IE whose length overruns its parent yields what came before
// it and nothing after; the request is not refused for it.
func TestSessionSteeringKeysOfABrokenGroup(t *testing.T) {
	b := establishment(t, ie.NewAPNDNN("internet"), ie.NewCreatePDR(ie.NewPDI(ie.NewNetworkInstance("access"))))
	pdr := FindIE(b, IECreatePDR)
	pdr[4+2], pdr[4+3] = 0xff, 0xff // the PDI claims 64 KiB
	if k := SessionSteeringKeys(b); k.DNN != "internet" || len(k.NetworkInstances) != 0 {
		t.Fatalf("keys %+v", k)
	}
}

func FuzzSessionSteeringKeys(f *testing.F) {
	f.Add(establishment(f, ie.NewAPNDNN("internet"), ie.NewSNSSAI(1, 0x010203),
		ie.NewCreatePDR(ie.NewPDI(ie.NewNetworkInstance("access"))),
		ie.NewCreateFAR(ie.NewForwardingParameters(ie.NewNetworkInstance("core")))))
	f.Add([]byte{0x21, 50, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k := SessionSteeringKeys(b)
		for _, s := range append([]string{k.DNN}, k.NetworkInstances...) {
			if len(s) > 2*steeringValueMaxLen {
				t.Fatalf("key of %d bytes", len(s))
			}
			for _, c := range []byte(s) {
				if c < 0x21 || c > 0x7e {
					t.Fatalf("unprintable key %q", s)
				}
			}
		}
	})
}
