package l2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Ethernet, ARP (RFC 826) and NDP (RFC 4861) frames, parsed and built by
// hand: only the two questions we answer (ARP request, Neighbor
// Solicitation) and the three frames we send (ARP reply, gratuitous ARP,
// Neighbor Advertisement).

const (
	ethLen      = 14
	etherARP    = 0x0806
	etherIPv6   = 0x86dd
	arpLen      = 28
	ipv6Len     = 40
	protoICMPv6 = 58
	icmpNS      = 135
	icmpNA      = 136
	nsLen       = 24 // type, code, checksum, reserved, target
	optSrcLL    = 1
	optTgtLL    = 2
	naRouter    = 0x80
	naSolicited = 0x40
	naOverride  = 0x20
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC  = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	allNodes     = netip.MustParseAddr("ff02::1")
)

// Errors returned by the parsers.
var (
	ErrNotOurs   = errors.New("l2: not an ARP request or Neighbor Solicitation")
	ErrMalformed = errors.New("l2: malformed frame")
)

// Question is who asks for which address.
type Question struct {
	// Target is the address asked for.
	Target netip.Addr
	// SenderMAC is the asker's link-layer address (ARP sha, the NS source
	// link-layer option or, without one, the Ethernet source).
	SenderMAC net.HardwareAddr
	// SenderIP is the asker's address; for IPv6 the unspecified address
	// means duplicate address detection (the asker wants the address).
	SenderIP netip.Addr
	// Gratuitous: an ARP request announcing the sender's own address
	// (sender IP = target IP); nobody answers it.
	Gratuitous bool
}

// ParseARP parses an Ethernet frame carrying an ARP request for an IPv4
// address on Ethernet.
func ParseARP(f []byte) (Question, error) {
	var q Question
	if len(f) < ethLen+arpLen {
		return q, fmt.Errorf("%w: %d bytes for ARP", ErrMalformed, len(f))
	}
	if binary.BigEndian.Uint16(f[12:]) != etherARP {
		return q, ErrNotOurs
	}
	a := f[ethLen:]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != 0x0800 || a[4] != 6 || a[5] != 4 {
		return q, fmt.Errorf("%w: ARP for hardware %d protocol %#x lengths %d/%d", ErrMalformed,
			binary.BigEndian.Uint16(a[0:]), binary.BigEndian.Uint16(a[2:]), a[4], a[5])
	}
	if binary.BigEndian.Uint16(a[6:]) != 1 {
		return q, ErrNotOurs // replies are not questions
	}
	q.SenderMAC = net.HardwareAddr(append([]byte(nil), a[8:14]...))
	q.SenderIP = netip.AddrFrom4([4]byte(a[14:18]))
	q.Target = netip.AddrFrom4([4]byte(a[24:28]))
	q.Gratuitous = q.SenderIP == q.Target
	return q, nil
}

