package sctplb

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"
)

// TestDiameterConnInlineWritesKeepOrder: readers write what they queued
// themselves without blocking (flushInline) and leave what the socket did
// not take to the writer goroutine, while other steps queue through the
// writer directly, concurrently. Against a slow peer, with a small send buffer (so
// inline writes stop part-way through a message, and the writer blocks),
// every message arrives whole and once, each producer's in order, and closing after the writes
// flushes everything before the end of the stream.
func TestDiameterConnInlineWritesKeepOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_ = cli.(*net.TCPConn).SetWriteBuffer(4096)

	c := newDconn(1, newTCPPeer(cli))
	if c.raw == nil {
		t.Fatal("a TCP connection has no raw conn: nothing would be written inline")
	}
	done := make(chan struct{})
	go func() { defer close(done); c.writer() }()
	defer func() { c.shut(); <-done }()

	got := make(chan []byte, 1)
	go func() {
		// A slow reader: the socket fills, drains a little, fills again.
		time.Sleep(100 * time.Millisecond)
		var all []byte
		buf := make([]byte, 8192)
		for {
			n, err := srv.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				got <- all
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// The reader (producer 0) queues inline and flushes every few
	// messages; meanwhile "timers" (producer 1) queue through the writer.
	const n0, n1 = 1000, 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n1 {
			for !c.enqueue(testMessage(1, i), false, nil) {
				time.Sleep(time.Millisecond) // queue full: not queued, retry
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var dirty []*dconn
	for i := range n0 {
		for !c.enqueue(testMessage(0, i), true, &dirty) {
			time.Sleep(time.Millisecond)
		}
		if i%5 == 4 {
			for _, d := range dirty {
				d.flushInline()
			}
			dirty = dirty[:0]
		}
		if i%50 == 49 {
			// The writer done with what it had: the next batch is
			// written inline, often in part only (slow reader).
			waitIdle(c)
		}
	}
	for _, d := range dirty {
		d.flushInline()
	}
	wg.Wait()
	c.closeAfterWrites()
	var b []byte
	select {
	case b = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not end after closeAfterWrites")
	}
	// Every message whole, each producer's in order, none missing.
	next := [2]int{}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("%d stray bytes at the end of the stream", len(b)-off)
		}
		l := int(binary.BigEndian.Uint32(b[off:]))
		id := binary.BigEndian.Uint32(b[off+4:])
		p, i := int(id>>24), int(id&0xffffff)
		if p > 1 || off+l > len(b) || !bytes.Equal(b[off:off+l], testMessage(p, i)) {
			t.Fatalf("byte %d: not the message it claims to be (producer %d, number %d, %d bytes)", off, p, i, l)
		}
		if i != next[p] {
			t.Fatalf("byte %d: producer %d's message %d, want %d", off, p, i, next[p])
		}
		next[p]++
		off += l
	}
	if next != [2]int{n0, n1} {
		t.Fatalf("peer got %v messages, want %v", next, [2]int{n0, n1})
	}
}

// testMessage is producer p's i-th message: its length, p and i, then a
// pattern of them; 20..2999 bytes.
func testMessage(p, i int) []byte {
	m := make([]byte, 20+(i*397+p*1231)%2980)
	binary.BigEndian.PutUint32(m, uint32(len(m)))
	binary.BigEndian.PutUint32(m[4:], uint32(p)<<24|uint32(i))
	for k := 8; k < len(m); k++ {
		m[k] = byte(p*7 + i + k)
	}
	return m
}

// waitIdle waits until c has nothing queued and nobody writing.
func waitIdle(c *dconn) {
	for {
		c.qmu.Lock()
		idle := !c.writing && len(c.queue) == 0
		c.qmu.Unlock()
		if idle {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}
