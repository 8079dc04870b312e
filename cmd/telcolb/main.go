// Command telcolb is the node daemon: it loads the eBPF datapath, attaches it
// to the configured interfaces and serves the REST API (cmd/telcolb/app).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
)

// The daemon drives the eBPF datapath only through app.Datapath.
var _ app.Datapath = (*dataplane.Datapath)(nil)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	opts, err := app.ParseOptions(args, os.Stderr)
	if errors.Is(err, app.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "telcolb:", err)
		return 2
	}
	log := app.NewLogger(opts, os.Stderr)
	if err := serve(opts, log); err != nil {
		log.Error("telcolb failed", "error", err)
		return 1
	}
	return 0
}

func serve(opts app.Options, log *slog.Logger) (err error) {
	if opts.NodeSetup {
		// Nothing of the datapath: the node's sysctls only, and any
		// failure is fatal (an init container that cannot do its one job
		// must not let the pod start as if it had).
		changed, err := app.DisableSendRedirects("/proc/sys", opts.Interfaces)
		if err != nil {
			return fmt.Errorf("node setup: %w", err)
		}
		log.Info("node setup done: ICMP redirects off", "changed", changed, "interfaces", opts.Interfaces)
		return nil
	}
	// Everything that can refuse a start is checked before the datapath is
	// touched: a refused start changes nothing on the node.
	if err := ensureBPFFS(opts.BPFPinPath, log); err != nil {
		return err
	}
	_, statErr := os.Stat(opts.BPFPinPath)
	freshPins := errors.Is(statErr, os.ErrNotExist)
	lock, err := app.LockInstance(opts.StateDir, opts.BPFPinPath)
	if err != nil {
		if freshPins {
			_ = os.Remove(opts.BPFPinPath) // only if still empty
		}
		return err
	}
	if opts.Cleanup {
		freshPins = false // nothing to undo: cleanup removes it anyway
	}
	defer lock.Release()
	var dp *dataplane.Datapath
	defer func() {
		if err == nil || !freshPins {
			return
		}
		// Nothing of a refused start may outlive it when it created the
		// pin path: no pins, no attachments left behind.
		if dp == nil {
			_ = os.Remove(opts.BPFPinPath) // only if still empty
			return
		}
		if derr := dp.Destroy(); derr != nil {
			log.Warn("remove the datapath of a failed start", "error", derr)
		}
	}()
	if opts.Cleanup {
		return cleanup(opts, log)
	}

	token, created, err := app.EnsureToken(opts.TokenFilePath())
	if err != nil {
		return err
	}
	if created {
		log.Info("created the API token file", "path", opts.TokenFilePath())
	}
	apiTLS, err := opts.APITLSConfig(log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.APIAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.APIAddress, err)
	}
	defer ln.Close()
	if apiTLS != nil {
		ln = tls.NewListener(ln, apiTLS)
	}
	var profLn net.Listener
	if opts.ProfilingAddress != "" {
		if profLn, err = app.ListenProfiling(opts.ProfilingAddress); err != nil {
			return err
		}
		defer profLn.Close()
	}

	haCfg, err := opts.HA.Config()
	if err != nil {
		return err
	}
	dp, err = dataplane.Load(dataplane.Config{
		PinPath:      opts.BPFPinPath,
		MaxConns:     int(opts.MaxConns),
		MaxConnsIPv6: int(opts.MaxConnsIPv6),
		Logger:       log,
		ForceClsact:  opts.ForceClsact,
		// Without HA nobody reads the change events: the verifier prunes
		// them and no packet pays for them.
		DisableConntrackEvents: haCfg == nil,
	})
	if err != nil {
		return fmt.Errorf("load datapath: %w", err)
	}
	defer func() {
		if err != nil && freshPins {
			return // destroyed by the deferred cleanup above
		}
		// Close, never Destroy: pinned maps and links keep forwarding (and
		// keep their connections) while the daemon restarts.
		dp.Close()
	}()

	for _, ifname := range opts.Interfaces {
		hook, err := opts.Hook(ifname) // checked by ParseOptions
		if err != nil {
			return err
		}
		if err := dp.AttachHook(ifname, hook); err != nil {
			return fmt.Errorf("attach %s: %w", ifname, err)
		}
	}
	if !opts.ICMPSendRedirects {
		// A failure is no reason to stop serving: said loudly, not fatal.
		changed, err := app.DisableSendRedirects("/proc/sys", opts.Interfaces)
		if err != nil {
			log.Warn("ICMP redirects may still be sent (a redirect sends backends' packets past the LB nodes)", "error", err)
		}
		if len(changed) > 0 {
			log.Info("ICMP redirects turned off", "sysctls", changed)
		}
	}
	socketLB(dp, opts, log)
	// What the previous program added to migrated maps until now.
	if err := dp.CompleteMigration(); err != nil {
		log.Warn("finish pinned map migration", "error", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if profLn != nil {
		app.ServeProfiling(ctx, profLn, log)
	}

	pfcpCfg, err := opts.PFCP()
	if err != nil {
		return err
	}
	// HA sync before the server: the local table goes into the sync
	// before any peer connects, and the server holds every VIP back until
	// the peers' bulk resync completes.
	var ready app.ReadyGate
	var haSync *app.HA
	if haCfg != nil {
		if haSync, err = app.StartHA(ctx, *haCfg, app.DatapathSource{Datapath: dp}, log); err != nil {
			return err
		}
		defer haSync.Close()
		ready = haSync
	}
	srv, err := app.NewServer(app.Config{Datapath: dp, Ready: ready, StateDir: opts.StateDir, Token: token, Logger: log,
		N2: app.N2Config{TransportMode: opts.N2Transport, Replica: haSync.N2Replica()}, PFCP: pfcpCfg, LocalVIPs: app.LocalVIPConfigOf(opts),
		EndpointTrafficMetrics: opts.EndpointTrafficMetrics, Advertise: app.AdvertiseConfig{File: opts.AdvertisementConfig}})
	if err != nil {
		return err
	}
	defer srv.Close()
	if haSync != nil {
		haSync.SetOnReady(srv.KickAdvertiser)
	}

	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 2)
	go func() { errc <- dp.Run(ctx) }()
	go func() { errc <- hs.Serve(ln) }()
	log.Info("telcolb running", "api", ln.Addr().String(), "apiTLS", apiTLS != nil, "interfaces", dp.Interfaces(), "attachMode", dp.AttachMode(),
		"tokenFile", opts.TokenFilePath(), "maxServices", dp.MaxServiceID())

	select {
	case <-ctx.Done():
		log.Info("shutting down; datapath stays in place")
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, context.Canceled) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("serve: %w", err)
		}
		stop()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := hs.Shutdown(shutdownCtx); serr != nil {
		log.Warn("http shutdown", "error", serr)
	}
	// A daemon that ran is never "a failed start": keep its datapath.
	freshPins = false
	return err
}

