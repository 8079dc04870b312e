package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/vishvananda/netlink"
)

// minDelivered is the share of a measurement's datagrams that must reach
// the backend. Not all of them: a veth whose peer has NAPI (GRO on or an
// XDP program, as in the XDP phases) queues into a ring of 256 with no
// backpressure, and when a busy machine pushes NAPI to ksoftirqd the
// ring overflows (1-3% of nftables' datagrams seen at load average 20,
// socket-fed and XDPGen alike). measureCPU charges CPU per datagram
// delivered, so a loss cannot make a variant cheap; this only checks that
// it carries the traffic.
const minDelivered = 0.97

const (
	sinkPort  = 9999 // UDP load; dropped at the backend's ingress
	iperfPort = 5201
	// Interleaved sub-rounds of every variant within a detached or
	// attached phase (a round of cpuPerPacket is one phase of each).
	cpuSubRounds = 3
	cpuBursts    = 8
	cpuBurst     = 10_000 // datagrams per burst
	tcpSeconds   = 5
)

var flowCounts = []int{1, 1024}

// rig is the one lab every figure is measured in: client -> lb -> switch
// bridge -> be1, offloads on as in production. Only what runs in the lb
// namespace changes between variants.
type rig struct {
	lab    *lab.Lab
	bins   l4.Binaries
	be     *lab.Host
	beAddr netip.Addr
	src    netip.Addr
	vip    netip.Addr // default (DNAT) mode service
	vipNft netip.Addr // nftables DNAT
	vipFN  netip.Addr // fullnat mode service
	cpu    int        // the CPU the UDP sender is pinned to
	ksoft  int        // pid of that CPU's ksoftirqd

	daemon *l4.Daemon

	// Totals over every measurement, logged to show how much of the work
	// ran in the sender's context and how much ksoftirqd took over.
	threadCPU, ksoftCPU time.Duration

	logf func(format string, args ...any)
}

// Every lab figure of the benchmark, variants interleaved round by round so
// drift on a shared machine hits them alike; medians are reported.
func TestBenchNamespaceLab(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the namespace-lab benchmarks")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: eBPF, nftables and network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	bins, err := binaries(ctx, t)
	if err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	l := lab.New(t, lab.Config{Backends: 1, KeepOffload: true})
	r := &rig{
		lab: l, bins: bins, be: l.Backends[0],
		beAddr: l.BackendIface(0, 0).V4(), src: l.ClientIface(0).V4(),
		vip: lab.VIP(0, 1, false), vipNft: lab.VIP(0, 2, false), vipFN: lab.VIP(0, 3, false),
		cpu: runtime.NumCPU() - 1, logf: t.Logf,
	}
	if r.ksoft, err = KsoftirqdPID(r.cpu); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.stopTelcolb(context.Background()); err != nil {
			t.Errorf("telcolb teardown: %v", err)
		}
	})
	if err := r.installSink(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("CPUPerPacket", func(t *testing.T) { r.cpuPerPacket(ctx, t) })
	t.Run("CPUPerPacketXDPFrames", func(t *testing.T) { r.cpuPerPacketXDPFrames(ctx, t) })
	t.Run("IperfTCP", func(t *testing.T) { r.iperfTCP(ctx, t) })
}

// binaries builds telcolb from the working tree, or, with
// TELCOLB_BENCH_BINDIR, uses the telcolb and telcolbctl already built there
// (to benchmark a given build, e.g. a release against the working tree).
func binaries(ctx context.Context, t *testing.T) (l4.Binaries, error) {
	dir := os.Getenv("TELCOLB_BENCH_BINDIR")
	if dir == "" {
		return l4.Build(ctx, t.TempDir())
	}
	b := l4.Binaries{Telcolb: filepath.Join(dir, "telcolb"), Telcolbctl: filepath.Join(dir, "telcolbctl")}
	for _, p := range []string{b.Telcolb, b.Telcolbctl} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("TELCOLB_BENCH_BINDIR: %w", err)
		}
	}
	t.Logf("using prebuilt binaries from %s", dir)
	return b, nil
}

