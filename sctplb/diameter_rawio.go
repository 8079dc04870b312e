package sctplb

// The Diameter agent's TCP reads and inline writes are system calls on
// non-blocking sockets, made without the runtime's system-call
// bookkeeping (unix.RawSyscall rather than unix.Syscall, which
// net.Conn's Read uses). Entering a system call the ordinary way hands
// the P over if the call lasts and, after every idle spell, wakes the
// runtime's sleeping monitor thread (a futex wake and a context switch):
// under the benchmark's load that bookkeeping was about a tenth of the
// agent's CPU, and a call on a non-blocking socket never waits, so there
// is nothing to hand over. Waiting for the socket stays the netpoller's
// (syscall.RawConn: a callback that reports EAGAIN makes it park the
// goroutine until the socket is ready, honouring close and deadlines).

import (
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReader reads a TCP socket with read(2) as a raw system call, waiting
// through the netpoller when nothing is there.
type rawReader struct {
	raw syscall.RawConn
	// readFn is raw.Read's callback, made once (a closure per call
	// escapes: an allocation per read), with its argument in buf and
	// its results in n and err.
	readFn func(fd uintptr) bool
	buf    []byte
	n      int
	err    error
}

func newRawReader(raw syscall.RawConn) *rawReader {
	r := &rawReader{raw: raw}
	r.readFn = func(fd uintptr) bool {
		for {
			n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
			switch errno {
			case 0:
				r.n, r.err = int(n), nil
				if n == 0 {
					r.err = io.EOF
				}
				return true
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // the netpoller waits for the socket
			default:
				r.n, r.err = 0, errno
				return true
			}
		}
	}
	return r
}

// Read is io.Reader's, for the peer's bufio.Reader.
func (r *rawReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.buf = b
	err := r.raw.Read(r.readFn)
	n, rerr := r.n, r.err
	r.buf, r.n, r.err = nil, 0, nil
	if err != nil {
		// The connection closed (net.ErrClosed) or a deadline passed.
		return 0, err
	}
	return n, rerr
}

// writevOnce is one writev(2) of iov (at most maxQueued entries, which is
// Linux's IOV_MAX) on a non-blocking socket, as a raw system call.
func writevOnce(fd uintptr, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
