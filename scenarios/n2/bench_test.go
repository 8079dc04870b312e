package n2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"net/netip"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// cpuSeconds is the user+system CPU time a process used so far.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	const clkTck = 100 // USER_HZ on every Linux ABI Go supports
	return (ut + st) / clkTck
}

// pidWithArg finds the process whose command line contains arg.
func pidWithArg(t *testing.T, arg string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cl), arg) && !strings.HasPrefix(string(cl), "nsenter") {
			return pid
		}
	}
	t.Fatalf("no process with %q in its command line", arg)
	return 0
}

type middlebox struct {
	name string
	pid  int // 0: none (the gNB talks to the AMF directly)
	// connect is where the gNB connects.
	connect string
}

// measure runs one gnbsim --bench run through the middlebox and returns
// its JSON result line and the middlebox's CPU seconds during the run.
func measure(t *testing.T, ctx context.Context, gnbsim string, h *lab.Host, src string, mb middlebox, v any, args ...string) float64 {
	t.Helper()
	full := append([]string{"--name", "gnb-bench", "--connect", mb.connect, "--bind", src, "--set-id", fmt.Sprint(labSetID)}, args...)
	p, err := h.Start(gnbsim, full...)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, `"event":"registered"`); err != nil {
		t.Fatalf("%s: %v\n%s", mb.name, err, p.Stderr())
	}
	var before float64
	if mb.pid != 0 {
		before = cpuSeconds(t, mb.pid)
	}
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("%s: gnbsim: %v\n%s", mb.name, err, p.Stderr())
	}
	var cpu float64
	if mb.pid != 0 {
		cpu = cpuSeconds(t, mb.pid) - before
	}
	event := "throughput"
	if _, ok := v.(*LatencyResult); ok {
		event = "latency"
	}
	lastJSON(t, p, event, v)
	return cpu
}

