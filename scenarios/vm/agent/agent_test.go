package agent

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pair runs Serve on one end of a pipe (after some console noise, as on a
// serial port before the agent starts) and returns a Client on the other.
func pair(t *testing.T) *Client {
	t.Helper()
	guest, host := net.Pipe()
	go func() {
		_, _ = io.WriteString(guest, "garbage before the agent\r\n")
		_ = Serve(context.Background(), guest, Hello{Ready: true, UptimeMs: 1234, Kernel: "6.1.0-test"})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, h, err := Dial(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	if h.UptimeMs != 1234 || h.Kernel != "6.1.0-test" {
		t.Errorf("hello %+v", h)
	}
	t.Cleanup(func() { _ = c.Close(); _ = guest.Close() })
	return c
}

func TestRunReturnsOutputAndExitStatus(t *testing.T) {
	c := pair(t)
	ctx := context.Background()
	r, err := c.Run(ctx, []byte("in\n"), []string{"X=y"}, "/bin/sh", "-c", `read l; echo "$l $X"; echo oops >&2; exit 7`)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exit != 7 || r.Stdout != "in y\n" || r.Stderr != "oops\n" {
		t.Errorf("got %+v", r)
	}
	if _, err := c.Run(ctx, nil, nil, "/nonexistent/program"); err == nil {
		t.Error("running a missing program: no error")
	}
}

// Requests run concurrently: a slow command does not hold up a quick one,
// and a cancelled one is killed (process group) and reported.
func TestRunConcurrentAndCancel(t *testing.T) {
	c := pair(t)
	slowCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.Run(slowCtx, nil, nil, "/bin/sh", "-c", "sleep 30 & wait")
		done <- err
	}()
	r, err := c.Run(context.Background(), nil, nil, "/bin/echo", "quick")
	if err != nil || strings.TrimSpace(r.Stdout) != "quick" {
		t.Fatalf("quick: %v %+v", err, r)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("cancelled command: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not kill the command")
	}
	if time.Since(start) > 20*time.Second {
		t.Error("the quick command waited for the slow one")
	}
}

// When the channel breaks (VM gone), pending and later calls fail instead
// of hanging.
func TestChannelLossFailsCalls(t *testing.T) {
	guest, host := net.Pipe()
	go func() { _ = Serve(context.Background(), guest, Hello{Ready: true}) }()
	c, _, err := Dial(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), nil, nil, "/bin/sleep", "30")
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	_ = guest.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("pending call: no error after the channel closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pending call hangs after the channel closed")
	}
	if _, err := c.Run(context.Background(), nil, nil, "/bin/true"); err == nil {
		t.Error("call after channel loss: no error")
	}
}

// Dial gives up when no hello comes.
func TestDialWithoutHelloTimesOut(t *testing.T) {
	_, host := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := Dial(ctx, host); err == nil {
		t.Fatal("no error without a hello")
	}
}
