package dataplane

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"
)

// A small, independent packet builder: the tests describe the packet they
// expect and compare bytes, so checksums here are always computed from
// scratch (never incrementally like the datapath).

type pkt struct {
	srcMAC, dstMAC net.HardwareAddr
	vlans          []uint16
	src, dst       netip.Addr
	proto          uint8
	sport, dport   uint16
	ttl            uint8
	tcpFlags       uint8
	seq            uint32
	sctpVtag       uint32
	sctpChunks     []byte
	icmpType       uint8
	icmpCode       uint8
	icmpRest       uint32 // id/seq or unused/mtu word
	payload        []byte // L4 payload (ICMP: body after the 8-byte header)
	udpZeroCsum    bool
	ipID           uint16
	ipDF           bool  // IPv4 don't-fragment (set by NAT64 translation)
	ip6DstOpts     bool  // IPv6: a Destination Options header (8 bytes) before L4
	tos            uint8 // IPv4 TOS, IPv6 traffic class
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	var s uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = csumAdd(s, a[:])
		s = csumAdd(s, b[:])
	} else {
		a, b := src.As16(), dst.As16()
		s = csumAdd(s, a[:])
		s = csumAdd(s, b[:])
	}
	return s + uint32(proto) + uint32(l4len)
}

// l4 builds the transport header and payload with a correct checksum.
func (p pkt) l4() []byte {
	var b []byte
	switch p.proto {
	case 6:
		b = make([]byte, 20+len(p.payload))
		binary.BigEndian.PutUint16(b[0:], p.sport)
		binary.BigEndian.PutUint16(b[2:], p.dport)
		binary.BigEndian.PutUint32(b[4:], p.seq)
		b[12] = 5 << 4
		b[13] = p.tcpFlags
		binary.BigEndian.PutUint16(b[14:], 65535)
		copy(b[20:], p.payload)
		binary.BigEndian.PutUint16(b[16:], csumFold(csumAdd(pseudoSum(p.src, p.dst, 6, len(b)), b)))
	case 17:
		b = make([]byte, 8+len(p.payload))
		binary.BigEndian.PutUint16(b[0:], p.sport)
		binary.BigEndian.PutUint16(b[2:], p.dport)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
		copy(b[8:], p.payload)
		if !p.udpZeroCsum {
			c := csumFold(csumAdd(pseudoSum(p.src, p.dst, 17, len(b)), b))
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(b[6:], c)
		}
	case 132:
		b = make([]byte, 12+len(p.sctpChunks))
		binary.BigEndian.PutUint16(b[0:], p.sport)
		binary.BigEndian.PutUint16(b[2:], p.dport)
		binary.BigEndian.PutUint32(b[4:], p.sctpVtag)
		copy(b[12:], p.sctpChunks)
		binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, crcTable))
	case 1, 58:
		b = make([]byte, 8+len(p.payload))
		b[0], b[1] = p.icmpType, p.icmpCode
		binary.BigEndian.PutUint32(b[4:], p.icmpRest)
		copy(b[8:], p.payload)
		var s uint32
		if p.proto == 58 {
			s = pseudoSum(p.src, p.dst, 58, len(b))
		}
		binary.BigEndian.PutUint16(b[2:], csumFold(csumAdd(s, b)))
	default:
		b = append([]byte(nil), p.payload...)
	}
	return b
}

// ip builds the IP datagram (no L2).
func (p pkt) ip() []byte {
	l4 := p.l4()
	ttl := p.ttl
	if ttl == 0 {
		ttl = 64
	}
	if p.src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		h[1] = p.tos
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[4:], p.ipID)
		if p.ipDF {
			h[6] = 0x40
		}
		h[8] = ttl
		h[9] = p.proto
		s, d := p.src.As4(), p.dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], csumFold(csumAdd(0, h)))
		return append(h, l4...)
	}
	h := make([]byte, 40, 48+len(l4))
	h[0] = 0x60 | p.tos>>4
	h[1] = p.tos << 4
	h[6] = p.proto
	h[7] = ttl
	s, d := p.src.As16(), p.dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	if p.ip6DstOpts {
		// Next header, length 0 (8 bytes), one PadN option of 4 bytes.
		h[6] = 60
		h = append(h, p.proto, 0, 1, 4, 0, 0, 0, 0)
	}
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)-40+len(l4)))
	return append(h, l4...)
}

func (p pkt) frame() []byte {
	f := make([]byte, 0, 64)
	f = append(f, p.dstMAC...)
	f = append(f, p.srcMAC...)
	for _, v := range p.vlans {
		f = binary.BigEndian.AppendUint16(f, 0x8100)
		f = binary.BigEndian.AppendUint16(f, v)
	}
	if p.src.Is4() {
		f = binary.BigEndian.AppendUint16(f, 0x0800)
	} else {
		f = binary.BigEndian.AppendUint16(f, 0x86dd)
	}
	return append(f, p.ip()...)
}

// SCTP chunks.
func sctpInit(tag uint32) []byte {
	c := make([]byte, 20)
	c[0] = 1
	binary.BigEndian.PutUint16(c[2:], 20)
	binary.BigEndian.PutUint32(c[4:], tag)
	binary.BigEndian.PutUint32(c[8:], 65536)
	binary.BigEndian.PutUint16(c[12:], 10)
	binary.BigEndian.PutUint16(c[14:], 10)
	binary.BigEndian.PutUint32(c[16:], 1)
	return c
}

func sctpInitAck(tag uint32) []byte {
	c := sctpInit(tag)
	c[0] = 2
	return c
}

func sctpSimple(typ uint8) []byte { return []byte{typ, 0, 0, 4} }

func sctpData(n int) []byte {
	l := 16 + n
	c := make([]byte, (l+3)&^3)
	c[0] = 0
	c[1] = 3
	binary.BigEndian.PutUint16(c[2:], uint16(l))
	binary.BigEndian.PutUint32(c[4:], 1)
	binary.BigEndian.PutUint32(c[12:], 60)
	for i := 16; i < l; i++ {
		c[i] = byte(i * 7)
	}
	return c
}

// openingPackets fills in the first packet of a flow, the endpoint's reply
// and the client's next packet for proto: SYN / SYN-ACK / ACK with data for
// TCP, datagrams for UDP, INIT / INIT-ACK / DATA with matching tags for SCTP.
func openingPackets(proto Proto, first, reply pkt) (pkt, pkt, pkt) {
	second := first
	switch proto {
	case ProtoTCP:
		first.tcpFlags = tcpSYN
		reply.tcpFlags = tcpSYN | tcpACK
		second.tcpFlags = tcpACK
		second.payload = []byte("GET / HTTP/1.0\r\n\r\n")
	case ProtoUDP:
		first.payload = []byte("hello")
		reply.payload = []byte("world!")
		second.payload = []byte("again")
	case ProtoSCTP:
		first.sctpChunks = sctpInit(0x11111111)
		reply.sctpVtag = 0x11111111
		reply.sctpChunks = sctpInitAck(0x22222222)
		second.sctpVtag = 0x22222222
		second.sctpChunks = sctpData(101)
	}
	return first, reply, second
}
