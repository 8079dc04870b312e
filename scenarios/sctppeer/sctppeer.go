// Package sctppeer drives telcolb-sctppeer, a real SCTP test peer (usrsctp
// in raw-IP mode, see sctplb/transport/usrsctp) run inside lab namespaces:
// an echo server that says which instance answered, and a client that sends
// N messages, waits for every echo and reports one JSON Result.
//
// usrsctp is one stack per process and per namespace, so every peer is its
// own process; the binary is built once per test process (Binary).
package sctppeer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Timers are the SCTP timers both peers use. Zero values keep usrsctp's
// defaults (RTO 1 s/3 s/60 s, heartbeat 30 s, path max retransmits 5).
type Timers struct {
	RTOMin, RTOInitial, RTOMax time.Duration
	Heartbeat                  time.Duration
	PathMaxRetrans             int
	// Blackhole 2 keeps the stack silent on out-of-the-blue packets, so
	// several peers can share a namespace (each sees every SCTP packet
	// there and would otherwise ABORT the others' associations). The
	// sysctl takes effect only after the stack's receive threads run, so
	// a non-zero Blackhole also makes the host drop reflected ABORTs
	// (lab.Host.SilenceOutOfTheBlue).
	Blackhole int
	// RawSocketBuffer, when set, is the receive and send buffer in bytes
	// of the stack's raw sockets (usrsctp.Config.RawSocketBuffer): every
	// SCTP packet of the namespace queues there until usrsctp's one
	// receive thread reads it, and many associations on a loaded machine
	// overflow the kernel's default.
	RawSocketBuffer int
}

// FastTimers detect a dead path in well under a second (heartbeat 300 ms,
// RTO 100/200/400 ms, 2 retransmissions): what failover tests use.
var FastTimers = Timers{
	RTOMin: 100 * time.Millisecond, RTOInitial: 200 * time.Millisecond, RTOMax: 400 * time.Millisecond,
	Heartbeat: 300 * time.Millisecond, PathMaxRetrans: 2,
}

func (t Timers) args() []string {
	var a []string
	add := func(name string, d time.Duration) {
		if d > 0 {
			a = append(a, "--"+name, d.String())
		}
	}
	add("rto-min", t.RTOMin)
	add("rto-initial", t.RTOInitial)
	add("rto-max", t.RTOMax)
	add("heartbeat", t.Heartbeat)
	if t.PathMaxRetrans > 0 {
		a = append(a, "--path-max-retrans", strconv.Itoa(t.PathMaxRetrans))
	}
	if t.Blackhole > 0 {
		a = append(a, "--blackhole", strconv.Itoa(t.Blackhole))
	}
	if t.RawSocketBuffer > 0 {
		a = append(a, "--raw-buffer", strconv.Itoa(t.RawSocketBuffer))
	}
	return a
}

// ServerOptions configure `telcolb-sctppeer server`.
type ServerOptions struct {
	// Bind lists the local addresses (several: multi-homed). Empty: all.
	Bind []netip.Addr
	Port uint16
	// ID is prefixed to every echo ("<ID>\x00<message>") so clients can tell
	// which server answered. Empty: the host name.
	ID string
	// PPID, if non-zero, replaces the PPID of echoes (else echoed as received).
	PPID uint32
	// Raw echoes messages verbatim, without the ID prefix.
	Raw    bool
	Timers Timers
}

// ClientOptions configure `telcolb-sctppeer client`.
type ClientOptions struct {
	Bind    []netip.Addr
	Connect []netip.Addr
	Port    uint16
	// Count messages of Size bytes (at least 12), one every Interval, over
	// Streams streams (round robin from 0), with PPID. Unpaced sends them
	// back to back, as fast as the association takes them (Interval unused).
	Count    int
	Size     int
	Interval time.Duration
	Unpaced  bool
	Streams  int
	PPID     uint32
	// Wait bounds how long the client waits for missing echoes after the
	// last send (default 5 s).
	Wait time.Duration
	// Raw expects verbatim echoes (server Raw).
	Raw    bool
	Timers Timers
	// Associations, when at least 1, opens that many associations from
	// the one process (one usrsctp stack), each its own socket and local
	// port, all with the options above, and reports a ManyResult (collect
	// it with WaitMany). 0: one association reported as a Result (Wait).
	Associations int
	// LocalPort, when set, is the first association's local port, the
	// next ones counting up from it (else usrsctp picks). Clients sharing
	// a namespace need disjoint ranges: each stack picks its ports on its
	// own and two could pick the same.
	LocalPort uint16
	// DialConcurrency, when at least 1, bounds how many of Associations
	// are being set up at once (0: all at once). Hundreds of INITs at
	// once overflow the stack's raw socket and each lost INIT or COOKIE
	// ECHO waits an RTO; paced, each handshake gets through.
	DialConcurrency int
	// DialAttempts is how many times an association that did not come up
	// within DialTimeout is dialled again from the same local port
	// (0 or 1: once). Every attempt is counted in its Result.
	DialAttempts int
	// DialTimeout bounds one attempt (0: 15 s).
	DialTimeout time.Duration
}

