package l2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	ourMAC   = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x10}
	theirMAC = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x20}
	vip4     = netip.MustParseAddr("192.0.2.10")
	vip6     = netip.MustParseAddr("2001:db8::10")
	client4  = netip.MustParseAddr("192.0.2.1")
	client6  = netip.MustParseAddr("2001:db8::1")
)

// arpRequest is what a Linux host sends (its layout written out field by
// field, not with our builder).
func arpRequest(target netip.Addr) []byte {
	b := append(append([]byte(nil), broadcastMAC...), theirMAC...)
	b = append(b, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1)
	b = append(b, theirMAC...)
	b = append(b, client4.AsSlice()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	b = append(b, target.AsSlice()...)
	return append(b, make([]byte, 18)...) // Ethernet padding to 60 bytes
}

func nsFrame(src, target netip.Addr, withSLL bool) []byte {
	icmp := []byte{icmpNS, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(icmp, target.AsSlice()...)
	if withSLL {
		icmp = append(icmp, optSrcLL, 1)
		icmp = append(icmp, theirMAC...)
	}
	dst := SolicitedNode(target)
	binary.BigEndian.PutUint16(icmp[2:], icmpChecksum(src, dst, icmp))
	b := append(append([]byte(nil), 0x33, 0x33, 0xff, 0, 0, 0x10), theirMAC...)
	b = append(b, 0x86, 0xdd, 0x60, 0, 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 58, 255)
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	return append(b, icmp...)
}

func TestParseARP(t *testing.T) {
	q, err := ParseARP(arpRequest(vip4))
	if err != nil {
		t.Fatal(err)
	}
	if q.Target != vip4 || q.SenderIP != client4 || !bytes.Equal(q.SenderMAC, theirMAC) || q.Gratuitous {
		t.Fatalf("%+v", q)
	}
	r := ARPReply(q, vip4, ourMAC)
	want := append(append(append([]byte(nil), theirMAC...), ourMAC...), 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2)
	want = append(append(append(append(want, ourMAC...), vip4.AsSlice()...), theirMAC...), client4.AsSlice()...)
	if !bytes.Equal(r, want) {
		t.Fatalf("reply\n got %x\nwant %x", r, want)
	}
	if q, err := ParseARP(GratuitousARP(vip4, ourMAC)); err != nil || !q.Gratuitous || q.Target != vip4 {
		t.Fatalf("gratuitous ARP parsed as %+v, %v", q, err)
	}
	if _, err := ParseARP(r); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("reply taken as a question: %v", err)
	}
	bad := arpRequest(vip4)
	bad[ethLen+5] = 16
	if _, err := ParseARP(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("protocol length 16: %v", err)
	}
}

func TestParseNS(t *testing.T) {
	q, err := ParseNS(nsFrame(client6, vip6, true))
	if err != nil {
		t.Fatal(err)
	}
	if q.Target != vip6 || q.SenderIP != client6 || !bytes.Equal(q.SenderMAC, theirMAC) {
		t.Fatalf("%+v", q)
	}
	dad, err := ParseNS(nsFrame(netip.IPv6Unspecified(), vip6, false))
	if err != nil || !dad.SenderIP.IsUnspecified() {
		t.Fatalf("DAD NS: %+v %v", dad, err)
	}
	if _, err := ParseNS(nsFrame(netip.IPv6Unspecified(), vip6, true)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("SLL option with unspecified source accepted: %v", err)
	}
	hop := nsFrame(client6, vip6, true)
	hop[ethLen+7] = 64 // forwarded: not from the link
	if _, err := ParseNS(hop); !errors.Is(err, ErrMalformed) {
		t.Fatalf("hop limit 64 accepted: %v", err)
	}
	cs := nsFrame(client6, vip6, true)
	cs[len(cs)-1] ^= 1
	if _, err := ParseNS(cs); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad checksum accepted: %v", err)
	}
	na := NeighborAdvert(&q, vip6, ourMAC)
	if _, err := ParseNS(na); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("NA taken as a question: %v", err)
	}
	// The NA's checksum verifies and the flags are solicited + override.
	icmp := na[ethLen+ipv6Len:]
	if icmpChecksum(vip6, client6, icmp) != 0 || icmp[4] != naSolicited|naOverride {
		t.Fatalf("NA checksum or flags wrong: %x", icmp)
	}
	un := NeighborAdvert(nil, vip6, ourMAC)
	if !bytes.Equal(un[:6], allNodesMAC) || un[ethLen+ipv6Len+4] != naOverride {
		t.Fatalf("unsolicited NA: %x", un)
	}
}

