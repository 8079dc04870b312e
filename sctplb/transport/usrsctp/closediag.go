package usrsctp

/*
#include "tlb_usrsctp.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// What Stack.Close reports when usrsctp_finish keeps refusing (usrsctp
// still holds an endpoint): usrsctp has no call listing its endpoints, so
// the stack remembers what it can see from outside, the sockets it aborted
// and the last graceful closes with their association states, and adds
// usrsctp's own counters.

// ErrLeakedSocket is wrapped by Stack.Close's error when what usrsctp still
// holds matches usrsctp 0.9.5's socket reference leak (leakedReference):
// nothing the caller did wrong, and nothing it can release.
var ErrLeakedSocket = errors.New("usrsctp 0.9.5 keeps a reference to a socket whose association-free timer fired while it was open (sctplab/usrsctp#571, fixed upstream after 0.9.5), so that endpoint is never freed")

// maxCloseRecords bounds the closes remembered: the last few are the ones
// usrsctp may still be finishing at Close.
const maxCloseRecords = 16

type closeRecord struct {
	kind  string // "dial", "accepted", "listener"
	abort bool
	state string // association state when closed
	port  uint16 // local port, 0 if unbound
	at    time.Time
}

func (r closeRecord) String() string {
	how := "closed"
	if r.abort {
		how = "aborted"
	}
	return fmt.Sprintf("%s port %d %s in %s", r.kind, r.port, how, r.state)
}

// stackCounters are usrsctp's stack-wide counters (usrsctp_get_stat).
type stackCounters struct {
	established, asocKill, inpKill, shutdown, shutdownGuard uint32
}

func readCounters() stackCounters {
	var e, a, i, s, g C.uint32_t
	C.tlb_stats(&e, &a, &i, &s, &g)
	return stackCounters{uint32(e), uint32(a), uint32(i), uint32(s), uint32(g)}
}

// stateName names an association state (sstat_state, usrsctp.h).
func stateName(s int32) string {
	names := map[int32]string{
		C.SCTP_CLOSED: "CLOSED", C.SCTP_BOUND: "BOUND", C.SCTP_LISTEN: "LISTEN",
		C.SCTP_COOKIE_WAIT: "COOKIE_WAIT", C.SCTP_COOKIE_ECHOED: "COOKIE_ECHOED",
		C.SCTP_ESTABLISHED: "ESTABLISHED", C.SCTP_SHUTDOWN_SENT: "SHUTDOWN_SENT",
		C.SCTP_SHUTDOWN_RECEIVED: "SHUTDOWN_RECEIVED", C.SCTP_SHUTDOWN_ACK_SENT: "SHUTDOWN_ACK_SENT",
		C.SCTP_SHUTDOWN_PENDING: "SHUTDOWN_PENDING",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("state %#x", s)
}

// assocState reads the association's state; the caller holds sk.mu.
func assocState(so *C.struct_socket) string {
	var st C.int32_t
	if r := C.tlb_assoc_state(so, &st); r != 0 {
		return "no association"
	}
	return stateName(int32(st))
}

func (s *Stack) recordClose(r closeRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes = append(s.closes, r)
	if len(s.closes) > maxCloseRecords {
		s.closes = s.closes[len(s.closes)-maxCloseRecords:]
	}
}

// localPort is the socket's local port, 0 if unbound; the caller holds sk.mu.
func localPort(so *C.struct_socket) uint16 { return uint16(C.tlb_local_port(so)) }

// stillBound returns the closes whose port usrsctp still holds: an endpoint
// keeps its port until usrsctp frees it (or nearly: the last stage of the
// free unbinds first, so a miss is no proof).
func stillBound(closes []closeRecord) []closeRecord {
	var held []closeRecord
	seen := map[uint16]bool{}
	for _, r := range closes {
		if r.port == 0 || seen[r.port] {
			continue
		}
		seen[r.port] = true
		if C.tlb_port_bound(C.uint16_t(r.port)) == 1 {
			held = append(held, r)
		}
	}
	return held
}

// finishError says what usrsctp may still hold: the sockets Close
// aborted, the last closes before it and which of their ports are still
// bound, and the counters' change while Close waited (free timers still
// firing mean an association or endpoint usrsctp keeps failing to free).
func finishError(wait time.Duration, aborted []string, closes, held []closeRecord, before, after stackCounters, start time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "usrsctp: finish: usrsctp still holds endpoints %v after Close aborted %d socket(s)", wait, len(aborted))
	if len(aborted) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(aborted, ", "))
	}
	fmt.Fprintf(&b, "; ports still bound: %d [", len(held))
	for i, r := range held {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%v %v before Close", r, start.Sub(r.at).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "]; last %d close(s) [", len(closes))
	for i, r := range closes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%v %v before Close", r, start.Sub(r.at).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "]; usrsctp counters: established %d, association-free retries %d (+%d during the wait), endpoint-free retries %d (+%d), shutdown timeouts +%d, shutdown guard timeouts +%d",
		after.established, after.asocKill, after.asocKill-before.asocKill, after.inpKill, after.inpKill-before.inpKill,
		after.shutdown-before.shutdown, after.shutdownGuard-before.shutdownGuard)
	if leakedReference(held, before, after) {
		return fmt.Errorf("%s: an endpoint closed after its association was freed is still bound, free timers having fired, nothing retrying: %w", b.String(), ErrLeakedSocket)
	}
	return errors.New(b.String())
}

// leakedReference recognises usrsctp 0.9.5's socket reference leak
// (sctplab/usrsctp#571): when an association is freed while the
// application is inside a call on its socket (a read of the SHUTDOWN
// event as SHUTDOWN COMPLETE arrives), usrsctp frees it later from a timer
// (ASOCKILL), and that timer's handler takes a reference on the socket if
// it is still open and never drops it. Closing the socket then never
// frees the endpoint: its port stays bound, no timer runs, and
// usrsctp_finish refuses for good. Fixed upstream by 37a9dc3e (2021),
// after 0.9.5, the version Debian ships.
func leakedReference(held []closeRecord, before, after stackCounters) bool {
	if after.asocKill == 0 || after.asocKill != before.asocKill || after.inpKill != before.inpKill {
		return false
	}
	for _, r := range held {
		if r.state == "no association" {
			return true
		}
	}
	return false
}
