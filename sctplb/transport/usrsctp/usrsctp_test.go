package usrsctp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/sctplb/abort"
)

// usrsctp is one stack per process: the tests' stack runs in namespace
// "cli"; the peer is this test binary re-executed as an echo server
// (TestHelperEchoServer) in namespace "srv", two veth links between them.
// (Two endpoints inside one stack cannot talk: usrsctp answers its own INIT
// with ABORT.)
var (
	shared struct {
		once  sync.Once
		lab   *lab.Lab
		srv   *lab.Proc
		stack *Stack
		err   error
	}
	srvAddrs = []netip.Addr{netip.MustParseAddr("10.99.1.1"), netip.MustParseAddr("10.99.2.1")}
	cliAddrs = []netip.Addr{netip.MustParseAddr("10.99.1.2"), netip.MustParseAddr("10.99.2.2")}
)

const (
	echoPort   = 5000
	helperEnv  = "TLB_USRSCTP_ECHO_HELPER"
	closeWord  = "bye"
	readyToken = "echo-ready"
)

var timers = Config{
	RTOMin: 100 * time.Millisecond, RTOInitial: 200 * time.Millisecond, RTOMax: 400 * time.Millisecond,
	HeartbeatInterval: 300 * time.Millisecond, PathMaxRetrans: 2, InitMaxRetrans: 3, Streams: 16,
	RawSocketBuffer: testRawSocketBuffer,
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.stack != nil {
		switch err := shared.stack.Close(); {
		case errors.Is(err, ErrLeakedSocket):
			// usrsctp 0.9.5's own leak (closediag.go), seen about once
			// in ten runs under load after a peer-initiated shutdown
			// (TestRecvHonoursContextAndEndsWithEOF): every test
			// passed and no socket of this package is left open, so
			// it is reported, not failed. Any other leftover fails.
			fmt.Fprintln(os.Stderr, "usrsctp close: known usrsctp 0.9.5 leak, not a failure:", err)
		case err != nil:
			fmt.Fprintln(os.Stderr, "usrsctp close:", err)
			code = 1
		}
	}
	if shared.lab != nil {
		if err := shared.lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "lab close:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestHelperEchoServer is the peer process, not a test: it runs only when
// re-executed with helperEnv set.
func TestHelperEchoServer(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process only")
	}
	s, err := Init(timers)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen(srvAddrs, echoPort)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(readyToken)
	ctx := context.Background()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.Close()
			for {
				m, _, err := recvData(ctx, c)
				if err != nil {
					return
				}
				if string(m.Data) == closeWord {
					return
				}
				if err := c.SendMsg(ctx, m.Data, m.Stream, m.PPID); err != nil {
					return
				}
			}
		}()
	}
}

func testStack(t *testing.T) *Stack {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("usrsctp raw mode needs root")
	}
	shared.once.Do(func() { shared.err = setupShared() })
	if shared.err != nil {
		t.Fatalf("stack: %v", shared.err)
	}
	return shared.stack
}

func setupShared() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.Empty(ctx, nil)
	if err != nil {
		return err
	}
	shared.lab = l
	srv, err := l.AddHost(ctx, "srv")
	if err != nil {
		return err
	}
	cli, err := l.AddHost(ctx, "cli")
	if err != nil {
		return err
	}
	for i := range srvAddrs {
		ifname := fmt.Sprintf("eth%d", i)
		if _, _, err := l.Connect(ctx, srv, ifname, cli, ifname); err != nil {
			return err
		}
		if err := srv.AddAddr(ctx, ifname, netip.PrefixFrom(srvAddrs[i], 24)); err != nil {
			return err
		}
		if err := cli.AddAddr(ctx, ifname, netip.PrefixFrom(cliAddrs[i], 24)); err != nil {
			return err
		}
	}
	for _, h := range []*lab.Host{srv, cli} {
		if err := h.DropProtoUnreachable(ctx); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	shared.srv, err = srv.Start("env", helperEnv+"=1", exe, "-test.run=^TestHelperEchoServer$", "-test.v")
	if err != nil {
		return err
	}
	if err := shared.srv.WaitOutput(ctx, readyToken); err != nil {
		return err
	}
	// Addresses must exist before Init: usrsctp reads them once.
	return cli.Do(func() error {
		var err error
		shared.stack, err = Init(timers)
		return err
	})
}

