// Package kdiag reads Linux kernel SCTP associations through sock_diag
// netlink (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY with protocol
// IPPROTO_SCTP, answered by the sctp_diag module, Linux 4.7+): per
// association its ports and addresses, both verification tags, its state
// and the inode of its socket. It exists because no SCTP socket option of
// Linux returns the verification tags, which an HA peer needs to ABORT an
// association of a dead node (sctplb/abort); the kernel transport reads
// them here (sctplb/transport/kernel).
//
// This file parses replies; netlink.go sends the request.
package kdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// State is an association's state as the kernel numbers it (enum
// sctp_state; idiag_state of an association's record).
type State uint8

// The kernel's association states.
const (
	StateClosed State = iota
	StateCookieWait
	StateCookieEchoed
	StateEstablished
	StateShutdownPending
	StateShutdownSent
	StateShutdownReceived
	StateShutdownAckSent
)

func (s State) String() string {
	names := [...]string{"CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
		"SHUTDOWN_PENDING", "SHUTDOWN_SENT", "SHUTDOWN_RECEIVED", "SHUTDOWN_ACK_SENT"}
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Assoc is one association as sctp_diag reports it.
type Assoc struct {
	// Family is the socket's address family (AF_INET or AF_INET6; an
	// AF_INET6 socket may carry IPv4 addresses).
	Family uint8
	State  State
	// LocalPort and PeerPort are the association's ports.
	LocalPort, PeerPort uint16
	// Locals are the association's bound addresses, in the kernel's
	// order (INET_DIAG_LOCALS); Peers the peer's transport addresses
	// (INET_DIAG_PEERS), the first the one the association started on.
	Locals, Peers []netip.Addr
	// Tag is this end's verification tag (the one the peer puts in every
	// packet it sends here, sctpi_tag); PeerTag is the peer's (the one
	// this end puts in its packets, and the one an ABORT to the peer must
	// carry with the T bit clear, sctpi_peer_tag).
	Tag, PeerTag uint32
	// Inode is the inode of the association's socket (one-to-one
	// sockets: one association per socket), what matches a record to a
	// file descriptor.
	Inode uint32
}

// Netlink and inet_diag constants (linux/netlink.h, linux/sock_diag.h,
// linux/inet_diag.h); x/sys is not a dependency of this module.
const (
	nlmsgHdrLen      = 16
	nlmsgNoop        = 1
	nlmsgError       = 2
	nlmsgDone        = 3
	sockDiagByFamily = 20

	diagMsgLen = 72 // struct inet_diag_msg
	diagReqLen = 56 // struct inet_diag_req_v2

	attrInfo   = 2  // INET_DIAG_INFO: struct sctp_info
	attrLocals = 12 // INET_DIAG_LOCALS: sockaddr_storage[]
	attrPeers  = 13 // INET_DIAG_PEERS: sockaddr_storage[]

	sockaddrStorageLen = 128
	// sctpInfoMin covers struct sctp_info up to sctpi_peer_tag (offset
	// 48); later fields are not read.
	sctpInfoMin = 52
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("kdiag: malformed sock_diag reply")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// Reply is what one datagram of a dump's answer held.
type Reply struct {
	Assocs []Assoc
	// Done: the dump ended (NLMSG_DONE) in this datagram.
	Done bool
}

// ParseReply parses one netlink datagram of a sock_diag answer: a
// sequence of messages, each SOCK_DIAG_BY_FAMILY (an association, or a
// socket's own record without peers, which is skipped), NLMSG_DONE or
// NLMSG_ERROR.
// Messages of another sequence number than seq are an error. An error
// message, or a DONE carrying an error, is returned as a syscall.Errno
// wrapped with context (ENOENT: no sctp_diag in the kernel).
func ParseReply(b []byte, seq uint32) (Reply, error) {
	var r Reply
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return r, malformed("%d trailing bytes, shorter than a message header", len(b))
		}
		n := int(binary.NativeEndian.Uint32(b[0:]))
		typ := binary.NativeEndian.Uint16(b[4:])
		s := binary.NativeEndian.Uint32(b[8:])
		if n < nlmsgHdrLen || n > len(b) {
			return r, malformed("message length %d with %d bytes left", n, len(b))
		}
		if s != seq {
			return r, malformed("message of sequence %d, want %d", s, seq)
		}
		body := b[nlmsgHdrLen:n]
		switch typ {
		case nlmsgNoop:
		case nlmsgDone:
			r.Done = true
			// A dump's DONE carries an int: negative is its error.
			if len(body) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(body)); e < 0 {
					return r, fmt.Errorf("kdiag: dump ended with %w", syscall.Errno(-e))
				}
			}
			return r, nil
		case nlmsgError:
			if len(body) < 4 {
				return r, malformed("error message of %d bytes", len(body))
			}
			e := int32(binary.NativeEndian.Uint32(body))
			if e == 0 { // an acknowledgement
				break
			}
			if e > 0 {
				return r, malformed("error message with positive code %d", e)
			}
			return r, fmt.Errorf("kdiag: sock_diag request refused: %w", syscall.Errno(-e))
		case sockDiagByFamily:
			a, assoc, err := ParseAssoc(body)
			if err != nil {
				return r, err
			}
			if assoc {
				r.Assocs = append(r.Assocs, a)
			}
		default:
			return r, malformed("message type %d", typ)
		}
		// Messages are aligned to 4 bytes; the last one may end the
		// datagram without padding.
		if step := align4(n); step < len(b) {
			b = b[step:]
		} else {
			b = nil
		}
	}
	return r, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// ParseAssoc parses the body of one SOCK_DIAG_BY_FAMILY answer: struct
