// Command telcolb-sctppeer is a real SCTP test peer on usrsctp (raw IP, no
// kernel SCTP needed). Run one process per network namespace.
//
//	telcolb-sctppeer server --bind 10.77.2.11[,10.77.12.11] --port 3868 [--id be1] [--ppid N] [--raw]
//	telcolb-sctppeer client --bind 10.77.1.2[,10.77.11.2] --connect 10.77.100.1[,10.77.110.1] --port 3868 \
//	    --count 100 --size 64 --interval 50ms --streams 4 [--associations 50 --local-port 40000]
//
// The server echoes every message on the stream it came in on, prefixed by
// "<id>\x00" (unless --raw), and prints association events as JSON lines.
// The client prints one JSON result line and exits non-zero unless every
// echo came back intact. With --associations N it opens N associations
// (one usrsctp stack, one socket and local port each) that each do what
// the one would, and the line reports each and their sum.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: telcolb-sctppeer server|client [flags]")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var code int
	switch os.Args[1] {
	case "server":
		code = serverMain(os.Args[2:], os.Stdout, log)
	case "client":
		code = clientMain(os.Args[2:], os.Stdout, log)
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q (want server or client)\n", os.Args[1])
		code = 2
	}
	os.Exit(code)
}

type timerFlags struct {
	rtoMin, rtoInit, rtoMax, hb time.Duration
	pmr                         int
	blackhole                   int
	rawBuffer                   int
}

func (t *timerFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.rtoMin, "rto-min", 0, "RTO minimum (0: usrsctp default)")
	fs.DurationVar(&t.rtoInit, "rto-initial", 0, "RTO initial")
	fs.DurationVar(&t.rtoMax, "rto-max", 0, "RTO maximum")
	fs.DurationVar(&t.hb, "heartbeat", 0, "heartbeat interval")
	fs.IntVar(&t.pmr, "path-max-retrans", 0, "retransmissions before a path is unreachable")
	fs.IntVar(&t.blackhole, "blackhole", 0, "0: ABORT out-of-the-blue packets, 2: stay silent")
	fs.IntVar(&t.rawBuffer, "raw-buffer", 0, "receive and send buffer of usrsctp's raw sockets in bytes (0: the kernel's default)")
}

func (t *timerFlags) config(streams int, log *slog.Logger) (usrsctp.Config, error) {
	if t.pmr < 0 || t.pmr > 255 {
		return usrsctp.Config{}, fmt.Errorf("--path-max-retrans=%d: want 0..255", t.pmr)
	}
	if t.blackhole < 0 || t.blackhole > 2 {
		return usrsctp.Config{}, fmt.Errorf("--blackhole=%d: want 0..2", t.blackhole)
	}
	if t.rawBuffer < 0 {
		return usrsctp.Config{}, fmt.Errorf("--raw-buffer=%d: want >= 0", t.rawBuffer)
	}
	return usrsctp.Config{
		RTOMin: t.rtoMin, RTOInitial: t.rtoInit, RTOMax: t.rtoMax, HeartbeatInterval: t.hb,
		PathMaxRetrans: uint32(t.pmr), Blackhole: uint32(t.blackhole), Streams: uint16(streams), Logger: log,
		RawSocketBuffer: t.rawBuffer,
	}, nil
}

// jsonOut serialises JSON lines from several goroutines.
type jsonOut struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *jsonOut) write(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(v)
}

func addrStrings[T fmt.Stringer](as []T) []string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return s
}

func serverMain(args []string, stdout io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	bind := fs.String("bind", "", "local addresses, comma separated (empty: all)")
	port := fs.Uint("port", 0, "SCTP port")
	id := fs.String("id", "", "server ID put in front of every echo")
	ppid := fs.Uint("ppid", 0, "PPID of echoes (0: as received)")
	raw := fs.Bool("raw", false, "echo verbatim, without the ID prefix")
	var tf timerFlags
	tf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := &jsonOut{enc: json.NewEncoder(stdout)}
	start := time.Now()
	fail := func(err error) int {
		out.write(sctppeer.ServerEvent{Event: "error", Error: err.Error(), AtMs: time.Since(start).Milliseconds()})
		return 1
	}
	addrs, err := sctppeer.ParseAddrList(*bind)
	if err != nil {
		return fail(fmt.Errorf("--bind: %w", err))
	}
	if *port == 0 || *port > 65535 {
		return fail(fmt.Errorf("--port=%d: want 1..65535", *port))
	}
	if *ppid > 0xffffffff {
		return fail(fmt.Errorf("--ppid=%d: want a 32-bit value", *ppid))
	}
	cfg, err := tf.config(0, log)
	if err != nil {
		return fail(err)
	}
	// Runs last: connection goroutines end once the stack closes.
	var wg sync.WaitGroup
	defer wg.Wait()
	stack, err := usrsctp.Init(cfg)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := stack.Close(); err != nil {
			log.Warn("usrsctp close", "err", err)
		}
	}()
	ln, err := stack.Listen(addrs, uint16(*port))
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out.write(sctppeer.ServerEvent{Event: "listening", ID: *id, Addrs: addrStrings(addrs), Port: uint16(*port), AtMs: time.Since(start).Milliseconds()})

	// SIGUSR1 prints a "state" event per open association: what a test
	// asks when a client gave up on an association whose close never
	// reached this server (its serving goroutine may be blocked in a send).
	open := &openConns{m: map[*connState]bool{}}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				open.report(out, time.Since(start).Milliseconds())
			}
		}
	}()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				out.write(sctppeer.ServerEvent{Event: "error", Error: err.Error(), AtMs: time.Since(start).Milliseconds()})
			}
			break
		}
		cs := &connState{}
		open.add(cs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer open.remove(cs)
			serveConn(ctx, c, cs, out, start, *id, uint32(*ppid), *raw)
		}()
	}
	ln.Close()
	return 0
}

