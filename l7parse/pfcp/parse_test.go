package pfcp

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func sameKeys(t *testing.T, got, want Msg) {
	t.Helper()
	if got.Type != want.Type || got.HasSEID != want.HasSEID || got.SEID != want.SEID || got.Seq != want.Seq ||
		got.NodeID != want.NodeID || got.FSEID != want.FSEID || got.Recovery != want.Recovery ||
		got.HasRecovery != want.HasRecovery || got.Cause != want.Cause || got.HasCause != want.HasCause || got.Bad != 0 {
		t.Errorf("Parse = %+v\nwant   %+v", got, want)
	}
}

func TestParseReadsTheSteeringKeysOfGoPFCPMessages(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			m, err := Parse(s.b)
			if err != nil {
				t.Fatal(err)
			}
			sameKeys(t, m, s.want)
			if err := Validate(s.b); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if err := m.Require(Mandatory(m.Type)...); err != nil {
				t.Errorf("Require: %v", err)
			}
		})
	}
}

func TestNodeIDString(t *testing.T) {
	for _, s := range samples(t) {
		if s.want.NodeID == "" {
			continue
		}
		got := s.want.NodeID.String()
		if got != "10.0.0.1" && got != "10.0.1.1" && got != "upf.example.org" && got != "2001:db8::1" {
			t.Errorf("%s: NodeID.String() = %q", s.name, got)
		}
	}
}

// TestRewriteKeepsEveryOtherByte: the proxy swaps the F-SEID (address family
// included) and the Node ID and rewrites the header; go-pfcp must read the
// result with the new values, and every other IE, the vendor-specific one
// included, must come out byte for byte.
func TestRewriteKeepsEveryOtherByte(t *testing.T) {
	orig := samples(t)[3].b // establishment request with a vendor IE
	m, err := Parse(orig)
	if err != nil {
		t.Fatal(err)
	}
	proxy := ip("2001:db8::99")
	out, err := ReplaceIE(orig, m.FSEIDSpan, FSEIDIE(0xabcdef, proxy))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	out, err = ReplaceIE(out, m2.NodeIDSpan, NodeIDIE(NodeIDFromAddr(proxy)))
	if err != nil {
		t.Fatal(err)
	}
	SetSEID(out, 0x77)
	SetSeq(out, 0xfedcba)
	got, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.FSEID != (FSEID{SEID: 0xabcdef, V6: proxy}) || got.NodeID.String() != proxy.String() || got.SEID != 0x77 || got.Seq != 0xfedcba {
		t.Fatalf("rewritten message reads %+v", got)
	}
	dec, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	req := dec.(*message.SessionEstablishmentRequest)
	f, err := req.CPFSEID.FSEID()
	if err != nil || f.SEID != 0xabcdef || !f.IPv6Address.Equal(proxy.AsSlice()) {
		t.Fatalf("go-pfcp reads F-SEID %+v, %v", f, err)
	}
	if len(req.IEs) != 1 || req.IEs[0].Type != vendorIE.Type || req.IEs[0].EnterpriseID != 10415 {
		t.Fatalf("vendor IE not kept: %+v", req.IEs)
	}
	// Everything after the Node ID and F-SEID is the original tail.
	tail := orig[m.FSEIDSpan.Off+m.FSEIDSpan.Len:]
	if !bytes.HasSuffix(out, tail) {
		t.Fatal("IEs after the F-SEID were changed")
	}
}

