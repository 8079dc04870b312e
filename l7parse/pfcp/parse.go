// Package pfcp reads PFCP messages (TS 29.244, N4 between SMF and UPF, UDP
// port 8805) into the keys a steering proxy needs: message type, SEID,
// sequence number, Node ID, F-SEID, Recovery Time Stamp and Cause, with the
// byte offsets of the IEs a proxy rewrites.
//
// Two layers. Parse is a hand-written walk over the header and the top-level
// IEs: it allocates nothing, checks every length, and keeps IEs it does not
// know as opaque bytes so a rewrite (SetHeader, ReplaceIE) leaves them
// untouched. Validate runs the full decoder of github.com/wmnsk/go-pfcp over
// the message, grouped IEs included, with its panics recovered, for callers
// that must refuse malformed content before storing or relaying it. Build
// (build.go) produces the messages a proxy originates, with go-pfcp.
package pfcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Port is PFCP's UDP port (TS 29.244 §4.2).
const Port = 8805

// Version is the only PFCP version (TS 29.244 §7.2.2.1).
const Version = 1

// Message types (TS 29.244 Table 7.3-1).
const (
	HeartbeatRequest           uint8 = 1
	HeartbeatResponse          uint8 = 2
	PFDManagementRequest       uint8 = 3
	PFDManagementResponse      uint8 = 4
	AssociationSetupRequest    uint8 = 5
	AssociationSetupResponse   uint8 = 6
	AssociationUpdateRequest   uint8 = 7
	AssociationUpdateResponse  uint8 = 8
	AssociationReleaseRequest  uint8 = 9
	AssociationReleaseResponse uint8 = 10
	VersionNotSupported        uint8 = 11
	NodeReportRequest          uint8 = 12
	NodeReportResponse         uint8 = 13
	SessionSetDeletionRequest  uint8 = 14
	SessionSetDeletionResponse uint8 = 15
	SessionEstablishmentReq    uint8 = 50
	SessionEstablishmentResp   uint8 = 51
	SessionModificationReq     uint8 = 52
	SessionModificationResp    uint8 = 53
	SessionDeletionReq         uint8 = 54
	SessionDeletionResp        uint8 = 55
	SessionReportReq           uint8 = 56
	SessionReportResp          uint8 = 57
)

// IE types the proxy reads or writes (TS 29.244 Table 8.1.2-1).
const (
	IECause             uint16 = 19
	IEOffendingIE       uint16 = 40
	IEUPFunctionFeature uint16 = 43
	IEFSEID             uint16 = 57
	IENodeID            uint16 = 60
	IECPFunctionFeature uint16 = 89
	IERecoveryTimeStamp uint16 = 96
)

// Cause values (TS 29.244 Table 8.2.1-1).
const (
	CauseAccepted              uint8 = 1
	CauseRejected              uint8 = 64
	CauseSessionNotFound       uint8 = 65
	CauseMandatoryIEMissing    uint8 = 66
	CauseConditionalIEMissing  uint8 = 67
	CauseInvalidLength         uint8 = 68
	CauseMandatoryIEIncorrect  uint8 = 69
	CauseNoAssociation         uint8 = 72
	CauseNoResources           uint8 = 75
	CauseServiceNotSupported   uint8 = 76
	CauseSystemFailure         uint8 = 77
	CauseRequestRejectedNoPeer uint8 = CauseNoResources
)

// HeaderLen returns the PFCP header length: 16 bytes with a SEID, 8
// without.
func HeaderLen(hasSEID bool) int {
	if hasSEID {
		return 16
	}
	return 8
}

// IsRequest reports whether a message type is a request (Table 7.3-1):
// odd types up to 9, then, past Version Not Supported Response (11), even
// ones (Node Report 12, Session Set Deletion 14, ..., session requests
// from 50).
func IsRequest(t uint8) bool {
	if t <= 10 {
		return t%2 == 1
	}
	return t%2 == 0
}

// IsSession reports whether a message type is session related (S flag set,
// Table 7.3-1).
func IsSession(t uint8) bool { return t >= 50 }

// TypeName names a message type for logs and metric labels.
func TypeName(t uint8) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", t)
}

