// Command telcolb-sctppeer is a real SCTP test peer on usrsctp (raw IP, no
// kernel SCTP needed). Run one process per network namespace.
//
//	telcolb-sctppeer server --bind 10.77.2.11[,10.77.12.11] --port 3868 [--id be1] [--ppid N] [--raw]
//	telcolb-sctppeer client --bind 10.77.1.2[,10.77.11.2] --connect 10.77.100.1[,10.77.110.1] --port 3868 \
//	    --count 100 --size 64 --interval 50ms --streams 4
//
// The server echoes every message on the stream it came in on, prefixed by
// "<id>\x00" (unless --raw), and prints association events as JSON lines.
// The client prints one JSON result line and exits non-zero unless every
// echo came back intact.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
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
}

func (t *timerFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.rtoMin, "rto-min", 0, "RTO minimum (0: usrsctp default)")
	fs.DurationVar(&t.rtoInit, "rto-initial", 0, "RTO initial")
	fs.DurationVar(&t.rtoMax, "rto-max", 0, "RTO maximum")
	fs.DurationVar(&t.hb, "heartbeat", 0, "heartbeat interval")
	fs.IntVar(&t.pmr, "path-max-retrans", 0, "retransmissions before a path is unreachable")
	fs.IntVar(&t.blackhole, "blackhole", 0, "0: ABORT out-of-the-blue packets, 2: stay silent")
}

func (t *timerFlags) config(streams int, log *slog.Logger) (usrsctp.Config, error) {
	if t.pmr < 0 || t.pmr > 255 {
		return usrsctp.Config{}, fmt.Errorf("--path-max-retrans=%d: want 0..255", t.pmr)
	}
	if t.blackhole < 0 || t.blackhole > 2 {
		return usrsctp.Config{}, fmt.Errorf("--blackhole=%d: want 0..2", t.blackhole)
	}
	return usrsctp.Config{
		RTOMin: t.rtoMin, RTOInitial: t.rtoInit, RTOMax: t.rtoMax, HeartbeatInterval: t.hb,
		PathMaxRetrans: uint32(t.pmr), Blackhole: uint32(t.blackhole), Streams: uint16(streams), Logger: log,
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

	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				out.write(sctppeer.ServerEvent{Event: "error", Error: err.Error(), AtMs: time.Since(start).Milliseconds()})
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, c, out, start, *id, uint32(*ppid), *raw)
		}()
	}
	ln.Close()
	return 0
}

func serveConn(ctx context.Context, c *usrsctp.Conn, out *jsonOut, start time.Time, id string, ppid uint32, raw bool) {
	defer c.Close()
	var assoc uint32
	n := 0
	at := func() int64 { return time.Since(start).Milliseconds() }
	for {
		m, err := c.RecvMsg(ctx)
		if err != nil {
			ev := sctppeer.ServerEvent{Event: "closed", Assoc: assoc, Messages: n, AtMs: at()}
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
			out.write(sctppeer.ServerEvent{Event: "error", Error: err.Error(), Assoc: assoc, AtMs: at()})
			return
		}
		n++
	}
}

func clientMain(args []string, stdout io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	bind := fs.String("bind", "", "local addresses, comma separated (empty: any)")
	connect := fs.String("connect", "", "server addresses, comma separated")
	port := fs.Uint("port", 0, "SCTP port")
	count := fs.Int("count", 10, "messages to send")
	size := fs.Int("size", 64, fmt.Sprintf("message size (>= %d)", sctppeer.MinSize))
	interval := fs.Duration("interval", 50*time.Millisecond, "time between messages")
	streams := fs.Int("streams", 1, "streams to spread messages over")
	ppid := fs.Uint("ppid", 0, "PPID of messages")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for missing echoes after the last send")
	raw := fs.Bool("raw", false, "expect verbatim echoes (server --raw)")
	var tf timerFlags
	tf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res := runClient(clientArgs{
		bind: *bind, connect: *connect, port: *port, count: *count, size: *size, interval: *interval,
		streams: *streams, ppid: *ppid, wait: *wait, raw: *raw, timers: tf,
	}, log)
	_ = json.NewEncoder(stdout).Encode(res)
	if !res.OK() {
		return 1
	}
	return 0
}

