package diameter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/dict"
)

func sameKeys(t *testing.T, name string, got, want Msg) {
	t.Helper()
	got.Raw, want.Raw = nil, nil
	got.Length, want.Length = 0, 0
	norm := func(a *AppIDs) {
		if len(a.Auth) == 0 {
			a.Auth = nil
		}
		if len(a.Acct) == 0 {
			a.Acct = nil
		}
		if len(a.VS) == 0 {
			a.VS = nil
		}
		a.authA, a.acctA, a.vsA = [2]uint32{}, [1]uint32{}, [2]VSApp{}
	}
	norm(&got.Apps)
	norm(&want.Apps)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
	}
}

func TestParseReadsTheRoutingAVPsOfGoDiameterMessages(t *testing.T) {
	for _, s := range godiameterSamples(t) {
		m, err := Parse(s.b)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		sameKeys(t, s.name, m, s.want)
	}
}

func TestParseReadsCapturedForeignMessages(t *testing.T) {
	caps := foreignSamples(t)
	if len(caps) == 0 {
		t.Fatal("no captured messages in testdata/captured")
	}
	for name, b := range caps {
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m.OriginHost) == 0 && m.Code != CmdDeviceWatchdog {
			t.Errorf("%s: no Origin-Host", name)
		}
		// go-diameter agrees on the header and the AVP count.
		gm, err := diam.ReadMessage(bytes.NewReader(b), dict.Default)
		if err != nil {
			continue // a command go-diameter's dictionary lacks: fine for us
		}
		n := 0
		_ = Walk(b[HeaderLen:], HeaderLen, func(AVP) error { n++; return nil })
		if n != len(gm.AVP) || gm.Header.HopByHopID != m.HopByHop || gm.Header.CommandCode != m.Code {
			t.Errorf("%s: we see %d AVPs, hbh %x, code %d; go-diameter %d, %x, %d", name, n, m.HopByHop, m.Code, len(gm.AVP), gm.Header.HopByHopID, gm.Header.CommandCode)
		}
	}
}

func ccr(t *testing.T) []byte {
	for _, s := range godiameterSamples(t) {
		if s.name == "CCR-U" {
			return s.b
		}
	}
	t.Fatal("no CCR-U sample")
	return nil
}

// mutate copies b and applies f.
func mutate(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }

// firstAVP is the offset of the first AVP (Session-Id in a CCR).
const firstAVP = HeaderLen

