// Package diameter reads Diameter messages (RFC 6733) without a dictionary:
// it checks the header and walks every AVP generically (flags, vendor ID,
// length, padding), reads only the AVPs an agent routes and answers with
// (Session-Id, Origin-/Destination-Host and -Realm, Route-Record,
// Result-Code, the application IDs, and the few that CER/CEA, DWR and DPR
// carry) and leaves everything else as bytes in place. Edits an agent makes
// (hop-by-hop identifier, T flag, an appended Route-Record) change those
// bytes only, so vendor AVPs and AVPs of applications nobody here knows are
// forwarded byte for byte.
//
// Parse allocates nothing for a message whose application IDs fit in the
// Msg's inline arrays; its errors (*Error) carry the RFC 6733 Result-Code
// the sender must get (3008, 3009, 5014, ...). Build (build.go) produces the
// messages an agent originates: CER/CEA, DWR/DWA, DPR/DPA and error answers.
package diameter

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Port is Diameter's TCP and SCTP port (RFC 6733 §2.1).
const Port = 3868

// PPID is Diameter's SCTP payload protocol identifier (RFC 6733 §2.1.1,
// IANA: 46).
const PPID = 46

// Version is the only Diameter version (RFC 6733 §3).
const Version = 1

// HeaderLen is the fixed header's length.
const HeaderLen = 20

// MaxLen bounds the messages Parse and FrameLen accept: the header allows
// 2^24-1 bytes, far more than any application sends, and a reader would
// otherwise buffer up to 16 MiB on a peer's word.
const MaxLen = 1 << 20

// Command flags (RFC 6733 §3).
const (
	FlagRequest    uint8 = 0x80
	FlagProxiable  uint8 = 0x40
	FlagError      uint8 = 0x20
	FlagRetransmit uint8 = 0x10
	flagsReserved  uint8 = 0x0f
)

// AVP flags (RFC 6733 §4.1). P (0x20) is reserved since RFC 6733; RFC 3588
// peers may still set it, so it is accepted and forwarded.
const (
	AVPVendor      uint8 = 0x80
	AVPMandatory   uint8 = 0x40
	AVPProtected   uint8 = 0x20
	avpFlagsUnused uint8 = 0x1f
)

// Command codes (RFC 6733 §3.1, RFC 4006, RFC 8506).
const (
	CmdCapabilitiesExchange uint32 = 257
	CmdReAuth               uint32 = 258
	CmdAccounting           uint32 = 271
	CmdCreditControl        uint32 = 272
	CmdAbortSession         uint32 = 274
	CmdSessionTermination   uint32 = 275
	CmdDeviceWatchdog       uint32 = 280
	CmdDisconnectPeer       uint32 = 282
)

// Application IDs (RFC 6733 §2.4, §11.3).
const (
	AppCommon uint32 = 0
	AppAcct   uint32 = 3
	AppCC     uint32 = 4 // Diameter Credit-Control (RFC 4006/8506): Gy, Ro
	AppRelay  uint32 = 0xffffffff
)

// AVP codes the package reads or writes (RFC 6733 §4.5, RFC 4006).
const (
	AVPHostIPAddress       uint32 = 257
	AVPAuthAppID           uint32 = 258
	AVPAcctAppID           uint32 = 259
	AVPVendorSpecificApp   uint32 = 260
	AVPSessionID           uint32 = 263
	AVPOriginHost          uint32 = 264
	AVPSupportedVendorID   uint32 = 265
	AVPVendorID            uint32 = 266
	AVPFirmwareRevision    uint32 = 267
	AVPResultCode          uint32 = 268
	AVPProductName         uint32 = 269
	AVPDisconnectCause     uint32 = 273
	AVPOriginStateID       uint32 = 278
	AVPFailedAVP           uint32 = 279
	AVPErrorMessage        uint32 = 281
	AVPRouteRecord         uint32 = 282
	AVPDestinationRealm    uint32 = 283
	AVPDestinationHost     uint32 = 293
	AVPErrorReportingHost  uint32 = 294
	AVPOriginRealm         uint32 = 296
	AVPExperimentalResult  uint32 = 297
	AVPExperimentalCode    uint32 = 298
	AVPInbandSecurityID    uint32 = 299
	AVPCCRequestType       uint32 = 416
	AVPCCRequestNumber     uint32 = 415
	AVPTerminationCause    uint32 = 295
	AVPAuthSessionState    uint32 = 277
	AVPMultiRoundTimeOut   uint32 = 272
	AVPRedirectHost        uint32 = 292
	AVPRedirectHostUsage   uint32 = 261
	AVPProxyInfo           uint32 = 284
	AVPProxyHost           uint32 = 280
	AVPProxyState          uint32 = 33
	AVPUserName            uint32 = 1
	AVPSubscriptionID      uint32 = 443
	AVPServiceContextID    uint32 = 461
	AVPEventTimestamp      uint32 = 55
	AVPRequestedAction     uint32 = 436
	AVPMultipleServicesInd uint32 = 455
)

