package usrsctp

/*
#include "tlb_usrsctp.h"
*/
import "C"

import "time"

// Why a socket is closed only once its association is gone.
//
// usrsctp_close drops the application's reference to the socket and, at
// zero, frees it in sofree; only then does sctp_close mark the endpoint
// SOCKET_GONE. usrsctp's timer thread (sctp_timeout_handler) and receive
// thread (sctp_common_input_processing), working on the socket's
// association, take a reference on the socket for their upcall whenever
// that flag is not yet set, and drop it when done. One of them taking it in
// that window gets a socket whose count already reached zero: the
// application's sofree frees it, the thread's own drop frees it again
// (heap use after free and double free of the 584-byte struct socket,
// which glibc later reports as "double free or corruption"). Seen in
// usrsctp 0.9.5 with a pause added in that window under AddressSanitizer
// (docs/testing.md), unchanged upstream. Those threads reach the socket
// only through a live association, so the shell ends the association
// first (SHUTDOWN, or ABORT) and calls usrsctp_close once usrsctp no longer
// has one.

const (
	// releasePoll is how often a closing socket is checked for its
	// association being gone.
	releasePoll = 5 * time.Millisecond
	// gracefulWait bounds the SHUTDOWN exchange of a graceful close;
	// after it the association is aborted.
	gracefulWait = 10 * time.Second
	// abortWait bounds the wait for usrsctp to free an aborted
	// association; usrsctp 0.9.5 may defer the free to a timer while
	// the socket is in use (closediag.go).
	abortWait = 2 * time.Second
)

// hasAssociation says whether usrsctp still holds an association on so.
func hasAssociation(so *C.struct_socket) bool {
	var st C.int32_t
	return C.tlb_assoc_state(so, &st) == 0
}

// release ends so's association and closes so once it is gone. An abort
// (or a socket without association) completes before release returns; a
// graceful close runs its SHUTDOWN exchange in the background, tracked by
// the stack so that Stack.Close waits for it. so is no longer reachable
// from any socket when release is called.
func (s *Stack) release(so *C.struct_socket, abort bool) {
	if !hasAssociation(so) {
		s.closeSocket(so)
		return
	}
	if abort {
		s.abortAndClose(so)
		return
	}
	// A shutdown refused (the peer's SHUTDOWN already under way) leaves
	// the exchange to finish as it is: the wait below is the same.
	if r, err := C.usrsctp_shutdown(so, C.SHUT_WR); r != 0 {
		s.log.Debug("usrsctp: shutdown refused, waiting for the association to end", "err", errnoOr(err))
	}
	// Once Stack.Close has begun, nothing may outlive it: abort instead.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.abortAndClose(so)
		return
	}
	s.releasing.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.releasing.Done()
		s.finishShutdown(so)
	}()
}

// finishShutdown waits for the SHUTDOWN exchange to free the association
// and aborts it when that takes longer than gracefulWait. It does not read
// the socket: a read racing with usrsctp freeing the association on
// SHUTDOWN COMPLETE is usrsctp 0.9.5's other use after free
// (docs/testing.md), and what still arrives is freed with the socket.
func (s *Stack) finishShutdown(so *C.struct_socket) {
	if !associationGoneWithin(so, gracefulWait) {
		s.log.Debug("usrsctp: graceful close took too long, aborting", "wait", gracefulWait)
		s.abortAndClose(so)
		return
	}
	s.closeSocket(so)
}

// abortAndClose aborts so's association, waits (bounded) for usrsctp to
// free it and closes so.
func (s *Stack) abortAndClose(so *C.struct_socket) {
	C.tlb_abort(so)
	associationGoneWithin(so, abortWait)
	s.closeSocket(so)
}

// associationGoneWithin polls, every releasePoll, until usrsctp holds no
// association on so (true) or limit has passed (false).
func associationGoneWithin(so *C.struct_socket, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for hasAssociation(so) {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(releasePoll)
	}
	return true
}

// closeSocket hands so back to usrsctp, counting the closes made while
// usrsctp still held an association on it (the race above; only an abort
// usrsctp deferred past abortWait leads there).
func (s *Stack) closeSocket(so *C.struct_socket) {
	if hasAssociation(so) {
		s.closedLive.Add(1)
	}
	C.usrsctp_close(so)
}

// ClosedWithAssociation is the number of sockets handed to usrsctp_close
// while usrsctp still held an association on them, which exposes them to
// usrsctp's close race (release.go); it stays 0 unless an aborted
// association outlived abortWait.
func (s *Stack) ClosedWithAssociation() int64 { return s.closedLive.Load() }
