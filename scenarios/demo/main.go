// Command demo is `make demo`: it builds a network-namespace lab (client,
// load balancer, two backends), runs telcolb in the load balancer's
// namespace, creates a TCP and an SCTP service with telcolbctl, sends real
// traffic through the eBPF datapath, prints what telcolbctl shows, then runs
// the N2 proxy between 2 gNB and 3 AMF simulators (n2.go), prints where the
// metrics and dashboards are (metrics.go), and tears everything down again,
// also on Ctrl-C or failure.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

const sctpPort = 38412 // N2 (NGAP)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, logger *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (network namespaces and eBPF)")
	}
	step("building telcolb and the namespace lab (client, lb, be1, be2; two links per side)")
	env, err := l4.Up(ctx, l4.EnvConfig{Lab: lab.Config{Backends: 2, Links: 2, Logger: logger}})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing the lab down")
		if derr := env.Down(context.Background()); derr != nil {
			err = errors.Join(err, derr)
		} else {
			fmt.Println("lab removed: namespaces, eBPF programs, pinned maps and state are gone")
		}
	}()
	h, err := env.Daemon.Client.Health(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("telcolb is up in namespace %s on %v (attach mode %s)\n", env.Lab.LB.NS, h.Interfaces, h.AttachMode)

	vip := lab.VIP(0, 1, false)
	be := []string{env.BackendAddr(0, false).String(), env.BackendAddr(1, false).String()}

	step("creating a TCP service (fullnat, round robin, HTTP probe) and an SCTP service (N2 port, default mode)")
	if err := ctl(ctx, env.Daemon, "create", "lb", "web", "--vip", vip.String(), "--port", strconv.Itoa(l4.HTTPPort),
		"--protocol", "tcp", "--mode", "fullnat", "--select", "rr",
		"--endpoints", be[0]+":"+strconv.Itoa(l4.HTTPPort)+","+be[1]+":"+strconv.Itoa(l4.HTTPPort),
		"--probe", "http", "--probe-req", "/healthz", "--probe-resp", "ok"); err != nil {
		return err
	}
	if err := ctl(ctx, env.Daemon, "create", "lb", "n2", "--vip", vip.String(), "--port", strconv.Itoa(sctpPort),
		"--protocol", "sctp", "--mode", "default", "--select", "rr",
		"--endpoints", be[0]+":"+strconv.Itoa(sctpPort)+","+be[1]+":"+strconv.Itoa(sctpPort)); err != nil {
		return err
	}

	var servers []*sctppeer.Server
	for k, host := range env.Lab.Backends {
		s, err := sctppeer.StartServer(ctx, host, sctppeer.ServerOptions{
			Bind: []netip.Addr{env.BackendAddr(k, false)}, Port: sctpPort, ID: fmt.Sprintf("be%d", k+1), PPID: 60})
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	defer func() {
		for _, s := range servers {
			_ = s.Stop()
		}
	}()

	step("HTTP through the VIP: each new connection goes to the next backend, which sees the VIP as source (fullnat)")
	for i := 0; i < 4; i++ {
		r, err := l4.HTTPGet(ctx, env.Lab.Client, "http://"+netip.AddrPortFrom(vip, l4.HTTPPort).String()+"/")
		if err != nil {
			return err
		}
		fmt.Printf("  GET #%d answered by %s, which saw the client as %s\n", i+1, r.Server, r.Source)
	}

	step("SCTP associations (userspace SCTP stacks on both ends) through the VIP, 10 messages each, PPID 60")
	for i := 0; i < 2; i++ {
		res, err := sctppeer.RunClient(ctx, env.Lab.Client, sctppeer.ClientOptions{
			Bind: []netip.Addr{env.ClientAddr(false)}, Connect: []netip.Addr{vip}, Port: sctpPort,
			Count: 10, Size: 300, Streams: 2, PPID: 60})
		if err != nil {
			return err
		}
		fmt.Printf("  association #%d: served by %s, %d/%d messages echoed, peer %v\n", i+1, res.ServerID, res.Echoed, res.Sent, res.PeerAddrs)
	}

	step("keeping one TCP connection and one SCTP association open while we look")
	sess, err := l4.DialTCPSession(ctx, env.Lab.Client, netip.AddrPortFrom(vip, l4.HTTPPort).String())
	if err != nil {
		return err
	}
	defer sess.Close()
	bg, err := sctppeer.StartClient(ctx, env.Lab.Client, sctppeer.ClientOptions{
		Bind: []netip.Addr{env.ClientAddr(false)}, Connect: []netip.Addr{vip}, Port: sctpPort,
		Count: 60, Size: 200, Interval: 100 * time.Millisecond, PPID: 60})
	if err != nil {
		return err
	}
	select {
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}

	step("telcolbctl get lb -o wide")
	if err := ctl(ctx, env.Daemon, "get", "lb", "-o", "wide"); err != nil {
		return err
	}
	step("telcolbctl get ct")
	if err := ctl(ctx, env.Daemon, "get", "ct"); err != nil {
		return err
	}
	res, err := bg.Wait(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nbackground association finished: %d/%d messages echoed by %s\n", res.Echoed, res.Sent, res.ServerID)
	for _, s := range servers {
		_ = s.Stop() // one userspace SCTP stack per namespace at a time
	}
	servers = nil
	if err := multihomed(ctx, env); err != nil {
		return err
	}
	if err := runN2(ctx, logger); err != nil {
		return err
	}
	return metrics(ctx, env)
}

// multihomed shows a multi-homed SCTP association through the datapath
// surviving the loss of the client's primary link.
func multihomed(ctx context.Context, env *l4.Env) error {
	const port = 5000
	vips := []netip.Addr{lab.VIP(0, 50, false), lab.VIP(1, 50, false)}
	client := []netip.Addr{env.Lab.ClientIface(0).V4(), env.Lab.ClientIface(1).V4()}
	endpoint := []netip.Addr{env.Lab.BackendIface(0, 0).V4(), env.Lab.BackendIface(0, 1).V4()}
	step("multi-homed SCTP: client and endpoint with 2 addresses each, a service with 2 VIPs (fullnat)")
	if err := ctl(ctx, env.Daemon, "create", "lb", "mh", "--vip", vips[0].String(), "--secondary-vips", vips[1].String(),
		"--port", strconv.Itoa(port), "--protocol", "sctp", "--mode", "fullnat",
		"--endpoints", netip.AddrPortFrom(endpoint[0], port).String()); err != nil {
		return err
	}
	srv, err := sctppeer.StartServer(ctx, env.Lab.Backends[0], sctppeer.ServerOptions{
		Bind: endpoint, Port: port, ID: "be1", Timers: sctppeer.FastTimers})
	if err != nil {
		return err
	}
	defer func() { _ = srv.Stop() }()
	cl, err := sctppeer.StartClient(ctx, env.Lab.Client, sctppeer.ClientOptions{
		Bind: client, Connect: vips[:1], Port: port, Count: 60, Size: 200, Interval: 50 * time.Millisecond,
		Streams: 2, PPID: 60, Wait: 20 * time.Second, Timers: sctppeer.FastTimers})
	if err != nil {
		return err
	}
	if err := srv.WaitEvent(ctx, "assoc", "COMM_UP"); err != nil {
		return err
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	step("cutting the client's primary link (%s) mid-association", env.Lab.ClientIface(0).Name)
	if err := env.Lab.ClientIface(0).SetUp(ctx, false); err != nil {
		return err
	}
	r, err := cl.Wait(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("  %d/%d messages echoed, %d lost, largest gap %d ms; the client saw the peer addresses %v (the VIPs only)\n",
		r.Echoed, r.Sent, r.Lost, r.MaxGapMs, r.PeerAddrs)
	if r.Echoed != r.Sent || r.Lost != 0 {
		return fmt.Errorf("multi-homed association lost messages: %+v", r)
	}
	return env.Lab.ClientIface(0).SetUp(ctx, true)
}

func ctl(ctx context.Context, d *l4.Daemon, args ...string) error {
	out, err := d.Ctl(ctx, args...)
	fmt.Print(out)
	return err
}
