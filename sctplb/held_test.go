package sctplb

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// noDiagTransport is the in-memory network whose accepted associations
// fail to tell their ABORT target as the kernel transport's do where the
// sctp_diag module is missing (kdiag.Dump's ENOENT).
type noDiagTransport struct{ *memory.Network }

func (t noDiagTransport) Listen(local transport.Endpoint) (transport.Listener, error) {
	ln, err := t.Network.Listen(local)
	if err != nil {
		return nil, err
	}
	return noDiagListener{ln}, nil
}

type noDiagListener struct{ transport.Listener }

func (l noDiagListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return noDiagConn{c}, nil
}

type noDiagConn struct{ transport.Conn }

func (noDiagConn) AbortTarget() (abort.Target, error) {
	return abort.Target{}, fmt.Errorf("kernel sctp: abort target: kdiag: sock_diag: %w (is the sctp_diag module loaded? modprobe sctp_diag)", syscall.ENOENT)
}

// levelCounter counts the log records whose message holds sub, by level.
type levelCounter struct {
	sub string
	mu  *sync.Mutex
	n   map[slog.Level]int
}

func newLevelCounter(sub string) levelCounter {
	return levelCounter{sub: sub, mu: &sync.Mutex{}, n: map[slog.Level]int{}}
}

func (c levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c levelCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c levelCounter) WithGroup(string) slog.Handler            { return c }
func (c levelCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, c.sub) {
		c.mu.Lock()
		c.n[r.Level]++
		c.mu.Unlock()
	}
	return nil
}

func (c levelCounter) count(l slog.Level) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[l]
}

// TestMissingAbortTargetWarnsOncePerListener: where no gNB association
// tells its ABORT target (the kernel transport without sctp_diag), the
// proxy warns once for the listener, not once per gNB, logs the others at
// debug level and counts every one in telcolb_n2_abort_target_missing_total;
// the gNBs are served all the same.
func TestMissingAbortTargetWarnsOncePerListener(t *testing.T) {
	n := memory.New(memory.Config{})
	logs := newLevelCounter("ABORT target unknown")
	reg := prometheus.NewRegistry()
	startProxy(t, n, 1, reg, func(c *Config) {
		c.Transport = noDiagTransport{n}
		c.Logger = slog.New(logs)
	})
	const gnbs = 5
	for i := uint32(1); i <= gnbs; i++ {
		dialGNB(t, n, i) // NG Setup answered: accepted and served
	}
	if got := metricValue(t, reg, "telcolb_n2_abort_target_missing_total", "proxy", "lb"); got != gnbs {
		t.Errorf("telcolb_n2_abort_target_missing_total %v, want %d", got, gnbs)
	}
	if w, d := logs.count(slog.LevelWarn), logs.count(slog.LevelDebug); w != 1 || d != gnbs-1 {
		t.Errorf("%d warnings and %d debug lines about the missing target, want 1 and %d", w, d, gnbs-1)
	}
}
