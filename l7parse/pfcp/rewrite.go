package pfcp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// SetSEID overwrites the header SEID of a session message in place.
func SetSEID(b []byte, seid uint64) {
	if len(b) >= 16 && b[0]&0x01 != 0 {
		binary.BigEndian.PutUint64(b[4:12], seid)
	}
}

// SetSeq overwrites the header sequence number in place.
func SetSeq(b []byte, seq uint32) {
	p := 4
	if len(b) >= 1 && b[0]&0x01 != 0 {
		p = 12
	}
	if len(b) < p+3 {
		return
	}
	b[p], b[p+1], b[p+2] = byte(seq>>16), byte(seq>>8), byte(seq)
}

// ReplaceIE returns a copy of message b with the IE at s replaced by ie (a
// whole IE, header included) and the header length fixed. Every other byte
// is kept: IEs the proxy does not know pass unchanged.
func ReplaceIE(b []byte, s Span, ie []byte) ([]byte, error) {
	if !s.Present() || s.Off < 8 || s.Off+s.Len > len(b) {
		return nil, fmt.Errorf("pfcp: replace IE at %d+%d in a %d-byte message", s.Off, s.Len, len(b))
	}
	n := len(b) - s.Len + len(ie)
	if n-4 > 0xffff {
		return nil, fmt.Errorf("pfcp: message of %d bytes after rewrite exceeds the length field", n)
	}
	out := make([]byte, 0, n)
	out = append(out, b[:s.Off]...)
	out = append(out, ie...)
	out = append(out, b[s.Off+s.Len:]...)
	binary.BigEndian.PutUint16(out[2:4], uint16(n-4))
	return out, nil
}

// FSEIDIE encodes an F-SEID IE (§8.2.37) with the given SEID and address.
func FSEIDIE(seid uint64, addr netip.Addr) []byte {
	addr = addr.Unmap()
	var v []byte
	if addr.Is4() {
		a := addr.As4()
		v = append([]byte{0x02, 0, 0, 0, 0, 0, 0, 0, 0}, a[:]...)
	} else {
		a := addr.As16()
		v = append([]byte{0x01, 0, 0, 0, 0, 0, 0, 0, 0}, a[:]...)
	}
	binary.BigEndian.PutUint64(v[1:9], seid)
	return rawIE(IEFSEID, v)
}

// NodeIDIE encodes a Node ID IE from its wire value.
func NodeIDIE(n NodeID) []byte { return rawIE(IENodeID, []byte(n)) }

func rawIE(t uint16, v []byte) []byte {
	out := make([]byte, 4+len(v))
	binary.BigEndian.PutUint16(out, t)
	binary.BigEndian.PutUint16(out[2:], uint16(len(v)))
	copy(out[4:], v)
	return out
}