// setup is one configuration of the lb namespace; targets are the
// variants measured while it is up, each with the address the client sends to.
type setup struct {
	name    string
	up      func(ctx context.Context) error
	down    func(ctx context.Context) error
	targets []target
}

type target struct {
	variant string
	dst     netip.Addr
	feed    feeder // nil: the phase's
}

func noop(context.Context) error { return nil }

// cpuPerPacket reports the CPU the whole path spends per forwarded UDP
// packet, and the LB-side cost of each load balancer: its figure minus plain
// forwarding's (the client stack, the lb's routing and forwarding, the
// bridge and the backend's ingress drop are common to all, so what is left
// is what load balancing adds in the lb namespace).
//
// Starting and stopping the daemon takes seconds, far too slow to
// interleave finely, so a round is two phases, run in rotating order: a
// "detached" one with no telcolb program on the lb (plain forwarding and
// nftables DNAT) and an "attached" one with the daemon running its
// services (plain forwarding, nftables DNAT on its own VIP, telcolb default
// and fullnat). Inside a phase the variants are interleaved over
// cpuSubRounds sub-rounds and costs are paired within each sub-round; the
// phase yields the sub-rounds' medians. Per round:
//
//   - miss cost M = plain attached - plain detached (the two phases of the
//     round): what telcolb's program costs every packet that matches no
//     service;
//   - telcolb's LB-side cost = (telcolb - plain) attached + max(M, 0) (noise
//     may not flatter telcolb);
//   - nftables' cost = (nftables - plain), in the same attached sub-rounds
//     as telcolb's (the miss cost is in both and cancels), and the ratio is
//     the one over the other.
func (r *rig) cpuPerPacket(ctx context.Context, t *testing.T) {
	plain := setup{name: "plain", up: noop, down: noop, targets: []target{{variant: "plain", dst: r.beAddr}}}
	nftables := setup{name: "nftables", up: r.startNftables, down: r.stopNftables, targets: []target{{variant: "nftables", dst: r.vipNft}}}
	telcolb := setup{name: "telcolb", up: noop, down: noop, targets: []target{{variant: "telcolb_default", dst: r.vip}, {variant: "telcolb_fullnat", dst: r.vipFN}}}
	detached := figure.Variant{Name: "detached", Measure: func(round int) (map[string]float64, error) {
		return r.phase(ctx, socketFeed, "det", round, []setup{plain, nftables}, "plain", []string{"nftables"})
	}}
	attached := figure.Variant{Name: "attached", Measure: func(round int) (map[string]float64, error) {
		if err := r.startTelcolb(ctx); err != nil {
			return nil, err
		}
		v, err := r.phase(ctx, socketFeed, "att", round, []setup{plain, nftables, telcolb}, "plain", []string{"nftables", "telcolb_default", "telcolb_fullnat"})
		return v, errors.Join(err, r.stopTelcolb(ctx))
	}}
	// XDP mode (--attach=xdp): the daemon's xdp_ingress carries the
	// established flows. On veth that needs the senders' offloads set as
	// docs/architecture.md "XDP mode" says (TX checksum off, GRO on), for
	// the whole phase: plain and nftables are measured so too, and the
	// ratio is against that nftables.
	telcolbXDP := setup{name: "telcolb", up: noop, down: noop, targets: []target{{variant: "telcolb_default", dst: r.vip}}}
	xdp := figure.Variant{Name: "xdp", Measure: func(round int) (map[string]float64, error) {
		restore, err := r.xdpOffloads(ctx)
		if err != nil {
			return nil, err
		}
		if err := r.startTelcolb(ctx, "--attach=xdp"); err != nil {
			return nil, errors.Join(err, restore())
		}
		v, err := r.phase(ctx, socketFeed, "xdp", round, []setup{plain, nftables, telcolbXDP}, "plain", []string{"nftables", "telcolb_default"})
		return v, errors.Join(err, r.stopTelcolb(ctx), restore())
	}}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 9, Tolerance: 0.1}, []figure.Variant{detached, attached, xdp},
		func(s *figure.Samples) []figure.Figure {
			var figs []figure.Figure
			for _, f := range flowCounts {
				k := func(series string) string { return fmt.Sprintf("%s_%d", series, f) }
				name := func(prefix, what string) string { return fmt.Sprintf("lab_%s_%s_%d", prefix, what, f) }
				figs = append(figs,
					s.Measured(name("cpu_ns_per_pkt", "plain"), "ns", figure.Above(0), k("det_plain")),
					s.Measured(name("cpu_ns_per_pkt", "nftables"), "ns", figure.Above(0), k("det_nftables")),
					s.Measured(name("cpu_ns_per_pkt", "telcolb_default"), "ns", figure.Above(0), k("att_telcolb_default")),
					s.Measured(name("cpu_ns_per_pkt", "telcolb_fullnat"), "ns", figure.Above(0), k("att_telcolb_fullnat")),
					s.Measured(name("cpu_ns_per_pkt", "plain_telcolb_attached"), "ns", figure.Above(0), k("att_plain")),
					s.Added(name("lb_cost_ns_per_pkt", "telcolb_miss"), "ns", figure.AtLeast(0), k("att_plain"), k("det_plain")),
					s.Combine(name("lb_cost_ns_per_pkt", "nftables"), "ns", figure.Added, figure.Above(0),
						func(v []float64) float64 { return v[0] }, k("det_cost_nftables")),
				)
				for _, v := range []struct{ variant, name string }{{"telcolb_default", "telcolb"}, {"telcolb_fullnat", "telcolb_fullnat"}} {
					cost := func(v []float64) float64 { return v[0] + max(v[1]-v[2], 0) }
					series := []string{k("att_cost_" + v.variant), k("att_plain"), k("det_plain")}
					figs = append(figs,
						s.Combine(name("lb_cost_ns_per_pkt", v.name), "ns", figure.Added, figure.Above(0), cost, series...),
						s.Combine(fmt.Sprintf("lab_lb_cost_ratio_%s_vs_nftables_%d", v.name, f), "ratio", figure.CostRatio, figure.AtMost(0.33),
							func(v []float64) float64 { return cost(v) / v[3] }, append(series, k("att_cost_nftables"))...))
				}
				// XDP mode: telcolb's cost over plain forwarding in the
				// XDP phase, plus that phase's plain forwarding over the
				// detached one (the XDP miss path, veth's NAPI mode and
				// the senders' software checksums: all charged to telcolb).
				xcost := func(v []float64) float64 { return v[0] + max(v[1]-v[2], 0) }
				xseries := []string{k("xdp_cost_telcolb_default"), k("xdp_plain"), k("det_plain")}
				figs = append(figs,
					s.Measured(name("cpu_ns_per_pkt", "telcolb_xdp"), "ns", figure.Above(0), k("xdp_telcolb_default")),
					s.Measured(name("cpu_ns_per_pkt", "nftables_xdp_phase"), "ns", figure.Above(0), k("xdp_nftables")),
					s.Combine(name("lb_cost_ns_per_pkt", "telcolb_xdp"), "ns", figure.Added, figure.Above(0), xcost, xseries...),
					s.Combine(fmt.Sprintf("lab_lb_cost_ratio_telcolb_xdp_vs_nftables_%d", f), "ratio", figure.CostRatio, figure.AtMost(0.25),
						func(v []float64) float64 { return xcost(v) / v[3] }, append(xseries, k("xdp_cost_nftables"))...))
			}
			return figs
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CPU measured: %v in the sender thread, %v in ksoftirqd/%d", r.threadCPU, r.ksoftCPU, r.cpu)
	figure.Report(t, figs...)
}

