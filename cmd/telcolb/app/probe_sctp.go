package app

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
)

// The SCTP probe speaks just enough SCTP over a raw IP socket (the node
// may have no kernel SCTP): INIT, expect INIT-ACK from the endpoint, then
// ABORT so the endpoint frees the half-open state at once. No association
// is ever established; the endpoint's stack only answers if something
// listens on the port.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	sctpChunkInit    = 1
	sctpChunkInitAck = 2
	sctpChunkAbort   = 6
	sctpHeaderLen    = 12
)

// sctpPacket builds a packet with one chunk and a correct CRC32c.
func sctpPacket(sport, dport uint16, vtag uint32, chunk []byte) []byte {
	b := make([]byte, sctpHeaderLen, sctpHeaderLen+len(chunk))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], vtag)
	b = append(b, chunk...)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
	return b
}

// sctpInitChunk is an INIT with one stream each way and no parameters: the
// endpoint answers with its addresses, which the probe ignores.
func sctpInitChunk(tag, tsn uint32) []byte {
	c := make([]byte, 20)
	c[0] = sctpChunkInit
	binary.BigEndian.PutUint16(c[2:], 20)
	binary.BigEndian.PutUint32(c[4:], tag)
	binary.BigEndian.PutUint32(c[8:], 65536) // a_rwnd
	binary.BigEndian.PutUint16(c[12:], 1)    // outbound streams
	binary.BigEndian.PutUint16(c[14:], 1)    // inbound streams
	binary.BigEndian.PutUint32(c[16:], tsn)
	return c
}

// sctpReply is what the probe needs from an answer.
type sctpReply struct {
	sport, dport uint16
	vtag         uint32
	chunk        uint8
	initTag      uint32 // INIT-ACK only
}

// parseSCTPReply decodes the common header and first chunk of an SCTP
// packet (no IP header), checking its CRC32c.
func parseSCTPReply(b []byte) (sctpReply, error) {
	var r sctpReply
	if len(b) < sctpHeaderLen+4 {
		return r, fmt.Errorf("sctp packet of %d bytes: too short", len(b))
	}
	want := binary.LittleEndian.Uint32(b[8:])
	c := make([]byte, len(b))
	copy(c, b)
	clear(c[8:12])
	if got := crc32.Checksum(c, castagnoli); got != want {
		return r, fmt.Errorf("sctp checksum %08x, want %08x", want, got)
	}
	r.sport = binary.BigEndian.Uint16(b[0:])
	r.dport = binary.BigEndian.Uint16(b[2:])
	r.vtag = binary.BigEndian.Uint32(b[4:])
	r.chunk = b[12]
	clen := int(binary.BigEndian.Uint16(b[14:]))
	if clen < 4 || sctpHeaderLen+clen > len(b) {
		return r, fmt.Errorf("sctp chunk length %d in a %d-byte packet", clen, len(b))
	}
	if r.chunk == sctpChunkInitAck {
		if clen < 20 {
			return r, fmt.Errorf("sctp INIT-ACK of %d bytes: too short", clen)
		}
		r.initTag = binary.BigEndian.Uint32(b[16:])
		if r.initTag == 0 {
			return r, errors.New("sctp INIT-ACK with initiate tag 0")
		}
	}
	return r, nil
}

func probeSCTP(ctx context.Context, t ProbeTarget) error {
	addr := t.Addr.Addr().Unmap()
	network, listen := "ip4:132", "0.0.0.0"
	if addr.Is6() {
		network, listen = "ip6:132", "::"
	}
	c, err := net.ListenPacket(network, listen)
	if err != nil {
		return fmt.Errorf("sctp: open raw socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	sport := uint16(49152 + rand.IntN(16384))
	dport := t.Addr.Port()
	tag := rand.Uint32() | 1 // never 0 (RFC 9260 3.3.2)
	dst := &net.IPAddr{IP: addr.AsSlice()}
	if _, err := c.WriteTo(sctpPacket(sport, dport, 0, sctpInitChunk(tag, rand.Uint32())), dst); err != nil {
		return fmt.Errorf("sctp: send INIT: %w", err)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("sctp: no INIT-ACK: %w", err)
		}
		src, ok := from.(*net.IPAddr)
		if !ok || !src.IP.Equal(dst.IP) {
			continue
		}
		r, err := parseSCTPReply(buf[:n])
		if err != nil || r.sport != dport || r.dport != sport || r.vtag != tag {
			continue // someone else's traffic
		}
		switch r.chunk {
		case sctpChunkInitAck:
			abort := []byte{sctpChunkAbort, 0, 0, 4}
			if _, err := c.WriteTo(sctpPacket(sport, dport, r.initTag, abort), dst); err != nil {
				return fmt.Errorf("sctp: send ABORT: %w", err)
			}
			return nil
		case sctpChunkAbort:
			return errors.New("sctp: endpoint answered ABORT (nothing listening)")
		}
	}
}
