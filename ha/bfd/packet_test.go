package bfd

import (
	"bytes"
	"errors"
	"testing"
)

func valid() Packet {
	return Packet{Version: 1, State: Up, DetectMult: 3, Length: 24, MyDisc: 1, YourDisc: 2, DesiredMinTx: 100000, RequiredMinRx: 100000}
}

func TestParseRoundTrip(t *testing.T) {
	p := valid()
	p.Diag = DiagNeighborDown
	p.Poll = true
	p.CPI = true
	p.Demand = true
	p.RequiredMinEchoRx = 5
	b := p.Marshal()
	// Bytes as RFC 5880 §4.1 lays them out.
	want := []byte{0x23, 0xea, 3, 24, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 0, 0, 0, 5}
	if !bytes.Equal(b, want) {
		t.Fatalf("marshal\n got %x\nwant %x", b, want)
	}
	got, err := Parse(b)
	if err != nil || got != p {
		t.Fatalf("parse: %+v %v", got, err)
	}
}

func TestParseRejects(t *testing.T) {
	mut := func(f func(b []byte)) []byte { b := valid().Marshal(); f(b); return b }
	for name, tc := range map[string]struct {
		b   []byte
		err error
	}{
		"short":            {valid().Marshal()[:23], ErrShort},
		"version 0":        {mut(func(b []byte) { b[0] &^= 0xe0 }), ErrVersion},
		"version 2":        {mut(func(b []byte) { b[0] = 2<<5 | b[0]&0x1f }), ErrVersion},
		"length 23":        {mut(func(b []byte) { b[3] = 23 }), ErrLength},
		"length > packet":  {mut(func(b []byte) { b[3] = 48 }), ErrLength},
		"auth length 25":   {mut(func(b []byte) { b[1] |= 0x04; b[3] = 25 }), ErrLength},
		"detect mult 0":    {mut(func(b []byte) { b[2] = 0 }), ErrDetectMult},
		"multipoint":       {mut(func(b []byte) { b[1] |= 0x01 }), ErrMultipoint},
		"my disc 0":        {mut(func(b []byte) { copy(b[4:8], []byte{0, 0, 0, 0}) }), ErrMyDisc},
		"your disc 0 Up":   {mut(func(b []byte) { copy(b[8:12], []byte{0, 0, 0, 0}) }), ErrYourDisc},
		"your disc 0 Init": {mut(func(b []byte) { copy(b[8:12], []byte{0, 0, 0, 0}); b[1] = b[1]&0x3f | 2<<6 }), ErrYourDisc},
		"auth bit":         {append(mut(func(b []byte) { b[1] |= 0x04; b[3] = 26 }), 1, 2), ErrAuthNotEnabled},
		"poll and final":   {mut(func(b []byte) { b[1] |= 0x30 }), ErrPollFinal},
	} {
		if _, err := Parse(tc.b); !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", name, err, tc.err)
		}
	}
	// Your discriminator 0 is fine while Down or AdminDown.
	for _, st := range []State{Down, AdminDown} {
		p := valid()
		p.State, p.YourDisc = st, 0
		if _, err := Parse(p.Marshal()); err != nil {
			t.Errorf("state %s with your disc 0: %v", st, err)
		}
	}
	// Trailing bytes beyond Length are ignored (§6.8.6 only bounds Length by the datagram).
	if _, err := Parse(append(valid().Marshal(), 0, 0)); err != nil {
		t.Errorf("padding: %v", err)
	}
}
