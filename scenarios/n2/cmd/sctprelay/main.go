// Command sctprelay is the N2 benchmarks' baseline: an SCTP relay that
// copies messages between each accepted association and its own upstream
// association without decoding them (scenarios/n2.Relay).
//
//	sctprelay --listen 10.78.100.1:38412 --upstream 10.78.11.2:38412
//
// It prints {"event":"listening"} once it accepts and runs until SIGTERM.
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
	"syscall"

	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/auto"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sctprelay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "addr[,addr]:port to accept on")
	upstream := fs.String("upstream", "", "addr[,addr]:port to relay to")
	mode := fs.String("transport", "auto", "SCTP transport: auto, kernel or userspace")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	lep, err := transport.ParseEndpoint(*listen)
	if err != nil {
		fmt.Fprintln(stderr, "sctprelay: --listen:", err)
		return 2
	}
	uep, err := transport.ParseEndpoint(*upstream)
	if err != nil || len(uep.Addrs) == 0 {
		fmt.Fprintln(stderr, "sctprelay: --upstream: want addr[,addr]:port", err)
		return 2
	}
	tr, _, closer, err := auto.Open(auto.Config{Mode: auto.Mode(*mode), Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "sctprelay:", err)
		return 1
	}
	defer closer.Close()
	ln, err := tr.Listen(lep)
	if err != nil {
		fmt.Fprintln(stderr, "sctprelay: listen:", err)
		return 1
	}
	_ = json.NewEncoder(stdout).Encode(map[string]string{"event": "listening"})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := n2.Relay(ctx, n2.RelayConfig{Transport: tr, Upstream: uep, Logger: log}, ln); err != nil {
		fmt.Fprintln(stderr, "sctprelay:", err)
		return 1
	}
	return 0
}