// socketLB attaches (or, when turned off, detaches) the socket-level load
// balancing. A kernel or host without it (no cgroup v2, older than 5.8)
// leaves the node's own traffic to the routing table as before: a warning,
// not a refused start, since the tc datapath does not depend on it.
func socketLB(dp *dataplane.Datapath, opts app.Options, log *slog.Logger) {
	if !opts.SocketLB {
		if err := dp.DetachSocketLB(); err != nil {
			log.Warn("detach socket load balancing", "error", err)
		}
		return
	}
	cg := opts.SocketLBCgroup
	if cg == "" {
		root, err := dataplane.CgroupV2Root()
		if err != nil {
			log.Warn("socket load balancing off: locally originated traffic to VIPs is not balanced", "error", err)
			return
		}
		cg = root
	}
	if err := dp.AttachSocketLB(cg); err != nil {
		log.Warn("socket load balancing off: locally originated traffic to VIPs is not balanced", "cgroup", cg, "error", err)
	}
}

// cleanup removes the pinned datapath (under the instance lock, so never
// from under a running daemon).
func cleanup(opts app.Options, log *slog.Logger) error {
	dp, err := dataplane.Load(dataplane.Config{PinPath: opts.BPFPinPath, MaxConns: int(opts.MaxConns), MaxConnsIPv6: int(opts.MaxConnsIPv6), Logger: log, ForceClsact: opts.ForceClsact})
	if err != nil {
		return fmt.Errorf("load datapath: %w", err)
	}
	if err := dp.Destroy(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("datapath removed", "pinPath", opts.BPFPinPath)
	return nil
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when the pin path lives there and
// nothing is mounted yet (minimal hosts and containers): without it the
// maps could not be pinned and would not survive a restart.
func ensureBPFFS(pinPath string, log *slog.Logger) error {
	const root = "/sys/fs/bpf"
	if pinPath != root && !strings.HasPrefix(pinPath, root+"/") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", root, err)
	}
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", root, err)
	}
	log.Info("mounted bpffs", "path", root)
	return nil
}
