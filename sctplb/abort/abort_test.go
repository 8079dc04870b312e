package abort

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"strings"
	"testing"
)

func TestPacketLayout(t *testing.T) {
	for _, reflected := range []bool{false, true} {
		b := Packet(38412, 40000, 0xdeadbeef, reflected)
		if len(b) != 16 {
			t.Fatalf("length %d, want 16", len(b))
		}
		if sp, dp := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]); sp != 38412 || dp != 40000 {
			t.Errorf("ports %d -> %d", sp, dp)
		}
		if v := binary.BigEndian.Uint32(b[4:]); v != 0xdeadbeef {
			t.Errorf("tag %#x", v)
		}
		if b[12] != 6 || binary.BigEndian.Uint16(b[14:]) != 4 {
			t.Errorf("chunk type %d length %d, want ABORT of 4 bytes", b[12], binary.BigEndian.Uint16(b[14:]))
		}
		if got := b[13]&1 == 1; got != reflected {
			t.Errorf("T bit %v, want %v", got, reflected)
		}
		sum := binary.LittleEndian.Uint32(b[8:])
		c := append([]byte(nil), b...)
		copy(c[8:12], []byte{0, 0, 0, 0})
		if want := crc32.Checksum(c, crc32.MakeTable(crc32.Castagnoli)); sum != want {
			t.Errorf("checksum %#x, want %#x", sum, want)
		}
	}
}

func TestSendRefusesIPv6(t *testing.T) {
	err := Send(netip.MustParseAddrPort("[fd00::1]:38412"), netip.MustParseAddrPort("[fd00::2]:1"), 1, false)
	if err == nil || !strings.Contains(err.Error(), "only IPv4") {
		t.Errorf("IPv6: %v", err)
	}
}