// phase runs cpuSubRounds sub-rounds of the setups (rotating order), the
// load made by feed unless a target has its own, and returns, prefixed
// with tag, the median over sub-rounds of each variant's CPU ns per packet
// ("<tag>_<variant>_<flows>") and of the costed variants' cost over the
// base variant (plain forwarding, in most phases) paired within each
// sub-round ("<tag>_cost_<variant>_<flows>").
func (r *rig) phase(ctx context.Context, feed feeder, tag string, round int, setups []setup, base string, costed []string) (map[string]float64, error) {
	sub := figure.NewSamples()
	for i := 0; i < cpuSubRounds; i++ {
		vals := map[string]float64{}
		for _, s := range figure.Order(setups, round+i) {
			if err := s.up(ctx); err != nil {
				return nil, fmt.Errorf("%s sub-round %d: %s up: %w", tag, i, s.name, err)
			}
			for _, tg := range s.targets {
				for _, flows := range flowCounts {
					f := feed
					if tg.feed != nil {
						f = tg.feed
					}
					v, err := r.measureCPU(ctx, f, tg.dst, flows)
					if err != nil {
						return nil, errors.Join(fmt.Errorf("%s sub-round %d: %s, %d flows: %w", tag, i, tg.variant, flows, err), s.down(ctx))
					}
					vals[fmt.Sprintf("%s_%d", tg.variant, flows)] = v
				}
			}
			if err := s.down(ctx); err != nil {
				return nil, fmt.Errorf("%s sub-round %d: %s down: %w", tag, i, s.name, err)
			}
		}
		if err := sub.AddRound(vals); err != nil {
			return nil, err
		}
	}
	out := map[string]float64{}
	for _, n := range sub.Names() {
		m, err := figure.Median(sub.Series(n))
		if err != nil {
			return nil, err
		}
		out[tag+"_"+n] = m
	}
	for _, flows := range flowCounts {
		for _, v := range costed {
			a, b := sub.Series(fmt.Sprintf("%s_%d", v, flows)), sub.Series(fmt.Sprintf("%s_%d", base, flows))
			d := make([]float64, len(a))
			for i := range a {
				d[i] = a[i] - b[i]
			}
			m, err := figure.Median(d)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprintf("%s_cost_%s_%d", tag, v, flows)] = m
		}
	}
	r.logPhase(tag, round, out)
	return out, nil
}