// inet_diag_msg and its attributes. assoc is false for a socket's own
// record (sctp_diag sends one before the socket's associations, and one
// per listening socket: no INET_DIAG_PEERS, sctp_info zero). An
// association's record must carry INET_DIAG_INFO (the tags) and
// INET_DIAG_LOCALS.
func ParseAssoc(b []byte) (a Assoc, assoc bool, err error) {
	if len(b) < diagMsgLen {
		return Assoc{}, false, malformed("inet_diag_msg of %d bytes, want %d", len(b), diagMsgLen)
	}
	a.Family = b[0]
	a.State = State(b[1])
	a.LocalPort = binary.BigEndian.Uint16(b[4:])
	a.PeerPort = binary.BigEndian.Uint16(b[6:])
	a.Inode = binary.NativeEndian.Uint32(b[68:])
	var info, locals, peers []byte
	var haveInfo, haveLocals, havePeers bool
	for rest := b[diagMsgLen:]; len(rest) > 0; {
		if len(rest) < 4 {
			return Assoc{}, false, malformed("%d trailing attribute bytes", len(rest))
		}
		n := int(binary.NativeEndian.Uint16(rest[0:]))
		typ := binary.NativeEndian.Uint16(rest[2:]) &^ 0xc000 // NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if n < 4 || n > len(rest) {
			return Assoc{}, false, malformed("attribute %d of length %d with %d bytes left", typ, n, len(rest))
		}
		v := rest[4:n]
		switch typ {
		case attrInfo:
			info, haveInfo = v, true
		case attrLocals:
			locals, haveLocals = v, true
		case attrPeers:
			peers, havePeers = v, true
		}
		if step := align4(n); step < len(rest) {
			rest = rest[step:]
		} else {
			rest = nil
		}
	}
	if !havePeers {
		return Assoc{}, false, nil
	}
	if a.Family != syscall.AF_INET && a.Family != syscall.AF_INET6 {
		return Assoc{}, false, malformed("socket family %d", a.Family)
	}
	if !haveInfo {
		return Assoc{}, false, malformed("association %d->%d without INET_DIAG_INFO (sctp_info)", a.LocalPort, a.PeerPort)
	}
	if len(info) < sctpInfoMin {
		return Assoc{}, false, malformed("sctp_info of %d bytes, want at least %d", len(info), sctpInfoMin)
	}
	a.Tag = binary.NativeEndian.Uint32(info[0:])
	a.PeerTag = binary.NativeEndian.Uint32(info[48:])
	if !haveLocals {
		return Assoc{}, false, malformed("association %d->%d without INET_DIAG_LOCALS", a.LocalPort, a.PeerPort)
	}
	if a.Locals, err = parseAddrs(locals, "local"); err != nil {
		return Assoc{}, false, err
	}
	if a.Peers, err = parseAddrs(peers, "peer"); err != nil {
		return Assoc{}, false, err
	}
	if len(a.Peers) == 0 {
		return Assoc{}, false, malformed("association %d->%d without peer addresses", a.LocalPort, a.PeerPort)
	}
	return a, true, nil
}

// parseAddrs reads an array of sockaddr_storage holding sockaddr_in or
// sockaddr_in6 (the kernel's union sctp_addr, zero padded).
func parseAddrs(b []byte, what string) ([]netip.Addr, error) {
	if len(b)%sockaddrStorageLen != 0 {
		return nil, malformed("%s addresses: %d bytes, not a multiple of %d", what, len(b), sockaddrStorageLen)
	}
	var out []netip.Addr
	for ; len(b) > 0; b = b[sockaddrStorageLen:] {
		switch fam := binary.NativeEndian.Uint16(b); fam {
		case syscall.AF_INET:
			out = append(out, netip.AddrFrom4([4]byte(b[4:8])))
		case syscall.AF_INET6:
			out = append(out, netip.AddrFrom16([16]byte(b[8:24])))
		default:
			return nil, malformed("%s address of family %d", what, fam)
		}
	}
	return out, nil
}