// CC-Request-Type values (RFC 4006 §8.3).
const (
	CCInitial     uint32 = 1
	CCUpdate      uint32 = 2
	CCTermination uint32 = 3
	CCEvent       uint32 = 4
)

// Result-Code values (RFC 6733 §7.1).
const (
	Success                   uint32 = 2001
	LimitedSuccess            uint32 = 2002
	CommandUnsupported        uint32 = 3001
	UnableToDeliver           uint32 = 3002
	RealmNotServed            uint32 = 3003
	TooBusy                   uint32 = 3004
	LoopDetected              uint32 = 3005
	RedirectIndication        uint32 = 3006
	ApplicationUnsupported    uint32 = 3007
	InvalidHdrBits            uint32 = 3008
	InvalidAVPBits            uint32 = 3009
	UnknownPeer               uint32 = 3010
	AVPUnsupported            uint32 = 5001
	UnknownSessionID          uint32 = 5002
	InvalidAVPValue           uint32 = 5004
	MissingAVP                uint32 = 5005
	AVPOccursTooManyTimes     uint32 = 5009
	NoCommonApplication       uint32 = 5010
	UnsupportedVersion        uint32 = 5011
	UnableToComply            uint32 = 5012
	InvalidBitInHeader        uint32 = 5013
	InvalidAVPLength          uint32 = 5014
	InvalidMessageLength      uint32 = 5015
	NoCommonSecurity          uint32 = 5017
	ElectionLost              uint32 = 4003
	DisconnectRebooting       uint32 = 0
	DisconnectBusy            uint32 = 1
	DisconnectDoNotWantToTalk uint32 = 2
)

// Kind classifies a malformed message.
type Kind uint8

const (
	// Short: fewer bytes than a header; nothing can be answered.
	Short Kind = iota + 1
	// BadVersion: version is not 1 (5011).
	BadVersion
	// BadLength: the header's length does not match the bytes, is not a
	// multiple of 4 or is over MaxLen (5015).
	BadLength
	// BadHeaderBits: reserved command flags set, or E in a request (3008).
	BadHeaderBits
	// BadAVPBits: reserved AVP flags set (3009).
	BadAVPBits
	// BadAVPLength: an AVP shorter than its header, overrunning the
	// message, or a routing AVP of the wrong size (5014).
	BadAVPLength
	// BadAVPValue: a routing AVP with an unusable value, e.g. an empty
	// DiameterIdentity (5004).
	BadAVPValue
	// Repeated: a routing AVP that may occur once occurs twice (5009).
	Repeated
)