func (r *rig) logPhase(tag string, round int, v map[string]float64) {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(v)) {
		parts = append(parts, fmt.Sprintf("%s=%.0f", k, v[k]))
	}
	r.logf("round %d %s phase (ns/pkt): %s", round, tag, strings.Join(parts, " "))
}

// measureCPU sends feed's load to dst (from the host feed chooses, the
// client unless it skips the lb) with the sender pinned to r.cpu and
// returns CPU ns per packet: the sender thread's CPU time (which includes
// the softirq forwarding run in its context, see Flood) plus what that
// CPU's ksoftirqd ran meanwhile.
//
// The load goes out in cpuBursts bursts and the cheapest burst is the
// measurement: on a shared machine interference only ever adds CPU time
// (cache and core contention from other tenants, their interrupts run in
// our context), so the minimum is the stable estimate of the intrinsic
// cost, and the median over rounds of those minima is what gets reported.
// It checks the backend received the whole load, so a variant that drops
// packets cannot look cheap.
func (r *rig) measureCPU(ctx context.Context, feed feeder, dst netip.Addr, flows int) (cpu float64, err error) {
	cfg := FloodConfig{Src: r.src, Dst: dst, DstPort: sinkPort, SrcPortBase: 20000, Flows: flows}
	snd, err := feed(r, cfg)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, snd.Close()) }()
	flood := func(packets int) (FloodResult, error) {
		var res FloodResult
		err := snd.host.Do(func() error {
			restore, err := PinThread(r.cpu)
			if err != nil {
				return err
			}
			res, err = snd.Send(packets)
			return errors.Join(err, restore())
		})
		return res, err
	}
	// Warm-up: neighbours resolved, every flow's conntrack entry created,
	// so the figure is the steady-state per-packet cost.
	warm := max(4096, 4*flows)
	if _, err := flood(warm); err != nil {
		return 0, err
	}
	if _, err := r.settledSinkCount(ctx, warm); err != nil {
		return 0, err
	}
	best, sent, got := math.Inf(1), 0, 0
	for b := 0; b < cpuBursts; b++ {
		k0, err := TaskRuntime(r.ksoft)
		if err != nil {
			return 0, err
		}
		res, err := flood(cpuBurst)
		if err != nil {
			return 0, err
		}
		time.Sleep(5 * time.Millisecond) // let ksoftirqd drain what it was given
		k1, err := TaskRuntime(r.ksoft)
		if err != nil {
			return 0, err
		}
		n, err := r.settledSinkCount(ctx, res.Sent)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, fmt.Errorf("backend received none of %d datagrams sent to %s", res.Sent, dst)
		}
		sent += res.Sent
		got += n
		r.threadCPU += res.ThreadCPU
		r.ksoftCPU += k1 - k0
		// Per datagram delivered: one lost on the way cannot make the
		// burst look cheap.
		best = min(best, float64(res.ThreadCPU+(k1-k0))/float64(n))
	}
	if float64(got) < minDelivered*float64(sent) {
		return 0, fmt.Errorf("backend received %d of %d datagrams sent to %s", got, sent, dst)
	}
	return best, nil
}

