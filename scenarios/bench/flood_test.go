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

// The receiver is a plain UDP socket with receive checksum offload off, so
// the kernel verifies every checksum and drops bad datagrams: receiving them
// all, from every flow's port, proves the generator builds valid packets.
func TestFloodDeliversEveryFlowWithValidChecksums(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and raw sockets")
	}
	cases := []struct {
		name           string
		flows, packets int
		batch          int
		payload        int
	}{
		{"one flow, batches", 1, 300, 64, 0},
		{"many flows, partial last batch", 50, 230, 16, 33},
		{"more flows than packets", 40, 7, 4, 1},
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
	if _, _, err := l.Connect(ctx, a, "eth0", b, "eth0"); err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("10.99.0.2/24")
	if err := a.AddAddr(ctx, "eth0", src); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr(ctx, "eth0", dst); err != nil {
		t.Fatal(err)
	}
	if err := b.DisableOffload(ctx, "eth0"); err != nil {
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

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := uint16(20000 + 1000*i)
			var res FloodResult
			err := a.Do(func() error {
				var err error
				res, err = Flood(FloodConfig{Src: src.Addr(), Dst: dst.Addr(), DstPort: 9999,
					SrcPortBase: base, Flows: c.flows, Packets: c.packets, Batch: c.batch, Payload: c.payload})
				return err
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

// checkFloodReceived reads the packets datagrams a generator sent from
// flows source ports counted up from base and checks what a generator
// promises: each of payload bytes (18 when payload is 0), from a port of the
// range, round robin over the flows (every flow packets/flows or one more).
func checkFloodReceived(t *testing.T, conn *net.UDPConn, base uint16, flows, packets, payload int) {
	t.Helper()
	perPort := map[int]int{}
	buf := make([]byte, 2048)
	want := payload
	if want == 0 {
		want = 18
	}
	for got := 0; got < packets; got++ {
		if err := conn.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("received %d of %d datagrams (%v)", got, packets, perPort)
			}
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("datagram of %d bytes, want %d", n, want)
		}
		perPort[from.Port]++
	}
	if wantFlows := min(flows, packets); len(perPort) != wantFlows {
		t.Errorf("datagrams came from %d source ports, want %d", len(perPort), wantFlows)
	}
	for p, n := range perPort {
		if p < int(base) || p >= int(base)+flows {
			t.Errorf("source port %d outside %d..%d", p, base, int(base)+flows-1)
		}
		if lo := packets / flows; n < lo || n > lo+1 {
			t.Errorf("port %d got %d datagrams, want %d or %d", p, n, lo, lo+1)
		}
	}
}
