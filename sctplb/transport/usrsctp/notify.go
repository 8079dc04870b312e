package usrsctp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Notification is an SCTP event delivered in band (RFC 6458 section 6.1):
// *AssocChange, *PeerAddrChange, *RemoteError, *ShutdownEvent, *SendFailed
// or *UnknownNotification.
type Notification interface {
	notification()
	String() string
}

// Notification types (RFC 6458).
const (
	typeAssocChange    = 0x0001
	typePeerAddrChange = 0x0002
	typeRemoteError    = 0x0003
	typeShutdownEvent  = 0x0005
	typeSendFailed     = 0x000e
)

// AssocState is an association change state.
type AssocState uint16

// Association change states.
const (
	CommUp       AssocState = 1
	CommLost     AssocState = 2
	Restart      AssocState = 3
	ShutdownComp AssocState = 4
	CantStrAssoc AssocState = 5
)

func (s AssocState) String() string {
	switch s {
	case CommUp:
		return "COMM_UP"
	case CommLost:
		return "COMM_LOST"
	case Restart:
		return "RESTART"
	case ShutdownComp:
		return "SHUTDOWN_COMP"
	case CantStrAssoc:
		return "CANT_STR_ASSOC"
	}
	return fmt.Sprintf("ASSOC_STATE(%d)", uint16(s))
}

// AddrState is a peer address change state.
type AddrState uint32

// Peer address states.
const (
	AddrAvailable   AddrState = 1
	AddrUnreachable AddrState = 2
	AddrRemoved     AddrState = 3
	AddrAdded       AddrState = 4
	AddrMadePrim    AddrState = 5
	AddrConfirmed   AddrState = 6
)

func (s AddrState) String() string {
	switch s {
	case AddrAvailable:
		return "ADDR_AVAILABLE"
	case AddrUnreachable:
		return "ADDR_UNREACHABLE"
	case AddrRemoved:
		return "ADDR_REMOVED"
	case AddrAdded:
		return "ADDR_ADDED"
	case AddrMadePrim:
		return "ADDR_MADE_PRIM"
	case AddrConfirmed:
		return "ADDR_CONFIRMED"
	}
	return fmt.Sprintf("ADDR_STATE(%d)", uint32(s))
}

// AssocChange reports an association coming up, going down or restarting.
type AssocChange struct {
	State                      AssocState
	Error                      uint16
	OutboundStreams, InStreams uint16
	AssocID                    uint32
}

// PeerAddrChange reports a peer address becoming reachable, unreachable,
// primary, added or removed: the failover signal.
type PeerAddrChange struct {
	Addr    netip.AddrPort
	State   AddrState
	Error   uint32
	AssocID uint32
}

// RemoteError carries an ERROR chunk's cause from the peer.
type RemoteError struct {
	Error   uint16
	AssocID uint32
}

// ShutdownEvent: the peer sent SHUTDOWN; no more data will arrive.
type ShutdownEvent struct{ AssocID uint32 }

// SendFailed: a message could not be delivered.
type SendFailed struct {
	Error   uint32
	Stream  uint16
	PPID    uint32
	AssocID uint32
}

// UnknownNotification is a notification type this package does not decode.
type UnknownNotification struct{ Type uint16 }

func (*AssocChange) notification()         {}
func (*PeerAddrChange) notification()      {}
func (*RemoteError) notification()         {}
func (*ShutdownEvent) notification()       {}
func (*SendFailed) notification()          {}
func (*UnknownNotification) notification() {}

func (n *AssocChange) String() string {
	return fmt.Sprintf("assoc %d %s (error %d, streams out %d in %d)", n.AssocID, n.State, n.Error, n.OutboundStreams, n.InStreams)
}
func (n *PeerAddrChange) String() string {
	return fmt.Sprintf("assoc %d peer %s %s (error %d)", n.AssocID, n.Addr, n.State, n.Error)
}
func (n *RemoteError) String() string {
	return fmt.Sprintf("assoc %d remote error cause %d", n.AssocID, n.Error)
}
func (n *ShutdownEvent) String() string { return fmt.Sprintf("assoc %d shutdown", n.AssocID) }
func (n *SendFailed) String() string {
	return fmt.Sprintf("assoc %d send failed on stream %d ppid %d (error %d)", n.AssocID, n.Stream, n.PPID, n.Error)
}
func (n *UnknownNotification) String() string { return fmt.Sprintf("notification type %#x", n.Type) }