func TestMalformedMessagesGetTheRFC6733Answer(t *testing.T) {
	base := ccr(t)
	setLen := func(b []byte, n int) { b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n) }
	avpLenAt := func(b []byte, off, n int) { b[off+5], b[off+6], b[off+7] = byte(n>>16), byte(n>>8), byte(n) }
	// the second AVP (Origin-Host) starts after the padded Session-Id
	sidLen := int(binary.BigEndian.Uint32(base[firstAVP+4:]) & 0xffffff)
	second := firstAVP + (sidLen+3)&^3
	for _, c := range []struct {
		name   string
		b      []byte
		kind   Kind
		result uint32
		avpOff int
	}{
		{"short", base[:12], Short, InvalidMessageLength, -1},
		{"version 2", mutate(base, func(b []byte) []byte { b[0] = 2; return b }), BadVersion, UnsupportedVersion, -1},
		{"length beyond the bytes", mutate(base, func(b []byte) []byte { setLen(b, len(b)+4); return b }), BadLength, InvalidMessageLength, -1},
		{"length not a multiple of 4", mutate(base, func(b []byte) []byte { setLen(b, len(b)-2); return b[:len(b)-2] }), BadLength, InvalidMessageLength, -1},
		{"reserved command flag", mutate(base, func(b []byte) []byte { b[4] |= 0x01; return b }), BadHeaderBits, InvalidHdrBits, -1},
		{"E flag in a request", mutate(base, func(b []byte) []byte { b[4] |= FlagError; return b }), BadHeaderBits, InvalidHdrBits, -1},
		{"AVP length below 8", mutate(base, func(b []byte) []byte { avpLenAt(b, second, 7); return b }), BadAVPLength, InvalidAVPLength, second},
		{"vendor AVP length below 12", mutate(base, func(b []byte) []byte { b[second+4] |= AVPVendor; avpLenAt(b, second, 10); return b }), BadAVPLength, InvalidAVPLength, second},
		{"AVP overrunning the message", mutate(base, func(b []byte) []byte { avpLenAt(b, second, len(b)); return b }), BadAVPLength, InvalidAVPLength, second},
		{"reserved AVP flag", mutate(base, func(b []byte) []byte { b[second+4] |= 0x04; return b }), BadAVPBits, InvalidAVPBits, second},
		{"truncated AVP header at the end", mutate(base, func(b []byte) []byte {
			b = append(b, 0, 0, 1, 7)
			setLen(b, len(b))
			return b
		}), BadAVPLength, InvalidAVPLength, len(base)},
		{"Result-Code of 8 bytes", mutate(base, func(b []byte) []byte {
			return AppendAVP(b, EncodeAVP(AVPResultCode, AVPMandatory, 0, make([]byte, 8)))
		}), BadAVPLength, InvalidAVPLength, len(base)},
		{"second Destination-Host", mutate(base, func(b []byte) []byte { return AppendAVP(b, Str(AVPDestinationHost, "x")) }), Repeated, AVPOccursTooManyTimes, len(base)},
		{"empty Destination-Realm", mutate(base, func(b []byte) []byte { return AppendAVP(b, Str(AVPDestinationRealm, "")) }), Repeated, AVPOccursTooManyTimes, len(base)},
		{"empty Route-Record", mutate(base, func(b []byte) []byte { return AppendAVP(b, Str(AVPRouteRecord, "")) }), BadAVPValue, InvalidAVPValue, len(base)},
		{"bad Auth-Application-Id in a Vendor-Specific-Application-Id", mutate(base, func(b []byte) []byte {
			return AppendAVP(b, Grouped(AVPVendorSpecificApp, AVPMandatory, U32(AVPVendorID, 1), Str(AVPAuthAppID, "xy")))
		}), BadAVPLength, InvalidAVPLength, len(base) + 8 + 12},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.b)
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want a *Error", err)
			}
			if e.Kind != c.kind || e.Result() != c.result || e.AVPOffset != c.avpOff {
				t.Fatalf("got %v (result %d, offset %d), want %v, %d, offset %d", e, e.Result(), e.AVPOffset, c.kind, c.result, c.avpOff)
			}
			ans, ok := ErrorAnswer(c.b, e, Identity{"agent.example.org", "example.org"})
			if ok != e.Answerable() {
				t.Fatalf("answerable %v, ErrorAnswer ok %v", e.Answerable(), ok)
			}
			if !ok {
				return
			}
			a, err := Parse(ans)
			if err != nil {
				t.Fatalf("error answer does not parse: %v", err)
			}
			if a.IsRequest() || a.ResultCode != c.result || a.HopByHop != HopByHop(base) || a.EndToEnd != binary.BigEndian.Uint32(base[16:]) {
				t.Fatalf("answer %+v", a.Header)
			}
			if a.IsError() != (c.result < 4000) {
				t.Fatalf("E flag %v for result %d", a.IsError(), c.result)
			}
			if string(a.SessionID) != "client.example.org;1;42" {
				t.Fatalf("answer Session-Id %q", a.SessionID)
			}
			if c.avpOff >= 0 {
				var failed []byte
				_ = Walk(ans[HeaderLen:], HeaderLen, func(x AVP) error {
					if x.Code == AVPFailedAVP {
						failed = x.Data
					}
					return nil
				})
				want := e.FailedAVP(c.b)
				if len(failed) < len(want) || !bytes.Equal(failed[:len(want)], want) {
					t.Fatalf("Failed-AVP %x, want the offending AVP %x", failed, want)
				}
			}
		})
	}
}