// ParseNS parses an Ethernet frame carrying an IPv6 Neighbor Solicitation,
// with the validity checks of RFC 4861 §7.1.1 that do not need the socket
// (hop limit 255, code 0, length, target not multicast, no source
// link-layer option with an unspecified source). The checksum is verified.
func ParseNS(f []byte) (Question, error) {
	var q Question
	if len(f) < ethLen {
		return q, fmt.Errorf("%w: %d bytes", ErrMalformed, len(f))
	}
	if binary.BigEndian.Uint16(f[12:]) != etherIPv6 {
		return q, ErrNotOurs
	}
	ip := f[ethLen:]
	if len(ip) < ipv6Len || ip[0]>>4 != 6 {
		return q, fmt.Errorf("%w: IPv6 header", ErrMalformed)
	}
	if ip[6] != protoICMPv6 {
		return q, ErrNotOurs // NS never carries extension headers in practice
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen > len(ip)-ipv6Len {
		return q, fmt.Errorf("%w: payload length %d, %d bytes present", ErrMalformed, plen, len(ip)-ipv6Len)
	}
	icmp := ip[ipv6Len : ipv6Len+plen]
	if len(icmp) < 1 || icmp[0] != icmpNS {
		return q, ErrNotOurs
	}
	if ip[7] != 255 || len(icmp) < nsLen || icmp[1] != 0 {
		return q, fmt.Errorf("%w: NS hop limit %d, length %d", ErrMalformed, ip[7], len(icmp))
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	if icmpChecksum(src, dst, icmp) != 0 {
		return q, fmt.Errorf("%w: NS checksum", ErrMalformed)
	}
	q.SenderIP = src
	q.Target = netip.AddrFrom16([16]byte(icmp[8:24]))
	if q.Target.IsMulticast() {
		return q, fmt.Errorf("%w: NS for multicast %v", ErrMalformed, q.Target)
	}
	q.SenderMAC = net.HardwareAddr(append([]byte(nil), f[6:12]...))
	for opts := icmp[nsLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return q, fmt.Errorf("%w: NS option", ErrMalformed)
		}
		n := int(opts[1]) * 8
		if opts[0] == optSrcLL {
			if src.IsUnspecified() {
				return q, fmt.Errorf("%w: source link-layer option with unspecified source", ErrMalformed)
			}
			if n >= 8 {
				q.SenderMAC = net.HardwareAddr(append([]byte(nil), opts[2:8]...))
			}
		}
		opts = opts[n:]
	}
	return q, nil
}

func ethHeader(b []byte, dst, src net.HardwareAddr, typ uint16) []byte {
	b = append(b, dst...)
	b = append(b, src...)
	return binary.BigEndian.AppendUint16(b, typ)
}

func arpFrame(op uint16, ethDst, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := ethHeader(make([]byte, 0, ethLen+arpLen), ethDst, sha, etherARP)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	s4 := spa.As4()
	b = append(b, s4[:]...)
	b = append(b, tha...)
	t4 := tpa.As4()
	return append(b, t4[:]...)
}

// ARPReply answers q for vip with mac.
func ARPReply(q Question, vip netip.Addr, mac net.HardwareAddr) []byte {
	return arpFrame(2, q.SenderMAC, mac, vip, q.SenderMAC, q.SenderIP)
}

// GratuitousARP announces vip at mac: a broadcast ARP request whose sender
// and target addresses are both vip (RFC 5227 §3 "ARP Announcement"),
// which Linux, routers and switches take to update an existing entry.
func GratuitousARP(vip netip.Addr, mac net.HardwareAddr) []byte {
	return arpFrame(1, broadcastMAC, mac, vip, make(net.HardwareAddr, 6), vip)
}

// NeighborAdvert builds a Neighbor Advertisement for vip at mac with the
// override flag. Solicited: to the asker (q.SenderIP, q.SenderMAC), S set;
// unsolicited (q nil) or answering DAD: to all nodes, S clear.
func NeighborAdvert(q *Question, vip netip.Addr, mac net.HardwareAddr) []byte {
	dst, ethDst, flags := allNodes, allNodesMAC, byte(naOverride)
	if q != nil && !q.SenderIP.IsUnspecified() {
		dst, ethDst, flags = q.SenderIP, q.SenderMAC, naOverride|naSolicited
	}
	icmp := make([]byte, 32)
	icmp[0] = icmpNA
	icmp[4] = flags
	t := vip.As16()
	copy(icmp[8:24], t[:])
	icmp[24], icmp[25] = optTgtLL, 1
	copy(icmp[26:32], mac)
	cs := icmpChecksum(vip, dst, icmp)
	binary.BigEndian.PutUint16(icmp[2:], cs)

	b := ethHeader(make([]byte, 0, ethLen+ipv6Len+len(icmp)), ethDst, mac, etherIPv6)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, protoICMPv6, 255)
	s16, d16 := vip.As16(), dst.As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	return append(b, icmp...)
}

// icmpChecksum is the ICMPv6 checksum over the pseudo-header and msg; over
// a message that carries its checksum it is 0 when that checksum is right.
func icmpChecksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(msg)) + protoICMPv6
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// SolicitedNode returns the solicited-node multicast address of a (RFC 4291 §2.7.1).
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}
