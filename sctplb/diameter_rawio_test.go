package sctplb

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// rawReaderPair is a rawReader on one end of a loopback TCP connection
// and the other end.
func rawReaderPair(t *testing.T) (*rawReader, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return newRawReader(raw), c, peer
}

// readAsync runs one Read of r into a buffer of n bytes.
func readAsync(r *rawReader, n int) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		b := make([]byte, n)
		k, err := r.Read(b)
		out <- readResult{b[:k], err}
	}()
	return out
}

type readResult struct {
	b   []byte
	err error
}

// TestRawReaderWaitsForDataThenReadsWhatIsThere: a read on an empty
// socket waits (the netpoller, not an EAGAIN error) until the peer writes,
// then returns what arrived, at most the buffer's length.
func TestRawReaderWaitsForDataThenReadsWhatIsThere(t *testing.T) {
	r, _, peer := rawReaderPair(t)
	got := readAsync(r, 4)
	select {
	case res := <-got:
		t.Fatalf("read returned %q, %v before the peer wrote", res.b, res.err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := peer.Write([]byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.err != nil || string(res.b) != "abcd" {
		t.Fatalf("read %q, %v; want \"abcd\"", res.b, res.err)
	}
	if res = <-readAsync(r, 64); res.err != nil || string(res.b) != "ef" {
		t.Fatalf("second read %q, %v; want \"ef\"", res.b, res.err)
	}
}

// TestRawReaderEndsOnPeerCloseAndOnClose: the peer closing is io.EOF
// once its bytes are read; closing the connection wakes a waiting read
// with net.ErrClosed (how the agent stops its readers).
func TestRawReaderEndsOnPeerCloseAndOnClose(t *testing.T) {
	r, _, peer := rawReaderPair(t)
	if _, err := peer.Write([]byte("xy")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if res := <-readAsync(r, 64); res.err != nil || string(res.b) != "xy" {
		t.Fatalf("read %q, %v; want \"xy\"", res.b, res.err)
	}
	if res := <-readAsync(r, 64); !errors.Is(res.err, io.EOF) || len(res.b) != 0 {
		t.Fatalf("read after the peer closed: %q, %v; want EOF", res.b, res.err)
	}

	r, c, _ := rawReaderPair(t)
	got := readAsync(r, 64)
	time.Sleep(50 * time.Millisecond) // parked in the netpoller
	c.Close()
	select {
	case res := <-got:
		if !errors.Is(res.err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %q, %v; want net.ErrClosed", res.b, res.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing the connection did not end a waiting read")
	}
}