// connState is what a "state" event reports of one open association.
type connState struct {
	watch sendWatch
	mu    sync.Mutex
	assoc uint32
}

// openConns are the associations being served.
type openConns struct {
	mu sync.Mutex
	m  map[*connState]bool
}

func (o *openConns) add(cs *connState)    { o.mu.Lock(); o.m[cs] = true; o.mu.Unlock() }
func (o *openConns) remove(cs *connState) { o.mu.Lock(); delete(o.m, cs); o.mu.Unlock() }

// report prints a "state" event per open association with its send
// queue's last reading (at most half a second old).
func (o *openConns) report(out *jsonOut, atMs int64) {
	o.mu.Lock()
	var all []*connState
	for cs := range o.m {
		all = append(all, cs)
	}
	o.mu.Unlock()
	for _, cs := range all {
		cs.mu.Lock()
		ev := sctppeer.ServerEvent{Event: "state", Assoc: cs.assoc, AtMs: atMs}
		cs.mu.Unlock()
		ev.InFlight, ev.Queued = cs.watch.last()
		out.write(ev)
	}
}

func serveConn(ctx context.Context, c *usrsctp.Conn, cs *connState, out *jsonOut, start time.Time, id string, ppid uint32, raw bool) {
	defer c.Close()
	var assoc uint32
	n := 0
	at := func() int64 { return time.Since(start).Milliseconds() }
	watch := &cs.watch
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go watch.run(wctx, c)
	for {
		m, err := c.RecvMsg(ctx)
		if err != nil {
			ev := sctppeer.ServerEvent{Event: "closed", Assoc: assoc, Messages: n, AtMs: at()}
			ev.InFlight, ev.Queued = watch.last()
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				ev.Error = err.Error()
			}
			out.write(ev)
			return
		}
		switch nt := m.Notification.(type) {
		case nil:
		case *usrsctp.AssocChange:
			assoc = nt.AssocID
			cs.mu.Lock()
			cs.assoc = assoc
			cs.mu.Unlock()
			ev := sctppeer.ServerEvent{Event: "assoc", State: nt.State.String(), Assoc: nt.AssocID, AtMs: at()}
			if peers, err := c.PeerAddrs(); err == nil {
				ev.Peers = addrStrings(peers)
			}
			out.write(ev)
			continue
		case *usrsctp.PeerAddrChange:
			out.write(sctppeer.ServerEvent{Event: "paddr", State: nt.State.String(), Addr: nt.Addr.String(), Assoc: nt.AssocID, AtMs: at()})
			continue
		case *usrsctp.ShutdownEvent:
			out.write(sctppeer.ServerEvent{Event: "shutdown", Assoc: nt.AssocID, AtMs: at()})
			continue
		default:
			out.write(sctppeer.ServerEvent{Event: "notification", State: nt.String(), Assoc: assoc, AtMs: at()})
			continue
		}
		reply := m.Data
		if !raw {
			reply = make([]byte, 0, len(id)+1+len(m.Data))
			reply = append(append(append(reply, id...), 0), m.Data...)
		}
		p := m.PPID
		if ppid != 0 {
			p = ppid
		}
		if err := c.SendMsg(ctx, reply, m.Stream, p); err != nil {
			// The association's end, seen by a send: a "closed" event
			// with the last reading, as when a receive sees it.
			ev := sctppeer.ServerEvent{Event: "closed", Assoc: assoc, Messages: n, Error: "send: " + err.Error(), AtMs: at()}
			ev.InFlight, ev.Queued = watch.last()
			out.write(ev)
			return
		}
		n++
	}
}

// sendWatch keeps an association's last send queue reading, polled every
// half second, for its "closed" event: a client missing echoes after its
// wait closes the association, and the reading from before says whether
// the client had acknowledged everything this stack sent.
type sendWatch struct {
	mu   sync.Mutex
	read bool
	q    usrsctp.SendQueue
}

func (w *sendWatch) run(ctx context.Context, c *usrsctp.Conn) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		q, err := c.SendQueue()
		if err != nil {
			continue // closing: keep the last reading
		}
		w.mu.Lock()
		w.read, w.q = true, q
		w.mu.Unlock()
	}
}

// last is the last reading: chunks in flight (-1: none read) and bytes queued.
func (w *sendWatch) last() (int, uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.read {
		return -1, 0
	}
	return int(w.q.Unacked), w.q.Queued
}
