// Command gnbsim is the N2 lab's gNB simulator (scenarios/n2.GNB) as its own
// process, so it gets its own usrsctp stack in its own namespace.
//
//	gnbsim --name gnb1 --connect 10.78.1.100:38412 --ues 150 --ran-base 0 --gnb-id 1 --set-id 1016 [--lost-file F]
//
// It connects and completes NG Setup ({"event":"ready"}), registers every
// UE and keeps it connected ({"event":"registered"}), then waits for
// SIGUSR1 and runs the second phase (uplink NAS, release, paging, service
// request with 5G-S-TMSI, release). --lost-file, read at SIGUSR1, may list
// AMF pointers (one per line) the caller stopped: their UEs' network
// releases are awaited first. It ends with {"event":"report",...}
// (scenarios/n2.GNBReport) and exit status 0.
//
// With --resume it does not wait for SIGUSR1: once registered it waits for
// the loss of its association ({"event":"lost","atNs":...}), reconnects
// asking for UE retention (retrying for --reconnect-within), says
// {"event":"reconnected","retained":...,"atNs":...}, sends one uplink NAS
// per UE (n2.GNB.Resume: every UE at once, back to back, as independent
// UEs would) and ends with the report. --heartbeat sets the
// usrsctp heartbeat interval (how fast a silent peer is noticed; the
// default is usrsctp's 30 s).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/auto"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gnbsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "gnb", "RAN node name")
	connect := fs.String("connect", "", "N2 endpoint addr[,addr]:port")
	bind := fs.String("bind", "", "local addresses, comma separated (default: any)")
	ues := fs.Int("ues", 100, "number of UEs")
	ranBase := fs.Uint("ran-base", 0, "added to RAN-UE-NGAP-IDs")
	gnbID := fs.Uint("gnb-id", 1, "gNB ID (22 bits)")
	setID := fs.Uint("set-id", 1016, "AMF Set ID the UEs' 5G-S-TMSIs name")
	parallel := fs.Int("parallel", 32, "UEs in a procedure at once")
	wait := fs.Duration("wait", 10*time.Second, "timeout for each expected answer")
	lostFile := fs.String("lost-file", "", "file with the AMF pointers stopped before phase 2")
	bench := fs.String("bench", "", "after registration and SIGUSR1: throughput or latency instead of the second phase")
	duration := fs.Duration("duration", 5*time.Second, "--bench throughput: how long to send")
	window := fs.Int("window", 256, "--bench throughput: unanswered messages at most")
	samples := fs.Int("samples", 2000, "--bench latency: round trips")
	mode := fs.String("transport", "auto", "SCTP transport: auto, kernel or userspace")
	resume := fs.Bool("resume", false, "after registration: on association loss reconnect with UE retention and send one uplink NAS per UE, all UEs at once")
	within := fs.Duration("reconnect-within", time.Minute, "--resume: how long to try reconnecting")
	heartbeat := fs.Duration("heartbeat", 0, "usrsctp heartbeat interval (0: usrsctp's default)")
	// usrsctp's own 128 KiB overflow when a thousand UEs send at once
	// (usrsctp sends with MSG_DONTWAIT: a full buffer drops the packet),
	// and each lost packet costs an RTO (1 s with usrsctp's defaults).
	rawBuf := fs.Int("raw-socket-buffer", 4<<20, "usrsctp: receive and send buffer of its raw SCTP sockets, bytes (0: usrsctp's own)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *resume && *bench != "" {
		fmt.Fprintln(stderr, "gnbsim: --resume and --bench exclude each other")
		return 2
	}
	if *heartbeat < 0 || *heartbeat > 0 && *heartbeat < time.Millisecond {
		fmt.Fprintf(stderr, "gnbsim: --heartbeat %v: want 0 or at least 1ms\n", *heartbeat)
		return 2
	}
	if *bench != "" && *bench != "throughput" && *bench != "latency" {
		fmt.Fprintf(stderr, "gnbsim: --bench %q: want throughput or latency\n", *bench)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	remote, err := transport.ParseEndpoint(*connect)
	if err != nil {
		fmt.Fprintln(stderr, "gnbsim: --connect:", err)
		return 2
	}
	var local []netip.Addr
	for _, s := range strings.Split(*bind, ",") {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			fmt.Fprintln(stderr, "gnbsim: --bind:", err)
			return 2
		}
		local = append(local, a)
	}
	if *gnbID >= 1<<22 || *setID >= 1<<10 || *ranBase > 1<<31 {
		fmt.Fprintln(stderr, "gnbsim: --gnb-id < 2^22, --set-id < 1024, --ran-base <= 2^31")
		return 2
	}
	ngapl.SilenceLibraryLogs()
	tr, _, closer, err := auto.Open(auto.Config{Mode: auto.Mode(*mode), Usrsctp: usrsctp.Config{HeartbeatInterval: *heartbeat, RawSocketBuffer: *rawBuf}, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "gnbsim:", err)
		return 1
	}
	defer closer.Close()
	g, err := n2.NewGNB(n2.GNBConfig{Name: *name, Transport: tr, Remote: remote, Local: local, GNBID: uint32(*gnbID),
		UEs: *ues, RANBase: uint32(*ranBase), SetID: uint16(*setID), Parallel: *parallel, Wait: *wait, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "gnbsim:", err)
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	enc := json.NewEncoder(stdout)
	if err := g.Connect(ctx); err != nil {
		fmt.Fprintln(stderr, "gnbsim:", err)
		return 1
	}
	defer g.Close()
	_ = enc.Encode(map[string]string{"event": "ready", "name": *name})
	g.Register(ctx)
	_ = enc.Encode(struct {
		Event string `json:"event"`
		Name  string `json:"name"`
		n2.RegistrationResult
	}{"registered", *name, g.Registration()})
	if *resume {
		if err := g.PrepareResume(); err != nil {
			fmt.Fprintln(stderr, "gnbsim:", err)
			return 1
		}
		return resumeAfterLoss(ctx, g, enc, *within, *wait, stderr)
	}
	select {
	case <-sigs:
	case <-ctx.Done():
		return 1
	}
	switch *bench {
	case "":
	case "throughput":
		r, err := g.Blast(ctx, *duration, *window)
		if err != nil {
			fmt.Fprintln(stderr, "gnbsim:", err)
			return 1
		}
		_ = enc.Encode(struct {
			Event string `json:"event"`
			n2.BlastResult
		}{"throughput", r})
		return 0
	case "latency":
		r, err := g.PingPong(ctx, *samples)
		if err != nil {
			fmt.Fprintln(stderr, "gnbsim:", err)
			return 1
		}
		_ = enc.Encode(struct {
			Event string `json:"event"`
			n2.LatencyResult
		}{"latency", r})
		return 0
	default:
		fmt.Fprintf(stderr, "gnbsim: --bench %q: want throughput or latency\n", *bench)
		return 2
	}
	lost, err := readLost(*lostFile)
	if err != nil {
		fmt.Fprintln(stderr, "gnbsim:", err)
		return 1
	}
	g.Continue(ctx, lost)
	_ = enc.Encode(struct {
		Event string `json:"event"`
		n2.GNBReport
	}{"report", g.Report()})
	// Let the last Release Completes leave before the association closes.
	time.Sleep(300 * time.Millisecond)
	return 0
}

// resumeAfterLoss is --resume: wait for the association's loss, reconnect
// with UE retention, one uplink NAS per UE, report.
func resumeAfterLoss(ctx context.Context, g *n2.GNB, enc *json.Encoder, within, try time.Duration, stderr io.Writer) int {
	select {
	case <-g.Lost():
	case <-ctx.Done():
		return 1
	}
	_ = enc.Encode(map[string]any{"event": "lost", "atNs": time.Now().UnixNano()})
	if err := g.Reconnect(ctx, within, try); err != nil {
		fmt.Fprintln(stderr, "gnbsim:", err)
		return 1
	}
	_ = enc.Encode(map[string]any{"event": "reconnected", "retained": g.Retained(), "atNs": time.Now().UnixNano()})
	g.Resume(ctx)
	_ = enc.Encode(struct {
		Event string `json:"event"`
		n2.GNBReport
	}{"report", g.Report()})
	return 0
}

func readLost(path string) ([]uint8, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--lost-file: %w", err)
	}
	out, err := n2.ParsePointers(string(b))
	if err != nil {
		return nil, fmt.Errorf("--lost-file: %w", err)
	}
	return out, nil
}
