package n2

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/telcolb/telcolb/sctplb/transport"
)

// RelayConfig configures Relay.
type RelayConfig struct {
	Transport transport.Transport
	Upstream  transport.Endpoint
	Local     []netip.Addr
	Logger    *slog.Logger
}

// Relay is the benchmarks' baseline: every association ln accepts gets its
// own association to the upstream, and messages are copied both ways
// (stream and PPID kept) without being looked at. It runs until ctx ends.
func Relay(ctx context.Context, cfg RelayConfig, ln transport.Listener) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		in, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: accept: %w", err)
		}
		out, err := cfg.Transport.Dial(ctx, cfg.Local, cfg.Upstream)
		if err != nil {
			cfg.Logger.Warn("relay: dial upstream", "err", err)
			_ = in.Close()
			continue
		}
		wg.Add(2)
		pipe := func(from, to transport.Conn) {
			defer wg.Done()
			defer from.Close()
			defer to.Close()
			for {
				m, err := from.Recv(ctx)
				if err != nil {
					return
				}
				if err := to.Send(ctx, m); err != nil {
					return
				}
			}
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}
