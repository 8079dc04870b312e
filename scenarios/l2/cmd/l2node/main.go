// Command l2node runs the L2 announcer (ha/member + ha/l2) of one node in the
// scenarios/l2 lab, with a UDP echo on each VIP, until the lab kills it. The
// daemon will host the same announcer (cmd/telcolb/app/l2.go); this command
// lets the lab exercise it before that wiring exists.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/l2"
	"github.com/telcolb/telcolb/ha/member"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "l2node:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", "", "this node's name")
	members := flag.String("members", "", "name=ip:port,... of every member, this node included")
	ifaces := flag.String("interfaces", "eth0", "interfaces to answer on, comma-separated")
	vips := flag.String("vips", "", "VIPs, comma-separated")
	echoPort := flag.Int("echo-port", 7, "UDP echo port on each VIP (0: none)")
	interval := flag.Duration("interval", 100*time.Millisecond, "heartbeat interval")
	fencing := flag.Bool("fencing", true, "fence split brain by the claims seen on the segment (false: both sides answer, for comparison)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", *name)
	var peers []member.Peer
	for _, m := range strings.Split(*members, ",") {
		n, a, ok := strings.Cut(m, "=")
		ap, err := netip.ParseAddrPort(a)
		if !ok || err != nil {
			return fmt.Errorf("--members: %q: want name=ip:port", m)
		}
		peers = append(peers, member.Peer{Name: n, Addr: ap})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var hv []ha.VIP
	adv := api.Advertisement{Name: "lab", Mode: api.AdvertiseL2}
	for _, s := range strings.Split(*vips, ",") {
		v, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--vips: %w", err)
		}
		hv = append(hv, ha.VIP{Addr: v, Advertisement: adv})
		if *echoPort != 0 {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v, uint16(*echoPort))))
			if err != nil {
				return fmt.Errorf("echo on %v: %w", v, err)
			}
			defer c.Close()
			go echo(c)
		}
	}
	a, err := l2.New(l2.Config{
		Node: *name, Members: peers, Interval: *interval, Interfaces: strings.Split(*ifaces, ","), Logger: log, NoFencing: !*fencing,
		Responder: l2.ResponderConfig{StrictARP: true, Logger: log},
	})
	if err != nil {
		return err
	}
	if err := a.Set(ctx, hv); err != nil {
		a.Close()
		return err
	}
	fmt.Println(`{"ready":true}`)
	<-ctx.Done()
	return a.Close()
}

func echo(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(os.Stderr, "echo:", err)
			}
			return
		}
		_, _ = c.WriteToUDPAddrPort(buf[:n], from)
	}
}