// ServerEvent is one JSON line the server prints.
type ServerEvent struct {
	Event string   `json:"event"` // listening, assoc, paddr, shutdown, closed, state, error
	ID    string   `json:"id,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	Port  uint16   `json:"port,omitempty"`
	State string   `json:"state,omitempty"`
	Addr  string   `json:"addr,omitempty"`
	Assoc uint32   `json:"assoc,omitempty"`
	Peers []string `json:"peers,omitempty"`
	// Messages is the number echoed on a closed association.
	Messages int `json:"messages,omitempty"`
	// InFlight ("closed" and "state" events) is the DATA chunks the
	// association's stack had sent and not had acknowledged at its last
	// look before the close or the state report (at most half a second
	// before; -1: never read): 0 says the client acknowledged every echo
	// the server's stack had sent by then. "state" events (one per open
	// association) answer Server.ReportState.
	// Queued is what the stack held then (usrsctp.SendQueue).
	InFlight int    `json:"inFlight,omitempty"`
	Queued   uint32 `json:"queued,omitempty"`
	Error    string `json:"error,omitempty"`
	AtMs     int64  `json:"atMs"`
}

// EnvBinary names an environment variable pointing at a prebuilt
// telcolb-sctppeer, skipping the build.
const EnvBinary = "TELCOLB_SCTPPEER_BIN"

var build struct {
	mu   sync.Mutex
	path string
}

// Binary returns the path of telcolb-sctppeer, building it on first use in
// this process (go build caches, so this is quick after the first time)
// into ~/.cache/telcolb/sctppeer-<hash of the module's go.mod path>/.
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		return p, nil
	}
	build.mu.Lock()
	defer build.mu.Unlock()
	if build.path != "" {
		return build.path, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	// One binary per source tree (like l4.Build's): test processes of
	// another worktree, on another version of the peer, would otherwise
	// replace it under this one's feet with a binary lacking its flags.
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("sctppeer: go env GOMOD: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSpace(gomod))
	dir := filepath.Join(cache, "telcolb", "sctppeer-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("sctppeer: %w", err)
	}
	// Build to a private name, then rename: parallel test binaries each
	// replace the shared path atomically with an identical fresh build.
	tmp, err := os.CreateTemp(dir, "telcolb-sctppeer-*")
	if err != nil {
		return "", fmt.Errorf("sctppeer: %w", err)
	}
	tmp.Close()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp.Name(), "github.com/telcolb/telcolb/scenarios/sctppeer/cmd/telcolb-sctppeer")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("sctppeer: go build: %w: %s", err, out)
	}
	final := filepath.Join(dir, "telcolb-sctppeer")
	if err := os.Rename(tmp.Name(), final); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("sctppeer: %w", err)
	}
	build.path = final
	return final, nil
}

// Server is a running echo server.
type Server struct {
	Proc *lab.Proc
	Opts ServerOptions
}

// StartServer starts an echo server in host and waits until it listens.
// It also installs the host's ICMP protocol-unreachable drop rule.
func StartServer(ctx context.Context, host *lab.Host, opts ServerOptions) (*Server, error) {
	if opts.Port == 0 {
		return nil, errors.New("sctppeer: server port 0")
	}
	if opts.ID == "" {
		opts.ID = host.Name
	}
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	if err := host.DropProtoUnreachable(ctx); err != nil {
		return nil, err
	}
	if opts.Timers.Blackhole != 0 {
		if err := host.SilenceOutOfTheBlue(ctx); err != nil {
			return nil, err
		}
	}
	args := []string{"server", "--port", strconv.Itoa(int(opts.Port)), "--id", opts.ID}
	if len(opts.Bind) > 0 {
		args = append(args, "--bind", FormatAddrList(opts.Bind))
	}
	if opts.PPID != 0 {
		args = append(args, "--ppid", strconv.FormatUint(uint64(opts.PPID), 10))
	}
	if opts.Raw {
		args = append(args, "--raw")
	}
	args = append(args, opts.Timers.args()...)
	p, err := host.Start(bin, args...)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, `"event":"listening"`); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("sctppeer: server on %s: %w", host.Name, err)
	}
	return &Server{Proc: p, Opts: opts}, nil
}

// Events parses the JSON lines the server printed so far.
func (s *Server) Events() ([]ServerEvent, error) {
	return parseServerEvents(s.Proc.Stdout())
}

// WaitEvent waits until the server has printed event in state (e.g. "assoc",
// "COMM_UP"), ctx ends or the server exits.
func (s *Server) WaitEvent(ctx context.Context, event, state string) error {
	for {
		evs, err := s.Events()
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Event == event && ev.State == state {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s %s: %w", event, state, ctx.Err())
		case <-s.Proc.Done():
			return fmt.Errorf("waiting for %s %s: server exited", event, state)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReportState asks the server for a "state" event per association it
// still serves (SIGUSR1).
func (s *Server) ReportState() error { return s.Proc.Signal(syscall.SIGUSR1) }

// Stop stops the server.
func (s *Server) Stop() error { return s.Proc.Stop() }

func parseServerEvents(out string) ([]ServerEvent, error) {
	var evs []ServerEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ev ServerEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return evs, fmt.Errorf("sctppeer: server line %q: %w", line, err)
		}
		evs = append(evs, ev)
	}
	return evs, sc.Err()
}

// Client is a running client.
type Client struct {
	Proc *lab.Proc
	Opts ClientOptions
}

func (o ClientOptions) args() ([]string, error) {
	if len(o.Connect) == 0 {
		return nil, errors.New("sctppeer: client needs Connect addresses")
	}
	if o.Port == 0 {
		return nil, errors.New("sctppeer: client port 0")
	}
	args := []string{"client", "--connect", FormatAddrList(o.Connect), "--port", strconv.Itoa(int(o.Port))}
	if len(o.Bind) > 0 {
		args = append(args, "--bind", FormatAddrList(o.Bind))
	}
	if o.Count > 0 {
		args = append(args, "--count", strconv.Itoa(o.Count))
	}
	if o.Size > 0 {
		args = append(args, "--size", strconv.Itoa(o.Size))
	}
	switch {
	case o.Unpaced:
		args = append(args, "--interval", "0s")
	case o.Interval > 0:
		args = append(args, "--interval", o.Interval.String())
	}
	if o.Streams > 0 {
		args = append(args, "--streams", strconv.Itoa(o.Streams))
	}
	if o.PPID != 0 {
		args = append(args, "--ppid", strconv.FormatUint(uint64(o.PPID), 10))
	}
	if o.Wait > 0 {
		args = append(args, "--wait", o.Wait.String())
	}
	if o.Raw {
		args = append(args, "--raw")
	}
	if o.Associations < 0 {
		return nil, fmt.Errorf("sctppeer: %d associations", o.Associations)
	}
	if o.Associations > 0 {
		args = append(args, "--associations", strconv.Itoa(o.Associations))
	}
	if o.LocalPort != 0 {
		args = append(args, "--local-port", strconv.Itoa(int(o.LocalPort)))
	}
	if o.DialConcurrency < 0 || o.DialAttempts < 0 || o.DialTimeout < 0 {
		return nil, fmt.Errorf("sctppeer: dial concurrency %d, attempts %d, timeout %v: none may be negative", o.DialConcurrency, o.DialAttempts, o.DialTimeout)
	}
	if o.DialConcurrency > 0 {
		args = append(args, "--dial-concurrency", strconv.Itoa(o.DialConcurrency))
	}
	if o.DialAttempts > 1 {
		args = append(args, "--dial-attempts", strconv.Itoa(o.DialAttempts))
	}
	if o.DialTimeout > 0 {
		args = append(args, "--dial-timeout", o.DialTimeout.String())
	}
	return append(args, o.Timers.args()...), nil
}

// StartClient starts a client in host in the background; Wait collects its
// Result.
func StartClient(ctx context.Context, host *lab.Host, opts ClientOptions) (*Client, error) {
	args, err := opts.args()
	if err != nil {
		return nil, err
	}
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	if err := host.DropProtoUnreachable(ctx); err != nil {
		return nil, err
	}
	if opts.Timers.Blackhole != 0 {
		if err := host.SilenceOutOfTheBlue(ctx); err != nil {
			return nil, err
		}
	}
	p, err := host.Start(bin, args...)
	if err != nil {
		return nil, err
	}
	return &Client{Proc: p, Opts: opts}, nil
}

// Wait waits for the client to finish and returns its Result. The error is
// non-nil when the client failed (exit status, no result line, or a Result
// that is not OK); the Result is returned whenever one was printed. A
// client of several associations is collected with WaitMany.
func (c *Client) Wait(ctx context.Context) (Result, error) {
	if c.Opts.Associations > 0 {
		return Result{}, errors.New("sctppeer: a client of several associations reports with WaitMany")
	}
	waitErr := c.wait(ctx)
	r, perr := ParseResult(c.Proc.Stdout())
	if perr != nil {
		return r, fmt.Errorf("sctppeer client: %w (exit: %v; stderr: %s)", perr, waitErr, strings.TrimSpace(c.Proc.Stderr()))
	}
	if waitErr != nil || !r.OK() {
		return r, fmt.Errorf("sctppeer client failed (exit: %v): %s; stderr: %s", waitErr, summary(r), strings.TrimSpace(c.Proc.Stderr()))
	}
	return r, nil
}

// wait waits for the process to exit, stopping it when ctx ends first.
func (c *Client) wait(ctx context.Context) error {
	err := c.Proc.Wait(ctx)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		_ = c.Proc.Stop()
	}
	return err
}

// WaitMany waits for a client of several associations (Associations set)
// and returns its ManyResult. The error is non-nil when the client failed
// (exit status, no result line, or any association not OK) and names each
// failed association; the ManyResult is returned whenever one was printed.
func (c *Client) WaitMany(ctx context.Context) (ManyResult, error) {
	if c.Opts.Associations == 0 {
		return ManyResult{}, errors.New("sctppeer: a client of one association reports with Wait")
	}
	waitErr := c.wait(ctx)
	m, perr := ParseManyResult(c.Proc.Stdout())
	if perr != nil {
		return m, fmt.Errorf("sctppeer client: %w (exit: %v; stderr: %s)", perr, waitErr, strings.TrimSpace(c.Proc.Stderr()))
	}
	if waitErr == nil && m.OK() {
		return m, nil
	}
	var failed []string
	for i, r := range m.Associations {
		if !r.OK() {
			failed = append(failed, fmt.Sprintf("association %d (local %v): %s", i, r.LocalAddrs, summary(r)))
		}
	}
	return m, fmt.Errorf("sctppeer client failed (exit: %v, error %q): %d of %d associations OK:\n%s",
		waitErr, m.Error, m.Total.OK, len(m.Associations), strings.Join(failed, "\n"))
}

// RunClient runs a client in host to completion.
func RunClient(ctx context.Context, host *lab.Host, opts ClientOptions) (Result, error) {
	c, err := StartClient(ctx, host, opts)
	if err != nil {
		return Result{}, err
	}
	return c.Wait(ctx)
}

// ParseAddrList parses "a[,b...]" into addresses (the --bind and --connect
// syntax).
func ParseAddrList(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]netip.Addr, 0, len(parts))
	seen := make(map[netip.Addr]bool, len(parts))
	for _, p := range parts {
		a, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("address list %q: %w", s, err)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("address list %q: zones are not supported", s)
		}
		a = a.Unmap()
		if seen[a] {
			return nil, fmt.Errorf("address list %q: %s repeated", s, a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// FormatAddrList is the inverse of ParseAddrList.
func FormatAddrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// MinSize is the smallest client message: an 8-byte sequence number and a
// 4-byte length.
const MinSize = 12

// EncodeMessage builds the client's message number seq of size bytes: seq,
// size, then a pattern derived from seq, so a corrupted or misrouted echo is
// detected byte by byte.
func EncodeMessage(seq uint64, size int) []byte {
	if size < MinSize {
		size = MinSize
	}
	b := make([]byte, size)
	for i := 0; i < 8; i++ {
		b[i] = byte(seq >> (56 - 8*i))
	}
	for i := 0; i < 4; i++ {
		b[8+i] = byte(uint32(size) >> (24 - 8*i))
	}
	for i := MinSize; i < size; i++ {
		b[i] = byte(seq) ^ byte(i*7)
	}
	return b
}

// DecodeMessage returns the sequence number of a client message and whether
// it is intact (length and pattern as EncodeMessage made it).
func DecodeMessage(b []byte) (seq uint64, ok bool) {
	if len(b) < MinSize {
		return 0, false
	}
	for i := 0; i < 8; i++ {
		seq = seq<<8 | uint64(b[i])
	}
	var size uint32
	for i := 0; i < 4; i++ {
		size = size<<8 | uint32(b[8+i])
	}
	if int64(size) != int64(len(b)) {
		return seq, false
	}
	for i := MinSize; i < len(b); i++ {
		if b[i] != byte(seq)^byte(i*7) {
			return seq, false
		}
	}
	return seq, true
}

// SplitEcho separates a server's echo into the server ID and the original
// message ("<ID>\x00<message>").
func SplitEcho(b []byte) (id string, msg []byte, err error) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], nil
		}
	}
	return "", nil, errors.New("sctppeer: echo without server ID")
}
