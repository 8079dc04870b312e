package l2

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Claims and probes, for split-brain fencing (ha/member fence.go): nodes
// that cannot hear each other's heartbeats still share the segment, where a
// frame saying "this address is at this MAC" from a MAC not ours, for a VIP
// we answer for, is a conflict. The fenced loser probes for the VIP (an
// ARP probe, a DAD-style Neighbor Solicitation) so the winner's answers
// keep the fence up for as long as the winner serves it.

// Claim is a frame that binds Addr to MAC: an ARP request or reply whose
// sender protocol address is Addr (gratuitous ones included), or a
// Neighbor Advertisement for target Addr.
type Claim struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
	// Kind: "arp-reply", "arp-request" (gratuitous when it asks for its
	// own address), "na".
	Kind string
}

// ParseClaim parses an Ethernet frame that claims an address. ARP probes
// (sender address 0.0.0.0) and frames that claim nothing return ErrNotOurs;
// damaged ARP and NA frames return ErrMalformed.
func ParseClaim(f []byte) (Claim, error) {
	var c Claim
	if len(f) < ethLen {
		return c, fmt.Errorf("%w: %d bytes", ErrMalformed, len(f))
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case etherARP:
		return parseARPClaim(f)
	case etherIPv6:
		return parseNAClaim(f)
	}
	return c, ErrNotOurs
}

func parseARPClaim(f []byte) (Claim, error) {
	var c Claim
	if len(f) < ethLen+arpLen {
		return c, fmt.Errorf("%w: %d bytes for ARP", ErrMalformed, len(f))
	}
	a := f[ethLen:]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != 0x0800 || a[4] != 6 || a[5] != 4 {
		return c, fmt.Errorf("%w: ARP for hardware %d protocol %#x lengths %d/%d", ErrMalformed,
			binary.BigEndian.Uint16(a[0:]), binary.BigEndian.Uint16(a[2:]), a[4], a[5])
	}
	switch binary.BigEndian.Uint16(a[6:]) {
	case 1:
		c.Kind = "arp-request"
	case 2:
		c.Kind = "arp-reply"
	default:
		return c, fmt.Errorf("%w: ARP opcode %d", ErrMalformed, binary.BigEndian.Uint16(a[6:]))
	}
	c.Addr = netip.AddrFrom4([4]byte(a[14:18]))
	if c.Addr.IsUnspecified() {
		return c, ErrNotOurs // a probe asks, it claims nothing (RFC 5227 §2.1.1)
	}
	if c.Addr.IsMulticast() {
		return c, fmt.Errorf("%w: ARP from multicast %v", ErrMalformed, c.Addr)
	}
	c.MAC = net.HardwareAddr(append([]byte(nil), a[8:14]...))
	return c, nil
}

func parseNAClaim(f []byte) (Claim, error) {
	var c Claim
	ip := f[ethLen:]
	if len(ip) < ipv6Len || ip[0]>>4 != 6 {
		return c, fmt.Errorf("%w: IPv6 header", ErrMalformed)
	}
	if ip[6] != protoICMPv6 {
		return c, ErrNotOurs
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen > len(ip)-ipv6Len {
		return c, fmt.Errorf("%w: payload length %d, %d bytes present", ErrMalformed, plen, len(ip)-ipv6Len)
	}
	icmp := ip[ipv6Len : ipv6Len+plen]
	if len(icmp) < 1 || icmp[0] != icmpNA {
		return c, ErrNotOurs
	}
	// RFC 4861 §7.1.2 validity checks.
	if ip[7] != 255 || len(icmp) < nsLen || icmp[1] != 0 {
		return c, fmt.Errorf("%w: NA hop limit %d, length %d", ErrMalformed, ip[7], len(icmp))
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	if icmpChecksum(src, dst, icmp) != 0 {
		return c, fmt.Errorf("%w: NA checksum", ErrMalformed)
	}
	c.Addr = netip.AddrFrom16([16]byte(icmp[8:24]))
	if c.Addr.IsMulticast() || c.Addr.IsUnspecified() {
		return c, fmt.Errorf("%w: NA for %v", ErrMalformed, c.Addr)
	}
	c.Kind = "na"
	c.MAC = net.HardwareAddr(append([]byte(nil), f[6:12]...))
	for opts := icmp[nsLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return c, fmt.Errorf("%w: NA option", ErrMalformed)
		}
		n := int(opts[1]) * 8
		if opts[0] == optTgtLL {
			c.MAC = net.HardwareAddr(append([]byte(nil), opts[2:8]...))
		}
		opts = opts[n:]
	}
	return c, nil
}

// ARPProbe asks who has vip without claiming any address (sender protocol
// address 0.0.0.0, RFC 5227 §2.1.1): caches are not updated by it, and the
// owner's reply comes back to mac.
func ARPProbe(vip netip.Addr, mac net.HardwareAddr) []byte {
	return arpFrame(1, broadcastMAC, mac, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), vip)
}

// NSProbe is a Neighbor Solicitation for vip from the unspecified address,
// as duplicate address detection sends (RFC 4862 §5.4.2), to vip's
// solicited-node group: the owner answers to all nodes, which we are.
func NSProbe(vip netip.Addr, mac net.HardwareAddr) []byte {
	dst := SolicitedNode(vip)
	d16 := dst.As16()
	icmp := make([]byte, nsLen)
	icmp[0] = icmpNS
	t := vip.As16()
	copy(icmp[8:24], t[:])
	binary.BigEndian.PutUint16(icmp[2:], icmpChecksum(netip.IPv6Unspecified(), dst, icmp))
	ethDst := net.HardwareAddr{0x33, 0x33, d16[12], d16[13], d16[14], d16[15]}
	b := ethHeader(make([]byte, 0, ethLen+ipv6Len+len(icmp)), ethDst, mac, etherIPv6)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, protoICMPv6, 255)
	s16 := netip.IPv6Unspecified().As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	return append(b, icmp...)
}