// installSink drops the UDP load at the backend's ingress with a counter:
// the cheapest possible receiver, identical for every variant, and no ICMP
// port-unreachable coming back through the lb.
func (r *rig) installSink(ctx context.Context) error {
	rules := fmt.Sprintf(`table netdev tlb_bench {
	counter sink {}
	chain in {
		type filter hook ingress device %q priority 0; policy accept;
		udp dport %d counter name "sink" drop
	}
}
`, r.lab.BackendIface(0, 0).Name, sinkPort)
	return nft(ctx, r.be, rules)
}

// settledSinkCount is sinkCount once want datagrams have arrived or the
// count has stopped moving: what is still queued (veth rings, ksoftirqd
// starved by other tenants) arrives late, not never.
func (r *rig) settledSinkCount(ctx context.Context, want int) (int, error) {
	got := 0
	for quiet := 0; quiet < 3 && got < want; {
		time.Sleep(10 * time.Millisecond)
		n, err := r.sinkCount(ctx)
		if err != nil {
			return got, err
		}
		got += int(n)
		if quiet++; n > 0 {
			quiet = 0
		}
	}
	return got, nil
}

// sinkCount returns the datagrams the sink dropped since the last call.
func (r *rig) sinkCount(ctx context.Context) (uint64, error) {
	out, err := r.be.Exec(ctx, "nft", "-j", "reset", "counter", "netdev", "tlb_bench", "sink")
	if err != nil {
		return 0, err
	}
	return ParseNftCounter(out)
}