// Struct layouts of usrsctp.h on Linux, in host byte order; cgo.go checks
// these offsets against the C header at compile time.
const (
	notifHeaderLen      = 8
	assocChangeLen      = 20  // up to sac_info
	paddrAddrOff        = 8   // spc_aaddr (sockaddr_storage)
	paddrStateOff       = 136 // spc_state
	paddrLen            = 148 // through spc_assoc_id
	remoteErrorLen      = 16  // through sre_assoc_id
	shutdownEventLen    = 12
	sendFailedInfoOff   = 12 // ssfe_info (sctp_sndinfo)
	sendFailedAssocOff  = 28 // ssfe_assoc_id
	sendFailedLen       = 32
	sockaddrStorageSize = 128
)

// parseNotification decodes a notification as read from the socket (the
// message had MSG_NOTIFICATION set). It never panics on short or garbled
// input.
func parseNotification(b []byte) (Notification, error) {
	if len(b) < notifHeaderLen {
		return nil, fmt.Errorf("usrsctp: notification of %d bytes, want at least %d", len(b), notifHeaderLen)
	}
	ne := binary.NativeEndian
	typ := ne.Uint16(b[0:])
	length := ne.Uint32(b[4:])
	if int64(length) > int64(len(b)) {
		return nil, fmt.Errorf("usrsctp: notification type %#x claims %d bytes, got %d", typ, length, len(b))
	}
	b = b[:length]
	need := func(n int) error {
		if len(b) < n {
			return fmt.Errorf("usrsctp: notification type %#x: %d bytes, want %d", typ, len(b), n)
		}
		return nil
	}
	switch typ {
	case typeAssocChange:
		if err := need(assocChangeLen); err != nil {
			return nil, err
		}
		return &AssocChange{
			State:           AssocState(ne.Uint16(b[8:])),
			Error:           ne.Uint16(b[10:]),
			OutboundStreams: ne.Uint16(b[12:]),
			InStreams:       ne.Uint16(b[14:]),
			AssocID:         ne.Uint32(b[16:]),
		}, nil
	case typePeerAddrChange:
		if err := need(paddrLen); err != nil {
			return nil, err
		}
		addr, err := parseSockaddr(b[paddrAddrOff : paddrAddrOff+sockaddrStorageSize])
		if err != nil {
			return nil, fmt.Errorf("usrsctp: peer address change: %w", err)
		}
		return &PeerAddrChange{
			Addr:    addr,
			State:   AddrState(ne.Uint32(b[paddrStateOff:])),
			Error:   ne.Uint32(b[paddrStateOff+4:]),
			AssocID: ne.Uint32(b[paddrStateOff+8:]),
		}, nil
	case typeRemoteError:
		if err := need(remoteErrorLen); err != nil {
			return nil, err
		}
		return &RemoteError{Error: ne.Uint16(b[8:]), AssocID: ne.Uint32(b[12:])}, nil
	case typeShutdownEvent:
		if err := need(shutdownEventLen); err != nil {
			return nil, err
		}
		return &ShutdownEvent{AssocID: ne.Uint32(b[8:])}, nil
	case typeSendFailed:
		if err := need(sendFailedLen); err != nil {
			return nil, err
		}
		return &SendFailed{
			Error:   ne.Uint32(b[8:]),
			Stream:  ne.Uint16(b[sendFailedInfoOff:]),
			PPID:    binary.BigEndian.Uint32(b[sendFailedInfoOff+4:]),
			AssocID: ne.Uint32(b[sendFailedAssocOff:]),
		}, nil
	}
	return &UnknownNotification{Type: typ}, nil
}

const (
	afInet  = 2
	afInet6 = 10
)

// parseSockaddr decodes a Linux sockaddr_in or sockaddr_in6.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("sockaddr of %d bytes", len(b))
	}
	switch fam := binary.NativeEndian.Uint16(b); fam {
	case afInet:
		if len(b) < 8 {
			return netip.AddrPort{}, fmt.Errorf("sockaddr_in of %d bytes", len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), nil
	case afInet6:
		if len(b) < 24 {
			return netip.AddrPort{}, fmt.Errorf("sockaddr_in6 of %d bytes", len(b))
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), binary.BigEndian.Uint16(b[2:])), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("address family %d", fam)
	}
}

// appendSockaddr appends a Linux sockaddr_in (IPv4) or sockaddr_in6 for
// a:port, the packed form bindx and connectx take.
func appendSockaddr(dst []byte, a netip.Addr, port uint16) []byte {
	if a.Is4() || a.Is4In6() {
		var sa [16]byte
		binary.NativeEndian.PutUint16(sa[0:], afInet)
		binary.BigEndian.PutUint16(sa[2:], port)
		v4 := a.Unmap().As4()
		copy(sa[4:], v4[:])
		return append(dst, sa[:]...)
	}
	var sa [28]byte
	binary.NativeEndian.PutUint16(sa[0:], afInet6)
	binary.BigEndian.PutUint16(sa[2:], port)
	v6 := a.As16()
	copy(sa[8:], v6[:])
	return append(dst, sa[:]...)
}
