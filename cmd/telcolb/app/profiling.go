package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Go's runtime profiles of the daemon (--profiling-address): where a
// node's CPU and allocations go, read from the live process (`go tool
// pprof http://127.0.0.1:6060/debug/pprof/profile`). They name the code
// and hold no secrets, but anyone who can connect may make the daemon
// spend CPU on them, and they are served without the API's token: so on
// loopback only, on a listener of their own, off by default.

// checkProfilingAddress refuses a profiling address that is not a
// loopback host:port (empty: none served).
func checkProfilingAddress(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("profiling-address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("profiling-address %q: the profiles are served without authentication, so only on a loopback address (127.0.0.1, ::1, localhost)", addr)
	}
	return nil
}

// ListenProfiling binds the profiling address (checked by
// ParseOptions): before the datapath is touched, like the API's, so that
// an address in use refuses the start and changes nothing.
func ListenProfiling(addr string) (net.Listener, error) {
	if err := checkProfilingAddress(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("profiling-address: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// ServeProfiling serves the runtime profiles on ln until ctx ends (then
// it closes ln).
func ServeProfiling(ctx context.Context, ln net.Listener, log *slog.Logger) {
	mux := http.NewServeMux()
	// The index serves every named profile (heap, allocs, goroutine, ...)
	// under /debug/pprof/<name>; the others are handlers of their own.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("profiling server stopped", "error", err)
		}
	}()
	log.Info("serving runtime profiles", "address", ln.Addr().String())
}