type clientArgs struct {
	bind, connect string
	port          uint
	count, size   int
	interval      time.Duration
	streams       int
	ppid          uint
	wait          time.Duration
	raw           bool
	timers        timerFlags
}

func (a clientArgs) validate() ([]netip.Addr, []netip.Addr, error) {
	local, err := sctppeer.ParseAddrList(a.bind)
	if err != nil {
		return nil, nil, fmt.Errorf("--bind: %w", err)
	}
	remote, err := sctppeer.ParseAddrList(a.connect)
	if err != nil {
		return nil, nil, fmt.Errorf("--connect: %w", err)
	}
	switch {
	case len(remote) == 0:
		return nil, nil, errors.New("--connect is required")
	case a.port == 0 || a.port > 65535:
		return nil, nil, fmt.Errorf("--port=%d: want 1..65535", a.port)
	case a.count < 1:
		return nil, nil, fmt.Errorf("--count=%d: want >= 1", a.count)
	case a.size < sctppeer.MinSize || a.size > 1<<20:
		return nil, nil, fmt.Errorf("--size=%d: want %d..%d", a.size, sctppeer.MinSize, 1<<20)
	case a.streams < 1 || a.streams > 1024:
		return nil, nil, fmt.Errorf("--streams=%d: want 1..1024", a.streams)
	case a.interval < 0 || a.wait < 0:
		return nil, nil, errors.New("--interval and --wait must not be negative")
	case a.ppid > 0xffffffff:
		return nil, nil, fmt.Errorf("--ppid=%d: want a 32-bit value", a.ppid)
	}
	return local, remote, nil
}

// clientState is shared between the sender and the reader goroutine.
type clientState struct {
	mu        sync.Mutex
	res       sctppeer.Result
	echoed    map[uint64]bool
	servers   map[string]bool
	lastEcho  time.Time
	allEchoed chan struct{}
	want      int
}

