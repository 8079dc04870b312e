// Command smfsim is an SMF's N4 side on go-pfcp (scenarios/pfcp.SMFSim)
// behind a UDP socket, run as a separate process by the N4 lab: it
// associates with --peer, establishes, modifies, modifies again and
// deletes --sessions sessions (answering Session Reports meanwhile), and
// prints one JSON "done" line with what it saw. With --pause-file it prints
// "paused" before the second round of modifications and waits for that
// file to exist.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
)

func main() {
	bind := flag.String("bind", "", "local address (port 8805 is used)")
	peer := flag.String("peer", "", "UPF (or proxy) address:port")
	sessions := flag.Int("sessions", 100, "sessions to run")
	window := flag.Int("window", 64, "requests outstanding at most")
	t1 := flag.Duration("t1", time.Second, "retransmission timer")
	n1 := flag.Int("n1", 3, "retransmissions before giving up")
	reportWait := flag.Duration("report-wait", 10*time.Second, "how long to wait for one report per session")
	pauseFile := flag.String("pause-file", "", "wait for this file before the second modification round")
	var im sims.Impairment
	flag.IntVar(&im.Loss, "loss", 0, "percent of datagrams dropped, both directions (netem-like, in the process)")
	flag.IntVar(&im.Duplicate, "duplicate", 0, "percent of datagrams duplicated, both directions")
	flag.IntVar(&im.Reorder, "reorder", 0, "percent of datagrams held back 3ms, both directions")
	flag.Parse()
	var imp *sims.Impairment
	if im.Loss+im.Duplicate+im.Reorder > 0 {
		imp = &im
	}
	if err := run(*bind, *peer, *sessions, *window, *t1, *n1, *reportWait, *pauseFile, imp); err != nil {
		fmt.Fprintln(os.Stderr, "smfsim:", err)
		os.Exit(1)
	}
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func run(bind, peer string, n, window int, t1 time.Duration, n1 int, reportWait time.Duration, pauseFile string, imp *sims.Impairment) error {
	local, err := netip.ParseAddr(bind)
	if err != nil {
		return fmt.Errorf("--bind: %w", err)
	}
	to, err := netip.ParseAddrPort(peer)
	if err != nil {
		return fmt.Errorf("--peer: %w", err)
	}
	pfcp.SilenceLibraryLogs()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, pfcp.Port)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := sims.NewSMFSim(local, time.Now())
	start := time.Now()
	load := sims.Load{Sessions: n, Window: window, T1: t1, N1: n1, ReportWait: reportWait, Impair: imp}
	if pauseFile != "" {
		load.Pause = func() {
			emit(map[string]any{"event": "paused", "stats": s.Snapshot()})
			for ctx.Err() == nil {
				if _, err := os.Stat(pauseFile); err == nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	st, err := sims.RunSMF(ctx, conn, to, s, load)
	out := map[string]any{"event": "done", "stats": st, "seconds": time.Since(start).Seconds()}
	if err != nil {
		out["error"] = err.Error()
	}
	emit(out)
	return nil
}
