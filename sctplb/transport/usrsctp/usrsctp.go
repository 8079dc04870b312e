// Package usrsctp wraps the usrsctp userspace SCTP stack (0.9.5, Debian's
// libusrsctp-dev) in raw-IP mode: SCTP goes straight over IP through raw
// sockets, with no UDP encapsulation, so it interoperates with kernel SCTP
// and with the eBPF datapath. It is what test peers and sctplb's userspace
// transport use on machines whose kernel has no SCTP sockets.
//
// usrsctp is process-global: there is one stack per process (Init), created
// in the network namespace of the calling thread, which sees every SCTP
// packet of that namespace. Run one process per namespace (or set Blackhole
// in every stack sharing one).
//
// Sockets are non-blocking; usrsctp's own threads signal readiness through
// an upcall, and Go waits on a channel, so every call honours its context
// and Close never leaves a goroutine stuck in C. A Conn may be used by one
// reader and any number of writers concurrently.
package usrsctp

/*
#cgo LDFLAGS: -lusrsctp
#include "tlb_usrsctp.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes the stack. Zero fields keep usrsctp's defaults. Timers are
// whole milliseconds.
type Config struct {
	RTOMin, RTOInitial, RTOMax time.Duration
	// InitRTOMax caps the INIT retransmission timeout.
	InitRTOMax        time.Duration
	HeartbeatInterval time.Duration
	// PathMaxRetrans is the number of retransmissions after which a peer
	// address is marked unreachable (failover trigger).
	PathMaxRetrans uint32
	// AssocMaxRetrans aborts the association after this many retransmissions
	// over all paths.
	AssocMaxRetrans uint32
	// InitMaxRetrans bounds INIT retransmissions (how long Dial tries).
	InitMaxRetrans uint32
	// Blackhole: 0 answers out-of-the-blue packets with ABORT (RFC 9260),
	// 1 sends no ABORT in answer to an INIT, 2 sends none for any unexpected
	// packet; use 2 when several stacks share a namespace.
	Blackhole uint32
	// Streams is the number of outgoing/incoming streams offered (default 10
	// outgoing, 2048 incoming in usrsctp).
	Streams uint16
	// RawSocketBuffer, if set, is the receive and send buffer size in bytes
	// of the raw SCTP sockets usrsctp opens for itself (rawbuf.go). The
	// kernel default overflows under bursts of thousands of messages.
	RawSocketBuffer int
	// Debug turns on usrsctp's own debug output (stderr).
	Debug  bool
	Logger *slog.Logger
}

// Stack is the process's usrsctp instance.
type Stack struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	sockets map[*socket]struct{}
	closed  bool
	// closes holds the last socket closes (closediag.go).
	closes []closeRecord

	// releasing counts the graceful closes still running their SHUTDOWN
	// exchange (release.go).
	releasing  sync.WaitGroup
	closedLive atomic.Int64
}

// usrsctp keeps its state in C globals, so "one stack per process" must be
// enforced process-wide too.
var (
	stackMu     sync.Mutex
	stackActive bool
)

// Init starts usrsctp in raw-IP mode in the calling thread's network
// namespace (its threads and raw sockets stay there) and applies cfg. It
// fails if a stack is already running in this process.
func Init(cfg Config) (*Stack, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	stackMu.Lock()
	defer stackMu.Unlock()
	if stackActive {
		return nil, errors.New("usrsctp: a stack is already running in this process")
	}
	debug := C.int(0)
	if cfg.Debug {
		debug = 1
	}
	C.tlb_init(debug)
	// usrsctp_init resets every sysctl to its default, so they can only be
	// applied now (set before, failover took 4 s instead of 0.3 s).
	if err := applySysctls(cfg); err != nil {
		C.usrsctp_finish()
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Stack{cfg: cfg, log: log, sockets: make(map[*socket]struct{})}
	if cfg.RawSocketBuffer > 0 {
		if err := s.setRawSocketBuffers(cfg.RawSocketBuffer); err != nil {
			C.usrsctp_finish()
			return nil, err
		}
	}
	stackActive = true
	log.Debug("usrsctp: stack started", "rto_min", cfg.RTOMin, "hb", cfg.HeartbeatInterval, "path_max_rxt", cfg.PathMaxRetrans)
	return s, nil
}

func (c Config) validate() error {
	for name, d := range map[string]time.Duration{
		"RTOMin": c.RTOMin, "RTOInitial": c.RTOInitial, "RTOMax": c.RTOMax,
		"InitRTOMax": c.InitRTOMax, "HeartbeatInterval": c.HeartbeatInterval,
	} {
		if d < 0 || d > time.Hour {
			return fmt.Errorf("usrsctp: %s=%v: want 0..1h", name, d)
		}
		if d > 0 && d < time.Millisecond {
			return fmt.Errorf("usrsctp: %s=%v: usrsctp timers have millisecond resolution", name, d)
		}
	}
	if c.RTOMin > 0 && c.RTOMax > 0 && c.RTOMin > c.RTOMax {
		return fmt.Errorf("usrsctp: RTOMin %v > RTOMax %v", c.RTOMin, c.RTOMax)
	}
	if c.RawSocketBuffer < 0 || c.RawSocketBuffer > maxRawSocketBuffer {
		return fmt.Errorf("usrsctp: RawSocketBuffer=%d: want 0..%d bytes", c.RawSocketBuffer, maxRawSocketBuffer)
	}
	if c.Blackhole > 2 {
		return fmt.Errorf("usrsctp: Blackhole=%d: want 0..2", c.Blackhole)
	}
	return nil
}

func applySysctls(cfg Config) error {
	type setting struct {
		name string
		v    uint32
		set  func(C.uint32_t) C.int
	}
	ms := func(d time.Duration) uint32 { return uint32(d / time.Millisecond) }
	settings := []setting{
		{"rto_min", ms(cfg.RTOMin), func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_rto_min_default(v) }},
		{"rto_max", ms(cfg.RTOMax), func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_rto_max_default(v) }},
		{"rto_initial", ms(cfg.RTOInitial), func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_rto_initial_default(v) }},
		{"init_rto_max", ms(cfg.InitRTOMax), func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_init_rto_max_default(v) }},
		{"heartbeat_interval", ms(cfg.HeartbeatInterval), func(v C.uint32_t) C.int {
			return C.usrsctp_sysctl_set_sctp_heartbeat_interval_default(v)
		}},
		{"path_rtx_max", cfg.PathMaxRetrans, func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_path_rtx_max_default(v) }},
		{"assoc_rtx_max", cfg.AssocMaxRetrans, func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_assoc_rtx_max_default(v) }},
		{"init_rtx_max", cfg.InitMaxRetrans, func(v C.uint32_t) C.int { return C.usrsctp_sysctl_set_sctp_init_rtx_max_default(v) }},
		{"nr_outgoing_streams", uint32(cfg.Streams), func(v C.uint32_t) C.int {
			return C.usrsctp_sysctl_set_sctp_nr_outgoing_streams_default(v)
		}},
	}
	for _, s := range settings {
		if s.v == 0 {
			continue
		}
		if r := s.set(C.uint32_t(s.v)); r != 0 {
			return fmt.Errorf("usrsctp: sysctl %s=%d: outside usrsctp's accepted range", s.name, s.v)
		}
	}
	if cfg.Debug {
		C.usrsctp_sysctl_set_sctp_debug_on(C.SCTP_DEBUG_ALL)
	}
	if cfg.Blackhole != 0 {
		if r, err := C.usrsctp_sysctl_set_sctp_blackhole(C.uint32_t(cfg.Blackhole)); r != 0 {
			return fmt.Errorf("usrsctp: sysctl blackhole=%d: %w", cfg.Blackhole, errnoOr(err))
		}
	}
	return nil
}

func errnoOr(err error) error {
	if err != nil {
		return err
	}
	return errors.New("rejected")
}

// Close aborts every association still open, waits for those the caller
// closed gracefully to finish their SHUTDOWN exchange (release.go: at most
// 10 s, then aborted), then shuts usrsctp down, retrying for up to 15 s
// while usrsctp still frees endpoints. Its error then says
// what usrsctp still holds (closediag.go) and wraps ErrLeakedSocket when
// that is usrsctp 0.9.5's own socket reference leak.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	socks := make([]*socket, 0, len(s.sockets))
	for so := range s.sockets {
		socks = append(socks, so)
	}
	s.mu.Unlock()
	aborted := make([]string, 0, len(socks))
	for _, so := range socks {
		if st := so.abort(); st != "" {
			aborted = append(aborted, so.kind+" "+st)
		}
	}
	// Graceful closes still in their SHUTDOWN exchange finish it (each
	// aborts itself after gracefulWait).
	s.releasing.Wait()
	const wait = 15 * time.Second
	start := time.Now()
	before := readCounters()
	for C.usrsctp_finish() != 0 {
		if time.Since(start) > wait {
			// The stack stays allocated; the process cannot start another one.
			s.mu.Lock()
			closes := append([]closeRecord(nil), s.closes...)
			s.mu.Unlock()
			return finishError(wait, aborted, closes, stillBound(closes), before, readCounters(), start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stackMu.Lock()
	stackActive = false
	stackMu.Unlock()
	return nil
}

func (s *Stack) track(so *socket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("usrsctp: stack closed")
	}
	s.sockets[so] = struct{}{}
	return nil
}

func (s *Stack) untrack(so *socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sockets, so)
}
