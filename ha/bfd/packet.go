// Package bfd implements Bidirectional Forwarding Detection (RFC 5880) in
// single-hop asynchronous mode over UDP (RFC 5881). The protocol is a pure
// state machine (Session: events in, actions out, no I/O, no clock); the UDP
// shell (Manager) owns the sockets and the timers.
package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// State is a session state (RFC 5880 §4.1, the Sta field).
type State uint8

// Session states in wire encoding.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is a diagnostic code (RFC 5880 §4.1).
type Diag uint8

// Diagnostic codes.
const (
	DiagNone               Diag = 0
	DiagDetectTimeExpired  Diag = 1
	DiagEchoFailed         Diag = 2
	DiagNeighborDown       Diag = 3
	DiagForwardingReset    Diag = 4
	DiagPathDown           Diag = 5
	DiagConcatenatedPath   Diag = 6
	DiagAdminDown          Diag = 7
	DiagReverseConcatenate Diag = 8
)

var diagNames = [...]string{
	"None", "ControlDetectionTimeExpired", "EchoFunctionFailed", "NeighborSignaledSessionDown",
	"ForwardingPlaneReset", "PathDown", "ConcatenatedPathDown", "AdministrativelyDown",
	"ReverseConcatenatedPathDown",
}

func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("Diag(%d)", uint8(d))
}

// Version is the only protocol version (RFC 5880 §4.1).
const Version = 1

// HeaderLen is the length of a control packet without authentication.
const HeaderLen = 24

// Packet is a BFD control packet. Intervals are in microseconds, as on the
// wire.
type Packet struct {
	Version    uint8
	Diag       Diag
	State      State
	Poll       bool
	Final      bool
	CPI        bool // control plane independent
	Auth       bool // authentication section present
	Demand     bool
	Multipoint bool
	DetectMult uint8
	// Length is the length field of a parsed packet; Marshal writes HeaderLen.
	Length            uint8
	MyDisc            uint32
	YourDisc          uint32
	DesiredMinTx      uint32
	RequiredMinRx     uint32
	RequiredMinEchoRx uint32
}

// Reasons Parse rejects a packet, following RFC 5880 §6.8.6 ("the packet
// MUST be discarded"). Each is errors.Is-comparable.
var (
	ErrShort          = errors.New("bfd: packet shorter than the 24-byte header")
	ErrVersion        = errors.New("bfd: version is not 1")
	ErrLength         = errors.New("bfd: length field is invalid")
	ErrDetectMult     = errors.New("bfd: detect multiplier is zero")
	ErrMultipoint     = errors.New("bfd: multipoint bit set")
	ErrMyDisc         = errors.New("bfd: my discriminator is zero")
	ErrYourDisc       = errors.New("bfd: your discriminator is zero in state Init or Up")
	ErrAuthNotEnabled = errors.New("bfd: authentication bit set but no authentication is configured")
	ErrPollFinal      = errors.New("bfd: poll and final bits both set")
)

// Parse decodes a control packet and applies the checks of RFC 5880 §6.8.6
// that need no session: version, length (at least 24, 26 with the A bit; not
// beyond the datagram), detect multiplier, multipoint, discriminators.
// Authentication is not supported, so a packet with the A bit set is
// rejected (ErrAuthNotEnabled), as §6.8.6 demands when bfd.AuthType is zero.
// Poll and Final together are rejected too (§4.1: "MUST NOT both be set").
func Parse(b []byte) (Packet, error) {
	var p Packet
	if len(b) < HeaderLen {
		return p, fmt.Errorf("%w (%d bytes)", ErrShort, len(b))
	}
	p.Version = b[0] >> 5
	p.Diag = Diag(b[0] & 0x1f)
	p.State = State(b[1] >> 6)
	f := b[1]
	p.Poll = f&0x20 != 0
	p.Final = f&0x10 != 0
	p.CPI = f&0x08 != 0
	p.Auth = f&0x04 != 0
	p.Demand = f&0x02 != 0
	p.Multipoint = f&0x01 != 0
	p.DetectMult = b[2]
	p.Length = b[3]
	p.MyDisc = binary.BigEndian.Uint32(b[4:])
	p.YourDisc = binary.BigEndian.Uint32(b[8:])
	p.DesiredMinTx = binary.BigEndian.Uint32(b[12:])
	p.RequiredMinRx = binary.BigEndian.Uint32(b[16:])
	p.RequiredMinEchoRx = binary.BigEndian.Uint32(b[20:])
	switch {
	case p.Version != Version:
		return p, fmt.Errorf("%w (got %d)", ErrVersion, p.Version)
	case p.Auth && p.Length < HeaderLen+2, !p.Auth && p.Length < HeaderLen:
		return p, fmt.Errorf("%w: %d", ErrLength, p.Length)
	case int(p.Length) > len(b):
		return p, fmt.Errorf("%w: %d beyond the %d-byte datagram", ErrLength, p.Length, len(b))
	case p.DetectMult == 0:
		return p, ErrDetectMult
	case p.Multipoint:
		return p, ErrMultipoint
	case p.MyDisc == 0:
		return p, ErrMyDisc
	case p.YourDisc == 0 && (p.State == Init || p.State == Up):
		return p, fmt.Errorf("%w (state %s)", ErrYourDisc, p.State)
	case p.Auth:
		return p, ErrAuthNotEnabled
	case p.Poll && p.Final:
		return p, ErrPollFinal
	}
	return p, nil
}

// Marshal encodes p as a 24-byte control packet (no authentication
// section); Version and Length are written as 1 and 24 whatever p holds.
func (p Packet) Marshal() []byte {
	return p.AppendTo(make([]byte, 0, HeaderLen))
}

// AppendTo appends the encoding of p to b.
func (p Packet) AppendTo(b []byte) []byte {
	var h [HeaderLen]byte
	h[0] = Version<<5 | uint8(p.Diag)&0x1f
	f := uint8(p.State&3) << 6
	for _, bit := range []struct {
		on   bool
		mask uint8
	}{{p.Poll, 0x20}, {p.Final, 0x10}, {p.CPI, 0x08}, {p.Auth, 0x04}, {p.Demand, 0x02}, {p.Multipoint, 0x01}} {
		if bit.on {
			f |= bit.mask
		}
	}
	h[1] = f
	h[2] = p.DetectMult
	h[3] = HeaderLen
	binary.BigEndian.PutUint32(h[4:], p.MyDisc)
	binary.BigEndian.PutUint32(h[8:], p.YourDisc)
	binary.BigEndian.PutUint32(h[12:], p.DesiredMinTx)
	binary.BigEndian.PutUint32(h[16:], p.RequiredMinRx)
	binary.BigEndian.PutUint32(h[20:], p.RequiredMinEchoRx)
	return append(b, h[:]...)
}
