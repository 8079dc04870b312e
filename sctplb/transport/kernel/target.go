package kernel

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/kdiag"
	"github.com/telcolb/telcolb/sctplb/transport"
)

var _ transport.AbortTargeter = (*conn)(nil)

// AbortTarget names the association for an ABORT from another node: no
// socket option of Linux's SCTP gives the verification tags, so they are
// read from sctp_diag (sctplb/kdiag; Linux 4.7+, module sctp_diag), the
// kernel's record of this socket found by its ports and matched by the
// socket's inode (one association per one-to-one socket). The target is
// sent from this end's first address of the peer's family to the peer's
// first address, with the peer's tag, as the userspace transport's.
func (c *conn) AbortTarget() (abort.Target, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return abort.Target{}, fmt.Errorf("kernel sctp: abort target: %w", transport.ErrClosed)
	}
	rc, err := c.c.SyscallConn()
	if err != nil {
		return abort.Target{}, fmt.Errorf("kernel sctp: abort target: %w", err)
	}
	var q kdiag.Query
	var ino uint64
	var serr error
	if err := rc.Control(func(fd uintptr) { q, ino, serr = socketIdentity(int(fd)) }); err != nil {
		return abort.Target{}, fmt.Errorf("kernel sctp: abort target: %w", err)
	}
	if serr != nil {
		return abort.Target{}, fmt.Errorf("kernel sctp: abort target: %w", serr)
	}
	assocs, err := kdiag.Dump(q)
	if err != nil {
		return abort.Target{}, fmt.Errorf("kernel sctp: abort target: %w", err)
	}
	for _, a := range assocs {
		if uint64(a.Inode) == ino {
			return targetOf(a)
		}
	}
	return abort.Target{}, fmt.Errorf("kernel sctp: abort target: sctp_diag lists no association of socket inode %d among %d with ports %d->%d",
		ino, len(assocs), q.LocalPort, q.PeerPort)
}

// socketIdentity is what finds fd's association in sctp_diag: its family
// and ports (the kernel filters on them) and its inode.
func socketIdentity(fd int) (kdiag.Query, uint64, error) {
	dom, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	if err != nil {
		return kdiag.Query{}, 0, fmt.Errorf("socket domain: %w", err)
	}
	local, err := syscall.Getsockname(fd)
	if err != nil {
		return kdiag.Query{}, 0, fmt.Errorf("local address: %w", err)
	}
	peer, err := syscall.Getpeername(fd)
	if err != nil {
		return kdiag.Query{}, 0, fmt.Errorf("peer address: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return kdiag.Query{}, 0, fmt.Errorf("fstat: %w", err)
	}
	lp, pp := port(local), port(peer)
	if lp == 0 || pp == 0 {
		return kdiag.Query{}, 0, fmt.Errorf("socket without ports (local %d, peer %d)", lp, pp)
	}
	return kdiag.Query{Family: uint8(dom), LocalPort: lp, PeerPort: pp}, st.Ino, nil
}

func port(sa syscall.Sockaddr) uint16 {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return uint16(a.Port)
	case *syscall.SockaddrInet6:
		return uint16(a.Port)
	}
	return 0
}

// targetOf is the ABORT target of a (abort.TargetOf: as the userspace
// transport's).
func targetOf(a kdiag.Assoc) (abort.Target, error) {
	locals := make([]netip.AddrPort, len(a.Locals))
	for i, l := range a.Locals {
		locals[i] = netip.AddrPortFrom(l, a.LocalPort)
	}
	peers := make([]netip.AddrPort, len(a.Peers))
	for i, p := range a.Peers {
		peers[i] = netip.AddrPortFrom(p, a.PeerPort)
	}
	t, err := abort.TargetOf(locals, peers, a.PeerTag)
	if err != nil {
		return abort.Target{}, fmt.Errorf("kernel sctp: %w", err)
	}
	return t, nil
}
