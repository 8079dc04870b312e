package l2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseClaim(t *testing.T) {
	q4, _ := ParseARP(arpRequest(vip4))
	q6, _ := ParseNS(nsFrame(client6, vip6, true))
	badSum := NeighborAdvert(nil, vip6, ourMAC)
	badSum[len(badSum)-1] ^= 1
	hop := NeighborAdvert(nil, vip6, ourMAC)
	hop[ethLen+7] = 254
	noTLL := NeighborAdvert(nil, vip6, theirMAC)
	noTLL = noTLL[:len(noTLL)-8] // drop the target link-layer option
	noTLL[ethLen+5] -= 8         // payload length
	noTLL[ethLen+ipv6Len+2], noTLL[ethLen+ipv6Len+3] = 0, 0
	sum := icmpChecksum(vip6, allNodes, noTLL[ethLen+ipv6Len:])
	noTLL[ethLen+ipv6Len+2], noTLL[ethLen+ipv6Len+3] = byte(sum>>8), byte(sum)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Claim
		err   error
	}{
		{"ARP reply", ARPReply(q4, vip4, ourMAC), Claim{vip4, ourMAC, "arp-reply"}, nil},
		{"gratuitous ARP", GratuitousARP(vip4, ourMAC), Claim{vip4, ourMAC, "arp-request"}, nil},
		{"ARP request claims its sender", arpRequest(vip4), Claim{client4, theirMAC, "arp-request"}, nil},
		{"solicited NA", NeighborAdvert(&q6, vip6, ourMAC), Claim{vip6, ourMAC, "na"}, nil},
		{"unsolicited NA", NeighborAdvert(nil, vip6, ourMAC), Claim{vip6, ourMAC, "na"}, nil},
		{"NA without option: Ethernet source", noTLL, Claim{vip6, theirMAC, "na"}, nil},
		{"ARP probe", ARPProbe(vip4, theirMAC), Claim{}, ErrNotOurs},
		{"NS", nsFrame(client6, vip6, true), Claim{}, ErrNotOurs},
		{"NS probe", NSProbe(vip6, theirMAC), Claim{}, ErrNotOurs},
		{"NA checksum", badSum, Claim{}, ErrMalformed},
		{"NA hop limit", hop, Claim{}, ErrMalformed},
		{"short ARP", GratuitousARP(vip4, ourMAC)[:30], Claim{}, ErrMalformed},
		{"short", []byte{1, 2, 3}, Claim{}, ErrMalformed},
	} {
		c, err := ParseClaim(tc.frame)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || c.Addr != tc.want.Addr || !bytes.Equal(c.MAC, tc.want.MAC) || c.Kind != tc.want.Kind {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, c, err, tc.want)
		}
	}
}

// TestProbesAreAnswered: the owner's responder takes our probes for
// questions and its answers are claims that reach the prober.
func TestProbesAreAnswered(t *testing.T) {
	q4, err := ParseARP(ARPProbe(vip4, theirMAC))
	if err != nil || q4.Target != vip4 || q4.Gratuitous || !bytes.Equal(q4.SenderMAC, theirMAC) {
		t.Fatalf("ARP probe read as %+v, %v", q4, err)
	}
	r4 := ARPReply(q4, vip4, ourMAC)
	if !bytes.Equal(r4[:6], theirMAC) {
		t.Fatalf("reply to the probe goes to %x, want the prober", r4[:6])
	}
	if c, err := ParseClaim(r4); err != nil || c.Addr != vip4 || !bytes.Equal(c.MAC, ourMAC) {
		t.Fatalf("reply claims %+v, %v", c, err)
	}
	q6, err := ParseNS(NSProbe(vip6, theirMAC))
	if err != nil || q6.Target != vip6 || !q6.SenderIP.IsUnspecified() {
		t.Fatalf("NS probe read as %+v, %v", q6, err)
	}
	na := NeighborAdvert(&q6, vip6, ourMAC)
	if !bytes.Equal(na[:6], allNodesMAC) {
		t.Fatalf("answer to the NS probe goes to %x, want all nodes", na[:6])
	}
	if c, err := ParseClaim(na); err != nil || c.Addr != vip6 || !bytes.Equal(c.MAC, ourMAC) {
		t.Fatalf("NA claims %+v, %v", c, err)
	}
}

// TestProbesDecodeInTshark: an independent decoder reads our probes as an
// ARP probe (sender 0.0.0.0) and a DAD Neighbor Solicitation with a good
// checksum.
func TestProbesDecodeInTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tshark not installed (hack/install-deps.sh installs it)")
		}
		t.Skip("tshark not installed")
	}
	file := filepath.Join(t.TempDir(), "probes.pcap")
	if err := os.WriteFile(file, pcap([][]byte{ARPProbe(vip4, ourMAC), NSProbe(vip6, ourMAC)}), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|",
		"-e", "eth.dst", "-e", "arp.opcode", "-e", "arp.src.proto_ipv4", "-e", "arp.dst.proto_ipv4",
		"-e", "ipv6.src", "-e", "ipv6.dst", "-e", "icmpv6.type", "-e", "icmpv6.nd.ns.target_address",
		"-e", "icmpv6.checksum.status", "-e", "ipv6.hlim").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		"ff:ff:ff:ff:ff:ff|1|0.0.0.0|192.0.2.10||||||",
		"33:33:ff:00:00:10||||::|ff02::1:ff00:10|135|2001:db8::10|1|255",
	}
	if len(got) != len(want) {
		t.Fatalf("tshark read %d frames:\n%s", len(got), out)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// FuzzParseClaim: any frame either fails to parse or yields a claim of a
// unicast address at a 6-byte MAC, which our own announcement of the same
// binding parses back to.
func FuzzParseClaim(f *testing.F) {
	q4, _ := ParseARP(arpRequest(vip4))
	f.Add(ARPReply(q4, vip4, ourMAC))
	f.Add(GratuitousARP(vip4, ourMAC))
	f.Add(ARPProbe(vip4, ourMAC))
	f.Add(NeighborAdvert(nil, vip6, ourMAC))
	f.Add(NSProbe(vip6, ourMAC))
	f.Add(nsFrame(client6, vip6, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClaim(b)
		if err != nil {
			if !errors.Is(err, ErrNotOurs) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(c.MAC) != 6 || c.Addr.IsMulticast() || c.Addr.IsUnspecified() || !c.Addr.IsValid() {
			t.Fatalf("claim %+v", c)
		}
		var again []byte
		if c.Addr.Is4() {
			again = GratuitousARP(c.Addr, c.MAC)
		} else {
			again = NeighborAdvert(nil, c.Addr, c.MAC)
		}
		c2, err := ParseClaim(again)
		if err != nil || c2.Addr != c.Addr || !bytes.Equal(c2.MAC, c.MAC) {
			t.Fatalf("claim %+v announced again parses as %+v, %v", c, c2, err)
		}
	})
}