var typeNames = map[uint8]string{
	1: "heartbeat-request", 2: "heartbeat-response", 3: "pfd-management-request", 4: "pfd-management-response",
	5: "association-setup-request", 6: "association-setup-response", 7: "association-update-request",
	8: "association-update-response", 9: "association-release-request", 10: "association-release-response",
	11: "version-not-supported", 12: "node-report-request", 13: "node-report-response",
	14: "session-set-deletion-request", 15: "session-set-deletion-response",
	50: "session-establishment-request", 51: "session-establishment-response",
	52: "session-modification-request", 53: "session-modification-response",
	54: "session-deletion-request", 55: "session-deletion-response",
	56: "session-report-request", 57: "session-report-response",
}

// Kind classifies a parse error by the reaction TS 29.244 §7.6 asks for.
type Kind uint8

const (
	// Discard: too short for a header, or not a PFCP header at all; the
	// message is silently discarded (§7.6.2).
	Discard Kind = iota + 1
	// BadVersion: answered with Version Not Supported Response (§7.6.1).
	BadVersion
	// InvalidLength: the header length or an IE length does not fit the
	// datagram; a request is rejected with cause "Invalid Length" (§7.6.3).
	InvalidLength
	// MissingIE: a mandatory IE is absent; a request is rejected with
	// "Mandatory IE missing" and the Offending IE (§7.6.4).
	MissingIE
	// IncorrectIE: a mandatory IE cannot be decoded; a request is rejected
	// with "Mandatory IE incorrect" and the Offending IE (§7.6.5).
	IncorrectIE
)

// ErrMalformed is wrapped by every error Parse, Require and Validate return.
var ErrMalformed = errors.New("malformed PFCP message")

// Error is a malformed-message error with what a reply needs.
type Error struct {
	Kind Kind
	// IE is the offending IE type for MissingIE and IncorrectIE.
	IE  uint16
	Msg string
}

func (e *Error) Error() string {
	if e.IE != 0 {
		return fmt.Sprintf("%v: %s (IE %d)", ErrMalformed, e.Msg, e.IE)
	}
	return fmt.Sprintf("%v: %s", ErrMalformed, e.Msg)
}

func (e *Error) Unwrap() error { return ErrMalformed }

// Cause is the cause value a rejecting response carries for this error, 0
// when the message is discarded or answered with Version Not Supported.
func (e *Error) Cause() uint8 {
	switch e.Kind {
	case InvalidLength:
		return CauseInvalidLength
	case MissingIE:
		return CauseMandatoryIEMissing
	case IncorrectIE:
		return CauseMandatoryIEIncorrect
	}
	return 0
}

func malformed(k Kind, ie uint16, format string, args ...any) *Error {
	return &Error{Kind: k, IE: ie, Msg: fmt.Sprintf(format, args...)}
}

// NodeID is a Node ID IE's value (§8.2.38): an IPv4 or IPv6 address or an
// FQDN, kept in its wire form (type octet then value) so it compares and
// rewrites byte for byte.
type NodeID string

// String renders the Node ID for logs.
func (n NodeID) String() string {
	if len(n) == 0 {
		return ""
	}
	v := []byte(n[1:])
	switch n[0] & 0x0f {
	case 0, 1:
		if a, ok := netip.AddrFromSlice(v); ok {
			return a.String()
		}
	case 2:
		return decodeFQDN(v)
	}
	return fmt.Sprintf("nodeid(%x)", []byte(n))
}

// NodeIDFromAddr builds the Node ID of an address.
func NodeIDFromAddr(a netip.Addr) NodeID {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return NodeID(append([]byte{0}, b[:]...))
	}
	b := a.As16()
	return NodeID(append([]byte{1}, b[:]...))
}

func decodeFQDN(b []byte) string {
	var out []byte
	for len(b) > 0 {
		l := int(b[0])
		if l == 0 || l+1 > len(b) {
			break
		}
		if len(out) > 0 {
			out = append(out, '.')
		}
		out = append(out, b[1:1+l]...)
		b = b[1+l:]
	}
	return string(out)
}

// FSEID is an F-SEID IE's value (§8.2.37).
type FSEID struct {
	SEID   uint64
	V4, V6 netip.Addr
}

// Span locates one IE inside a message: Off is the offset of its type
// field, Len its full length (header included). Len 0 means absent.
type Span struct{ Off, Len int }

// Present reports whether the IE was found.
func (s Span) Present() bool { return s.Len > 0 }

