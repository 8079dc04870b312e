package diameter

import (
	"encoding/binary"
	"net/netip"
)

// SetHopByHop rewrites the hop-by-hop identifier in place.
func SetHopByHop(b []byte, id uint32) { binary.BigEndian.PutUint32(b[12:], id) }

// HopByHop reads the hop-by-hop identifier of a message of at least
// HeaderLen bytes.
func HopByHop(b []byte) uint32 { return binary.BigEndian.Uint32(b[12:]) }

// SetRetransmit sets the T flag in place (RFC 6733 §3: a request re-sent
// after a link failover).
func SetRetransmit(b []byte) { b[4] |= FlagRetransmit }

// AppendAVP appends an encoded AVP (from EncodeAVP) to msg and fixes the
// header's length; nothing else is re-encoded. msg must be a whole message.
func AppendAVP(msg, avp []byte) []byte {
	out := append(msg, avp...)
	n := len(out)
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

// EncodeAVP encodes one AVP with padding; vendor != 0 sets the V flag.
func EncodeAVP(code uint32, flags uint8, vendor uint32, data []byte) []byte {
	return AppendEncodedAVP(nil, code, flags, vendor, data)
}

// AppendEncodedAVP is EncodeAVP appending to dst.
func AppendEncodedAVP(dst []byte, code uint32, flags uint8, vendor uint32, data []byte) []byte {
	h := 8
	if vendor != 0 {
		flags |= AVPVendor
		h = 12
	} else {
		flags &^= AVPVendor
	}
	n := h + len(data)
	dst = binary.BigEndian.AppendUint32(dst, code)
	dst = append(dst, flags, byte(n>>16), byte(n>>8), byte(n))
	if vendor != 0 {
		dst = binary.BigEndian.AppendUint32(dst, vendor)
	}
	dst = append(dst, data...)
	for ; n%4 != 0; n++ {
		dst = append(dst, 0)
	}
	return dst
}

// U32 encodes a base Unsigned32/Enumerated AVP with the M flag.
func U32(code, v uint32) []byte {
	return EncodeAVP(code, AVPMandatory, 0, binary.BigEndian.AppendUint32(nil, v))
}

// Str encodes a base OctetString/UTF8String/DiameterIdentity AVP with the M
// flag.
func Str(code uint32, s string) []byte { return EncodeAVP(code, AVPMandatory, 0, []byte(s)) }

// Address encodes a base Address AVP (RFC 6733 §4.3.1: address family,
// then the address).
func Address(code uint32, a netip.Addr) []byte {
	var d []byte
	if a.Is4() || a.Is4In6() {
		v := a.Unmap().As4()
		d = append([]byte{0, 1}, v[:]...)
	} else {
		v := a.As16()
		d = append([]byte{0, 2}, v[:]...)
	}
	return EncodeAVP(code, AVPMandatory, 0, d)
}

// Grouped encodes a base Grouped AVP from encoded AVPs.
func Grouped(code uint32, flags uint8, avps ...[]byte) []byte {
	var d []byte
	for _, a := range avps {
		d = append(d, a...)
	}
	return EncodeAVP(code, flags, 0, d)
}

// Message encodes a header and AVPs.
func Message(flags uint8, code, app, hbh, e2e uint32, avps ...[]byte) []byte {
	n := HeaderLen
	for _, a := range avps {
		n += len(a)
	}
	b := make([]byte, HeaderLen, n)
	b[0] = Version
	b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n)
	b[4] = flags
	b[5], b[6], b[7] = byte(code>>16), byte(code>>8), byte(code)
	binary.BigEndian.PutUint32(b[8:], app)
	binary.BigEndian.PutUint32(b[12:], hbh)
	binary.BigEndian.PutUint32(b[16:], e2e)
	for _, a := range avps {
		b = append(b, a...)
	}
	return b
}

// Identity is a node's Origin-Host and Origin-Realm.
type Identity struct {
	Host, Realm string
}

// Answer builds an answer to the request h (same command, application,
// hop-by-hop and end-to-end identifiers; P copied) from the node id with
// the given result: Session-Id first when the request had one, then
// Origin-Host, Origin-Realm, Result-Code, then extra (Error-Message,
// Failed-AVP...). A 3xxx result sets the E flag and makes this the generic
// answer-message of RFC 6733 §7.2.
func Answer(h Header, sessionID []byte, id Identity, result uint32, extra ...[]byte) []byte {
	flags := h.Flags & FlagProxiable
	if result >= 3000 && result < 4000 {
		flags |= FlagError
	}
	avps := make([][]byte, 0, 4+len(extra))
	if sessionID != nil {
		avps = append(avps, EncodeAVP(AVPSessionID, AVPMandatory, 0, sessionID))
	}
	avps = append(avps, Str(AVPOriginHost, id.Host), Str(AVPOriginRealm, id.Realm), U32(AVPResultCode, result))
	avps = append(avps, extra...)
	return Message(flags, h.Code, h.AppID, h.HopByHop, h.EndToEnd, avps...)
}

