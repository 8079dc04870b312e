package pfcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/sctplb"
)

// cpuSeconds is the user+system CPU time a process used so far.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func benchLoop(host byte) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 88, byte(os.Getpid() % 250), host})
}

// TestBenchN4ProxyVsRelay compares, on loopback, the N4 proxy with a raw
// UDP relay, each a separate process (cmd/n4middlebox) between an SMF and a
// UPF simulator: PFCP messages per CPU-second of the middlebox under a
// windowed load (establish, modify twice, delete), and the round-trip time
// of single requests, paired (relay then proxy, same peers).
func TestBenchN4ProxyVsRelay(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mb := filepath.Join(buildCmds(t, ctx, "n4middlebox"), "n4middlebox")
	upfAddr := netip.AddrPortFrom(benchLoop(10), 8805)
	vip := netip.AddrPortFrom(benchLoop(1), 8805)
	type result struct {
		perCPU, wall, p50, p99 float64
	}
	run := func(mode string) result {
		// A fresh UPF per run: its retransmission cache must not answer
		// the proxy's sequence numbers with the relay run's answers.
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(upfAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		uctx, ucancel := context.WithCancel(ctx)
		defer ucancel()
		go func() { _ = ServeUPF(uctx, uc, NewUPFSim(upfAddr.Addr(), time.Now(), 0x100), false, time.Second) }()
		p, err := startProc(ctx, mb, "--mode", mode, "--listen", vip.String(), "--upstream", upfAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.stop()
		time.Sleep(300 * time.Millisecond) // the proxy associates with the UPF
		smfAddr := netip.AddrPortFrom(benchLoop(2), 8805)
		sc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(smfAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		const sessions = 20000
		cpu0 := cpuSeconds(t, p.pid)
		start := time.Now()
		st, err := RunSMF(ctx, sc, vip, NewSMFSim(smfAddr.Addr(), time.Now()), Load{Sessions: sessions, Window: 64, T1: 2 * time.Second})
		wall := time.Since(start).Seconds()
		cpu := cpuSeconds(t, p.pid) - cpu0
		if err != nil || st.Deleted != sessions {
			t.Fatalf("%s: %v %+v", mode, err, st)
		}
		// Per session 4 requests and 4 answers pass the middlebox.
		msgs := float64(sessions * 8)
		var mu sync.Mutex
		var rtts []float64
		sc2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(benchLoop(3), 8805)))
		if err != nil {
			t.Fatal(err)
		}
		defer sc2.Close()
		if _, err := RunSMF(ctx, sc2, vip, NewSMFSim(benchLoop(3), time.Now()), Load{Sessions: 1000, Window: 1, T1: 2 * time.Second,
			RTT: func(d time.Duration) { mu.Lock(); rtts = append(rtts, float64(d.Microseconds())); mu.Unlock() }}); err != nil {
			t.Fatal(err)
		}
		sort.Float64s(rtts)
		r := result{perCPU: msgs / max(cpu, 0.01), wall: msgs / wall, p50: rtts[len(rtts)/2], p99: rtts[len(rtts)*99/100]}
		t.Logf("%s: %.0f msgs in %.2fs wall, %.2f CPU s; RTT p50 %.0fus p99 %.0fus", mode, msgs, wall, cpu, r.p50, r.p99)
		return r
	}
	// Relay and proxy alternate in interleaved rounds; the per-core ratio
	// and the added latencies are taken within each round.
	variant := func(mode string) figure.Variant {
		return figure.Variant{Name: mode, Measure: func(int) (map[string]float64, error) {
			r := run(mode)
			return map[string]float64{mode: r.perCPU, mode + "_p50": r.p50, mode + "_p99": r.p99}, nil
		}}
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 7}, []figure.Variant{variant("relay"), variant("proxy")},
		func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{
				s.Measured("pfcp_proxy_msgs_per_cpu_second", "msg/s", figure.Above(0), "proxy"),
				s.Measured("pfcp_relay_msgs_per_cpu_second", "msg/s", figure.Above(0), "relay"),
				s.Ratio("pfcp_proxy_vs_relay_per_core", figure.AtLeast(0.5), "proxy", "relay"),
				s.Added("pfcp_proxy_added_latency_p50", "us", figure.Below(1000), "proxy_p50", "relay_p50"),
				s.Added("pfcp_proxy_added_latency_p99", "us", figure.Below(5000), "proxy_p99", "relay_p99"),
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

type proc struct {
	cmd *exec.Cmd
	pid int
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
}

// startProc runs a command and waits for its "listening" line.
func startProc(ctx context.Context, bin string, args ...string) (*proc, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	buf := make([]byte, 256)
	n, err := out.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "listening") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s did not start: %q %v", bin, buf[:n], err)
	}
	return &proc{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// TestBenchN4Replay3300 measures how long the N4 proxy takes to replay
// 3,300 sessions (Establishment plus one Modification each) to a UPF that
// restarted and associated again, on loopback.
func TestBenchN4Replay3300(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	const sessions = 3300
	// A fresh UPF, proxy and SMF every round (on their own loopback
	// addresses): 5 rounds, median with spread.
	round := func(round int) (float64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		upfAddr := netip.AddrPortFrom(benchLoop(byte(20+3*round)), 8805)
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(upfAddr))
		if err != nil {
			return 0, err
		}
		defer uc.Close()
		upf := NewUPFSim(upfAddr.Addr(), time.Now().Add(-time.Hour), 0x100)
		go func() { _ = ServeUPF(ctx, uc, upf, false, time.Second) }()
		vip := netip.AddrPortFrom(benchLoop(byte(21+3*round)), 8805)
		reg := prometheus.NewRegistry()
		p, err := sctplb.NewN4(sctplb.N4Config{Listen: vip, UPFs: []sctplb.N4UPF{{Name: "upf", Addr: upfAddr}}, Registerer: reg,
			TickInterval: 10 * time.Millisecond})
		if err != nil {
			return 0, err
		}
		if err := p.Open(); err != nil {
			return 0, err
		}
		go func() { _ = p.Serve(ctx) }()
		for deadline := time.Now().Add(5 * time.Second); len(p.Stats().UPFs) == 0 || !p.Stats().UPFs[0].Up; {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("UPF never associated")
			}
			time.Sleep(10 * time.Millisecond)
		}
		smfAddr := netip.AddrPortFrom(benchLoop(byte(22+3*round)), 8805)
		sc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(smfAddr))
		if err != nil {
			return 0, err
		}
		defer sc.Close()
		var elapsed time.Duration
		_, err = RunSMF(ctx, sc, vip, NewSMFSim(smfAddr.Addr(), time.Now()), Load{Sessions: sessions, Window: 256, Pause: func() {
			upf.Restart(time.Now())
			req := message.NewAssociationSetupRequest(1, ie.NewNodeID(upfAddr.Addr().String(), "", ""), ie.NewRecoveryTimeStamp(upf.Recovery))
			b := make([]byte, req.MarshalLen())
			_ = req.MarshalTo(b)
			start := time.Now()
			if _, err := uc.WriteToUDPAddrPort(b, vip); err != nil {
				t.Error(err)
			}
			for len(upf.Sessions()) < sessions || replays(t, reg) < sessions {
				if time.Since(start) > time.Minute {
					t.Errorf("replayed %v of %d in a minute", replays(t, reg), sessions)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			elapsed = time.Since(start)
		}})
		if err != nil {
			return 0, err
		}
		return elapsed.Seconds(), nil
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{figure.One("replay", round)},
		func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{s.Measured("pfcp_replay_3300_sessions", "s", figure.Below(5), "replay")}
		})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

func replays(t *testing.T, g prometheus.Gatherer) float64 {
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "telcolb_pfcp_replays_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