func (k Kind) String() string {
	switch k {
	case Short:
		return "short"
	case BadVersion:
		return "bad-version"
	case BadLength:
		return "bad-length"
	case BadHeaderBits:
		return "bad-header-bits"
	case BadAVPBits:
		return "bad-avp-bits"
	case BadAVPLength:
		return "bad-avp-length"
	case BadAVPValue:
		return "bad-avp-value"
	case Repeated:
		return "repeated-avp"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ErrMalformed is what every *Error unwraps to.
var ErrMalformed = errors.New("diameter: malformed message")

// Error describes a malformed message and how RFC 6733 says to answer it.
type Error struct {
	Kind Kind
	// AVPOffset is the offending AVP's offset in the message (-1 if the
	// fault is in the header); FailedAVP returns its bytes.
	AVPOffset int
	Detail    string
}

func (e *Error) Error() string {
	if e.AVPOffset >= 0 {
		return fmt.Sprintf("diameter: %s: AVP at offset %d: %s", e.Kind, e.AVPOffset, e.Detail)
	}
	return fmt.Sprintf("diameter: %s: %s", e.Kind, e.Detail)
}

func (e *Error) Unwrap() error { return ErrMalformed }

// Result is the Result-Code of the answer (RFC 6733 §7.1.3-7.1.5).
func (e *Error) Result() uint32 {
	switch e.Kind {
	case BadVersion:
		return UnsupportedVersion
	case Short, BadLength:
		return InvalidMessageLength
	case BadHeaderBits:
		return InvalidHdrBits
	case BadAVPBits:
		return InvalidAVPBits
	case BadAVPLength:
		return InvalidAVPLength
	case BadAVPValue:
		return InvalidAVPValue
	case Repeated:
		return AVPOccursTooManyTimes
	}
	return UnableToComply
}

// Answerable reports whether the message's header could be read, so the
// sender can get an answer with its hop-by-hop and end-to-end identifiers
// (RFC 6733 §7.2; a version other than 1 gets 5011). Protocol errors
// (3xxx) come with the E bit.
func (e *Error) Answerable() bool { return e.Kind != Short }

// FailedAVP returns the bytes of the offending AVP as it arrived, for a
// Failed-AVP AVP (RFC 6733 §7.5): for a length error the AVP header only
// (its length field says how long the sender thought it was), capped to the
// message.
func (e *Error) FailedAVP(msg []byte) []byte {
	if e.AVPOffset < HeaderLen || e.AVPOffset >= len(msg) {
		return nil
	}
	b := msg[e.AVPOffset:]
	if len(b) < 8 {
		return b
	}
	n := int(uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]))
	if e.Kind == BadAVPLength || n > len(b) || n < 8 {
		h := 8
		if b[4]&AVPVendor != 0 && len(b) >= 12 {
			h = 12
		}
		return b[:h]
	}
	return b[:n]
}

func bad(k Kind, off int, format string, args ...any) *Error {
	return &Error{Kind: k, AVPOffset: off, Detail: fmt.Sprintf(format, args...)}
}

// Header is the fixed part of a message.
type Header struct {
	Flags    uint8
	Length   int
	Code     uint32
	AppID    uint32
	HopByHop uint32
	EndToEnd uint32
}

// IsRequest reports the R flag.
func (h Header) IsRequest() bool { return h.Flags&FlagRequest != 0 }

// IsProxiable reports the P flag.
func (h Header) IsProxiable() bool { return h.Flags&FlagProxiable != 0 }

// IsError reports the E flag.
func (h Header) IsError() bool { return h.Flags&FlagError != 0 }

// IsRetransmit reports the T flag.
func (h Header) IsRetransmit() bool { return h.Flags&FlagRetransmit != 0 }

// FrameLen reads a message's length from its first 4 bytes, for splitting
// a TCP stream. An error means the stream cannot be resynchronised: the
// connection must be closed (after a 5011/5015 answer if the rest of the
// header is there).
func FrameLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, bad(Short, -1, "%d bytes, need 4", len(b))
	}
	if b[0] != Version {
		return 0, bad(BadVersion, -1, "version %d", b[0])
	}
	n := int(uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	if n < HeaderLen || n%4 != 0 || n > MaxLen {
		return 0, bad(BadLength, -1, "message length %d", n)
	}
	return n, nil
}

// ParseHeader reads the header; it checks version and length against b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, bad(Short, -1, "%d bytes, need %d", len(b), HeaderLen)
	}
	h := Header{
		Flags:    b[4],
		Length:   int(uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])),
		Code:     uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]),
		AppID:    binary.BigEndian.Uint32(b[8:]),
		HopByHop: binary.BigEndian.Uint32(b[12:]),
		EndToEnd: binary.BigEndian.Uint32(b[16:]),
	}
	if b[0] != Version {
		return h, bad(BadVersion, -1, "version %d", b[0])
	}
	if h.Length != len(b) || h.Length%4 != 0 || h.Length > MaxLen {
		return h, bad(BadLength, -1, "header says %d bytes, message has %d", h.Length, len(b))
	}
	if h.Flags&flagsReserved != 0 {
		return h, bad(BadHeaderBits, -1, "reserved command flags 0x%02x", h.Flags&flagsReserved)
	}
	if h.Flags&FlagRequest != 0 && h.Flags&FlagError != 0 {
		return h, bad(BadHeaderBits, -1, "E flag in a request")
	}
	return h, nil
}

