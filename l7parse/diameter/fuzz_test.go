package diameter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// FuzzParse feeds arbitrary bytes (seeded with go-diameter's and
// freeDiameter's messages) to Parse. It must never panic; what it accepts
// must survive the agent's edits (hop-by-hop, T flag, Route-Record) with
// every other byte and every routing key unchanged; what it refuses must be
// a *Error whose answer, when there is one, parses.
func FuzzParse(f *testing.F) {
	for _, s := range godiameterSamples(f) {
		f.Add(s.b)
	}
	for _, b := range foreignSamples(f) {
		f.Add(b)
	}
	id := Identity{"agent.example.org", "example.org"}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if ans, ok := ErrorAnswer(b, e, id); ok {
				if _, err := Parse(ans); err != nil {
					t.Fatalf("error answer does not parse: %v", err)
				}
			}
			return
		}
		e := append([]byte(nil), b...)
		SetHopByHop(e, ^m.HopByHop)
		if m.IsRequest() {
			SetRetransmit(e)
		}
		e = AppendAVP(e, RouteRecord(id.Host))
		m2, err := Parse(e)
		if err != nil {
			t.Fatalf("edited message does not parse: %v", err)
		}
		if m2.HopByHop != ^m.HopByHop || m2.RouteRecords != m.RouteRecords+1 || !m2.HasRouteRecord(id.Host) ||
			!bytes.Equal(m2.SessionID, m.SessionID) || !bytes.Equal(m2.DestHost, m.DestHost) ||
			!bytes.Equal(m2.DestRealm, m.DestRealm) || m2.Result() != m.Result() || m2.Code != m.Code {
			t.Fatalf("edit changed the keys: %+v -> %+v", m, m2)
		}
		if !bytes.Equal(e[HeaderLen:len(b)], b[HeaderLen:]) {
			t.Fatal("edit changed the AVPs")
		}
		if m.IsRequest() {
			a := Answer(m.Header, m.SessionID, id, UnableToDeliver)
			if _, err := Parse(a); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
		}
	})
}

// FuzzAVPAt holds avpAt (the checks of an accepted AVP made inline, the
// error of a refused one described out of line) to RFC 6733 §4.1 as
// written out here: an AVP is read exactly when its header fits, no
// reserved flag is set, its length covers its header and its padded
// length fits; a refused one gets the error of the first check it fails.
func FuzzAVPAt(f *testing.F) {
	avp := func(code uint32, flags uint8, n int, rest ...byte) []byte {
		b := []byte{byte(code >> 24), byte(code >> 16), byte(code >> 8), byte(code), flags, byte(n >> 16), byte(n >> 8), byte(n)}
		return append(b, rest...)
	}
	f.Add(avp(263, AVPMandatory, 12, 'a', 'b', 'c', 'd'), 0)
	f.Add(avp(263, AVPMandatory, 9, 'a', 0, 0, 0), 0)    // padded
	f.Add(avp(263, AVPMandatory, 9, 'a'), 0)             // padding overruns
	f.Add(avp(263, AVPMandatory, 7), 0)                  // shorter than its header
	f.Add(avp(4242, AVPVendor, 11, 0, 0, 0x27, 0x0f), 0) // vendor header needs 12
	f.Add(avp(4242, AVPVendor|AVPMandatory, 16, 0, 0, 0x27, 0x0f, 1, 2, 3, 4), 0)
	f.Add(avp(263, 0x01, 8), 0)                                                       // reserved flag
	f.Add(avp(263, AVPMandatory, 64, 1, 2, 3, 4), 0)                                  // overruns
	f.Add([]byte{0, 0, 1, 7, 0x40}, 0)                                                // header cut short
	f.Add(append(avp(1, 0, 8), avp(263, AVPMandatory, 12, 'x', 'y', 'z', 'w')...), 8) // at an offset
	f.Fuzz(func(t *testing.T, b []byte, off int) {
		if off < 0 || off > len(b) {
			return
		}
		const base = 20
		got, err := avpAt(b, off, base)
		want, werr := referenceAVPAt(b, off, base)
		if (err == nil) != (werr == nil) {
			t.Fatalf("avpAt error %v, the RFC's checks %v", err, werr)
		}
		if err != nil {
			var e, w *Error
			if !errors.As(err, &e) || !errors.As(werr, &w) || *e != *w {
				t.Fatalf("avpAt error %#v, want %#v", err, werr)
			}
			return
		}
		if got.Code != want.Code || got.Flags != want.Flags || got.Vendor != want.Vendor || got.Off != want.Off ||
			got.Len != want.Len || !bytes.Equal(got.Data, want.Data) || cap(got.Data) != len(got.Data) ||
			(len(got.Data) > 0 && &got.Data[0] != &want.Data[0]) {
			t.Fatalf("avpAt read %+v, want %+v", got, want)
		}
	})
}