func TestMalformedMessagesGetTheSpecsReaction(t *testing.T) {
	est := samples(t)[3].b
	cut := func(b []byte, n int) []byte { return append([]byte(nil), b[:len(b)-n]...) }
	withLen := func(b []byte, l int) []byte {
		c := append([]byte(nil), b...)
		c[2], c[3] = byte(l>>8), byte(l)
		return c
	}
	noFSEID := mustMarshal(t, message.NewSessionEstablishmentRequest(0, 0, 0, 5, 0, ie.NewNodeID("10.0.0.1", "", "")))
	badFSEID := mustMarshal(t, message.NewSessionEstablishmentRequest(0, 0, 0, 5, 0, ie.NewNodeID("10.0.0.1", "", ""), ie.New(IEFSEID, []byte{0, 1, 2})))
	v2 := append([]byte(nil), est...)
	v2[0] = 2<<5 | 1
	noS := append([]byte(nil), est...)
	noS[0] &^= 1
	for _, c := range []struct {
		name  string
		b     []byte
		parse Kind // from Parse; 0: Parse accepts
		req   Kind // from Require (when Parse accepts)
		ie    uint16
	}{
		{"empty", nil, Discard, 0, 0},
		{"three bytes", []byte{0x20, 1, 0}, Discard, 0, 0},
		{"header cut", est[:10], Discard, 0, 0},
		{"other version", v2, BadVersion, 0, 0},
		{"session type without S flag", noS, Discard, 0, 0},
		{"datagram shorter than length", cut(est, 3), InvalidLength, 0, 0},
		{"length shorter than datagram", withLen(est, len(est)-4-5), InvalidLength, 0, 0},
		{"length shorter than header", withLen(est, 2), InvalidLength, 0, 0},
		{"IE overruns", withLen(cut(est, 0), len(est)-4), 0, 0, 0}, // control: intact
		{"F-SEID missing", noFSEID, 0, MissingIE, IEFSEID},
		{"F-SEID without address", badFSEID, 0, IncorrectIE, IEFSEID},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse(c.b)
			var pe *Error
			if c.parse != 0 {
				if !errors.As(err, &pe) || pe.Kind != c.parse || !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse error %v, want kind %d", err, c.parse)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = m.Require(Mandatory(m.Type)...)
			if c.req == 0 {
				if err != nil {
					t.Fatalf("Require: %v", err)
				}
				return
			}
			if !errors.As(err, &pe) || pe.Kind != c.req || pe.IE != c.ie {
				t.Fatalf("Require error %v, want kind %d IE %d", err, c.req, c.ie)
			}
			rej, err := Reject(m, 0, NodeIDFromAddr(ip("10.9.9.9")), pe.Cause(), pe.IE)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := Decode(rej)
			if err != nil {
				t.Fatal(err)
			}
			resp := dec.(*message.SessionEstablishmentResponse)
			cause, _ := resp.Cause.Cause()
			off, _ := resp.OffendingIE.OffendingIE()
			if cause != pe.Cause() || off != c.ie || resp.Sequence() != m.Seq {
				t.Fatalf("rejection cause %d offending %d seq %d", cause, off, resp.Sequence())
			}
		})
	}
	// An IE whose length overruns the message.
	over := append([]byte(nil), est...)
	m, _ := Parse(est)
	over[m.FSEIDSpan.Off+3] = 0xff
	if _, err := Parse(over); err == nil || err.(*Error).Kind != InvalidLength {
		t.Fatalf("overrunning IE: %v", err)
	}
}

func TestIsRequest(t *testing.T) {
	for typ, want := range map[uint8]bool{1: true, 2: false, 5: true, 11: false, 14: true, 50: true, 51: false, 56: true, 57: false} {
		if IsRequest(typ) != want {
			t.Errorf("IsRequest(%d) = %v", typ, !want)
		}
	}
}

// FuzzParse: no input panics Parse or Validate; what Parse accepts has a
// length matching the datagram, IE spans inside it, and survives a rewrite
// of its F-SEID and Node ID with every other key unchanged; what go-pfcp
// decodes, Parse reads with the same type, SEID and sequence number.
func FuzzParse(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x21, 50, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	SilenceLibraryLogs()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		vErr := Validate(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m.Len != len(b) {
			t.Fatalf("accepted length %d for %d bytes", m.Len, len(b))
		}
		for _, s := range []Span{m.NodeIDSpan, m.FSEIDSpan} {
			if s.Present() && (s.Off < HeaderLen(m.HasSEID) || s.Off+s.Len > len(b)) {
				t.Fatalf("span %+v outside the %d-byte message", s, len(b))
			}
		}
		if vErr == nil {
			g, derr := Decode(b)
			if derr == nil && (g.MessageType() != m.Type || g.Sequence() != m.Seq || (m.HasSEID && g.SEID() != m.SEID)) {
				t.Fatalf("go-pfcp reads type %d seq %d seid %d, Parse %+v", g.MessageType(), g.Sequence(), g.SEID(), m)
			}
		}
		out := append([]byte(nil), b...)
		if m.FSEIDSpan.Present() {
			if out, err = ReplaceIE(out, m.FSEIDSpan, FSEIDIE(42, ip("192.0.2.1"))); err != nil {
				return // grew past 64 KiB
			}
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("rewritten message does not parse: %v", err)
		}
		if m2.Type != m.Type || m2.Seq != m.Seq || m2.SEID != m.SEID || m2.NodeID != m.NodeID || m2.Recovery != m.Recovery || m2.Cause != m.Cause {
			t.Fatalf("rewrite changed other keys: %+v vs %+v", m2, m)
		}
		if m.FSEIDSpan.Present() && m2.FSEID != (FSEID{SEID: 42, V4: ip("192.0.2.1")}) {
			t.Fatalf("rewritten F-SEID reads %+v", m2.FSEID)
		}
	})
}