func nft(ctx context.Context, h *lab.Host, rules string) error {
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft -f: %w: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startNftables is the kernel's own load balancer for one endpoint: a
// prerouting DNAT, with conntrack and forwarding doing the rest (replies
// are un-NATed by conntrack). The namespace's deletion removes the table
// if the test dies.
func (r *rig) startNftables(ctx context.Context) error {
	return nft(ctx, r.lab.LB, fmt.Sprintf(`table ip tlb_bench {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s udp dport %[3]d dnat to %[2]s
		ip daddr %[1]s tcp dport %[4]d dnat to %[2]s
	}
}
`, r.vipNft, r.beAddr, sinkPort, iperfPort))
}

func (r *rig) stopNftables(ctx context.Context) error {
	if _, err := r.lab.LB.Exec(ctx, "nft", "delete", "table", "ip", "tlb_bench"); err != nil {
		return err
	}
	// Conntrack entries outlive the table; flush them so the next round's
	// nftables variant creates its flows the same way this one did.
	if err := r.lab.LB.Do(func() error { return netlink.ConntrackTableFlush(netlink.ConntrackTable) }); err != nil {
		return fmt.Errorf("flush lb conntrack: %w", err)
	}
	return nil
}

// startTelcolb runs the daemon on every lb interface with the benchmark's
// services; stopTelcolb detaches it completely, so the other variants run
// without any telcolb program in the path.
func (r *rig) startTelcolb(ctx context.Context, extraArgs ...string) error {
	var ifs []string
	for _, i := range r.lab.LB.Ifaces() {
		ifs = append(ifs, i.Name)
	}
	state, err := os.MkdirTemp("", "telcolb-bench-state-")
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	pins := "/sys/fs/bpf/" + r.lab.ID + "-bench"
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{
		Bin: r.bins, Host: r.lab.LB, Interfaces: ifs,
		StateDir: state, PinPath: pins, ExtraArgs: extraArgs,
	})
	if err != nil {
		// A daemon that died starting may have pinned maps already.
		return errors.Join(fmt.Errorf("start telcolb: %w", err), os.RemoveAll(state), os.RemoveAll(pins))
	}
	r.daemon = d
	ep := func(port uint16) []api.Endpoint {
		return []api.Endpoint{{Address: r.beAddr.String(), Port: port}}
	}
	for _, s := range []api.Service{
		{Name: "bench-udp", VIP: r.vip.String(), Port: sinkPort, Protocol: api.ProtocolUDP, Mode: api.ModeDefault, Endpoints: ep(sinkPort)},
		{Name: "bench-tcp", VIP: r.vip.String(), Port: iperfPort, Protocol: api.ProtocolTCP, Mode: api.ModeDefault, Endpoints: ep(iperfPort)},
		{Name: "bench-udp-fullnat", VIP: r.vipFN.String(), Port: sinkPort, Protocol: api.ProtocolUDP, Mode: api.ModeFullNAT, Endpoints: ep(sinkPort)},
	} {
		if err := d.Client.ApplyService(ctx, s); err != nil {
			return errors.Join(fmt.Errorf("apply %s: %w", s.Name, err), r.stopTelcolb(ctx))
		}
	}
	return nil
}

func (r *rig) stopTelcolb(ctx context.Context) error {
	if r.daemon == nil {
		return nil
	}
	d := r.daemon
	r.daemon = nil
	if err := d.Destroy(ctx); err != nil {
		return fmt.Errorf("destroy telcolb: %w\n%s", err, d.Log())
	}
	return nil
}

