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
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

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
	assocs := fs.Int("associations", 0, "open this many associations from this one process and report them all (0: one, reported alone)")
	localPort := fs.Uint("local-port", 0, "local port of the first association, the next ones counting up (0: usrsctp picks)")
	dialConc := fs.Int("dial-concurrency", 0, "with --associations: at most this many being set up at once (0: all at once)")
	dialAttempts := fs.Int("dial-attempts", 1, "dial an association that did not come up within --dial-timeout again from the same port, up to this many times in all")
	dialTimeout := fs.Duration("dial-timeout", 15*time.Second, "how long one dial attempt may take")
	var tf timerFlags
	tf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a := clientArgs{
		bind: *bind, connect: *connect, port: *port, count: *count, size: *size, interval: *interval,
		streams: *streams, ppid: *ppid, wait: *wait, raw: *raw, timers: tf,
		associations: *assocs, localPort: *localPort,
		dialConcurrency: *dialConc, dialAttempts: *dialAttempts, dialTimeout: *dialTimeout,
	}
	if *assocs != 0 {
		res := runMany(a, log)
		_ = json.NewEncoder(stdout).Encode(res)
		if !res.OK() {
			return 1
		}
		return 0
	}
	res := runClient(a, log)
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
	// associations is 0 for the one-association client.
	associations int
	localPort    uint
	// dialConcurrency bounds the associations being set up at once (0:
	// unbounded); dialAttempts (>= 1) and dialTimeout are per association.
	dialConcurrency int
	dialAttempts    int
	dialTimeout     time.Duration
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
	case a.associations < 0 || a.associations > maxAssociations:
		return nil, nil, fmt.Errorf("--associations=%d: want 0..%d", a.associations, maxAssociations)
	case a.dialConcurrency < 0:
		return nil, nil, fmt.Errorf("--dial-concurrency=%d: want >= 0", a.dialConcurrency)
	case a.dialAttempts < 1 || a.dialAttempts > 100:
		return nil, nil, fmt.Errorf("--dial-attempts=%d: want 1..100", a.dialAttempts)
	case a.dialTimeout <= 0:
		return nil, nil, fmt.Errorf("--dial-timeout=%v: want > 0", a.dialTimeout)
	case a.localPort > 0 && a.localPort+uint(max(a.associations, 1))-1 > 65535:
		return nil, nil, fmt.Errorf("--local-port=%d: the ports of %d associations do not fit below 65536", a.localPort, max(a.associations, 1))
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