// AVP is one AVP as found in a message; Data aliases the message.
type AVP struct {
	Code   uint32
	Flags  uint8
	Vendor uint32
	Data   []byte
	// Off is the AVP's offset in the slice walked; Len its length with
	// padding.
	Off, Len int
}

// Walk calls fn for each AVP of b (a message's AVP area or a grouped AVP's
// data), checking lengths and flags; base is b's offset in the message, for
// error offsets. fn returning an error stops the walk.
func Walk(b []byte, base int, fn func(AVP) error) error {
	for off := 0; off < len(b); {
		a, err := avpAt(b, off, base)
		if err != nil {
			return err
		}
		if fn != nil {
			if err := fn(a); err != nil {
				return err
			}
		}
		off += a.Len
	}
	return nil
}

// avpAt reads the AVP at off. An AVP that passes every check is read
// here, without a call; the one that fails is described by avpError, out
// of line: with the error formatting inline, the walk was the agent's
// largest cost after its system calls.
func avpAt(b []byte, off, base int) (AVP, error) {
	if r := b[off:]; len(r) >= 8 {
		flags := r[4]
		n := int(r[5])<<16 | int(r[6])<<8 | int(r[7])
		h := 8
		if flags&AVPVendor != 0 {
			h = 12
		}
		// The padded length within r implies the length within r.
		if l := (n + 3) &^ 3; flags&avpFlagsUnused == 0 && n >= h && l <= len(r) {
			a := AVP{Code: binary.BigEndian.Uint32(r), Flags: flags, Data: r[h:n:n], Off: off, Len: l}
			if h == 12 {
				a.Vendor = binary.BigEndian.Uint32(r[8:])
			}
			return a, nil
		}
	}
	return AVP{}, avpError(b, off, base)
}

// avpError is the error of the AVP at off, one avpAt did not accept: the
// first check it fails, in the order of the RFC's fields.
//
//go:noinline
func avpError(b []byte, off, base int) *Error {
	r := b[off:]
	if len(r) < 8 {
		return bad(BadAVPLength, base+off, "%d bytes left, an AVP header needs 8", len(r))
	}
	code, flags := binary.BigEndian.Uint32(r), r[4]
	n := int(uint32(r[5])<<16 | uint32(r[6])<<8 | uint32(r[7]))
	h := 8
	if flags&AVPVendor != 0 {
		h = 12
	}
	if flags&avpFlagsUnused != 0 {
		return bad(BadAVPBits, base+off, "reserved AVP flags 0x%02x (code %d)", flags&avpFlagsUnused, code)
	}
	if n < h {
		return bad(BadAVPLength, base+off, "AVP %d length %d, its header needs %d", code, n, h)
	}
	if n > len(r) {
		return bad(BadAVPLength, base+off, "AVP %d length %d overruns the message (%d bytes left)", code, n, len(r))
	}
	return bad(BadAVPLength, base+off, "AVP %d padding overruns the message", code)
}

// VSApp is one Vendor-Specific-Application-Id.
type VSApp struct {
	Vendor uint32
	Auth   uint32
	Acct   uint32
}

// AppIDs holds a message's application IDs; the inline arrays cover every
// ordinary request, so parsing one allocates nothing.
type AppIDs struct {
	Auth, Acct []uint32
	VS         []VSApp
	authA      [2]uint32
	acctA      [1]uint32
	vsA        [2]VSApp
}

