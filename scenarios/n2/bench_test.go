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
// them, one after the other in the same lab, and the round-trip latency
// each adds (gNB -> middlebox -> AMF -> middlebox -> gNB).
func TestBenchN2ProxyVsRelay(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := buildCmds(t, ctx, "amfsim", "gnbsim", "sctprelay")
	gnbsim := filepath.Join(dir, "gnbsim")
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.DropProtoUnreachable(ctx); err != nil {
		t.Fatal(err)
	}
	gh, err := l.AddHost(ctx, "gnb1")
	if err != nil {
		t.Fatal(err)
	}
	ah, err := l.AddHost(ctx, "amf1")
	if err != nil {
		t.Fatal(err)
	}
	// Forwarding lets the direct baseline reach the AMF through the lb.
	if err := lb.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	src := link(t, ctx, l, lb, gh, "ran1", 1)
	amfAddr := link(t, ctx, l, lb, ah, "core1", 11)
	if err := lb.AddAddr(ctx, "ran1", netip4(labVIP)); err != nil {
		t.Fatal(err)
	}
	amf, err := ah.Start(filepath.Join(dir, "amfsim"), "--name", "amf1", "--listen", amfAddr.String()+":38412", "--set-id", fmt.Sprint(labSetID), "--pointer", "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := amf.WaitOutput(ctx, `"event":"listening"`); err != nil {
		t.Fatal(err)
	}
	const ues = 64
	tput := []string{"--ues", fmt.Sprint(ues), "--bench", "throughput", "--duration", "5s", "--window", "256"}
	lat := []string{"--ues", "16", "--bench", "latency", "--samples", "2000"}

	type result struct {
		perCore, wall float64
		lat           LatencyResult
	}
	run := func(mb middlebox) result {
		var br BlastResult
		cpu := measure(t, ctx, gnbsim, gh, src.String(), mb, &br, tput...)
		if br.Answered < br.Sent*99/100 || cpu <= 0 {
			t.Fatalf("%s: %d of %d answered, %.2f CPU s", mb.name, br.Answered, br.Sent, cpu)
		}
		msgs := float64(br.Sent + br.Answered) // both directions cross the middlebox
		var lr LatencyResult
		measure(t, ctx, gnbsim, gh, src.String(), mb, &lr, lat...)
		t.Logf("%s: %d msgs in %.2fs wall, %.2f CPU s; RTT p50 %.0fus p99 %.0fus", mb.name, int64(msgs), br.Seconds, cpu, lr.P50us, lr.P99us)
		return result{perCore: msgs / cpu, wall: msgs / br.Seconds, lat: lr}
	}

	// The relay first; it must be gone before the daemon's usrsctp stack
	// starts (one stack per namespace).
	relay, err := lb.Start(filepath.Join(dir, "sctprelay"), "--listen", labVIP.String()+":38412", "--upstream", amfAddr.String()+":38412")
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.WaitOutput(ctx, `"event":"listening"`); err != nil {
		t.Fatal(err)
	}
	vip := labVIP.String() + ":38412"
	var direct LatencyResult
	measure(t, ctx, gnbsim, gh, src.String(), middlebox{name: "direct", connect: amfAddr.String() + ":38412"}, &direct, lat...)
	raw := run(middlebox{"relay", relay.Cmd.Process.Pid, vip})
	if err := relay.Stop(); err != nil {
		t.Fatal(err)
	}

	pin := filepath.Join("/sys/fs/bpf", "telcolb-n2b-"+l.ID)
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"ran1"}, StateDir: t.TempDir(), PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background()) })
	svc := api.Service{Name: "n2", VIP: labVIP.String(), Port: 38412, Protocol: api.ProtocolSCTP, N2: true,
		Endpoints: []api.Endpoint{{Address: amfAddr.String(), Port: 38412}}}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	prox := run(middlebox{"proxy", pidWithArg(t, pin), vip})

	ratio := prox.perCore / raw.perCore
	fmt.Printf("BENCH n2_proxy_msgs_per_core %.0f msgs/s target > 0\n", prox.perCore)
	fmt.Printf("BENCH n2_relay_msgs_per_core %.0f msgs/s target > 0\n", raw.perCore)
	fmt.Printf("BENCH n2_proxy_vs_relay_per_core_ratio %.2f ratio target >= 0.5\n", ratio)
	fmt.Printf("BENCH n2_proxy_msgs_per_s_wall %.0f msgs/s target > 0\n", prox.wall)
	fmt.Printf("BENCH n2_relay_msgs_per_s_wall %.0f msgs/s target > 0\n", raw.wall)
	fmt.Printf("BENCH n2_proxy_rtt_p50_us %.0f us target > 0\n", prox.lat.P50us)
	fmt.Printf("BENCH n2_proxy_rtt_p99_us %.0f us target > 0\n", prox.lat.P99us)
	t.Logf("direct gNB-AMF RTT p50 %.0fus p99 %.0fus", direct.P50us, direct.P99us)
	// Added latency: over the direct association (the whole middlebox
	// hop) and over the relay (what decoding and steering cost).
	fmt.Printf("BENCH n2_added_latency_vs_direct_p50_us %.0f us target < 1000\n", prox.lat.P50us-direct.P50us)
	fmt.Printf("BENCH n2_added_latency_vs_direct_p99_us %.0f us target < 5000\n", prox.lat.P99us-direct.P99us)
	fmt.Printf("BENCH n2_added_latency_vs_relay_p50_us %.0f us target < 200\n", prox.lat.P50us-raw.lat.P50us)
	fmt.Printf("BENCH n2_added_latency_vs_relay_p99_us %.0f us target < 1000\n", prox.lat.P99us-raw.lat.P99us)
	if ratio < 0.5 {
		t.Errorf("proxy does %.2fx the relay's messages per core, target >= 0.5", ratio)
	}
}

func netip4(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
