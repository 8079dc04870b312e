// Package auto picks the N2 proxy's SCTP transport at run time: kernel SCTP
// where the kernel has it (production nodes), else usrsctp in raw-IP mode.
package auto

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/kernel"
	"github.com/telcolb/telcolb/sctplb/transport/userspace"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

// Mode names a transport choice.
type Mode string

const (
	Auto      Mode = "auto"
	Kernel    Mode = "kernel"
	Userspace Mode = "userspace"
)

// Config configures Open.
type Config struct {
	// Mode forces a transport; "" or Auto probes the kernel.
	Mode Mode
	// Streams offered per association (default 16).
	Streams uint16
	// Usrsctp tunes the userspace stack (its Streams is overridden).
	Usrsctp usrsctp.Config
	Logger  *slog.Logger
}

// Open returns the transport, what was chosen, and a Closer releasing it
// (the usrsctp stack; a no-op for the kernel). The usrsctp stack starts in
// the calling thread's network namespace and is process-wide: one per
// process.
func Open(cfg Config) (transport.Transport, Mode, io.Closer, error) {
	if cfg.Streams == 0 {
		cfg.Streams = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mode := cfg.Mode
	switch mode {
	case "", Auto:
		if err := kernel.Available(); err == nil {
			mode = Kernel
		} else {
			cfg.Logger.Info("kernel SCTP unavailable, using usrsctp", "err", err)
			mode = Userspace
		}
	case Kernel, Userspace:
	default:
		return nil, "", nil, fmt.Errorf("sctp transport %q: want auto, kernel or userspace", mode)
	}
	if mode == Kernel {
		if err := kernel.Available(); err != nil {
			return nil, "", nil, err
		}
		return kernel.New(kernel.Config{Streams: cfg.Streams, Logger: cfg.Logger}), Kernel, nopCloser{}, nil
	}
	uc := cfg.Usrsctp
	uc.Streams = cfg.Streams
	if uc.Logger == nil {
		uc.Logger = cfg.Logger
	}
	stack, err := usrsctp.Init(uc)
	if err != nil {
		return nil, "", nil, fmt.Errorf("sctp transport: %w", err)
	}
	tr, err := userspace.New(userspace.Config{Stack: stack, Streams: cfg.Streams})
	if err != nil {
		_ = stack.Close()
		return nil, "", nil, err
	}
	return tr, Userspace, stack, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