// Msg is a parsed message. Byte slices alias the parsed buffer.
type Msg struct {
	Header
	Raw []byte

	SessionID   []byte
	OriginHost  []byte
	OriginRealm []byte
	DestHost    []byte
	DestRealm   []byte
	// RouteRecords counts Route-Record AVPs; HasRouteRecord looks one up.
	RouteRecords int

	ResultCode    uint32
	HasResult     bool
	ExpResultCode uint32
	HasExpResult  bool
	// CCRequestType is the Credit-Control CC-Request-Type (0: absent).
	CCRequestType uint32
	// OriginStateID (with HasOriginState) and DisconnectCause (with
	// HasDisconnectCause) come from CER/CEA and DPR.
	OriginStateID      uint32
	HasOriginState     bool
	DisconnectCause    uint32
	HasDisconnectCause bool
	// InbandSecurity lists Inband-Security-Id values of a CER/CEA.
	InbandTLS bool

	Apps AppIDs
}

// Parse checks b and reads its routing AVPs; see the package comment.
func Parse(b []byte) (Msg, error) {
	var m Msg
	err := m.parse(b)
	return m, err
}

// ParseInto is Parse without copying Msg, for hot paths.
func (m *Msg) ParseInto(b []byte) error {
	*m = Msg{}
	return m.parse(b)
}

func (m *Msg) parse(b []byte) error {
	h, err := ParseHeader(b)
	m.Header, m.Raw = h, b
	if err != nil {
		return err
	}
	m.Apps.Auth, m.Apps.Acct, m.Apps.VS = m.Apps.authA[:0], m.Apps.acctA[:0], m.Apps.vsA[:0]
	// avpAt's checks, in line, with take called directly and only for
	// an AVP of no vendor: building and returning an AVP per AVP (a call
	// and two copies of its nine words) was most of the agent machine's
	// time per message.
	body := b[HeaderLen:]
	for off := 0; off < len(body); {
		r := body[off:]
		if len(r) < 8 {
			return avpError(body, off, HeaderLen)
		}
		flags := r[4]
		n := int(r[5])<<16 | int(r[6])<<8 | int(r[7])
		h := 8
		if flags&AVPVendor != 0 {
			h = 12
		}
		// The padded length within r implies the length within r.
		l := (n + 3) &^ 3
		if flags&avpFlagsUnused != 0 || n < h || l > len(r) {
			return avpError(body, off, HeaderLen)
		}
		if h == 8 || binary.BigEndian.Uint32(r[8:]) == 0 {
			if err := m.take(binary.BigEndian.Uint32(r), r[h:n:n], HeaderLen+off, h); err != nil {
				return err
			}
		}
		off += l
	}
	return nil
}

// take reads an AVP of no vendor: its code, its data, its offset in the
// message and the length of its header (8, or 12 with a Vendor-ID of 0).
func (m *Msg) take(code uint32, data []byte, off, hdr int) error {
	switch code {
	case AVPSessionID:
		return once(&m.SessionID, code, data, off, false)
	case AVPOriginHost:
		return once(&m.OriginHost, code, data, off, true)
	case AVPOriginRealm:
		return once(&m.OriginRealm, code, data, off, true)
	case AVPDestinationHost:
		return once(&m.DestHost, code, data, off, true)
	case AVPDestinationRealm:
		return once(&m.DestRealm, code, data, off, true)
	case AVPRouteRecord:
		if len(data) == 0 {
			return bad(BadAVPValue, off, "empty Route-Record")
		}
		m.RouteRecords++
	case AVPResultCode:
		if m.HasResult {
			return bad(Repeated, off, "second Result-Code")
		}
		v, err := u32(code, data, off)
		m.ResultCode, m.HasResult = v, true
		return err
	case AVPExperimentalResult:
		inner := off + hdr
		return Walk(data, inner, func(in AVP) error {
			if in.Code == AVPExperimentalCode && in.Vendor == 0 {
				v, err := u32(in.Code, in.Data, inner+in.Off)
				m.ExpResultCode, m.HasExpResult = v, true
				return err
			}
			return nil
		})
	case AVPCCRequestType:
		v, err := u32(code, data, off)
		m.CCRequestType = v
		return err
	case AVPOriginStateID:
		v, err := u32(code, data, off)
		m.OriginStateID, m.HasOriginState = v, true
		return err
	case AVPDisconnectCause:
		v, err := u32(code, data, off)
		m.DisconnectCause, m.HasDisconnectCause = v, true
		return err
	case AVPInbandSecurityID:
		v, err := u32(code, data, off)
		if v == 1 {
			m.InbandTLS = true
		}
		return err
	case AVPAuthAppID:
		v, err := u32(code, data, off)
		m.Apps.Auth = append(m.Apps.Auth, v)
		return err
	case AVPAcctAppID:
		v, err := u32(code, data, off)
		m.Apps.Acct = append(m.Apps.Acct, v)
		return err
	case AVPVendorSpecificApp:
		var vs VSApp
		dataOff := off + hdr
		err := Walk(data, dataOff, func(in AVP) error {
			if in.Vendor != 0 {
				return nil
			}
			var err error
			switch in.Code {
			case AVPVendorID:
				vs.Vendor, err = u32(in.Code, in.Data, dataOff+in.Off)
			case AVPAuthAppID:
				vs.Auth, err = u32(in.Code, in.Data, dataOff+in.Off)
			case AVPAcctAppID:
				vs.Acct, err = u32(in.Code, in.Data, dataOff+in.Off)
			}
			return err
		})
		if err != nil {
			return err
		}
		m.Apps.VS = append(m.Apps.VS, vs)
	}
	return nil
}