// TestBenchN2ProxyVsRelay measures, over real usrsctp in the lab, NGAP
// messages per CPU-second of the middlebox through the N2 proxy (the
// telcolb daemon) and through a relay that copies messages without decoding
// them, and the round-trip latency each adds (gNB -> middlebox -> AMF ->
// middlebox -> gNB) over the gNB talking to the AMF directly.
//
// The proxy and the relay sit in two identical copies of the topology
// (gNB - middlebox - AMF namespaces; usrsctp allows one stack per
// namespace, so they cannot share the middlebox), both up the whole time,
// so the three variants run in interleaved rounds and every ratio and
// added latency is taken within a round: never the difference of two
// percentiles measured minutes apart under different load.
func TestBenchN2ProxyVsRelay(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := buildCmds(t, ctx, "amfsim", "gnbsim", "sctprelay")
	gnbsim := filepath.Join(dir, "gnbsim")
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	// side builds gNB - middlebox - AMF on 10.78.n/24 and 10.78.(n+10)/24
	// with an AMF listening, and returns the gNB host, its address, the
	// middlebox and the AMF's address.
	side := func(tag string, n int) (gnb *lab.Host, gnbAddr netip.Addr, mb *lab.Host, amfAddr netip.Addr) {
		var err error
		if mb, err = l.AddHost(ctx, "mb"+tag); err != nil {
			t.Fatal(err)
		}
		if err := mb.DropProtoUnreachable(ctx); err != nil {
			t.Fatal(err)
		}
		if gnb, err = l.AddHost(ctx, "gnb"+tag); err != nil {
			t.Fatal(err)
		}
		ah, err := l.AddHost(ctx, "amf"+tag)
		if err != nil {
			t.Fatal(err)
		}
		// Forwarding lets the direct baseline reach the AMF through the
		// middlebox namespace.
		if err := mb.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			t.Fatal(err)
		}
		gnbAddr = link(t, ctx, l, mb, gnb, "ran1", n)
		amfAddr = link(t, ctx, l, mb, ah, "core1", n+10)
		if err := mb.AddAddr(ctx, "ran1", netip4(labVIP)); err != nil {
			t.Fatal(err)
		}
		amf, err := ah.Start(filepath.Join(dir, "amfsim"), "--name", "amf"+tag, "--listen", amfAddr.String()+":38412", "--set-id", fmt.Sprint(labSetID), "--pointer", "1")
		if err != nil {
			t.Fatal(err)
		}
		if err := amf.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatal(err)
		}
		return gnb, gnbAddr, mb, amfAddr
	}
	pgnb, pgnbAddr, lb, pamf := side("p", 1)
	rgnb, rgnbAddr, rhost, ramf := side("r", 21)

	relay, err := rhost.Start(filepath.Join(dir, "sctprelay"), "--listen", labVIP.String()+":38412", "--upstream", ramf.String()+":38412")
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.WaitOutput(ctx, `"event":"listening"`); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join("/sys/fs/bpf", "telcolb-n2b-"+l.ID)
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"ran1"}, StateDir: t.TempDir(), PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background()) })
	svc := api.Service{Name: "n2", VIP: labVIP.String(), Port: 38412, Protocol: api.ProtocolSCTP, N2: true,
		Endpoints: []api.Endpoint{{Address: pamf.String(), Port: 38412}}}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	vip := labVIP.String() + ":38412"
	proxy := middlebox{"proxy", pidWithArg(t, pin), vip}
	raw := middlebox{"relay", relay.Cmd.Process.Pid, vip}

	const ues = 64
	tput := []string{"--ues", fmt.Sprint(ues), "--bench", "throughput", "--duration", "3s", "--window", "256"}
	lat := []string{"--ues", "16", "--bench", "latency", "--samples", "2000"}
	// through runs the throughput load then the latency load through a
	// middlebox and returns its figures as series "<name>_<what>".
	through := func(mb middlebox, gnb *lab.Host, src netip.Addr) figure.Variant {
		return figure.Variant{Name: mb.name, Measure: func(round int) (map[string]float64, error) {
			var br BlastResult
			cpu := measure(t, ctx, gnbsim, gnb, src.String(), mb, &br, tput...)
			if br.Answered < br.Sent*99/100 || cpu <= 0 {
				return nil, fmt.Errorf("%s: %d of %d answered, %.2f CPU s", mb.name, br.Answered, br.Sent, cpu)
			}
			msgs := float64(br.Sent + br.Answered) // both directions cross the middlebox
			var lr LatencyResult
			measure(t, ctx, gnbsim, gnb, src.String(), mb, &lr, lat...)
			t.Logf("round %d %s: %d msgs in %.2fs wall, %.2f CPU s; RTT p50 %.0fus p99 %.0fus", round, mb.name, int64(msgs), br.Seconds, cpu, lr.P50us, lr.P99us)
			return map[string]float64{
				mb.name + "_per_core": msgs / cpu, mb.name + "_wall": msgs / br.Seconds,
				mb.name + "_p50": lr.P50us, mb.name + "_p99": lr.P99us,
			}, nil
		}}
	}
	// The direct baseline: the proxy side's gNB to its AMF, the middlebox
	// namespace only forwarding.
	direct := figure.Variant{Name: "direct", Measure: func(round int) (map[string]float64, error) {
		var lr LatencyResult
		measure(t, ctx, gnbsim, pgnb, pgnbAddr.String(), middlebox{name: "direct", connect: pamf.String() + ":38412"}, &lr, lat...)
		t.Logf("round %d direct: RTT p50 %.0fus p99 %.0fus", round, lr.P50us, lr.P99us)
		return map[string]float64{"direct_p50": lr.P50us, "direct_p99": lr.P99us}, nil
	}}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 7, Tolerance: 0.1},
		[]figure.Variant{through(raw, rgnb, rgnbAddr), through(proxy, pgnb, pgnbAddr), direct},
		func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{
				s.Measured("n2_proxy_msgs_per_core", "msgs/s", figure.Above(0), "proxy_per_core"),
				s.Measured("n2_relay_msgs_per_core", "msgs/s", figure.Above(0), "relay_per_core"),
				s.Ratio("n2_proxy_vs_relay_per_core_ratio", figure.AtLeast(0.5), "proxy_per_core", "relay_per_core"),
				s.Measured("n2_proxy_msgs_per_s_wall", "msgs/s", figure.Above(0), "proxy_wall"),
				s.Measured("n2_relay_msgs_per_s_wall", "msgs/s", figure.Above(0), "relay_wall"),
				s.Measured("n2_proxy_rtt_p50_us", "us", figure.Above(0), "proxy_p50"),
				s.Measured("n2_proxy_rtt_p99_us", "us", figure.Above(0), "proxy_p99"),
				// Added latency: over the direct association (the whole
				// middlebox hop) and over the relay (what decoding and
				// steering cost), each from the same round's runs.
				s.Added("n2_added_latency_vs_direct_p50_us", "us", figure.Below(1000), "proxy_p50", "direct_p50"),
				s.Added("n2_added_latency_vs_direct_p99_us", "us", figure.Below(5000), "proxy_p99", "direct_p99"),
				s.Added("n2_added_latency_vs_relay_p50_us", "us", figure.Below(200), "proxy_p50", "relay_p50"),
				s.Added("n2_added_latency_vs_relay_p99_us", "us", figure.Below(1000), "proxy_p99", "relay_p99"),
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
	if st, err := figs[2].Stat(); err == nil && st.Median < 0.5 {
		t.Errorf("proxy does %.2fx the relay's messages per core (median), target >= 0.5", st.Median)
	}
}

func netip4(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
