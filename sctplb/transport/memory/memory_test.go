package memory

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/telcolb/telcolb/sctplb/transport"
)

func TestAssociationKeepsBoundariesStreamsAndEnds(t *testing.T) {
	n := New(Config{Streams: 4})
	at := transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Port: 38412}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Dial(ctx, nil, at); err == nil {
		t.Fatal("dial without listener succeeded")
	}
	ln, err := n.Listen(at)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Listen(at); err == nil {
		t.Fatal("second listener on the same address")
	}
	cli, err := n.Dial(ctx, nil, at)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		msg     transport.Message
		wantErr bool
	}{
		{transport.Message{Stream: 0, PPID: 60, Data: []byte("a")}, false},
		{transport.Message{Stream: 3, PPID: 60, Data: []byte("bc")}, false},
		{transport.Message{Stream: 4, PPID: 60, Data: []byte("x")}, true},
	}
	for _, tc := range tests {
		err := cli.Send(ctx, tc.msg)
		if (err != nil) != tc.wantErr {
			t.Fatalf("send %+v: err %v", tc.msg, err)
		}
		if err != nil {
			continue
		}
		got, err := srv.Recv(ctx)
		if err != nil || got.Stream != tc.msg.Stream || got.PPID != tc.msg.PPID || string(got.Data) != string(tc.msg.Data) {
			t.Fatalf("recv %+v %v, want %+v", got, err, tc.msg)
		}
	}
	_ = cli.Close()
	if _, err := srv.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("recv after peer close: %v, want EOF", err)
	}
	if err := srv.Send(ctx, transport.Message{Data: []byte("late")}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	_ = ln.Close()
	if _, err := ln.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}
