package l4

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/lab"
)

const fragPort = 9100

// serveUDPDigest answers every datagram on addr inside h with
// "<id> <length> <sha256>" of what the socket received (the reassembled
// datagram).
func serveUDPDigest(t *testing.T, h *lab.Host, addr, id string) {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("udp listen %s in %s: %v", addr, h.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			sum := sha256.Sum256(buf[:n])
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %d %s", id, n, hex.EncodeToString(sum[:]))), from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
}

// TestFragmentedUDPThroughAVIP: 4,000-byte UDP datagrams, which the client
// sends as three IP fragments over its 1,500-byte MTU, reach an endpoint
// through the VIP whole (the endpoint's digest of what it received matches
// what was sent), IPv4 and IPv6, with the client's source kept (default
// mode) and rewritten (fullnat). Every fragment but the first is balanced
// by its fragment ID alone (lib/frag.h).
func TestFragmentedUDPThroughAVIP(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	for k, be := range e.Lab.Backends {
		serveUDPDigest(t, be, "[::]:"+fmt.Sprint(fragPort), fmt.Sprintf("be%d", k+1))
	}
	for _, mc := range modeCases[:3] {
		if mc.mode == api.ModeOneArm {
			continue
		}
		for _, v6 := range []bool{false, true} {
			name := fmt.Sprintf("frag-%s-%s", mc.mode, family(v6))
			t.Run(name, func(t *testing.T) {
				vip := mc.vip(v6)
				svc := api.Service{Name: name, VIP: vip.String(), Port: fragPort, Protocol: api.ProtocolUDP,
					Mode: mc.mode, Select: api.SelectHash, Endpoints: endpoints(e, fragPort, v6)}
				if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
					t.Fatalf("apply: %v", err)
				}
				t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })
				for i := 0; i < 4; i++ {
					msg := make([]byte, 4000)
					for j := range msg {
						msg[j] = byte(i + j*13)
					}
					sum := sha256.Sum256(msg)
					got, err := askWhole(ctx, e, netip.AddrPortFrom(vip, fragPort), msg)
					if err != nil {
						t.Fatalf("datagram %d: %v", i, err)
					}
					f := strings.Fields(got)
					if len(f) != 3 || f[1] != "4000" || f[2] != hex.EncodeToString(sum[:]) {
						t.Fatalf("datagram %d: endpoint answered %q, want 4000 bytes with digest %x", i, got, sum[:6])
					}
				}
			})
		}
	}
}

// askWhole sends msg from a fresh client socket (a new flow) and returns the
// endpoint's answer, retrying while neighbours resolve.
func askWhole(ctx context.Context, e *Env, to netip.AddrPort, msg []byte) (string, error) {
	c, err := HostDialer(e.Lab.Client)(ctx, "udp", to.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 512)
	var last error
	for try := 0; try < 6; try++ {
		if _, err := c.Write(msg); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no answer from %s: %w", to, last)
}
