package diameter

import (
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
)

// Messages produced by go-diameter (an encoder we did not write), with the
// keys Parse must read from each.

const (
	vendor3GPP    = 10415
	unknownVendor = 99999
)

type sample struct {
	name string
	b    []byte
	want Msg
}

func mustAVP(t testing.TB, m *diam.Message, code any, flags uint8, vendor uint32, d datatype.Type) {
	t.Helper()
	if _, err := m.NewAVP(code, flags, vendor, d); err != nil {
		t.Fatalf("go-diameter NewAVP %v: %v", code, err)
	}
}

func serialize(t testing.TB, m *diam.Message) []byte {
	t.Helper()
	b, err := m.Serialize()
	if err != nil {
		t.Fatalf("go-diameter Serialize: %v", err)
	}
	return b
}

// godiameterSamples builds the messages; t may be a *testing.F.
func godiameterSamples(t testing.TB) []sample {
	var out []sample
	add := func(name string, m *diam.Message, want Msg) {
		want.Header.Flags = m.Header.CommandFlags
		want.Code = m.Header.CommandCode
		want.AppID = m.Header.ApplicationID
		want.HopByHop, want.EndToEnd = m.Header.HopByHopID, m.Header.EndToEndID
		out = append(out, sample{name, serialize(t, m), want})
	}

	cer := diam.NewRequest(diam.CapabilitiesExchange, 0, dict.Default)
	cer.Header.HopByHopID, cer.Header.EndToEndID = 0x11, 0x22
	mustAVP(t, cer, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
	mustAVP(t, cer, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("example.org"))
	mustAVP(t, cer, avp.HostIPAddress, avp.Mbit, 0, datatype.Address(net.ParseIP("10.0.0.1")))
	mustAVP(t, cer, avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(13))
	mustAVP(t, cer, avp.ProductName, 0, 0, datatype.UTF8String("go-diameter"))
	mustAVP(t, cer, avp.OriginStateID, avp.Mbit, 0, datatype.Unsigned32(1234))
	mustAVP(t, cer, avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(4))
	mustAVP(t, cer, avp.AcctApplicationID, avp.Mbit, 0, datatype.Unsigned32(3))
	cer.NewAVP(avp.VendorSpecificApplicationID, avp.Mbit, 0, &diam.GroupedAVP{AVP: []*diam.AVP{
		diam.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(vendor3GPP)),
		diam.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(16777238)),
	}})
	add("CER", cer, Msg{OriginHost: []byte("client.example.org"), OriginRealm: []byte("example.org"),
		OriginStateID: 1234, HasOriginState: true,
		Apps: AppIDs{Auth: []uint32{4}, Acct: []uint32{3}, VS: []VSApp{{Vendor: vendor3GPP, Auth: 16777238}}}})

	cea := cer.Answer(diam.Success)
	mustAVP(t, cea, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("server.example.org"))
	mustAVP(t, cea, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("example.org"))
	mustAVP(t, cea, avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(4))
	add("CEA", cea, Msg{OriginHost: []byte("server.example.org"), OriginRealm: []byte("example.org"),
		ResultCode: 2001, HasResult: true, Apps: AppIDs{Auth: []uint32{4}}})

	dwr := diam.NewRequest(diam.DeviceWatchdog, 0, dict.Default)
	dwr.Header.HopByHopID, dwr.Header.EndToEndID = 0x33, 0x44
	mustAVP(t, dwr, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
	mustAVP(t, dwr, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("example.org"))
	add("DWR", dwr, Msg{OriginHost: []byte("client.example.org"), OriginRealm: []byte("example.org")})

	dpr := diam.NewRequest(diam.DisconnectPeer, 0, dict.Default)
	dpr.Header.HopByHopID, dpr.Header.EndToEndID = 0x55, 0x66
	mustAVP(t, dpr, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
	mustAVP(t, dpr, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("example.org"))
	mustAVP(t, dpr, avp.DisconnectCause, avp.Mbit, 0, datatype.Enumerated(2))
	add("DPR", dpr, Msg{OriginHost: []byte("client.example.org"), OriginRealm: []byte("example.org"),
		DisconnectCause: 2, HasDisconnectCause: true})

	for i, typ := range []uint32{CCInitial, CCUpdate, CCTermination} {
		ccr := diam.NewRequest(diam.CreditControl, 4, dict.Default)
		ccr.Header.CommandFlags |= diam.ProxiableFlag
		ccr.Header.HopByHopID, ccr.Header.EndToEndID = 0x100+uint32(i), 0x200+uint32(i)
		mustAVP(t, ccr, avp.SessionID, avp.Mbit, 0, datatype.UTF8String("client.example.org;1;42"))
		mustAVP(t, ccr, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.example.org"))
		mustAVP(t, ccr, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("example.org"))
		mustAVP(t, ccr, avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity("ocs.example.org"))
		if typ != CCInitial {
			mustAVP(t, ccr, avp.DestinationHost, avp.Mbit, 0, datatype.DiameterIdentity("ocs1.ocs.example.org"))
		}
		mustAVP(t, ccr, avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(4))
		mustAVP(t, ccr, avp.ServiceContextID, avp.Mbit, 0, datatype.UTF8String("32251@3gpp.org"))
		mustAVP(t, ccr, avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
		mustAVP(t, ccr, avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(uint32(i)))
		mustAVP(t, ccr, avp.EventTimestamp, avp.Mbit, 0, datatype.Time(time.Unix(1700000000, 0)))
		ccr.NewAVP(avp.SubscriptionID, avp.Mbit, 0, &diam.GroupedAVP{AVP: []*diam.AVP{
			diam.NewAVP(avp.SubscriptionIDType, avp.Mbit, 0, datatype.Enumerated(0)),
			diam.NewAVP(avp.SubscriptionIDData, avp.Mbit, 0, datatype.UTF8String("4915112345678")),
		}})
		// An AVP of a vendor nobody here knows, M set, odd length.
		ccr.AddAVP(diam.NewAVP(4242, avp.Mbit|avp.Vbit, unknownVendor, datatype.OctetString("opaque-\x00\x01\x02")))
		// A 3GPP AVP with the same code as a base AVP: not a Session-Id.
		ccr.AddAVP(diam.NewAVP(263, avp.Vbit, vendor3GPP, datatype.OctetString("not-a-session")))
		mustAVP(t, ccr, avp.RouteRecord, avp.Mbit, 0, datatype.DiameterIdentity("edge.example.org"))
		want := Msg{SessionID: []byte("client.example.org;1;42"), OriginHost: []byte("client.example.org"),
			OriginRealm: []byte("example.org"), DestRealm: []byte("ocs.example.org"), CCRequestType: typ,
			RouteRecords: 1, Apps: AppIDs{Auth: []uint32{4}}}
		if typ != CCInitial {
			want.DestHost = []byte("ocs1.ocs.example.org")
		}
		add("CCR-"+[]string{"I", "U", "T"}[i], ccr, want)
		if typ == CCTermination {
			cca := ccr.Answer(diam.Success)
			mustAVP(t, cca, avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("ocs1.ocs.example.org"))
			mustAVP(t, cca, avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("ocs.example.org"))
			mustAVP(t, cca, avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
			// go-diameter's Answer copies no Session-Id.
			add("CCA-T", cca, Msg{OriginHost: []byte("ocs1.ocs.example.org"),
				OriginRealm: []byte("ocs.example.org"), ResultCode: 2001, HasResult: true, CCRequestType: typ})
		}
	}

	// An answer with only an Experimental-Result (3GPP S6a style).
	ula := diam.NewMessage(316, diam.ProxiableFlag, 16777251, 7, 8, dict.Default)
	ula.AddAVP(diam.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String("mme;1")))
	ula.AddAVP(diam.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("hss")))
	ula.AddAVP(diam.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("epc")))
	ula.AddAVP(diam.NewAVP(avp.ExperimentalResult, avp.Mbit, 0, &diam.GroupedAVP{AVP: []*diam.AVP{
		diam.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(vendor3GPP)),
		diam.NewAVP(avp.ExperimentalResultCode, avp.Mbit, 0, datatype.Unsigned32(5001)),
	}}))
	add("ULA-experimental", ula, Msg{SessionID: []byte("mme;1"), OriginHost: []byte("hss"), OriginRealm: []byte("epc"),
		ExpResultCode: 5001, HasExpResult: true})
	return out
}

// foreignSamples reads the captured messages in testdata (freeDiameter,
// go-diameter over the wire), one message per file.
func foreignSamples(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	files, _ := filepath.Glob("testdata/captured/*.bin")
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}
