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

// TargetOf sends from this end's first usable address of the family of the
// peer's primary (first) address, to that address, with the peer's tag.
func TestTargetOfPicksTheLocalAddressOfThePeersFamily(t *testing.T) {
	ap := netip.MustParseAddrPort
	v4mapped := netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("192.0.2.9").As16()), 5000)
	for _, c := range []struct {
		name          string
		locals, peers []netip.AddrPort
		want          Target
		wantErr       string
	}{
		{"first v4 local for a v4 peer", []netip.AddrPort{ap("[2001:db8::1]:38412"), ap("0.0.0.0:38412"), ap("10.0.0.1:38412"), ap("10.0.0.2:38412")},
			[]netip.AddrPort{ap("192.0.2.9:5000"), ap("[2001:db8::9]:5000")}, Target{ap("10.0.0.1:38412"), ap("192.0.2.9:5000"), 0xabcd}, ""},
		{"v6 peer", []netip.AddrPort{ap("10.0.0.1:38412"), ap("[::]:38412"), ap("[2001:db8::1]:38412")},
			[]netip.AddrPort{ap("[2001:db8::9]:5000")}, Target{ap("[2001:db8::1]:38412"), ap("[2001:db8::9]:5000"), 0xabcd}, ""},
		{"v4-mapped peer is v4", []netip.AddrPort{ap("10.0.0.1:38412")},
			[]netip.AddrPort{v4mapped}, Target{ap("10.0.0.1:38412"), ap("192.0.2.9:5000"), 0xabcd}, ""},
		{"no peer", []netip.AddrPort{ap("10.0.0.1:38412")}, nil, Target{}, "without peer addresses"},
		{"no local of the family", []netip.AddrPort{ap("[2001:db8::1]:38412"), ap("0.0.0.0:38412")},
			[]netip.AddrPort{ap("192.0.2.9:5000")}, Target{}, "no local address of the family"},
	} {
		got, err := TargetOf(c.locals, c.peers, 0xabcd)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: %v, %v; want an error saying %q", c.name, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if _, err := TargetOf([]netip.AddrPort{ap("10.0.0.1:38412")}, []netip.AddrPort{ap("192.0.2.9:5000")}, 0); err == nil {
		t.Error("a target without a tag was built")
	}
}
