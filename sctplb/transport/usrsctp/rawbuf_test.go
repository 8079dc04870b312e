package usrsctp

import "testing"

// testRawSocketBuffer is well above the buffers usrsctp gives its raw
// sockets (128 KiB, read back as 256 KiB) and the kernel defaults (208 KiB),
// so the stack's sockets only reach it if Config.RawSocketBuffer was applied.
const testRawSocketBuffer = 1 << 20

// The option sizes the raw SCTP sockets usrsctp opened itself: read back
// from the kernel, both buffers of each one are at least the size asked
// (Linux doubles it for bookkeeping).
func TestRawSocketBufferSizesUsrsctpsRawSockets(t *testing.T) {
	testStack(t)
	socks, err := findRawSCTPSockets()
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) == 0 {
		t.Fatal("no raw SCTP socket in this process after Init")
	}
	for _, rs := range socks {
		t.Logf("raw SCTP socket fd %d family %d: rcvbuf %d sndbuf %d", rs.fd, rs.family, rs.rcvbuf, rs.sndbuf)
		if rs.rcvbuf < testRawSocketBuffer || rs.sndbuf < testRawSocketBuffer {
			t.Errorf("fd %d: rcvbuf %d sndbuf %d, want both >= %d", rs.fd, rs.rcvbuf, rs.sndbuf, testRawSocketBuffer)
		}
	}
}
