package usrsctp

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxRawSocketBuffer bounds Config.RawSocketBuffer: the kernel doubles the
// value and keeps it in an int, and no sane burst needs more.
const maxRawSocketBuffer = 1 << 30

// rawSocket is one of the raw SCTP sockets usrsctp opened for itself in
// raw-IP mode (one per address family).
type rawSocket struct {
	fd             int
	family         int
	rcvbuf, sndbuf int
}

// findRawSCTPSockets lists the process's raw IPPROTO_SCTP sockets. usrsctp
// creates them inside usrsctp_init and exposes no handle, so the only way to
// size their buffers is to find them among the process's descriptors.
func findRawSCTPSockets() ([]rawSocket, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("usrsctp: list descriptors: %w", err)
	}
	var out []rawSocket
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Any descriptor that is not a raw SCTP socket (files, the
		// directory being read, sockets of other kinds) fails one of
		// these checks and is left untouched.
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_RAW {
			continue
		}
		if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_SCTP {
			continue
		}
		family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			continue
		}
		rs := rawSocket{fd: fd, family: family}
		rs.rcvbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		rs.sndbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
		out = append(out, rs)
	}
	return out, nil
}

// setRawSocketBuffers sizes both buffers of every raw SCTP socket usrsctp
// opened. usrsctp sizes them to 128 KiB (the kernel reports 256 KiB), which
// a burst of a thousand UEs' messages overflows: the kernel drops what does
// not fit and each lost packet costs its sender a whole RTO. usrsctp also sends with MSG_DONTWAIT,
// so a full send buffer drops outgoing packets (Ip:OutDiscards) the same way.
//
// SO_*BUFFORCE ignores net.core.[rw]mem_max but needs CAP_NET_ADMIN; without
// it the capped SO_*BUF is used and the size actually obtained is logged.
func (s *Stack) setRawSocketBuffers(size int) error {
	socks, err := findRawSCTPSockets()
	if err != nil {
		return err
	}
	if len(socks) == 0 {
		return errors.New("usrsctp: RawSocketBuffer: usrsctp opened no raw SCTP socket in this process")
	}
	for _, rs := range socks {
		for _, o := range []struct {
			name         string
			force, plain int
		}{
			{"receive", unix.SO_RCVBUFFORCE, unix.SO_RCVBUF},
			{"send", unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
		} {
			errForce := unix.SetsockoptInt(rs.fd, unix.SOL_SOCKET, o.force, size)
			if errForce == nil {
				continue
			}
			if err := unix.SetsockoptInt(rs.fd, unix.SOL_SOCKET, o.plain, size); err != nil {
				return fmt.Errorf("usrsctp: RawSocketBuffer=%d: %s buffer of raw SCTP socket fd %d: %w (forced: %w)",
					size, o.name, rs.fd, err, errForce)
			}
			got, _ := unix.GetsockoptInt(rs.fd, unix.SOL_SOCKET, o.plain)
			s.log.Warn("usrsctp: raw socket buffer capped by net.core limits (no CAP_NET_ADMIN)",
				"buffer", o.name, "fd", rs.fd, "want", size, "got", got, "force_err", errForce)
		}
	}
	s.log.Debug("usrsctp: raw socket buffers set", "sockets", len(socks), "size", size)
	return nil
}
