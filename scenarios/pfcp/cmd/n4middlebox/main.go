// Command n4middlebox runs what the N4 benchmark compares, as its own
// process so its CPU time can be read: --mode proxy is sctplb.N4Proxy (the
// daemon's PFCP proxy without the daemon), --mode relay a raw UDP relay
// that copies datagrams between one SMF and one UPF without reading them.
// It prints {"event":"listening"} once bound and runs until SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/telcolb/telcolb/sctplb"
)

func main() {
	mode := flag.String("mode", "proxy", "proxy or relay")
	listen := flag.String("listen", "", "address:port the SMF sends to")
	upstream := flag.String("upstream", "", "the UPF's address:port")
	flag.Parse()
	if err := run(*mode, *listen, *upstream); err != nil {
		fmt.Fprintln(os.Stderr, "n4middlebox:", err)
		os.Exit(1)
	}
}

func run(mode, listen, upstream string) error {
	l, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	u, err := netip.ParseAddrPort(upstream)
	if err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch mode {
	case "proxy":
		p, err := sctplb.NewN4(sctplb.N4Config{Listen: l, UPFs: []sctplb.N4UPF{{Name: "upf", Addr: u}}})
		if err != nil {
			return err
		}
		if err := p.Open(); err != nil {
			return err
		}
		fmt.Println(`{"event":"listening"}`)
		return p.Serve(ctx)
	case "relay":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(l))
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); _ = c.Close() }()
		fmt.Println(`{"event":"listening"}`)
		var smf netip.AddrPort
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			to := u
			if from == u {
				to = smf
			} else {
				smf = from
			}
			if to.IsValid() {
				_, _ = c.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}
	return fmt.Errorf("--mode %q: proxy or relay", mode)
}
