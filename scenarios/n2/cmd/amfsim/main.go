// Command amfsim is the N2 lab's AMF simulator (scenarios/n2.AMF) as its own
// process, so it gets its own usrsctp stack in its own namespace.
//
//	amfsim --name amf1 --listen 10.78.3.11:38412 --set-id 1016 --pointer 1 [--region 202]
//
// It prints JSON lines on stdout: {"event":"listening"} once it accepts,
// and {"event":"report",...} (scenarios/n2.AMFReport) on SIGUSR1 and before
// exiting on SIGTERM/SIGINT, after closing its associations gracefully.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/auto"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type line struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *line) print(v any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = json.NewEncoder(l.w).Encode(v)
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("amfsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "amf", "AMF name")
	listen := fs.String("listen", "", "addr[,addr]:port to listen on")
	setID := fs.Uint("set-id", 1016, "AMF Set ID (10 bits)")
	pointer := fs.Uint("pointer", 1, "AMF Pointer (6 bits)")
	region := fs.Uint("region", 0xca, "AMF Region ID")
	mode := fs.String("transport", "auto", "SCTP transport: auto, kernel or userspace")
	rerouteTo := fs.Int("reroute-to-set", -1, "answer Initial UE Messages without AMF Set ID with Reroute NAS Request to this AMF Set ID (-1: never)")
	overload := fs.Int("overload", -1, "send Overload Start after NG Setup: traffic load reduction 1..99 percent, 0 without one (-1: never)")
	// usrsctp's own 128 KiB overflow under a burst of a thousand UEs'
	// messages, and each lost packet costs its sender an RTO.
	rawBuf := fs.Int("raw-socket-buffer", 4<<20, "usrsctp: receive and send buffer of its raw SCTP sockets, bytes (0: usrsctp's own)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ep, err := transport.ParseEndpoint(*listen)
	if err != nil {
		fmt.Fprintln(stderr, "amfsim: --listen:", err)
		return 2
	}
	if *setID >= 1<<10 || *pointer >= 1<<6 || *region > 255 {
		fmt.Fprintln(stderr, "amfsim: --set-id < 1024, --pointer < 64, --region < 256")
		return 2
	}
	ngapl.SilenceLibraryLogs()
	tr, chosen, closer, err := auto.Open(auto.Config{Mode: auto.Mode(*mode), Usrsctp: usrsctp.Config{RawSocketBuffer: *rawBuf}, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "amfsim:", err)
		return 1
	}
	defer closer.Close()
	cfg := n2.AMFConfig{Name: *name, Transport: tr, Listen: ep, Region: uint8(*region), SetID: uint16(*setID), Pointer: uint8(*pointer), Logger: log}
	if *rerouteTo >= 1<<10 || *overload > 99 {
		fmt.Fprintln(stderr, "amfsim: --reroute-to-set < 1024, --overload <= 99")
		return 2
	}
	if *rerouteTo >= 0 {
		set := uint16(*rerouteTo)
		cfg.RerouteTo = &set
	}
	if *overload >= 0 {
		cfg.Overload = overload
	}
	a, err := n2.NewAMF(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "amfsim:", err)
		return 2
	}
	ln, err := a.Listen()
	if err != nil {
		fmt.Fprintln(stderr, "amfsim:", err)
		return 1
	}
	out := &line{w: stdout}
	out.print(map[string]any{"event": "listening", "name": *name, "transport": chosen})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	report := func() {
		out.print(struct {
			Event string `json:"event"`
			n2.AMFReport
		}{"report", a.Report()})
	}
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				report()
				continue
			}
			cancel()
			<-done
			// Let the SHUTDOWNs of the closed associations complete before
			// the stack goes away with the process.
			time.Sleep(300 * time.Millisecond)
			report()
			return 0
		case err := <-done:
			cancel()
			if err != nil {
				fmt.Fprintln(stderr, "amfsim:", err)
				return 1
			}
			return 0
		}
	}
}