// ErrorAnswer answers a malformed request per e: the result of the error,
// an Error-Message, and the offending AVP in Failed-AVP where there is one.
// ok is false when the message cannot be answered (no readable header).
func ErrorAnswer(b []byte, e *Error, id Identity) (ans []byte, ok bool) {
	if !e.Answerable() || len(b) < HeaderLen {
		return nil, false
	}
	h := Header{Flags: b[4], Code: uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]),
		AppID: binary.BigEndian.Uint32(b[8:]), HopByHop: binary.BigEndian.Uint32(b[12:]), EndToEnd: binary.BigEndian.Uint32(b[16:])}
	extra := [][]byte{EncodeAVP(AVPErrorMessage, 0, 0, []byte(e.Detail))}
	if f := e.FailedAVP(b); f != nil {
		extra = append(extra, Grouped(AVPFailedAVP, AVPMandatory, padded(f)))
	}
	return Answer(h, sessionIDOf(b), id, e.Result(), extra...), true
}

// padded returns b padded to a multiple of 4 (a truncated AVP header copied
// into Failed-AVP).
func padded(b []byte) []byte {
	if len(b)%4 == 0 {
		return b
	}
	out := append([]byte(nil), b...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// sessionIDOf finds a Session-Id in a message that may be malformed further
// on: the AVPs before the fault are walked.
func sessionIDOf(b []byte) []byte {
	if len(b) < HeaderLen {
		return nil
	}
	end := int(uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	if end > len(b) || end < HeaderLen {
		end = len(b)
	}
	var sid []byte
	_ = Walk(b[HeaderLen:end&^3], HeaderLen, func(a AVP) error {
		if a.Code == AVPSessionID && a.Vendor == 0 {
			sid = a.Data
			return errStop
		}
		return nil
	})
	return sid
}

// Capabilities is what a node advertises in a CER or CEA.
type Capabilities struct {
	Identity
	HostIPs     []netip.Addr
	VendorID    uint32
	ProductName string
	OriginState uint32
	// AuthApps, AcctApps and VSApps are the applications advertised;
	// relay agents advertise AuthApps = {AppRelay}.
	AuthApps, AcctApps []uint32
	VSApps             []VSApp
	SupportedVendors   []uint32
	Firmware           uint32
}

func (c Capabilities) avps() [][]byte {
	avps := [][]byte{Str(AVPOriginHost, c.Host), Str(AVPOriginRealm, c.Realm)}
	for _, a := range c.HostIPs {
		avps = append(avps, Address(AVPHostIPAddress, a))
	}
	avps = append(avps, U32(AVPVendorID, c.VendorID), EncodeAVP(AVPProductName, 0, 0, []byte(c.ProductName)))
	if c.OriginState != 0 {
		avps = append(avps, U32(AVPOriginStateID, c.OriginState))
	}
	for _, v := range c.SupportedVendors {
		avps = append(avps, U32(AVPSupportedVendorID, v))
	}
	for _, a := range c.AuthApps {
		avps = append(avps, U32(AVPAuthAppID, a))
	}
	for _, a := range c.AcctApps {
		avps = append(avps, U32(AVPAcctAppID, a))
	}
	for _, v := range c.VSApps {
		in := [][]byte{U32(AVPVendorID, v.Vendor)}
		if v.Auth != 0 {
			in = append(in, U32(AVPAuthAppID, v.Auth))
		}
		if v.Acct != 0 {
			in = append(in, U32(AVPAcctAppID, v.Acct))
		}
		avps = append(avps, Grouped(AVPVendorSpecificApp, AVPMandatory, in...))
	}
	if c.Firmware != 0 {
		avps = append(avps, EncodeAVP(AVPFirmwareRevision, 0, 0, binary.BigEndian.AppendUint32(nil, c.Firmware)))
	}
	return avps
}

// CER builds a Capabilities-Exchange-Request.
func CER(c Capabilities, hbh, e2e uint32) []byte {
	return Message(FlagRequest, CmdCapabilitiesExchange, AppCommon, hbh, e2e, c.avps()...)
}

// CEA builds a Capabilities-Exchange-Answer to req.
func CEA(req Header, c Capabilities, result uint32) []byte {
	flags := uint8(0)
	if result >= 3000 && result < 4000 {
		flags = FlagError
	}
	avps := append([][]byte{U32(AVPResultCode, result)}, c.avps()...)
	return Message(flags, CmdCapabilitiesExchange, AppCommon, req.HopByHop, req.EndToEnd, avps...)
}

// DWR builds a Device-Watchdog-Request.
func DWR(id Identity, originState, hbh, e2e uint32) []byte {
	avps := [][]byte{Str(AVPOriginHost, id.Host), Str(AVPOriginRealm, id.Realm)}
	if originState != 0 {
		avps = append(avps, U32(AVPOriginStateID, originState))
	}
	return Message(FlagRequest, CmdDeviceWatchdog, AppCommon, hbh, e2e, avps...)
}

// DPR builds a Disconnect-Peer-Request with the given Disconnect-Cause.
func DPR(id Identity, cause, hbh, e2e uint32) []byte {
	return Message(FlagRequest, CmdDisconnectPeer, AppCommon, hbh, e2e,
		Str(AVPOriginHost, id.Host), Str(AVPOriginRealm, id.Realm), U32(AVPDisconnectCause, cause))
}

// RouteRecord encodes a Route-Record AVP naming host.
func RouteRecord(host string) []byte { return Str(AVPRouteRecord, host) }

// AppendRouteRecord appends a Route-Record AVP naming host to the whole
// message msg and fixes the header's length: AppendAVP(msg,
// RouteRecord(host)) without the AVP's own buffer. It writes into msg's
// spare capacity when there is enough.
func AppendRouteRecord(msg []byte, host string) []byte {
	out := AppendEncodedAVP(msg, AVPRouteRecord, AVPMandatory, 0, []byte(host))
	n := len(out)
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	return out
}