func runClient(a clientArgs, log *slog.Logger) sctppeer.Result {
	start := time.Now()
	st := &clientState{echoed: map[uint64]bool{}, servers: map[string]bool{}, allEchoed: make(chan struct{}), want: a.count}
	res := &st.res
	res.Events = []sctppeer.Event{}
	local, remote, err := a.validate()
	if err != nil {
		res.Error = err.Error()
		return *res
	}
	streams := a.streams
	if streams < 10 {
		streams = 10
	}
	cfg, err := a.timers.config(streams, log)
	if err != nil {
		res.Error = err.Error()
		return *res
	}
	stack, err := usrsctp.Init(cfg)
	if err != nil {
		res.Error = err.Error()
		return *res
	}
	defer func() {
		if err := stack.Close(); err != nil {
			log.Warn("usrsctp close", "err", err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := stack.Dial(dctx, local, remote, uint16(a.port))
	dcancel()
	if err != nil {
		res.Error = err.Error()
		res.ElapsedMs = time.Since(start).Milliseconds()
		return *res
	}
	res.Associated = true
	if peers, err := conn.PeerAddrs(); err == nil {
		res.PeerAddrs = addrStrings(peers)
	}
	if locals, err := conn.LocalAddrs(); err == nil {
		res.LocalAddrs = addrStrings(locals)
	}

	rctx, rcancel := context.WithCancel(ctx)
	readerDone := make(chan error, 1)
	go func() { readerDone <- st.read(rctx, conn, start, a) }()

	var sendErr error
	tick := time.NewTicker(max(a.interval, time.Millisecond))
	for seq := 0; seq < a.count; seq++ {
		if seq > 0 && a.interval > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				sendErr = ctx.Err()
			}
		}
		if sendErr != nil {
			break
		}
		msg := sctppeer.EncodeMessage(uint64(seq), a.size)
		if err := conn.SendMsg(ctx, msg, uint16(seq%a.streams), uint32(a.ppid)); err != nil {
			sendErr = err
			break
		}
		st.mu.Lock()
		res.Sent++
		st.mu.Unlock()
	}
	tick.Stop()

	var readErr error
	select {
	case <-st.allEchoed:
	case readErr = <-readerDone:
	case <-time.After(a.wait):
	case <-ctx.Done():
	}
	rcancel()
	if readErr == nil {
		readErr = <-readerDone
	}
	conn.Close()

	st.mu.Lock()
	defer st.mu.Unlock()
	res.Echoed = len(st.echoed)
	res.Lost = res.Sent - res.Echoed
	// Echoes still missing at the end: the stall since the last one counts
	// as a gap too, so a run cut short by Wait still reports how long the
	// echoes stopped for (the stall is at least that long).
	if res.Lost > 0 && !st.lastEcho.IsZero() {
		res.MaxGapMs = max(res.MaxGapMs, time.Since(st.lastEcho).Milliseconds())
	}
	for id := range st.servers {
		res.ServerIDs = append(res.ServerIDs, id)
	}
	res.ElapsedMs = time.Since(start).Milliseconds()
	switch {
	case sendErr != nil:
		res.Error = "send: " + sendErr.Error()
	case readErr != nil && !errors.Is(readErr, context.Canceled) && res.Lost > 0:
		res.Error = "receive: " + readErr.Error()
	case res.Sent < a.count:
		res.Error = fmt.Sprintf("sent %d of %d", res.Sent, a.count)
	}
	return *res
}

// read consumes echoes and events until ctx ends or the association does.
func (st *clientState) read(ctx context.Context, conn *usrsctp.Conn, start time.Time, a clientArgs) error {
	for {
		m, err := conn.RecvMsg(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		st.mu.Lock()
		res := &st.res
		if m.Notification != nil {
			ev := sctppeer.Event{AtMs: now.Sub(start).Milliseconds()}
			switch nt := m.Notification.(type) {
			case *usrsctp.AssocChange:
				ev.Kind, ev.State, ev.Assoc = "assoc", nt.State.String(), nt.AssocID
			case *usrsctp.PeerAddrChange:
				ev.Kind, ev.State, ev.Addr, ev.Assoc = "paddr", nt.State.String(), nt.Addr.String(), nt.AssocID
				if nt.State == usrsctp.AddrUnreachable {
					res.Failovers++
				}
			case *usrsctp.ShutdownEvent:
				ev.Kind, ev.Assoc = "shutdown", nt.AssocID
			case *usrsctp.RemoteError:
				ev.Kind, ev.State, ev.Assoc = "remote-error", fmt.Sprint(nt.Error), nt.AssocID
			case *usrsctp.SendFailed:
				ev.Kind, ev.State, ev.Assoc = "send-failed", fmt.Sprint(nt.Error), nt.AssocID
			default:
				ev.Kind, ev.State = "notification", nt.String()
			}
			res.Events = append(res.Events, ev)
			st.mu.Unlock()
			continue
		}
		payload := m.Data
		if !a.raw {
			id, msg, err := sctppeer.SplitEcho(m.Data)
			if err != nil {
				res.Corrupt++
				st.mu.Unlock()
				continue
			}
			if res.ServerID == "" {
				res.ServerID = id
			}
			st.servers[id] = true
			payload = msg
		}
		seq, ok := sctppeer.DecodeMessage(payload)
		switch {
		case !ok || len(payload) != a.size || seq >= uint64(a.count):
			res.Corrupt++
		case st.echoed[seq]:
			res.Duplicates++
		default:
			if int(m.Stream) != int(seq%uint64(a.streams)) {
				res.WrongStrm++
			}
			st.echoed[seq] = true
			if !st.lastEcho.IsZero() {
				if gap := now.Sub(st.lastEcho).Milliseconds(); gap > res.MaxGapMs {
					res.MaxGapMs = gap
				}
			}
			st.lastEcho = now
			if len(st.echoed) == st.want {
				close(st.allEchoed)
			}
		}
		st.mu.Unlock()
	}
}
