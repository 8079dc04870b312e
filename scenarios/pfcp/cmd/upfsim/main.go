// Command upfsim is a UPF's N4 side on go-pfcp (scenarios/pfcp.UPFSim)
// behind a UDP socket, run as a separate process by the N4 lab. It prints
// JSON lines: "listening" once bound, "stats" when it ends (SIGTERM).
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
	associate := flag.String("associate", "", "address:port of a CP function to send an Association Setup Request to at start (UP-initiated association)")
	flag.Parse()
	if err := run(*listen, *base, *report, *t1, *associate); err != nil {
		fmt.Fprintln(os.Stderr, "upfsim:", err)
		os.Exit(1)
	}
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func run(listen string, base uint64, report bool, t1 time.Duration, associate string) error {
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
	err = sims.ServeUPF(ctx, conn, u, report, t1)
	s := u.Snapshot()
	emit(map[string]any{"event": "stats", "associations": s.Associations, "heartbeats": s.Heartbeats,
		"established": s.Established, "modified": s.Modified, "deleted": s.Deleted, "reportsAnswered": s.ReportsAnswered,
		"duplicates": s.Duplicates, "unknown": s.Unknown, "sessions": len(u.Sessions())})
	return err
}