// iperfTCP compares TCP throughput to one backend through the telcolb VIP
// and through the nftables DNAT, interleaved, medians of the rounds.
func (r *rig) iperfTCP(ctx context.Context, t *testing.T) {
	srv, err := r.be.Start("iperf3", "-s", "-p", strconv.Itoa(iperfPort), "--forceflush")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := srv.WaitOutput(wctx, "Server listening"); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	variant := func(s setup) figure.Variant {
		return figure.One(s.name, func(round int) (float64, error) {
			if err := s.up(ctx); err != nil {
				return 0, fmt.Errorf("%s up: %w", s.name, err)
			}
			bps, err := r.iperf(ctx, s.targets[0].dst)
			if derr := s.down(ctx); derr != nil {
				err = errors.Join(err, derr)
			}
			t.Logf("round %d: %s %.2f Gbit/s", round, s.name, bps/1e9)
			return bps / 1e9, err
		})
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 7}, []figure.Variant{
		variant(setup{name: "nftables", up: r.startNftables, down: r.stopNftables, targets: []target{{variant: "nftables", dst: r.vipNft}}}),
		variant(setup{name: "telcolb", up: func(ctx context.Context) error { return r.startTelcolb(ctx) }, down: r.stopTelcolb, targets: []target{{variant: "telcolb", dst: r.vip}}}),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("iperf3_tcp_gbps_telcolb", "Gbit/s", figure.Above(0), "telcolb"),
			s.Measured("iperf3_tcp_gbps_nftables", "Gbit/s", figure.Above(0), "nftables"),
			s.Ratio("iperf3_tcp_ratio_telcolb_vs_nftables", figure.AtLeast(0.9), "telcolb", "nftables"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

func (r *rig) iperf(ctx context.Context, dst netip.Addr) (float64, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Duration(tcpSeconds+20)*time.Second)
	defer cancel()
	out, err := r.lab.Client.Command(cctx, "iperf3", "-c", dst.String(), "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(tcpSeconds), "--connect-timeout", "3000", "-J").Output()
	bps, perr := ParseIperf3(out)
	if perr != nil {
		return 0, errors.Join(fmt.Errorf("iperf3 client: %w", err), perr)
	}
	return bps, nil
}

// xdpOffloads sets the lb's veth peers as XDP mode on veth needs them (TX
// checksum offload off: XDP updates checksums as complete; GRO on: frames
// redirected into a veth reach its peer only through NAPI) and returns
// the function that puts back what they were.
func (r *rig) xdpOffloads(ctx context.Context) (func() error, error) {
	var peers []*lab.Iface
	for _, i := range r.lab.LB.Ifaces() {
		if i.Peer != nil {
			peers = append(peers, i.Peer)
		}
	}
	return setOffloads(ctx, peers, "tx", "off", "gro", "on")
}

// ethtoolNames are the `ethtool -k` names of the `ethtool -K` features
// setOffloads changes.
var ethtoolNames = map[string]string{"tx": "tx-checksumming", "gro": "generic-receive-offload"}

// setOffloads sets features (`ethtool -K` name, value pairs) on ifs and
// returns the function that puts back what they were.
func setOffloads(ctx context.Context, ifs []*lab.Iface, features ...string) (func() error, error) {
	type saved struct {
		i   *lab.Iface
		old []string
	}
	var olds []saved
	restore := func() error {
		var errs []error
		for _, o := range olds {
			if _, err := o.i.Host.Exec(context.Background(), "ethtool", append([]string{"-K", o.i.Name}, o.old...)...); err != nil {
				errs = append(errs, fmt.Errorf("restore offloads of %s/%s: %w", o.i.Host.Name, o.i.Name, err))
			}
		}
		return errors.Join(errs...)
	}
	for _, i := range ifs {
		out, err := i.Host.Exec(ctx, "ethtool", "-k", i.Name)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("offloads of %s/%s: %w", i.Host.Name, i.Name, err), restore())
		}
		o := saved{i: i}
		for f := 0; f+1 < len(features); f += 2 {
			name, ok := ethtoolNames[features[f]]
			if !ok {
				return nil, errors.Join(fmt.Errorf("setOffloads: unknown feature %q", features[f]), restore())
			}
			o.old = append(o.old, features[f], ethtoolFeature(string(out), name))
		}
		olds = append(olds, o)
		if _, err := i.Host.Exec(ctx, "ethtool", append([]string{"-K", i.Name}, features...)...); err != nil {
			return nil, errors.Join(fmt.Errorf("offloads of %s/%s: %w", i.Host.Name, i.Name, err), restore())
		}
	}
	return restore, nil
}

// ethtoolFeature is "on" or "off" for feature in `ethtool -k` output.
func ethtoolFeature(out, feature string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, feature+": "); ok && strings.HasPrefix(v, "on") {
			return "on"
		}
	}
	return "off"
}
