// Package abort builds and sends SCTP ABORT packets from a raw IP socket,
// for associations this process's stack does not hold: those a failed HA
// peer's N2 proxy had, whose verification tags were replicated. An ABORT
// is accepted by its receiver only with the exact tag (RFC 9260 8.5.1): the
// receiver's own tag with the T bit clear, or the tag it puts in its
// packets (the dead end's) with the T bit set; any other is discarded, so a
// stale ABORT cannot end another association, only the one it names.
package abort

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"syscall"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Target names one association for an ABORT sent from another host: the
// address and port this end used (the packet's source: the VIP and port
// the peer connected to), one of the peer's addresses and its port (the
// destination), and the verification tag the peer expects in every packet
// it receives, the one it chose in its INIT or INIT ACK (sent with the T
// bit clear, RFC 9260 8.5.1).
type Target struct {
	Src, Dst netip.AddrPort
	Tag      uint32
}

// Valid says whether t can name an association: both ends set, of one
// address family, and a tag (0 is no tag an association uses: RFC 9260
// 3.3.2 forbids it in INIT and INIT ACK).
func (t Target) Valid() bool {
	return t.Src.IsValid() && t.Dst.IsValid() && t.Src.Port() != 0 && t.Dst.Port() != 0 &&
		t.Src.Addr().Is4() == t.Dst.Addr().Is4() && t.Tag != 0
}

// TargetOf is the target of an association with these addresses: from
// this end's first address of the family of the peer's first address (the
// peer's primary path; a wildcard address is none to send from), to that
// address, with the peer's tag. Both transports build their targets here.
func TargetOf(locals, peers []netip.AddrPort, peerTag uint32) (Target, error) {
	if len(peers) == 0 {
		return Target{}, fmt.Errorf("abort target: association without peer addresses")
	}
	dst := netip.AddrPortFrom(peers[0].Addr().Unmap(), peers[0].Port())
	for _, l := range locals {
		la := l.Addr().Unmap()
		if la.Is4() != dst.Addr().Is4() || la.IsUnspecified() {
			continue
		}
		t := Target{Src: netip.AddrPortFrom(la, l.Port()), Dst: dst, Tag: peerTag}
		if !t.Valid() {
			return Target{}, fmt.Errorf("incomplete abort target %v", t)
		}
		return t, nil
	}
	return Target{}, fmt.Errorf("abort target: no local address of the family of %v among %v", dst, locals)
}

func (t Target) String() string {
	return fmt.Sprintf("%v->%v tag %#08x", t.Src, t.Dst, t.Tag)
}

// Send sends t's ABORT, T bit clear.
func (t Target) Send() error { return Send(t.Src, t.Dst, t.Tag, false) }

// Packet is an SCTP packet of one ABORT chunk without error causes
// (RFC 9260 3.3.7): common header with the ports, the verification tag and
// the CRC32c checksum, chunk type 6, the T bit when reflected.
func Packet(srcPort, dstPort uint16, vtag uint32, reflected bool) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	binary.BigEndian.PutUint32(b[4:], vtag)
	b[12] = 6 // ABORT
	if reflected {
		b[13] = 1 // T bit
	}
	binary.BigEndian.PutUint16(b[14:], 4)
	// The checksum goes in as the stacks compute it (little endian of
	// the CRC32c over the packet with a zero checksum field).
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
	return b
}

// Send sends an ABORT from src to dst (IPv4 only: the source need not be
// an address of this host, e.g. a failed peer's, so the IP header is
// built here, IP_HDRINCL). It runs in the calling thread's network
// namespace.
func Send(src, dst netip.AddrPort, vtag uint32, reflected bool) error {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return fmt.Errorf("abort %v -> %v: only IPv4 is supported", src, dst)
	}
	sctp := Packet(src.Port(), dst.Port(), vtag, reflected)
	pkt := make([]byte, 20+len(sctp))
	pkt[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[6] = 0x40 // don't fragment
	pkt[8] = 64   // TTL
	pkt[9] = syscall.IPPROTO_SCTP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:], s4[:])
	copy(pkt[16:], d4[:])
	// The kernel fills the ID and the header checksum (raw(7)).
	copy(pkt[20:], sctp)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("abort: raw socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: d4}); err != nil {
		return fmt.Errorf("abort %v -> %v: %w", src, dst, err)
	}
	return nil
}