var nextPort = struct {
	sync.Mutex
	p uint16
}{p: 6000}

func port() uint16 {
	nextPort.Lock()
	defer nextPort.Unlock()
	nextPort.p++
	return nextPort.p
}

// recvData skips notifications and returns the next data message.
func recvData(ctx context.Context, c *Conn) (Message, []Notification, error) {
	var notes []Notification
	for {
		m, err := c.RecvMsg(ctx)
		if err != nil {
			return m, notes, err
		}
		if m.Notification != nil {
			notes = append(notes, m.Notification)
			continue
		}
		return m, notes, nil
	}
}

func TestEchoKeepsStreamAndPPIDOverMultiHomedAssociation(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := uint16(echoPort)
	c, err := s.Dial(ctx, cliAddrs, srvAddrs, p)
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.RecvMsg(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ac, ok := first.Notification.(*AssocChange); !ok || ac.State != CommUp {
		t.Fatalf("first message after Dial = %v, want COMM_UP", first.Notification)
	}
	peers, err := c.PeerAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Errorf("peer addresses = %v, want both of %v", peers, srvAddrs)
	}
	for _, pa := range peers {
		if pa.Port() != p {
			t.Errorf("peer %s: port %d, want %d", pa, pa.Port(), p)
		}
	}

	tests := []struct {
		name   string
		size   int
		stream uint16
		ppid   uint32
	}{
		{"small on stream 0 NGAP ppid", 16, 0, 60},
		{"stream 5 Diameter ppid", 200, 5, 46},
		{"large message reassembled", 150000, 3, 0x01020304},
		{"last stream", 1000, 15, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte{byte(tc.size)}, tc.size)
			binary.BigEndian.PutUint32(msg, uint32(tc.size))
			if err := c.SendMsg(ctx, msg, tc.stream, tc.ppid); err != nil {
				t.Fatal(err)
			}
			m, _, err := recvData(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Data, msg) {
				t.Errorf("echo differs: %d bytes, want %d", len(m.Data), len(msg))
			}
			if m.Stream != tc.stream || m.PPID != tc.ppid {
				t.Errorf("echo on stream %d ppid %d, want %d/%d", m.Stream, m.PPID, tc.stream, tc.ppid)
			}
		})
	}
	if err := c.SendMsg(ctx, []byte("x"), 16, 0); err == nil {
		t.Error("send on stream 16 of 16 succeeded")
	}
	locals, err := c.LocalAddrs()
	if err != nil || len(locals) != 2 {
		t.Errorf("local addresses = %v (%v), want both of %v", locals, err, cliAddrs)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDialWithoutListenerFails(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.Dial(ctx, cliAddrs, srvAddrs[:1], port())
	if err == nil {
		t.Fatal("Dial to a port without listener succeeded")
	}
}

func TestRecvHonoursContextAndEndsWithEOF(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, cliAddrs[:1], srvAddrs[:1], echoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := recvDataAfterNotes(c, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvMsg with nothing to read: %v, want deadline exceeded", err)
	}
	// The helper closes the association on closeWord: reads end with EOF.
	if err := c.SendMsg(ctx, []byte(closeWord), 0, 0); err != nil {
		t.Fatal(err)
	}
	var notes []Notification
	for {
		m, err := c.RecvMsg(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("RecvMsg after peer close: %v, want EOF", err)
		}
		if m.Notification == nil {
			t.Fatalf("unexpected data %q", m.Data)
		}
		notes = append(notes, m.Notification)
	}
	sawShutdown := false
	for _, n := range notes {
		if _, ok := n.(*ShutdownEvent); ok {
			sawShutdown = true
		}
	}
	if !sawShutdown {
		t.Errorf("no SHUTDOWN event before EOF; events: %v", notes)
	}
}

func recvDataAfterNotes(c *Conn, d time.Duration) (Message, []Notification, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return recvData(ctx, c)
}

func TestAcceptEndsWhenListenerCloses(t *testing.T) {
	s := testStack(t)
	ln, err := s.Listen(cliAddrs[:1], port())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept(context.Background())
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Accept after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}

func TestSecondInitInSameProcessFails(t *testing.T) {
	testStack(t)
	if _, err := Init(Config{}); err == nil {
		t.Fatal("second Init succeeded")
	}
}

func TestBadArgumentsAreRejected(t *testing.T) {
	s := testStack(t)
	ctx := context.Background()
	tests := []struct {
		name string
		fn   func() error
	}{
		{"listen port 0", func() error { _, err := s.Listen(srvAddrs, 0); return err }},
		{"listen invalid address", func() error { _, err := s.Listen([]netip.Addr{{}}, 1); return err }},
		{"dial no remote", func() error { _, err := s.Dial(ctx, nil, nil, 1); return err }},
		{"dial port 0", func() error { _, err := s.Dial(ctx, nil, srvAddrs, 0); return err }},
		{"dial invalid remote", func() error { _, err := s.Dial(ctx, nil, []netip.Addr{{}}, 1); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.fn(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is defaults", Config{}, true},
		{"telco timers", Config{RTOMin: 100 * time.Millisecond, RTOMax: 400 * time.Millisecond, HeartbeatInterval: 300 * time.Millisecond}, true},
		{"negative", Config{RTOMin: -time.Second}, false},
		{"sub-millisecond", Config{HeartbeatInterval: time.Microsecond}, false},
		{"min above max", Config{RTOMin: time.Second, RTOMax: 100 * time.Millisecond}, false},
		{"blackhole 3", Config{Blackhole: 3}, false},
		{"raw socket buffer 4 MiB", Config{RawSocketBuffer: 4 << 20}, true},
		{"negative raw socket buffer", Config{RawSocketBuffer: -1}, false},
		{"raw socket buffer above 1 GiB", Config{RawSocketBuffer: 2 << 30}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.validate(); (err == nil) != tc.ok {
				t.Fatalf("validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestAbortEndsTheAssociationAtOnce(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, cliAddrs[:1], srvAddrs[:1], echoPort)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMsg(ctx, []byte("late"), 0, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after Abort: %v, want ErrClosed", err)
	}
	if _, err := c.RecvMsg(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("recv after Abort: %v, want ErrClosed", err)
	}
}

// Tags are the association's verification tags as they go on the wire
// (tshark on the client's link): the server's DATA carries the local tag,
// the client's DATA the peer tag.
func TestTagsAreTheAssociationsVerificationTags(t *testing.T) {
	s := testStack(t)
	for _, tool := range []string{"dumpcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	capt, err := capture.Start(ctx, shared.lab.Host("cli"), "eth0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Dial(ctx, cliAddrs[:1], srvAddrs[:1], echoPort)
	if err != nil {
		_ = capt.Stop()
		t.Fatal(err)
	}
	defer c.Abort()
	local, peer, err := c.Tags()
	if err != nil {
		_ = capt.Stop()
		t.Fatal(err)
	}
	if err := c.SendMsg(ctx, []byte("tags"), 0, 0); err != nil {
		_ = capt.Stop()
		t.Fatal(err)
	}
	if _, err := c.RecvMsg(ctx); err != nil {
		_ = capt.Stop()
		t.Fatal(err)
	}
	if err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct {
		src  netip.Addr
		want uint32
	}{{cliAddrs[0], peer}, {srvAddrs[0], local}} {
		rows, err := capture.Fields(ctx, capt.File, "sctp.chunk_type == 0 && ip.src == "+dir.src.String(), "sctp.verification_tag")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			t.Fatalf("no DATA from %v captured", dir.src)
		}
		for _, r := range rows {
			if r[0] != fmt.Sprintf("0x%08x", dir.want) {
				t.Errorf("DATA from %v carries tag %s, Tags says %#08x (local %#08x, peer %#08x)", dir.src, r[0], dir.want, local, peer)
			}
		}
	}
	t.Logf("local tag %#08x, peer tag %#08x", local, peer)
}

// An ABORT sent from another stack (sctplb/abort, a raw socket in the
// server's namespace, as a node taking over a dead peer's associations
// would) ends the association at once with the exact tag: the receiver's
// own with the T bit clear, or the one it sends with (reflected) with the
// T bit set. One with a wrong tag is discarded: the association carries on.
func TestForeignAbortNeedsTheExactTag(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := shared.lab.Host("srv")
	for _, reflected := range []bool{false, true} {
		c, err := s.Dial(ctx, cliAddrs[:1], srvAddrs[:1], echoPort)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Abort()
		local, peer, err := c.Tags()
		if err != nil {
			t.Fatal(err)
		}
		tag := local
		if reflected {
			tag = peer
		}
		la, err := c.LocalAddrs()
		if err != nil || len(la) == 0 {
			t.Fatalf("local addresses: %v %v", la, err)
		}
		from := netip.AddrPortFrom(srvAddrs[0], echoPort)
		to := netip.AddrPortFrom(cliAddrs[0], la[0].Port())
		send := func(tag uint32) {
			t.Helper()
			if err := srv.Do(func() error { return abort.Send(from, to, tag, reflected) }); err != nil {
				t.Fatal(err)
			}
		}
		send(tag ^ 0x10000)
		if err := c.SendMsg(ctx, []byte("still"), 0, 0); err != nil {
			t.Fatalf("T=%v: send after a wrong-tag ABORT: %v", reflected, err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		if m, _, err := recvData(rctx, c); err != nil || string(m.Data) != "still" {
			t.Fatalf("T=%v: the association did not carry on after an ABORT with a wrong tag: %q %v", reflected, m.Data, err)
		}
		rcancel()
		sent := time.Now()
		send(tag)
		rctx, rcancel = context.WithTimeout(ctx, 3*time.Second)
		_, notes, err := recvData(rctx, c)
		timedOut := rctx.Err() != nil
		rcancel()
		if err == nil || timedOut {
			t.Fatalf("T=%v: association still up 3s after an ABORT with tag %#08x: %v", reflected, tag, err)
		}
		t.Logf("T=%v: ABORT with tag %#08x ended the association in %v: %v (events %v)", reflected, tag, time.Since(sent).Round(time.Millisecond), err, notes)
	}
}

// SendQueue counts what the peer has not acknowledged: nothing once an
// echo came back, the message and its DATA chunk in flight while the
// server's namespace drops the client's packets; neither is Stuck (data held back with
// nothing in flight, what a stream usrsctp stopped scheduling leaves, and
// for an instant a message just sent).
func TestSendQueueCountsUnacknowledgedData(t *testing.T) {
	s := testStack(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := s.Dial(ctx, cliAddrs[:1], srvAddrs[:1], echoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	if err := c.SendMsg(ctx, []byte("queue"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecvMsg(ctx); err != nil {
		t.Fatal(err)
	}
	// The echo may come before the SACK of the message.
	var q SendQueue
	for {
		if q, err = c.SendQueue(); err != nil {
			t.Fatal(err)
		}
		if q == (SendQueue{}) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if q != (SendQueue{}) || q.Stuck() {
		t.Fatalf("after the echo: %+v (stuck %v), want nothing queued", q, q.Stuck())
	}
	// Dropped on arrival: dropped on the way out, the stack's send fails
	// and it keeps the chunk unsent.
	srv := shared.lab.Host("srv")
	t.Cleanup(func() { _, _ = srv.Exec(context.Background(), "nft", "delete table inet tlb_sendq") })
	for _, cmd := range []string{
		"add table inet tlb_sendq",
		"add chain inet tlb_sendq in { type filter hook prerouting priority -300 ; }",
		"add rule inet tlb_sendq in meta l4proto sctp drop",
	} {
		if out, err := srv.Exec(ctx, "nft", cmd); err != nil {
			t.Fatalf("nft %s: %v: %s", cmd, err, out)
		}
	}
	msg := []byte("held back by the client's namespace")
	if err := c.SendMsg(ctx, msg, 1, 0); err != nil {
		t.Fatal(err)
	}
	// SendMsg may return before the stack has given the message a TSN
	// (held for an instant, not stuck).
	for {
		if q, err = c.SendQueue(); err != nil {
			t.Fatal(err)
		}
		if q.Unacked > 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if q.Queued < uint32(len(msg)) || q.Unacked != 1 || q.Stuck() {
		t.Errorf("message in flight, unacknowledged: %+v (stuck %v), want at least %d bytes queued and 1 chunk unacknowledged", q, q.Stuck(), len(msg))
	}
}