// Msg is what Parse reads from a message. Only the first occurrence of each
// top-level IE is recorded; grouped IEs are not entered.
type Msg struct {
	Type     uint8
	HasSEID  bool
	SEID     uint64
	Seq      uint32
	Priority uint8 // message priority when the MP flag is set
	HasMP    bool
	// Len is the message length the header announces plus 4 (the whole
	// message); Parse refuses datagrams where it differs from len(b).
	Len int

	NodeID      NodeID
	NodeIDSpan  Span
	FSEID       FSEID
	FSEIDSpan   Span
	Recovery    uint32 // seconds since 1900 (NTP era 0), as on the wire
	HasRecovery bool
	Cause       uint8
	HasCause    bool
	// Bad records the first top-level IE the proxy reads whose value
	// could not be decoded (0: none); Require reports it as IncorrectIE.
	Bad uint16
}

// RecoveryTime converts the Recovery Time Stamp to a time.Time.
func (m *Msg) RecoveryTime() time.Time { return FromNTP(m.Recovery) }

// ntpEpochOffset is 1900-01-01 to 1970-01-01 in seconds.
const ntpEpochOffset = 2208988800

// ToNTP converts a time to the 32-bit seconds a Recovery Time Stamp carries.
func ToNTP(t time.Time) uint32 { return uint32(t.Unix() + ntpEpochOffset) }

// FromNTP converts Recovery Time Stamp seconds to a time.
func FromNTP(s uint32) time.Time { return time.Unix(int64(s)-ntpEpochOffset, 0).UTC() }

// Parse reads the header and walks the top-level IEs of one PFCP message
// (one datagram). It never panics and allocates only the Node ID string.
// Multiple messages in one datagram (FO flag) are not supported: the first
// message must span the datagram.
func Parse(b []byte) (Msg, error) {
	var m Msg
	if len(b) < 4 {
		return m, malformed(Discard, 0, "%d bytes, shorter than a PFCP header", len(b))
	}
	if v := b[0] >> 5; v != Version {
		// Enough to answer: the sequence number is read if present.
		if len(b) >= 8 && b[0]&1 == 0 {
			m.Seq = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
		} else if len(b) >= 16 {
			m.Seq = uint32(b[12])<<16 | uint32(b[13])<<8 | uint32(b[14])
		}
		m.Type = b[1]
		return m, malformed(BadVersion, 0, "version %d", v)
	}
	m.Type = b[1]
	m.HasSEID = b[0]&0x01 != 0
	m.HasMP = b[0]&0x02 != 0
	hl := HeaderLen(m.HasSEID)
	if len(b) < hl {
		return m, malformed(Discard, 0, "%d bytes, shorter than the %d-byte header", len(b), hl)
	}
	m.Len = int(binary.BigEndian.Uint16(b[2:4])) + 4
	p := 4
	if m.HasSEID {
		m.SEID = binary.BigEndian.Uint64(b[4:12])
		p = 12
	}
	m.Seq = uint32(b[p])<<16 | uint32(b[p+1])<<8 | uint32(b[p+2])
	if m.HasMP {
		m.Priority = b[p+3] >> 4
	}
	if m.Len < hl {
		return m, malformed(InvalidLength, 0, "length field %d shorter than the header", m.Len-4)
	}
	if m.Len != len(b) {
		return m, malformed(InvalidLength, 0, "length field says %d bytes, datagram has %d", m.Len, len(b))
	}
	if IsSession(m.Type) != m.HasSEID && m.Type != VersionNotSupported {
		return m, malformed(Discard, 0, "%s with S flag %v", TypeName(m.Type), m.HasSEID)
	}
	for off := hl; off < len(b); {
		if len(b)-off < 4 {
			return m, malformed(InvalidLength, 0, "%d trailing bytes, shorter than an IE header", len(b)-off)
		}
		t := binary.BigEndian.Uint16(b[off:])
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		end := off + 4 + l
		if end > len(b) {
			return m, malformed(InvalidLength, t, "IE %d length %d overruns the message", t, l)
		}
		if t&0x8000 != 0 && l < 2 {
			return m, malformed(InvalidLength, t, "vendor IE %d without an enterprise ID", t)
		}
		v := b[off+4 : end]
		switch t {
		case IENodeID:
			if !m.NodeIDSpan.Present() {
				m.NodeIDSpan = Span{off, end - off}
				if validNodeID(v) {
					m.NodeID = NodeID(v)
				} else {
					m.bad(t)
				}
			}
		case IEFSEID:
			if !m.FSEIDSpan.Present() {
				m.FSEIDSpan = Span{off, end - off}
				if f, ok := parseFSEID(v); ok {
					m.FSEID = f
				} else {
					m.bad(t)
				}
			}
		case IERecoveryTimeStamp:
			if !m.HasRecovery {
				if len(v) >= 4 {
					m.Recovery, m.HasRecovery = binary.BigEndian.Uint32(v), true
				} else {
					m.bad(t)
				}
			}
		case IECause:
			if !m.HasCause {
				if len(v) >= 1 {
					m.Cause, m.HasCause = v[0], true
				} else {
					m.bad(t)
				}
			}
		}
		off = end
	}
	return m, nil
}

