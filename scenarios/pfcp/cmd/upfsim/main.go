// Command upfsim is a UPF's N4 side on go-pfcp (scenarios/pfcp.UPFSim)
// behind a UDP socket, run as a separate process by the N4 lab. It prints
// JSON lines: "listening" once bound, "stats" when it ends (SIGTERM). On
// SIGUSR1 it sends one Session Report Request for every session it holds,
// paced by --burst-rate, and prints "burst-done" once each is answered or
// given up (after --n1 retransmissions).
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

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
)

func main() {
	listen := flag.String("listen", "", "address:port to serve PFCP on (port 8805)")
	base := flag.Uint64("seid-base", 0x100, "first SEID allocated minus one (every UPF sim the same: collisions)")
	report := flag.Bool("report", false, "send one Session Report Request per established session")
	t1 := flag.Duration("t1", time.Second, "retransmission timer of its reports")
	n1 := flag.Int("n1", 3, "retransmissions of a report before giving up")
	rate := flag.Int("burst-rate", 1000, "reports per second of a burst (SIGUSR1)")
	associate := flag.String("associate", "", "address:port of a CP function to send an Association Setup Request to at start (UP-initiated association)")
	flag.Parse()
	o := sims.UPFServe{Report: *report, T1: *t1, N1: *n1, BurstRate: *rate}
	if err := run(*listen, *base, o, *associate); err != nil {
		fmt.Fprintln(os.Stderr, "upfsim:", err)
		os.Exit(1)
	}
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func run(listen string, base uint64, o sims.UPFServe, associate string) error {
	a, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	pfcp.SilenceLibraryLogs()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
	if err != nil {
		return err
	}
	u := sims.NewUPFSim(a.Addr(), time.Now(), base)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	bursts := make(chan struct{}, 1)
	go func() {
		for range usr1 {
			select {
			case bursts <- struct{}{}:
			default:
			}
		}
	}()
	o.Burst = bursts
	o.BurstDone = func(sent, unanswered int) {
		emit(map[string]any{"event": "burst-done", "sent": sent, "unanswered": unanswered})
	}
	if associate != "" {
		cp, err := netip.ParseAddrPort(associate)
		if err != nil {
			return fmt.Errorf("--associate: %w", err)
		}
		req := message.NewAssociationSetupRequest(1, ie.NewNodeID(a.Addr().String(), "", ""), ie.NewRecoveryTimeStamp(u.Recovery), ie.NewUPFunctionFeatures(0x01, 0x00))
		b := make([]byte, req.MarshalLen())
		if err := req.MarshalTo(b); err != nil {
			return err
		}
		if _, err := conn.WriteToUDPAddrPort(b, cp); err != nil {
			return err
		}
	}
	emit(map[string]any{"event": "listening", "addr": a.String(), "recovery": u.Recovery.Unix()})
	err = sims.ServeUPFWith(ctx, conn, u, o)
	s := u.Snapshot()
	emit(map[string]any{"event": "stats", "associations": s.Associations, "heartbeats": s.Heartbeats,
		"established": s.Established, "modified": s.Modified, "deleted": s.Deleted, "reportsAnswered": s.ReportsAnswered,
		"duplicates": s.Duplicates, "unknown": s.Unknown, "sessions": len(u.Sessions())})
	return err
}
