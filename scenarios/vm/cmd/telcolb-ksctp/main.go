// Command telcolb-ksctp is the kernel-SCTP counterpart of telcolb-sctppeer,
// for VMs of the VM lab: an echo server and a client speaking the same
// messages and printing the same JSON (sctppeer.Result, sctppeer.ServerEvent),
// so kernel and usrsctp peers pair up freely. It is built on
// sctplb/transport/kernel (ishidawataru/sctp), the N2 proxy's production
// transport, so every run also exercises that transport; CGO_ENABLED=0, so
// it runs in a busybox initramfs. Timers are the guest's net.sctp sysctls.
//
//	telcolb-ksctp server --bind 10.77.2.11,10.77.12.11 --port 38412 --id be1
//	telcolb-ksctp client --bind 10.77.1.2,10.77.11.2 --connect 10.77.100.1 --port 38412 --count 60 --interval 50ms
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/kernel"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: telcolb-ksctp server|client [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "server":
		err = server(ctx, os.Args[2:])
	case "client":
		err = client(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "telcolb-ksctp:", err)
		os.Exit(1)
	}
}

type printer struct {
	mu    sync.Mutex
	start time.Time
}

func (p *printer) event(e sctppeer.ServerEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.AtMs = time.Since(p.start).Milliseconds()
	b, _ := json.Marshal(e)
	fmt.Println(string(b))
}

func server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	bind := fs.String("bind", "", "local addresses, comma-separated (empty: all)")
	port := fs.Uint("port", 38412, "SCTP port")
	id := fs.String("id", "", "server ID prefixed to echoes")
	streams := fs.Uint("streams", 16, "streams offered each way")
	_ = fs.Parse(args)
	addrs, err := sctppeer.ParseAddrList(*bind)
	if err != nil {
		return err
	}
	if *id == "" {
		*id, _ = os.Hostname()
	}
	tr := kernel.New(kernel.Config{Streams: uint16(*streams)})
	ln, err := tr.Listen(transport.Endpoint{Addrs: addrs, Port: uint16(*port)})
	if err != nil {
		return err
	}
	p := &printer{start: time.Now()}
	p.event(sctppeer.ServerEvent{Event: "listening", ID: *id, Addrs: sctppeerStrings(addrs), Port: uint16(*port)})
	go func() { <-ctx.Done(); _ = ln.Close() }()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		p.event(sctppeer.ServerEvent{Event: "assoc", State: "COMM_UP", Peers: []string{c.Remote()}})
		printTarget(c)
		go func() {
			n, err := echo(ctx, c, []byte(*id+"\x00"))
			ev := sctppeer.ServerEvent{Event: "closed", Messages: n, Peers: []string{c.Remote()}}
			if err != nil && !errors.Is(err, io.EOF) {
				ev.Error = err.Error()
			}
			p.event(ev)
		}()
	}
}

// TargetEvent is the line printed for every association: the ABORT
// target the kernel transport read for it from sctp_diag (what an N2 gNB
// record carries), or why it has none.
type TargetEvent struct {
	Event string `json:"event"` // "abort-target"
	Src   string `json:"src,omitempty"`
	Dst   string `json:"dst,omitempty"`
	Tag   uint32 `json:"tag,omitempty"`
	Error string `json:"error,omitempty"`
}

func printTarget(c transport.Conn) {
	e := TargetEvent{Event: "abort-target"}
	if at, ok := c.(transport.AbortTargeter); !ok {
		e.Error = "transport gives no abort target"
	} else if t, err := at.AbortTarget(); err != nil {
		e.Error = err.Error()
	} else {
		e.Src, e.Dst, e.Tag = t.Src.String(), t.Dst.String(), t.Tag
	}
	b, _ := json.Marshal(e)
	fmt.Println(string(b))
}

func sctppeerStrings(a []netip.Addr) []string {
	var out []string
	for _, x := range a {
		out = append(out, x.String())
	}
	return out
}

