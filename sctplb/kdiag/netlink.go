package kdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Query selects what a dump returns.
type Query struct {
	// Family is the sockets' address family: syscall.AF_INET or
	// AF_INET6 (the kernel answers for sockets of that family only; an
	// AF_INET6 socket may hold IPv4 associations).
	Family uint8
	// LocalPort and PeerPort, when not 0, make the kernel return only
	// associations with those ports.
	LocalPort, PeerPort uint16
}

// Request is the netlink message of q's dump with sequence number seq:
// struct inet_diag_req_v2 for IPPROTO_SCTP asking for INET_DIAG_INFO,
// every state but LISTEN (no listening sockets), no socket cookie. The
// kernel still sends, before each association, its socket's own record
// (no peers; ParseReply skips it). Seen on 6.1 with ten associations: 20
// records unfiltered, 2 with both ports set.
func Request(q Query, seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+diagReqLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(b[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	r[0] = q.Family
	r[1] = syscall.IPPROTO_SCTP
	r[2] = 1 << (attrInfo - 1) // idiag_ext: INET_DIAG_INFO
	const tcpListen = 10
	binary.NativeEndian.PutUint32(r[4:], ^uint32(1<<tcpListen)) // idiag_states
	binary.BigEndian.PutUint16(r[8:], q.LocalPort)
	binary.BigEndian.PutUint16(r[10:], q.PeerPort)
	// idiag_cookie: INET_DIAG_NOCOOKIE.
	binary.NativeEndian.PutUint32(r[48:], ^uint32(0))
	binary.NativeEndian.PutUint32(r[52:], ^uint32(0))
	return b
}

// replyTimeout bounds the wait for the kernel's answer (it answers at
// once; the bound only keeps a broken kernel from hanging the caller).
const replyTimeout = 2 * time.Second

// Dump asks the kernel of the calling thread's network namespace for the
// SCTP associations q selects. It needs no privilege. Where sctp_diag is
// missing (not built, module not loaded and not loadable) the error wraps
// syscall.ENOENT.
func Dump(q Query) ([]Assoc, error) {
	if q.Family != syscall.AF_INET && q.Family != syscall.AF_INET6 {
		return nil, fmt.Errorf("kdiag: dump: family %d, want AF_INET or AF_INET6", q.Family)
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("kdiag: netlink socket: %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(replyTimeout.Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("kdiag: netlink receive timeout: %w", err)
	}
	const seq = 1 // one request per socket
	if err := syscall.Sendto(fd, Request(q, seq), 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("kdiag: send sock_diag request: %w", err)
	}
	var out []Assoc
	// A dump datagram holds at most a page or two of messages; 64 KiB
	// is above anything the kernel builds.
	buf := make([]byte, 64<<10)
	for {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) {
				return nil, fmt.Errorf("kdiag: no answer from the kernel within %v", replyTimeout)
			}
			return nil, fmt.Errorf("kdiag: receive: %w", err)
		}
		if nl, ok := from.(*syscall.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // not the kernel's
		}
		r, err := ParseReply(buf[:n], seq)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) {
				return nil, fmt.Errorf("%w (is the sctp_diag module loaded? modprobe sctp_diag)", err)
			}
			return nil, err
		}
		out = append(out, r.Assocs...)
		if r.Done {
			return out, nil
		}
	}
}