// runClient is the one-association client.
func runClient(a clientArgs, log *slog.Logger) sctppeer.Result {
	start := time.Now()
	res := sctppeer.Result{Events: []sctppeer.Event{}}
	local, remote, err := a.validate()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	stack, err := a.stack(log)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer closeStack(stack, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runAssociation(ctx, stack, a, local, remote, uint16(a.localPort), start, nil)
}

// maxAssociations bounds --associations: a sanity limit well above what
// a lab runs (the HA lab puts 50 in one process at 200 associations).
const maxAssociations = 4096

// runMany runs a.associations associations on one usrsctp stack, each in
// its own goroutine with its own socket and local port, and reports them
// all. A goroutine per association, not one poller: the wrapper already
// wakes each socket from usrsctp's upcall on that socket's own channel, so
// a parked reader or sender costs a goroutine, not a thread, and one
// association whose send buffer is full (SendMsg waits) or whose path is
// failing over cannot delay another's sends or the timing of its echoes,
// which is what the per-association gap measures. usrsctp itself runs one
// receive thread and one timer thread for the whole stack either way.
func runMany(a clientArgs, log *slog.Logger) sctppeer.ManyResult {
	start := time.Now()
	local, remote, err := a.validate()
	if err != nil {
		return sctppeer.ManyResult{Error: err.Error(), Associations: []sctppeer.Result{}}
	}
	stack, err := a.stack(log)
	if err != nil {
		return sctppeer.ManyResult{Error: err.Error(), Associations: []sctppeer.Result{}}
	}
	defer closeStack(stack, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	results := make([]sctppeer.Result, a.associations)
	// dialing holds a slot per association being set up (nil: no bound).
	var dialing chan struct{}
	if a.dialConcurrency > 0 {
		dialing = make(chan struct{}, a.dialConcurrency)
	}
	var wg sync.WaitGroup
	for i := range results {
		var port uint16
		if a.localPort > 0 {
			port = uint16(a.localPort + uint(i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runAssociation(ctx, stack, a, local, remote, port, start, dialing)
			// Said at once (the result line comes when all are done): a
			// test waiting for the associations to come up can tell why
			// one did not.
			if !r.OK() {
				log.Warn("association failed", "index", i, "local", r.LocalAddrs, "localPort", port, "associated", r.Associated,
					"sent", r.Sent, "echoed", r.Echoed, "atMs", time.Since(start).Milliseconds(), "error", r.Error)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	return sctppeer.Summarize(results, time.Since(start))
}

// stack starts the process's usrsctp stack.
func (a clientArgs) stack(log *slog.Logger) (*usrsctp.Stack, error) {
	streams := a.streams
	if streams < 10 {
		streams = 10
	}
	cfg, err := a.timers.config(streams, log)
	if err != nil {
		return nil, err
	}
	return usrsctp.Init(cfg)
}

func closeStack(stack *usrsctp.Stack, log *slog.Logger) {
	if err := stack.Close(); err != nil {
		log.Warn("usrsctp close", "err", err)
	}
}

// dial sets up one association from localPort, holding a slot of dialing
// (nil: no bound) while it does, and dials again from the same port up to
// a.dialAttempts times in all when an attempt fails (the peer or the path
// lost the handshake's chunks past usrsctp's INIT retransmissions).
// It returns the attempts made.
func dial(ctx context.Context, stack *usrsctp.Stack, a clientArgs, local, remote []netip.Addr, localPort uint16, dialing chan struct{}) (*usrsctp.Conn, int, error) {
	if dialing != nil {
		select {
		case dialing <- struct{}{}:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		defer func() { <-dialing }()
	}
	var err error
	for n := 1; n <= max(a.dialAttempts, 1); n++ {
		dctx, dcancel := context.WithTimeout(ctx, a.dialTimeout)
		var conn *usrsctp.Conn
		conn, err = stack.DialFrom(dctx, local, localPort, remote, uint16(a.port))
		dcancel()
		if err == nil {
			return conn, n, nil
		}
		if ctx.Err() != nil {
			return nil, n, err
		}
	}
	return nil, max(a.dialAttempts, 1), err
}

// runAssociation dials one association from localPort (0: any; dial), sends
// a.count messages and waits for their echoes; start is the client's
// start, what event times and the elapsed time count from.
func runAssociation(ctx context.Context, stack *usrsctp.Stack, a clientArgs, local, remote []netip.Addr, localPort uint16, start time.Time, dialing chan struct{}) sctppeer.Result {
	st := &clientState{echoed: map[uint64]bool{}, servers: map[string]bool{}, allEchoed: make(chan struct{}), want: a.count}
	res := &st.res
	res.Events = []sctppeer.Event{}

	conn, attempts, err := dial(ctx, stack, a, local, remote, localPort, dialing)
	res.DialAttempts = attempts
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
	// Echoes missing after the wait: does this stack still hold messages
	// it never sent? (usrsctp 0.9.5 can stop scheduling a stream.)
	st.mu.Lock()
	missing := res.Sent > len(st.echoed)
	st.mu.Unlock()
	var (
		allAcked bool
		stuck    uint32
	)
	if missing {
		if q, err := conn.SendQueue(); err == nil && q.Unacked == 0 {
			allAcked, stuck = true, q.Queued
		}
		// Aborted, not shut down: a SHUTDOWN has the server's stack send
		// what it queued first, a stalled stream never is, and twice in
		// session 20's integration runs the echo server crashed at that
		// close of a stalled association. The association has failed
		// already; the ABORT ends it at once on both sides.
		conn.Abort()
	} else {
		conn.Close()
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	res.Echoed = len(st.echoed)
	res.Lost = res.Sent - res.Echoed
	res.AllAcked, res.StuckBytes = allAcked, stuck
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