func (m *Msg) bad(t uint16) {
	if m.Bad == 0 {
		m.Bad = t
	}
}

func validNodeID(v []byte) bool {
	if len(v) < 1 {
		return false
	}
	switch v[0] & 0x0f {
	case 0:
		return len(v) >= 5
	case 1:
		return len(v) >= 17
	case 2:
		return len(v) >= 2
	}
	return false
}

func parseFSEID(v []byte) (FSEID, bool) {
	var f FSEID
	if len(v) < 9 {
		return f, false
	}
	flags := v[0]
	f.SEID = binary.BigEndian.Uint64(v[1:9])
	p := 9
	if flags&0x02 != 0 { // V4
		if len(v) < p+4 {
			return f, false
		}
		f.V4 = netip.AddrFrom4([4]byte(v[p : p+4]))
		p += 4
	}
	if flags&0x01 != 0 { // V6
		if len(v) < p+16 {
			return f, false
		}
		f.V6 = netip.AddrFrom16([16]byte(v[p : p+16]))
	}
	if flags&0x03 == 0 {
		return f, false // §8.2.37: at least one of V4 and V6 is set
	}
	return f, true
}

// Require checks that the IEs listed are present and decodable, in the
// order given; the first failure is returned as MissingIE or IncorrectIE.
func (m *Msg) Require(ies ...uint16) error {
	for _, t := range ies {
		var present bool
		switch t {
		case IENodeID:
			present = m.NodeIDSpan.Present()
		case IEFSEID:
			present = m.FSEIDSpan.Present()
		case IERecoveryTimeStamp:
			present = m.HasRecovery || m.Bad == t
		case IECause:
			present = m.HasCause || m.Bad == t
		}
		if !present {
			return malformed(MissingIE, t, "%s without mandatory IE %d", TypeName(m.Type), t)
		}
		if m.Bad == t {
			return malformed(IncorrectIE, t, "%s: mandatory IE %d cannot be decoded", TypeName(m.Type), t)
		}
	}
	return nil
}

// Mandatory lists, per request type, the IEs a proxy must read to steer
// the message (a subset of TS 29.244's mandatory IEs: the rest are the
// UPF's to check, and are relayed untouched).
func Mandatory(t uint8) []uint16 {
	switch t {
	case HeartbeatRequest:
		return []uint16{IERecoveryTimeStamp}
	case AssociationSetupRequest:
		return []uint16{IENodeID, IERecoveryTimeStamp}
	case AssociationUpdateRequest, AssociationReleaseRequest, NodeReportRequest:
		return []uint16{IENodeID}
	case SessionEstablishmentReq:
		return []uint16{IENodeID, IEFSEID}
	case HeartbeatResponse:
		return []uint16{IERecoveryTimeStamp}
	case AssociationSetupResponse:
		return []uint16{IENodeID, IECause}
	case SessionEstablishmentResp, SessionModificationResp, SessionDeletionResp, SessionReportResp,
		AssociationUpdateResponse, AssociationReleaseResponse, PFDManagementResponse, NodeReportResponse,
		SessionSetDeletionResponse:
		return []uint16{IECause}
	}
	return nil
}

// Known reports whether TS 29.244 (Release 16) defines message type t; a
// message of another type is silently discarded (§7.6.2).
func Known(t uint8) bool {
	_, ok := typeNames[t]
	return ok
}

// FindIE returns the first top-level IE of type t in message b (header
// included, aliasing b), or nil. b must have passed Parse.
func FindIE(b []byte, t uint16) []byte {
	if len(b) < 8 {
		return nil
	}
	for off := HeaderLen(b[0]&1 != 0); off+4 <= len(b); {
		end := off + 4 + int(binary.BigEndian.Uint16(b[off+2:]))
		if end > len(b) {
			return nil
		}
		if binary.BigEndian.Uint16(b[off:]) == t {
			return b[off:end]
		}
		off = end
	}
	return nil
}
