package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// The generator's frames reach a plain UDP socket behind the veth peer,
// which verifies every checksum (an skb built from an xdp_frame has none
// verified): receiving them all, from every flow's port in turn, proves the
// program writes valid ports and checksums. Without NAPI on the peer (GRO
// off, no XDP program) veth drops redirected frames, and nothing arrives:
// the lab must set it.
func TestXDPGenDeliversEveryFlowWithValidChecksums(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and BPF_PROG_TEST_RUN")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := lab.NewEmpty(t)
	a, err := l.AddHost(ctx, "sender")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddHost(ctx, "receiver")
	if err != nil {
		t.Fatal(err)
	}
	aIf, bIf, err := l.Connect(ctx, a, "eth0", b, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("10.99.0.2/24")
	if err := a.AddAddr(ctx, "eth0", src); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr(ctx, "eth0", dst); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "ethtool", "-K", "eth0", "rx", "off", "gro", "on"); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := b.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(dst.Addr().AsSlice()), Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name           string
		flows, packets int
		payload        int
	}{
		{"one flow", 1, 300, 0},
		{"many flows, several batches", 50, 230, 33},
		{"more flows than packets", 40, 7, 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := uint16(20000 + 1000*i)
			var res FloodResult
			err := a.Do(func() error {
				ifi, err := net.InterfaceByName("eth0")
				if err != nil {
					return err
				}
				g, err := NewXDPGen(XDPGenConfig{
					FloodConfig: FloodConfig{Src: src.Addr(), Dst: dst.Addr(), DstPort: 9999,
						SrcPortBase: base, Flows: c.flows, Payload: c.payload},
					SrcMAC: aIf.MAC, DstMAC: bIf.MAC, Ifindex: ifi.Index,
				})
				if err != nil {
					return err
				}
				res, err = g.Send(c.packets)
				return errors.Join(err, g.Close())
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != c.packets {
				t.Fatalf("sent %d, want %d", res.Sent, c.packets)
			}
			if res.ThreadCPU <= 0 {
				t.Errorf("thread CPU %v: sending cannot be free", res.ThreadCPU)
			}
			checkFloodReceived(t, conn, base, c.flows, c.packets, c.payload)
		})
	}
}
