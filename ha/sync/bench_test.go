package sync

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

const benchPeerEnv = "TELCOLB_SYNC_BENCH_PEER"

// benchPeer is what the sender tells the receiver process.
type benchPeer struct {
	Listen, Cert, Key, CA string
	Records               int
	// ApplyDelay is how long each Apply takes (a datapath import waiting
	// for its lock on a loaded node).
	ApplyDelay time.Duration
}

// TestBenchSyncLag10kPerSecond streams 10,000 new records per second
// (conntrack-sized: 40-byte key, 64-byte value) from node a to node b over
// mutual TLS on loopback, b in a process of its own so a's CPU is a's
// alone, for 3 s per round, 5 rounds. Figures: the sync lag p99 (producer
// Put to b's Apply, one clock), the bytes on the wire both ways (TLS
// included) in Mbit/s, and a's CPU per synced record. There is no peer
// to run side by side (conntrackd needs netfilter conntrack state): the
// figures are measured, not ratios.
func TestBenchSyncLag10kPerSecond(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	const rate, seconds = 10_000, 3
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{{
		Name: "sync",
		Measure: func(int) (map[string]float64, error) {
			return syncRound(t, rate, seconds, 0)
		},
	}}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("ha_sync_lag_p99_ms", "ms", figure.Below(50), "p99"),
			s.Measured("ha_sync_wire_mbit_per_s_at_10k_records_s", "Mbit/s", figure.Above(0), "mbit"),
			s.Measured("ha_sync_sender_cpu_us_per_record", "us", figure.Above(0), "cpu_us"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

// TestBenchSyncSlowPeer streams as TestBenchSyncLag10kPerSecond does to a
// peer whose every Apply takes 300 ms (the datapath's import waiting for
// its lock on a loaded node, as seen in the HA lab): its acknowledgements
// come 300 to 600 ms after a message (a message waits for the Apply under
// way, then its own), and none for 300 ms at a time, past a fixed 200 ms
// retransmission timer. Figures: the records a
// puts on the wire per record (1: nothing resent) and the lag p99 (Put
// on a to the end of the Apply on b).
func TestBenchSyncSlowPeer(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	const rate, seconds = 10_000, 3
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{{
		Name: "sync",
		Measure: func(int) (map[string]float64, error) {
			return syncRound(t, rate, seconds, 300*time.Millisecond)
		},
	}}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("ha_sync_slow_peer_sends_per_record", "x", figure.AtMost(1.5), "sends_per_record"),
			s.Measured("ha_sync_slow_peer_lag_p99_ms", "ms", figure.Above(0), "p99"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

func syncRound(t *testing.T, rate, seconds int, applyDelay time.Duration) (map[string]float64, error) {
	ca := newCA(t, "bench")
	ac, ak := ca.valid(t, "a")
	bc, bk := ca.valid(t, "b")
	total := rate * seconds
	cfgJSON, _ := json.Marshal(benchPeer{Listen: "127.0.0.1:0", Cert: bc, Key: bk, CA: ca.file, Records: total, ApplyDelay: applyDelay})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSyncBenchPeer$")
	cmd.Env = append(os.Environ(), benchPeerEnv+"="+string(cfgJSON))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	line := func(prefix string) (string, error) {
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				return s, nil
			}
		}
		return "", fmt.Errorf("receiver ended before %q: %v", prefix, sc.Err())
	}
	addr, err := line("LISTEN ")
	if err != nil {
		return nil, err
	}
	a, err := Start(ctx, NodeConfig{Self: "a", Listen: "127.0.0.1:0", Peers: []Peer{{Name: "b", Addr: addr}},
		CertFile: ac, KeyFile: ak, CAFile: ca.file, RedialInterval: 100 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	for !a.Synced("b") || a.Stats().PeersUp == 0 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	st0 := a.Stats()
	wire0, cpu0 := st0.WireBytes, cpuTime()
	start := time.Now()
	key := make([]byte, 40)
	val := make([]byte, 64)
	for sent := 0; sent < total; {
		due := min(total, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			binary.BigEndian.PutUint64(key, uint64(sent))
			binary.BigEndian.PutUint64(val, uint64(time.Now().UnixNano()))
			if err := a.Put(Record{Kind: 1, Key: key, Value: val}); err != nil {
				return nil, err
			}
		}
		time.Sleep(time.Millisecond)
	}
	res, err := line("DONE ")
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	// Resends are load on both sides and on the wire: logged per round
	// (with the load average) to compare retransmission timers.
	st := a.Stats()
	t.Logf("round: a resent %d messages (%d records) after %d timeouts and %d nacks, %v; load %s",
		st.ResentMessages-st0.ResentMessages, st.ResentRecords-st0.ResentRecords, st.Timeouts-st0.Timeouts, st.Nacks-st0.Nacks, peerTimers(st.Stats), figure.LoadAvg())
	// b's acknowledgements count too: read b's bytes from its report.
	var p99ms float64
	var bWire uint64
	if _, err := fmt.Sscanf(res, "%g %d", &p99ms, &bWire); err != nil {
		return nil, fmt.Errorf("receiver said %q: %w", res, err)
	}
	wire := float64(a.Stats().WireBytes-wire0+bWire) * 8 / 1e6 / elapsed.Seconds()
	return map[string]float64{
		"p99":    p99ms,
		"mbit":   wire * 10_000 / float64(rate),
		"cpu_us": float64(cpu.Microseconds()) / float64(total),
		// Each record once, plus what was resent: 1 is no resend.
		"sends_per_record": float64(st.SentRecords-st0.SentRecords+st.ResentRecords-st0.ResentRecords) / float64(total),
	}, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSyncBenchPeer is the receiving node of TestBenchSyncLag10kPerSecond,
// run in its own process; it does nothing in a normal test run.
func TestSyncBenchPeer(t *testing.T) {
	env := os.Getenv(benchPeerEnv)
	if env == "" {
		return // not a helper run
	}
	var cfg benchPeer
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var lags []time.Duration
	var b *Node
	apply := func(as []Applied) {
		time.Sleep(cfg.ApplyDelay)
		now := time.Now().UnixNano()
		for _, x := range as {
			if len(x.Record.Value) >= 8 && !x.Record.Deleted {
				lags = append(lags, time.Duration(now-int64(binary.BigEndian.Uint64(x.Record.Value))))
			}
		}
		if len(lags) >= cfg.Records && done != nil {
			close(done)
			done = nil
		}
	}
	finished := done
	var err error
	b, err = Start(context.Background(), NodeConfig{Self: "b", Listen: cfg.Listen, Peers: []Peer{{Name: "a", Addr: "127.0.0.1:1"}},
		CertFile: cfg.Cert, KeyFile: cfg.Key, CAFile: cfg.CA, Apply: apply, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LISTEN %s\n", b.Addr())
	<-finished
	slices.Sort(lags)
	p99 := lags[len(lags)*99/100]
	fmt.Printf("DONE %g %d\n", float64(p99.Microseconds())/1000, b.Stats().WireBytes)
	_ = b.Close()
}

// peerTimers says each peer's retransmission timeout.
func peerTimers(s Stats) string {
	var out []string
	for _, p := range s.Peers {
		out = append(out, fmt.Sprintf("%s rto %v srtt %v", p.Name, p.RTO.Round(time.Millisecond), p.SRTT.Round(100*time.Microsecond)))
	}
	return strings.Join(out, ", ")
}