func once(dst *[]byte, code uint32, data []byte, off int, identity bool) error {
	if *dst != nil {
		return bad(Repeated, off, "AVP %d occurs twice", code)
	}
	if identity && len(data) == 0 {
		return bad(BadAVPValue, off, "empty DiameterIdentity in AVP %d", code)
	}
	*dst = data
	return nil
}

func u32(code uint32, data []byte, off int) (uint32, error) {
	if len(data) != 4 {
		return 0, bad(BadAVPLength, off, "AVP %d: %d data bytes, Unsigned32 needs 4", code, len(data))
	}
	return binary.BigEndian.Uint32(data), nil
}

// HasRouteRecord reports whether a Route-Record AVP holds identity (RFC
// 6733 §6.1.3: a relay finding its own identity there has a loop).
// DiameterIdentity comparison is case-insensitive (it is an FQDN).
func (m *Msg) HasRouteRecord(identity string) bool {
	if m.RouteRecords == 0 {
		return false
	}
	found := false
	_ = Walk(m.Raw[HeaderLen:], HeaderLen, func(a AVP) error {
		if a.Code == AVPRouteRecord && a.Vendor == 0 && EqualIdentity(a.Data, identity) {
			found = true
			return errStop
		}
		return nil
	})
	return found
}

var errStop = errors.New("stop")

// EqualIdentity compares DiameterIdentities ASCII case-insensitively.
func EqualIdentity(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Result returns the answer's result: Result-Code, else the
// Experimental-Result-Code, else 0.
func (m *Msg) Result() uint32 {
	if m.HasResult {
		return m.ResultCode
	}
	if m.HasExpResult {
		return m.ExpResultCode
	}
	return 0
}

// Application returns the application a request is for, for routing and
// metrics: the header's application ID (RFC 6733 §6.1.5 routes by it).
func (m *Msg) Application() uint32 { return m.AppID }

// Advertised reports whether a CER/CEA advertises app (as Auth- or
// Acct-Application-Id, alone or vendor-specific); the relay application
// matches everything.
func (m *Msg) Advertised(app uint32) bool {
	for _, a := range m.Apps.Auth {
		if a == app || a == AppRelay {
			return true
		}
	}
	for _, a := range m.Apps.Acct {
		if a == app || a == AppRelay {
			return true
		}
	}
	for _, v := range m.Apps.VS {
		if v.Auth == app || v.Acct == app || v.Auth == AppRelay {
			return true
		}
	}
	return false
}

// CommandName names well-known commands for logs and metrics; others are
// their number.
func CommandName(code uint32, request bool) string {
	var n string
	switch code {
	case CmdCapabilitiesExchange:
		n = "CE"
	case CmdDeviceWatchdog:
		n = "DW"
	case CmdDisconnectPeer:
		n = "DP"
	case CmdCreditControl:
		n = "CC"
	case CmdSessionTermination:
		n = "ST"
	case CmdAbortSession:
		n = "AS"
	case CmdReAuth:
		n = "RA"
	case CmdAccounting:
		n = "AC"
	default:
		return fmt.Sprint(code)
	}
	if request {
		return n + "R"
	}
	return n + "A"
}