func TestSolicitedNode(t *testing.T) {
	if got := SolicitedNode(netip.MustParseAddr("2001:db8::1:2345:6789")); got != netip.MustParseAddr("ff02::1:ff45:6789") {
		t.Fatal(got)
	}
}

// TestFramesDecodeInTshark checks the frames we send against an
// independent decoder: tshark must read the same fields and find the
// ICMPv6 checksums good.
func TestFramesDecodeInTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tshark not installed (hack/install-deps.sh installs it)")
		}
		t.Skip("tshark not installed")
	}
	q6, _ := ParseNS(nsFrame(client6, vip6, true))
	q4, _ := ParseARP(arpRequest(vip4))
	frames := [][]byte{ARPReply(q4, vip4, ourMAC), GratuitousARP(vip4, ourMAC), NeighborAdvert(&q6, vip6, ourMAC), NeighborAdvert(nil, vip6, ourMAC)}
	file := filepath.Join(t.TempDir(), "frames.pcap")
	if err := os.WriteFile(file, pcap(frames), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|",
		"-e", "eth.src", "-e", "arp.opcode", "-e", "arp.src.proto_ipv4", "-e", "arp.dst.proto_ipv4",
		"-e", "icmpv6.type", "-e", "icmpv6.nd.na.target_address", "-e", "icmpv6.nd.na.flag.s", "-e", "icmpv6.nd.na.flag.o",
		"-e", "icmpv6.checksum.status", "-e", "icmpv6.opt.linkaddr", "-e", "ipv6.hlim").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		"02:77:00:00:00:10|2|192.0.2.10|192.0.2.1|||||||",
		"02:77:00:00:00:10|1|192.0.2.10|192.0.2.10|||||||",
		"02:77:00:00:00:10||||136|2001:db8::10|1|1|1|02:77:00:00:00:10|255",
		"02:77:00:00:00:10||||136|2001:db8::10|0|1|1|02:77:00:00:00:10|255",
	}
	if len(got) != len(want) {
		t.Fatalf("tshark read %d frames:\n%s", len(got), out)
	}
	for i := range want {
		// tshark versions print booleans as 1/0 or True/False.
		g := strings.NewReplacer("True", "1", "False", "0").Replace(got[i])
		if g != want[i] {
			t.Errorf("frame %d:\n got %s\nwant %s", i, g, want[i])
		}
	}
}

func pcap(frames [][]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 1) // Ethernet
	for i, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// FuzzParse: any frame either fails to parse or yields a question whose
// answer builds without panicking and parses back as an answer, not a
// question.
func FuzzParse(f *testing.F) {
	f.Add(arpRequest(vip4))
	f.Add(nsFrame(client6, vip6, true))
	f.Add(nsFrame(netip.IPv6Unspecified(), vip6, false))
	f.Add(GratuitousARP(vip4, ourMAC))
	f.Add(NeighborAdvert(nil, vip6, ourMAC))
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := ParseARP(b); err == nil {
			if !q.Target.Is4() || len(q.SenderMAC) != 6 {
				t.Fatalf("ARP question %+v", q)
			}
			if _, err := ParseARP(ARPReply(q, q.Target, ourMAC)); !errors.Is(err, ErrNotOurs) {
				t.Fatalf("our reply parses as a question: %v", err)
			}
		}
		if q, err := ParseNS(b); err == nil {
			if !q.Target.Is6() || q.Target.IsMulticast() || len(q.SenderMAC) != 6 {
				t.Fatalf("NS question %+v", q)
			}
			na := NeighborAdvert(&q, q.Target, ourMAC)
			if _, err := ParseNS(na); !errors.Is(err, ErrNotOurs) {
				t.Fatalf("our NA parses as a question: %v", err)
			}
		}
	})
}
