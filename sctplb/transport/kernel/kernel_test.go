package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/transport"
)

const inNetnsEnv = "TELCOLB_KERNEL_SCTP_NETNS"

// TestKernelRoundTripKeepsStreamAndPPID runs inside a private network
// namespace (the test re-executes itself under unshare, so the namespace
// dies with the process even on failure) and checks that stream and PPID
// survive the library's byte-order handling. It skips where the kernel has
// no SCTP, as on the development machines.
func TestKernelRoundTripKeepsStreamAndPPID(t *testing.T) {
	if os.Getenv(inNetnsEnv) != "1" {
		if err := Available(); err != nil {
			t.Skipf("no kernel SCTP here: %v", err)
		}
		if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and unshare for a private network namespace")
		}
		cmd := exec.Command("unshare", "--net", "sh", "-c", `ip link set lo up && exec "$0" -test.run '^TestKernelRoundTripKeepsStreamAndPPID$' -test.v`, os.Args[0])
		cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in-namespace run failed: %v\n%s", err, out)
		}
		return
	}

	tr := New(Config{Streams: 8})
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	ln, err := tr.Listen(transport.Endpoint{Addrs: lo, Port: 38412})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := tr.Dial(ctx, nil, transport.Endpoint{Addrs: lo, Port: 38412})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	defer server.Close()
	if client.OutStreams() == 0 || client.OutStreams() > 8 {
		t.Errorf("client out streams = %d", client.OutStreams())
	}
	tests := []transport.Message{
		{Stream: 0, PPID: 60, Data: []byte{0x00, 0x15}},
		{Stream: 3, PPID: 60, Data: []byte("ue-associated")},
		{Stream: 1, PPID: 46, Data: []byte("diameter ppid")},
	}
	for _, want := range tests {
		if err := client.Send(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := server.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Stream != want.Stream || got.PPID != want.PPID || string(got.Data) != string(want.Data) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	_ = client.Close()
	if _, err := server.Recv(ctx); err == nil {
		t.Error("Recv after peer close returned no error")
	}
}

// requireKernelSCTP skips where the kernel has no SCTP (the development
// machines), unless TELCOLB_REQUIRE_KERNEL_SCTP=1 (scenarios/vm runs this
// package inside a VM whose kernel has it, and nothing may skip there).
func requireKernelSCTP(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("TELCOLB_REQUIRE_KERNEL_SCTP") == "1" {
			t.Fatalf("kernel SCTP required: %v", err)
		}
		t.Skipf("no kernel SCTP here: %v", err)
	}
}

// loopbackPair returns both ends of one association over 127.0.0.1.
func loopbackPair(t *testing.T, port uint16) (client, server transport.Conn) {
	t.Helper()
	return pair(t, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, port)
}

// A Recv blocked on an idle association returns once its context ends:
// the proxy relies on it to stop a peer's reader.
func TestRecvEndsWhenContextEnds(t *testing.T) {
	requireKernelSCTP(t)
	_, server := loopbackPair(t, 38497)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := server.Recv(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Recv returned no error after its context ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv still blocked 10 s after its context ended")
	}
}

// Closing a connection while other goroutines send and receive on it
// never lets them use the released descriptor: after Close every call
// fails with ErrClosed, and a socket opened right after (which may reuse
// the descriptor number) receives nothing it was not sent.
func TestCloseWhileInUseReleasesTheDescriptorSafely(t *testing.T) {
	requireKernelSCTP(t)
	client, server := loopbackPair(t, 38498)
	ctx := context.Background()
	stopSend := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-stopSend:
				return
			default:
			}
			if err := client.Send(ctx, transport.Message{Stream: 1, PPID: 60, Data: []byte("x")}); err != nil {
				return
			}
		}
	}()
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			if _, err := server.Recv(ctx); err != nil {
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	_ = client.Close()
	close(stopSend)
	<-sent
	if err := client.Send(ctx, transport.Message{Data: []byte("late")}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if _, err := client.Recv(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Recv after Close: %v, want ErrClosed", err)
	}
	select {
	case <-recvDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the peer's Recv did not end after the association closed")
	}
}

// The abort target read from sctp_diag names the association exactly: an
// ABORT built from it (sent as another node would, from a raw socket) ends
// the peer's association on the Linux stack, one with any other tag is
// discarded. Runs for a listener on 127.0.0.1 (an AF_INET socket) and on
// every address (AF_INET6, the association's addresses IPv4), in the VM
// of scenarios/vm (root for the raw socket, the sctp_diag module loaded).
func TestAbortTargetEndsThePeersAssociation(t *testing.T) {
	requireKernelSCTP(t)
	for i, listen := range [][]netip.Addr{{netip.MustParseAddr("127.0.0.1")}, nil} {
		t.Run(fmt.Sprintf("listen=%v", listen), func(t *testing.T) {
			port := uint16(38480 + i)
			client, server := pair(t, listen, port)
			sat, ok1 := server.(transport.AbortTargeter)
			cat, ok2 := client.(transport.AbortTargeter)
			if !ok1 || !ok2 {
				t.Fatal("kernel conns do not implement transport.AbortTargeter")
			}
			st, err := sat.AbortTarget()
			if err != nil {
				t.Fatalf("server's abort target: %v", err)
			}
			ct, err := cat.AbortTarget()
			if err != nil {
				t.Fatalf("client's abort target: %v", err)
			}
			lo := netip.MustParseAddr("127.0.0.1")
			if st.Src != netip.AddrPortFrom(lo, port) || st.Dst.Addr() != lo || st.Dst != ct.Src || ct.Dst != st.Src {
				t.Fatalf("targets: server %v, client %v", st, ct)
			}
			// Each end's target carries the other's tag: two tags, both set.
			if st.Tag == ct.Tag {
				t.Fatalf("both ends name tag %#x", st.Tag)
			}
			t.Logf("server's target %v, client's %v", st, ct)
			before := abortedCount(t)

			// A wrong tag is discarded (RFC 9260 8.5.1): the association works on.
			if err := abort.Send(st.Src, st.Dst, st.Tag+1, false); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := server.Send(ctx, transport.Message{PPID: 60, Data: []byte("after a wrong ABORT")}); err != nil {
				t.Fatal(err)
			}
			if m, err := client.Recv(ctx); err != nil || string(m.Data) != "after a wrong ABORT" {
				t.Fatalf("after an ABORT with a wrong tag the client got %q, %v", m.Data, err)
			}

			if err := st.Send(); err != nil {
				t.Fatal(err)
			}
			if m, err := client.Recv(ctx); err == nil || ctx.Err() != nil {
				t.Fatalf("client's association after the ABORT: message %q, err %v (context %v)", m.Data, err, ctx.Err())
			} else {
				t.Logf("client's Recv after the ABORT: %v", err)
			}
			if after := abortedCount(t); after != before+1 {
				t.Errorf("SctpAborteds %d -> %d, want one more", before, after)
			}
		})
	}
}

// pair is one association over 127.0.0.1 to a listener on listen (none:
// every address).
func pair(t *testing.T, listen []netip.Addr, port uint16) (client, server transport.Conn) {
	t.Helper()
	tr := New(Config{Streams: 4})
	ln, err := tr.Listen(transport.Endpoint{Addrs: listen, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acc := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	client, err = tr.Dial(ctx, lo, transport.Endpoint{Addrs: lo, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// abortedCount is the kernel's SctpAborteds (associations ended by an
// ABORT received).
func abortedCount(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/sctp/snmp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "SctpAborteds" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no SctpAborteds in /proc/net/sctp/snmp:\n%s", b)
	return 0
}
