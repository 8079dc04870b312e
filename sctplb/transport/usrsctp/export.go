package usrsctp

// This file holds the only //export; cgo forbids C definitions in the
// preamble of such a file, so the C helpers live in usrsctp.go.

/*
#include <stdint.h>
*/
import "C"

import (
	"sync"
	"sync/atomic"
)

// upcalls maps the id handed to usrsctp_set_upcall to its socket. An upcall
// for an id already removed (socket closed) is ignored, so usrsctp threads
// racing with Close are harmless. It is process-wide because usrsctp's
// threads call back with nothing but that id.
var (
	upcalls  sync.Map // uintptr -> *socket
	upcallID atomic.Uintptr
)

// goUpcall runs on a usrsctp thread, possibly with usrsctp locks held: it
// must never call back into usrsctp or block.
//
//export goUpcall
func goUpcall(id C.uintptr_t, events C.int) {
	if v, ok := upcalls.Load(uintptr(id)); ok {
		v.(*socket).wake()
	}
}
