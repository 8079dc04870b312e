package kernel

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

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