func echo(ctx context.Context, c transport.Conn, prefix []byte) (int, error) {
	defer c.Close()
	n := 0
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return n, err
		}
		out := append(append([]byte(nil), prefix...), m.Data...)
		if err := c.Send(ctx, transport.Message{Stream: m.Stream, PPID: m.PPID, Data: out}); err != nil {
			return n, err
		}
		n++
	}
}

func client(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	bind := fs.String("bind", "", "local addresses, comma-separated (empty: any)")
	connect := fs.String("connect", "", "peer addresses, comma-separated")
	port := fs.Uint("port", 38412, "SCTP port")
	count := fs.Int("count", 20, "messages to send")
	size := fs.Int("size", 200, "message size (at least 12)")
	interval := fs.Duration("interval", 0, "pause between messages (0: back to back)")
	streams := fs.Int("streams", 2, "streams used round robin")
	ppid := fs.Uint("ppid", 60, "payload protocol identifier")
	wait := fs.Duration("wait", 10*time.Second, "wait for missing echoes after the last send")
	_ = fs.Parse(args)
	local, err := sctppeer.ParseAddrList(*bind)
	if err != nil {
		return err
	}
	remote, err := sctppeer.ParseAddrList(*connect)
	if err != nil {
		return err
	}
	if *streams < 1 {
		*streams = 1
	}
	start := time.Now()
	res := sctppeer.Result{}
	defer func() {
		res.ElapsedMs = time.Since(start).Milliseconds()
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}()
	tr := kernel.New(kernel.Config{Streams: uint16(*streams)})
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	c, err := tr.Dial(dctx, local, transport.Endpoint{Addrs: remote, Port: uint16(*port)})
	cancel()
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	defer c.Close()
	printTarget(c)
	res.Associated = true
	res.PeerAddrs = []string{c.Remote()}

	got := make([]bool, *count)
	var mu sync.Mutex
	done := make(chan struct{})
	all := make(chan struct{})
	var lastEcho time.Time
	go func() {
		defer close(done)
		n := 0
		for {
			m, err := c.Recv(ctx)
			if err != nil {
				return
			}
			id, msg, err := sctppeer.SplitEcho(m.Data)
			mu.Lock()
			now := time.Now()
			if !lastEcho.IsZero() {
				if gap := now.Sub(lastEcho).Milliseconds(); gap > res.MaxGapMs {
					res.MaxGapMs = gap
				}
			}
			lastEcho = now
			if err != nil {
				res.Corrupt++
				mu.Unlock()
				continue
			}
			if res.ServerID == "" {
				res.ServerID = id
			}
			seq, ok := sctppeer.DecodeMessage(msg)
			switch {
			case !ok || seq >= uint64(*count):
				res.Corrupt++
			case got[seq]:
				res.Duplicates++
			default:
				got[seq] = true
				res.Echoed++
				n++
				if int(seq)%*streams != int(m.Stream) {
					res.WrongStrm++
				}
				if m.PPID != uint32(*ppid) {
					res.Corrupt++
				}
			}
			mu.Unlock()
			if n == *count {
				close(all)
				return
			}
		}
	}()
	for i := 0; i < *count; i++ {
		m := transport.Message{Stream: uint16(i % *streams), PPID: uint32(*ppid), Data: sctppeer.EncodeMessage(uint64(i), *size)}
		if err := c.Send(ctx, m); err != nil {
			res.Error = fmt.Sprintf("send %d: %v", i, err)
			break
		}
		mu.Lock()
		res.Sent++
		mu.Unlock()
		if *interval > 0 {
			time.Sleep(*interval)
		}
	}
	select {
	case <-all:
	case <-done:
	case <-time.After(*wait):
	}
	mu.Lock()
	defer mu.Unlock()
	res.Lost = res.Sent - res.Echoed
	return nil
}
