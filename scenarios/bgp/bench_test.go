package bgp

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	hbgp "github.com/telcolb/telcolb/ha/bgp"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

func benchGate(t *testing.T) {
	t.Helper()
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the BGP benchmarks")
	}
	needTool(t, "bird")
}

// routeWatcher reads the router's kernel table through netlink (no process
// per poll, so the time it reports is the router's, not ours).
type routeWatcher struct{ h *netlink.Handle }

func newRouteWatcher(t *testing.T, host *lab.Host) *routeWatcher {
	ns, err := netns.GetFromPath("/run/netns/" + host.NS)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &routeWatcher{h: h}
}

// gateways of the route to the /32 or /128 of a.
func (w *routeWatcher) gateways(a netip.Addr) ([]netip.Addr, error) {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	dst := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
	routes, err := w.h.RouteListFiltered(fam, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, r := range routes {
		if g, ok := netip.AddrFromSlice(r.Gw); ok {
			out = append(out, g.Unmap())
		}
		for _, nh := range r.MultiPath {
			if g, ok := netip.AddrFromSlice(nh.Gw); ok {
				out = append(out, g.Unmap())
			}
		}
	}
	return out, nil
}

func (w *routeWatcher) waitFor(ctx context.Context, a netip.Addr, cond func([]netip.Addr) bool) (time.Time, error) {
	for {
		g, err := w.gateways(a)
		if err != nil {
			return time.Time{}, err
		}
		if cond(g) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("route to %s: gateways %v: %w", a, g, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func only(n netip.Addr) func([]netip.Addr) bool {
	return func(g []netip.Addr) bool { return len(g) == 1 && g[0] == n }
}

// TestBenchBGPFailover: the blackout a client sees (a request every 10 ms)
// when the preferred node's daemon is killed (kill -9) and when it is
// frozen (SIGSTOP: only BFD can tell), and the time from creating a service
// to its VIP in the router's kernel table.
func TestBenchBGPFailover(t *testing.T) {
	benchGate(t)
	e, _ := upLab(t, func(ctx context.Context, h *lab.Host) (Router, error) { return asRouter(StartBird(ctx, h, 2)) })
	w := newRouteWatcher(t, e.Topo.Router)
	ctx := context.Background()
	lb1 := e.Daemons[0]
	n1, n2 := NodeAddr(1, 0), NodeAddr(2, 0)
	preferred := func() error {
		c, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		_, err := w.waitFor(c, VIPs[0], only(n1))
		return err
	}
	if err := preferred(); err != nil {
		t.Fatal(err)
	}
	blackout := func(fail, heal func() error) (float64, error) {
		p, err := StartProber(ctx, e.Topo.Client, VIPs[0])
		if err != nil {
			return 0, err
		}
		time.Sleep(300 * time.Millisecond)
		at := time.Now()
		if err := fail(); err != nil {
			p.Stop()
			return 0, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, ok := FirstFrom(p.Replies(), n2, at); ok {
				break
			}
			if time.Now().After(deadline) {
				p.Stop()
				return 0, fmt.Errorf("service did not resume through lb2")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		p.Stop()
		b := Blackout(p.Replies(), at, time.Now())
		if err := heal(); err != nil {
			return 0, err
		}
		return float64(b) / float64(time.Millisecond), preferred()
	}
	svc := Services()[0]
	toRoute := func() (float64, error) {
		// Gone from both nodes first, then created on lb1 alone.
		for _, d := range e.Daemons {
			if err := d.Client.DeleteService(ctx, svc.Name); err != nil && !api.IsNotFound(err) {
				return 0, err
			}
		}
		c, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if _, err := w.waitFor(c, VIPs[0], func(g []netip.Addr) bool { return len(g) == 0 }); err != nil {
			return 0, err
		}
		at := time.Now()
		if err := lb1.Client.CreateService(ctx, svc); err != nil {
			return 0, err
		}
		in, err := w.waitFor(c, VIPs[0], only(n1))
		if err != nil {
			return 0, err
		}
		// Back to both nodes serving it.
		if err := e.Daemons[1].Client.CreateService(ctx, svc); err != nil {
			return 0, err
		}
		return float64(in.Sub(at)) / float64(time.Millisecond), nil
	}
	figs, err := figure.Interleave(figure.Plan{MaxRounds: 5}, []figure.Variant{
		figure.One("killed", func(int) (float64, error) { return blackout(lb1.Kill, func() error { return lb1.Start(ctx) }) }),
		figure.One("frozen", func(int) (float64, error) {
			return blackout(func() error { return lb1.Signal(syscall.SIGSTOP) }, func() error { return lb1.Signal(syscall.SIGCONT) })
		}),
		figure.One("to_route", func(int) (float64, error) { return toRoute() }),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("bgp_bfd_failover_blackout_killed_ms", "ms", figure.Below(1000), "killed"),
			s.Measured("bgp_bfd_failover_blackout_frozen_ms", "ms", figure.Below(1000), "frozen"),
			s.Measured("bgp_service_to_router_table_ms", "ms", figure.Below(1000), "to_route"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

// TestBenchBGP10kVIPs: 10,000 VIPs announced to bird by the real daemon on
// lb1 (10,000 services created through its API, each with its own VIP; the
// advertisement is then PUT): the time from the PUT until bird counts them
// all, and the daemon's RSS then. The peer, run side by side in every round,
// is the daemon's speaker alone (ha/bgp, this test binary re-executed in
// lb2's namespace, TestSpeakerHelper) announcing the same 10,000 VIPs: the
// ratio is what the rest of the daemon adds. The helper runs in lb2's
// namespace (its own session, bird's protocol lb2), so the daemon's session
// stays up between rounds.
func TestBenchBGP10kVIPs(t *testing.T) {
	benchGate(t)
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	topo, err := BuildTopo(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	bird, err := StartBird(ctx, topo.Router, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bird.Close() })
	const n = 10000
	d := start10kDaemon(t, ctx, topo, n)
	count := func(proto string) string {
		out, _ := bird.Birdc(ctx, "show", "route", "count", "protocol", proto)
		return out
	}
	// waitCount waits for bird to hold want routes from a node (lb1: the
	// daemon, lb2: the speaker alone).
	waitCount := func(proto string, want int, within time.Duration) (time.Duration, error) {
		start := time.Now()
		deadline := start.Add(within)
		for {
			out := count(proto)
			if strings.Contains(out, fmt.Sprintf("\n%d of %d routes", want, want)) {
				return time.Since(start), nil
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("bird has not %d routes from %s after %v: %s", want, proto, within, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	peer := NodeConfig(1, nil).BGP.Peers[0]
	peer.BFD = nil
	announce := api.AdvertisementConfig{NodeName: "lb1",
		BGP:            &api.BGPConfig{ASN: NodeASN, RouterID: NodeAddr(1, 0).String(), Peers: []api.BGPPeer{peer}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: []string{"10.80.0.0/16"}}},
	}
	// The session comes up first with an advertisement covering none of
	// the VIPs; each round then PUTs the covering one (timed, like the
	// speaker alone, from an established session) and the empty one again.
	// The bgp section stays the same, so the session stays up between
	// rounds and each round times the announcement only.
	idle := announce
	idle.Advertisements = []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: []string{"10.81.0.0/16"}}}
	if err := d.Client.PutAdvertisement(ctx, idle); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		st, err := d.Client.Advertisement(ctx)
		if err == nil && len(st.BGPPeers) == 1 && st.BGPPeers[0].State == "established" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb1's session to bird not established: %+v %v", st.BGPPeers, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	daemonRound := func(int) (map[string]float64, error) {
		if err := d.Client.PutAdvertisement(ctx, announce); err != nil {
			return nil, err
		}
		took, err := waitCount("lb1", n, 2*time.Minute)
		if err != nil {
			return nil, err
		}
		rss := float64(procRSSKiB(d.Pid())) / 1024
		if err := d.Client.PutAdvertisement(ctx, idle); err != nil {
			return nil, err
		}
		if _, err := waitCount("lb1", 0, time.Minute); err != nil {
			return nil, err
		}
		return map[string]float64{"daemon_s": took.Seconds(), "daemon_rss": rss}, nil
	}
	speakerRound := func(int) (map[string]float64, error) {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", topo.Nodes[1].NS, os.Args[0], "-test.run=^TestSpeakerHelper$")
		cmd.Env = append(os.Environ(), "TELCOLB_SPEAKER_HELPER="+strconv.Itoa(n))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "HELPER set") {
		}
		took, err := waitCount("lb2", n, 2*time.Minute)
		if err != nil {
			return nil, err
		}
		// The helper reports its memory once everything is sent.
		var rss float64
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "HELPER" && f[1] == "rss_kib" {
				v, _ := strconv.ParseFloat(f[2], 64)
				rss = v / 1024
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		// bird drops the helper's routes when its session goes away.
		if _, err := waitCount("lb2", 0, time.Minute); err != nil {
			return nil, err
		}
		return map[string]float64{"speaker_s": took.Seconds(), "speaker_rss": rss}, nil
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{
		{Name: "daemon", Measure: daemonRound},
		{Name: "speaker", Measure: speakerRound},
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("bgp_10k_vips_to_bird_seconds", "s", figure.Below(10), "daemon_s"),
			s.Measured("bgp_10k_vips_daemon_rss_mib", "MiB", figure.Below(200), "daemon_rss"),
			// The daemon adds its own service-to-VIP bookkeeping on top of
			// the speaker: at most twice the speaker's time.
			s.Ratio("bgp_10k_vips_daemon_vs_speaker_alone", figure.AtMost(2), "daemon_s", "speaker_s"),
			s.Measured("bgp_10k_vips_speaker_rss_mib", "MiB", figure.Below(200), "speaker_rss"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

// start10kDaemon starts the real daemon on lb1 (no advertisement yet) and
// creates n UDP services through its API, each with its own VIP in
// 10.80.0.0/16 and be1 as endpoint.
func start10kDaemon(t *testing.T, ctx context.Context, topo *Topo, n int) *l4.Daemon {
	t.Helper()
	bins, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bins, Host: topo.Nodes[0], Interfaces: []string{"eth0"},
		StateDir: filepath.Join(dir, "state"), PinPath: "/sys/fs/bpf/" + topo.Lab.ID + "-lb1", ExtraArgs: []string{"--log-format=text"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background()) })
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for i := range work {
				vip := netip.AddrFrom4([4]byte{10, byte(80 + i>>16), byte(i >> 8), byte(i)})
				svc := api.Service{Name: fmt.Sprintf("v%d", i), VIP: vip.String(), Port: EchoPort, Protocol: api.ProtocolUDP, Mode: api.ModeOneArm,
					Endpoints: []api.Endpoint{{Address: BackendIP[0].String(), Port: EchoPort}}}
				if err := d.Client.ApplyService(ctx, svc); err != nil {
					errs <- fmt.Errorf("create %s: %w", svc.Name, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d services created through the API in %v", n, time.Since(start).Round(time.Millisecond))
	return d
}

// procRSSKiB is a process's VmRSS.
func procRSSKiB(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return parseRSS(string(raw))
}

func parseRSS(status string) int {
	for _, l := range strings.Split(status, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

// TestSpeakerHelper is the process TestBenchBGP10kVIPs runs in lb2's
// namespace; it does nothing in a normal test run.
func TestSpeakerHelper(t *testing.T) {
	nStr := os.Getenv("TELCOLB_SPEAKER_HELPER")
	if nStr == "" {
		return // not a helper run
	}
	n, _ := strconv.Atoi(nStr)
	cfg := NodeConfig(2, nil) // lb2: lb1 runs the daemon
	cfg.BGP.Peers = cfg.BGP.Peers[:1]
	cfg.BGP.Peers[0].BFD = nil
	sp, err := hbgp.New(context.Background(), *cfg.BGP, hbgp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	adv := api.Advertisement{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: []string{"10.80.0.0/16"}}
	vips := make([]ha.VIP, n)
	for i := range vips {
		vips[i] = ha.VIP{Addr: netip.AddrFrom4([4]byte{10, byte(80 + i>>16), byte(i >> 8), byte(i)}), Advertisement: adv}
	}
	// Wait for the session, then announce all at once.
	for {
		st := sp.PeerStatus(context.Background())
		if len(st) == 1 && st[0].State == "established" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("HELPER set")
	setAt := time.Now()
	if err := sp.Set(context.Background(), vips); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "helper: Set of %d VIPs returned after %v\n", n, time.Since(setAt))
	for {
		st := sp.PeerStatus(context.Background())
		if len(st) == 1 && st[0].PrefixesSent >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "helper: all %d prefixes sent after %v\n", n, time.Since(setAt))
	fmt.Printf("HELPER rss_kib %d\n", rssKiB())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
}

func rssKiB() int {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return parseRSS(string(raw))
}
