package member

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Heartbeat is one liveness message between members. On the wire (version 1,
// big endian):
//
//	0   4  magic "TLBH"
//	4   1  version (1)
//	5   1  flags (bit 0: ready, the sender has finished its warm-up and
//	       claims the VIPs it owns)
//	6   2  interval in milliseconds the sender heartbeats at
//	8   8  incarnation (changes every time the sender's process starts)
//	16  8  sequence number within the incarnation
//	24  1  length n of the sender's node name (1..253)
//	25  n  node name
//
// A receiver accepts a newer version as long as the fixed part parses: a
// later version may append fields after the name, never change these.
type Heartbeat struct {
	Version     uint8
	Ready       bool
	IntervalMs  uint16
	Incarnation uint64
	Seq         uint64
	Name        string
}

const (
	magic          = "TLBH"
	codecVersion   = 1
	headerLen      = 25
	maxNameLen     = 253
	flagReady      = 1 << 0
	knownFlagsMask = flagReady
)

// Errors returned by Unmarshal, for counting bad packets by kind.
var (
	ErrShort   = errors.New("heartbeat: short packet")
	ErrMagic   = errors.New("heartbeat: bad magic")
	ErrVersion = errors.New("heartbeat: unsupported version")
	ErrName    = errors.New("heartbeat: bad node name")
)

// Marshal appends the wire form of h to b.
func (h Heartbeat) Marshal(b []byte) ([]byte, error) {
	if len(h.Name) == 0 || len(h.Name) > maxNameLen {
		return b, fmt.Errorf("%w: length %d", ErrName, len(h.Name))
	}
	var flags byte
	if h.Ready {
		flags |= flagReady
	}
	b = append(b, magic...)
	b = append(b, codecVersion, flags)
	b = binary.BigEndian.AppendUint16(b, h.IntervalMs)
	b = binary.BigEndian.AppendUint64(b, h.Incarnation)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = append(b, byte(len(h.Name)))
	b = append(b, h.Name...)
	return b, nil
}

// Unmarshal parses a heartbeat. Version 0 is invalid; versions above 1 are
// read by their version-1 prefix (fields appended later are ignored).
func Unmarshal(b []byte) (Heartbeat, error) {
	var h Heartbeat
	if len(b) < headerLen {
		return h, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if string(b[:4]) != magic {
		return h, ErrMagic
	}
	h.Version = b[4]
	if h.Version == 0 {
		return h, fmt.Errorf("%w: %d", ErrVersion, h.Version)
	}
	h.Ready = b[5]&flagReady != 0
	h.IntervalMs = binary.BigEndian.Uint16(b[6:])
	h.Incarnation = binary.BigEndian.Uint64(b[8:])
	h.Seq = binary.BigEndian.Uint64(b[16:])
	n := int(b[24])
	if n == 0 || n > maxNameLen {
		return h, fmt.Errorf("%w: length %d", ErrName, n)
	}
	if len(b) < headerLen+n {
		return h, fmt.Errorf("%w: name needs %d bytes, %d left", ErrShort, n, len(b)-headerLen)
	}
	if h.Version == codecVersion && len(b) != headerLen+n {
		return h, fmt.Errorf("heartbeat: %d trailing bytes in a version-1 packet", len(b)-headerLen-n)
	}
	h.Name = string(b[headerLen : headerLen+n])
	return h, nil
}
