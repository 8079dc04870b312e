package lab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends one ICMP echo from the host to dst and waits for the reply
// until ctx ends (or 2 s, whichever is first). src, if valid, is the source
// address. It needs no ping binary: the raw socket is opened inside the
// namespace and used from any thread afterwards.
func (h *Host) Ping(ctx context.Context, dst, src netip.Addr) error {
	if !dst.IsValid() {
		return errors.New("lab: ping: invalid destination")
	}
	if src.IsValid() && src.Is4() != dst.Is4() {
		return fmt.Errorf("lab: ping %s from %s: address families differ", dst, src)
	}
	network, proto := "ip4:icmp", 1
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if dst.Is6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	laddr := ""
	if src.IsValid() {
		laddr = src.String()
	}
	var conn *icmp.PacketConn
	if err := h.Do(func() error {
		var err error
		conn, err = icmp.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return fmt.Errorf("lab: %s: ping socket: %w", h.Name, err)
	}
	defer conn.Close()

	id, seq := int(rand.Uint32()&0xffff), 1
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("telcolb-lab")}}
	wb, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("lab: ping marshal: %w", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("lab: ping deadline: %w", err)
	}
	if _, err := conn.WriteTo(wb, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}); err != nil {
		return fmt.Errorf("lab: %s: ping %s: %w", h.Name, dst, err)
	}
	rb := make([]byte, 1500)
	for {
		n, peer, err := conn.ReadFrom(rb)
		if err != nil {
			return fmt.Errorf("lab: %s: ping %s: no reply: %w", h.Name, dst, err)
		}
		rm, err := icmp.ParseMessage(proto, rb[:n])
		if err != nil {
			continue // not ours to judge: keep waiting for the reply
		}
		echo, ok := rm.Body.(*icmp.Echo)
		if !ok || echo.ID != id || echo.Seq != seq {
			continue
		}
		if rm.Type != ipv4.ICMPTypeEchoReply && rm.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		if pa, ok := peer.(*net.IPAddr); ok {
			if got, _ := netip.AddrFromSlice(pa.IP); got.Unmap() != dst.Unmap() {
				return fmt.Errorf("lab: %s: ping %s answered by %s", h.Name, dst, got)
			}
		}
		return nil
	}
}
