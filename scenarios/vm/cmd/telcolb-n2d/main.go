// Command telcolb-n2d is telcolb's daemon (cmd/telcolb/app: REST API, rule
// store, N2 proxies) without the eBPF datapath, for the VM lab's N2 test on
// Debian's 6.1 kernel: there, telcolb itself cannot start, because 6.1's
// verifier rejects the datapath ("combined stack size of 7 calls is 544.
// Too large"; scenarios/vm TestDataplaneTestsOnKernel61 shows it). N2
// services get no eBPF rule anyway (the proxy terminates SCTP on the VIP),
// so this shell runs the same proxy code on kernel SCTP; L4 services are
// refused with an error naming the missing datapath.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
)

// errNoDatapath is what any L4 rule gets from this shell.
var errNoDatapath = errors.New("telcolb-n2d has no eBPF datapath: only N2 services are served")

// noDatapath holds no rules: N2 services never write one, and deleting
// the rules a service no longer has is a no-op.
type noDatapath struct{}

func (noDatapath) UpsertService(dataplane.Service) error { return errNoDatapath }
func (noDatapath) DeleteService(uint32) error            { return nil }
func (noDatapath) Conntrack() ([]dataplane.Conn, error)  { return nil, nil }
func (noDatapath) FlushConntrack() error                 { return nil }
func (noDatapath) ServiceStats(uint32, int) (dataplane.ServiceStats, error) {
	return dataplane.ServiceStats{}, nil
}
func (noDatapath) DropStats() (map[dataplane.DropReason]uint64, error) { return nil, nil }
func (noDatapath) Interfaces() []string                                { return nil }
func (noDatapath) AttachMode() string                                  { return "none" }

func main() {
	apiAddr := flag.String("api-address", "127.0.0.1:8091", "host:port of the REST API")
	tokenFile := flag.String("token-file", "", "file holding the API bearer token (required off loopback)")
	stateDir := flag.String("state-dir", "/tmp/telcolb-n2d", "rule store directory")
	transport := flag.String("n2-transport", "kernel", "SCTP stack of N2 proxies: auto, kernel or userspace")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*apiAddr, *tokenFile, *stateDir, *transport, log); err != nil {
		log.Error("telcolb-n2d failed", "error", err)
		os.Exit(1)
	}
}

func run(apiAddr, tokenFile, stateDir, transport string, log *slog.Logger) error {
	// As the daemon: the API always needs its token, on loopback too
	// (created 0600 in the state dir unless a file is named).
	if tokenFile == "" {
		tokenFile = filepath.Join(stateDir, "api-token")
	}
	token, _, err := app.EnsureToken(tokenFile)
	if err != nil {
		return err
	}
	srv, err := app.NewServer(app.Config{Datapath: noDatapath{}, StateDir: stateDir, Token: token, Logger: log,
		N2: app.N2Config{TransportMode: transport}})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", apiAddr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("telcolb running", "api", ln.Addr().String(), "n2Transport", strings.ToLower(transport))
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