// referenceAVPAt is the AVP at off by RFC 6733 §4.1, one check after the
// other.
func referenceAVPAt(b []byte, off, base int) (AVP, error) {
	r := b[off:]
	if len(r) < 8 {
		return AVP{}, bad(BadAVPLength, base+off, "%d bytes left, an AVP header needs 8", len(r))
	}
	a := AVP{Code: binary.BigEndian.Uint32(r), Flags: r[4], Off: off}
	n := int(uint32(r[5])<<16 | uint32(r[6])<<8 | uint32(r[7]))
	h := 8
	if a.Flags&AVPVendor != 0 {
		h = 12
	}
	if a.Flags&avpFlagsUnused != 0 {
		return AVP{}, bad(BadAVPBits, base+off, "reserved AVP flags 0x%02x (code %d)", a.Flags&avpFlagsUnused, a.Code)
	}
	if n < h {
		return AVP{}, bad(BadAVPLength, base+off, "AVP %d length %d, its header needs %d", a.Code, n, h)
	}
	if n > len(r) {
		return AVP{}, bad(BadAVPLength, base+off, "AVP %d length %d overruns the message (%d bytes left)", a.Code, n, len(r))
	}
	if h == 12 {
		a.Vendor = binary.BigEndian.Uint32(r[8:])
	}
	a.Data = r[h:n:n]
	a.Len = (n + 3) &^ 3
	if a.Len > len(r) {
		return AVP{}, bad(BadAVPLength, base+off, "AVP %d padding overruns the message", a.Code)
	}
	return a, nil
}

// FuzzParseWalk holds the message parse, which makes avpAt's checks in
// line, to the parse built on Walk (avpAt): the same *Error for what they
// refuse, the same Msg for what they accept.
func FuzzParseWalk(f *testing.F) {
	for _, s := range godiameterSamples(f) {
		f.Add(s.b)
	}
	for _, b := range foreignSamples(f) {
		f.Add(b)
		for _, at := range []int{HeaderLen + 4, HeaderLen + 5, HeaderLen + 7, len(b) - 1} {
			if at < len(b) {
				c := append([]byte(nil), b...)
				c[at] ^= 0xff
				f.Add(c)
			}
		}
		// The first AVP shorter than its header, plain and vendor.
		if len(b) >= HeaderLen+12 {
			c := append([]byte(nil), b...)
			c[HeaderLen+5], c[HeaderLen+6], c[HeaderLen+7] = 0, 0, 7
			f.Add(c)
			c = append([]byte(nil), c...)
			c[HeaderLen+4] |= AVPVendor
			c[HeaderLen+7] = 10
			f.Add(c)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got, want Msg
		err := got.ParseInto(b)
		werr := want.walkParse(b)
		if (err == nil) != (werr == nil) {
			t.Fatalf("parse error %v, through Walk %v", err, werr)
		}
		if err != nil {
			var e, w *Error
			if !errors.As(err, &e) || !errors.As(werr, &w) || *e != *w {
				t.Fatalf("parse error %#v, through Walk %#v", err, werr)
			}
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parse read %+v, through Walk %+v", got, want)
		}
	})
}

// walkParse is parse with the AVPs read through Walk.
func (m *Msg) walkParse(b []byte) error {
	*m = Msg{}
	h, err := ParseHeader(b)
	m.Header, m.Raw = h, b
	if err != nil {
		return err
	}
	m.Apps.Auth, m.Apps.Acct, m.Apps.VS = m.Apps.authA[:0], m.Apps.acctA[:0], m.Apps.vsA[:0]
	return Walk(b[HeaderLen:], HeaderLen, func(a AVP) error {
		if a.Vendor != 0 {
			return nil
		}
		hdr := 8
		if a.Flags&AVPVendor != 0 {
			hdr = 12
		}
		return m.take(a.Code, a.Data, HeaderLen+a.Off, hdr)
	})
}