func TestEditsChangeOnlyTheirBytes(t *testing.T) {
	orig := ccr(t)
	m, _ := Parse(orig)
	b := append([]byte(nil), orig...)
	SetHopByHop(b, 0xdeadbeef)
	SetRetransmit(b)
	b = AppendAVP(b, RouteRecord("agent.example.org"))
	e, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.HopByHop != 0xdeadbeef || !e.IsRetransmit() || e.RouteRecords != m.RouteRecords+1 || !e.HasRouteRecord("AGENT.example.org") || e.HasRouteRecord("other") {
		t.Fatalf("edited: %+v", e.Header)
	}
	// Everything but length, flags, hop-by-hop and the appended AVP is as it was.
	if !bytes.Equal(b[5:12], orig[5:12]) || !bytes.Equal(b[16:len(orig)], orig[16:]) || b[0] != orig[0] {
		t.Fatal("edit touched other bytes")
	}
	// go-diameter reads the edited message, unknown vendor AVP included.
	gm, err := diam.ReadMessage(bytes.NewReader(b), dict.Default)
	if err != nil {
		t.Fatalf("go-diameter cannot read the edited message: %v", err)
	}
	if gm.Header.HopByHopID != 0xdeadbeef || gm.Header.CommandFlags&diam.RetransmittedFlag == 0 {
		t.Fatalf("go-diameter header %+v", gm.Header)
	}
	found := false
	for _, a := range gm.AVP {
		if a.Code == 4242 && a.VendorID == unknownVendor {
			found = true
		}
	}
	if !found {
		t.Fatal("unknown vendor AVP lost")
	}
}

func TestBuiltMessagesReadByGoDiameter(t *testing.T) {
	caps := Capabilities{Identity: Identity{"agent.example.org", "example.org"}, HostIPs: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::1")},
		VendorID: 0, ProductName: "telcolb", OriginState: 7, AuthApps: []uint32{AppRelay},
		VSApps: []VSApp{{Vendor: vendor3GPP, Auth: 16777238}}, Firmware: 1}
	req := Header{Flags: FlagRequest | FlagProxiable, Code: CmdCreditControl, AppID: AppCC, HopByHop: 9, EndToEnd: 10}
	for name, b := range map[string][]byte{
		"CER":    CER(caps, 1, 2),
		"CEA":    CEA(Header{HopByHop: 1, EndToEnd: 2}, caps, Success),
		"DWR":    DWR(caps.Identity, 7, 3, 4),
		"DPR":    DPR(caps.Identity, DisconnectBusy, 5, 6),
		"answer": Answer(req, []byte("s;1"), caps.Identity, UnableToDeliver, EncodeAVP(AVPErrorMessage, 0, 0, []byte("no route"))),
	} {
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !EqualIdentity(m.OriginHost, "agent.example.org") {
			t.Errorf("%s: Origin-Host %q", name, m.OriginHost)
		}
		if _, err := diam.ReadMessage(bytes.NewReader(b), dict.Default); err != nil {
			t.Errorf("%s: go-diameter: %v", name, err)
		}
		if name == "answer" && (!m.IsError() || m.IsRequest() || !m.IsProxiable() || m.ResultCode != UnableToDeliver || string(m.SessionID) != "s;1") {
			t.Errorf("answer: %+v", m)
		}
		if name == "CER" && (!m.Advertised(AppCC) || m.Apps.VS[0].Auth != 16777238) {
			t.Errorf("CER apps %+v", m.Apps)
		}
	}
}

func TestFrameLen(t *testing.T) {
	b := ccr(t)
	if n, err := FrameLen(b); err != nil || n != len(b) {
		t.Fatalf("FrameLen %d %v", n, err)
	}
	for _, bad := range [][]byte{{1, 0, 0}, {2, 0, 0, 20}, {1, 0, 0, 19}, {1, 0, 0, 22}, {1, 0xff, 0xff, 0xfc}} {
		if _, err := FrameLen(bad); err == nil {
			t.Errorf("FrameLen(%x) accepted", bad)
		}
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	b := ccr(t)
	var m Msg
	if n := testing.AllocsPerRun(100, func() { _ = m.ParseInto(b) }); n != 0 {
		t.Fatalf("%v allocations per parse", n)
	}
}
