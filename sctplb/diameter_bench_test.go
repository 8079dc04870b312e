package sctplb

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// benchDiamServer answers every request on its connections: CEA, DWA, and
// a success answer to anything else.
func benchDiamServer(t testing.TB, ln net.Listener) {
	id := diameter.Identity{Host: "ocs.bench.example", Realm: "bench.example"}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			p := newTCPPeer(c)
			w := bufio.NewWriterSize(c, 64<<10)
			for {
				b, err := p.read()
				if err != nil {
					return
				}
				m, err := diameter.Parse(b)
				if err != nil || !m.IsRequest() {
					continue
				}
				var ans []byte
				switch m.Code {
				case diameter.CmdCapabilitiesExchange:
					ans = diameter.CEA(m.Header, diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}}, diameter.Success)
				default:
					ans = diameter.Answer(m.Header, m.SessionID, id, diameter.Success)
				}
				_, _ = w.Write(ans)
				if p.r.Buffered() == 0 {
					if w.Flush() != nil {
						return
					}
				}
			}
		}()
	}
}

// rawRelay copies bytes between each client connection and a fresh
// connection to the server: the baseline of the same messages without
// Diameter processing.
func rawRelay(ln net.Listener, server string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			s, err := net.Dial("tcp", server)
			if err != nil {
				return
			}
			defer s.Close()
			go func() { _, _ = io.Copy(s, c) }()
			_, _ = io.Copy(c, s)
		}()
	}
}

var benchConns atomic.Int64

// benchClient sends n CCRs over one connection to addr, window at a time,
// and returns requests per second and, with window 1, the round-trip times.
func benchClient(addr string, n, window int) (float64, []time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	p := newTCPPeer(c)
	// A fresh identity per connection: reconnecting under the same one
	// before the agent saw the old connection close loses the election
	// (CEA 4003).
	id := diameter.Identity{Host: fmt.Sprintf("pgw%d.bench.example", benchConns.Add(1)), Realm: "client.example"}
	if _, err := c.Write(diameter.CER(diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}}, 1, 1)); err != nil {
		return 0, nil, err
	}
	if _, err := p.read(); err != nil {
		return 0, nil, err
	}
	reqs := make([][]byte, n)
	for i := range reqs {
		reqs[i] = diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, uint32(i+10), uint32(i+10),
			diameter.Str(diameter.AVPSessionID, fmt.Sprintf("pgw.bench.example;1;%d", i%1000)), diameter.Str(diameter.AVPOriginHost, id.Host),
			diameter.Str(diameter.AVPOriginRealm, id.Realm), diameter.Str(diameter.AVPDestinationRealm, "bench.example"),
			diameter.U32(diameter.AVPAuthAppID, diameter.AppCC), diameter.U32(diameter.AVPCCRequestType, diameter.CCUpdate),
			diameter.EncodeAVP(4242, diameter.AVPMandatory, 99999, make([]byte, 64)))
	}
	sent := make([]time.Time, n)
	var rtts []time.Duration
	tokens := make(chan struct{}, window)
	for range window {
		tokens <- struct{}{}
	}
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for i, r := range reqs {
			<-tokens
			sent[i] = time.Now()
			if _, err := w.Write(r); err != nil {
				errc <- err
				return
			}
			if len(tokens) == 0 || i == n-1 {
				if err := w.Flush(); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	for got := 0; got < n; got++ {
		b, err := p.read()
		if err != nil {
			return 0, nil, err
		}
		h, _ := diameter.ParseHeader(b)
		if window == 1 {
			rtts = append(rtts, time.Since(sent[h.EndToEnd-10]))
		}
		tokens <- struct{}{}
		select {
		case err := <-errc:
			return 0, nil, err
		default:
		}
	}
	return float64(n) / time.Since(start).Seconds(), rtts, nil
}

func pct(d []time.Duration, q float64) float64 {
	slices.Sort(d)
	return d[int(q*float64(len(d)-1))].Seconds() * 1e6
}

// TestBenchDiameterAgentVsRawRelay: requests per CPU second of the agent
// (TCP shell, parse, route, rewrite, pending table) against a raw TCP
// relay of the same messages, each in a child process whose CPU time is
// read from /proc (client and server run here and are not counted), side
// by side in interleaved rounds on loopback; wall-clock requests per
// second of both; and the round trip at window 1 through each, reported
// separately and as a ratio (a difference of two noisy percentiles could
// come out negative). TELCOLB_DIAMETER_CPUPROFILE=<file> writes the
// agent's CPU profile, TELCOLB_DIAMETER_MEMPROFILE=<file> its
// allocations.
func TestBenchDiameterAgentVsRawRelay(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	srvLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srvLn.Close()
	go benchDiamServer(t, srvLn)
	agent := startMiddlebox(t, "agent", srvLn.Addr().String(), os.Getenv("TELCOLB_DIAMETER_CPUPROFILE"))
	relay := startMiddlebox(t, "relay", srvLn.Addr().String(), "")
	const n, lat = 50_000, 2_000
	measure := func(prefix string, mb *middlebox) figure.Variant {
		return figure.Variant{Name: prefix, Measure: func(int) (map[string]float64, error) {
			cpu0 := mb.cpuSeconds(t)
			start := time.Now()
			if _, _, err := benchClient(mb.addr, n, 64); err != nil {
				return nil, err
			}
			wall := time.Since(start).Seconds()
			cpu := mb.cpuSeconds(t) - cpu0
			_, rtts, err := benchClient(mb.addr, lat, 1)
			if err != nil {
				return nil, err
			}
			t.Logf("%s: %d requests in %.2fs wall, %.2f CPU s", prefix, n, wall, cpu)
			return map[string]float64{prefix + "_cpu": n / max(cpu, 0.01), prefix + "_rps": n / wall,
				prefix + "_p50": pct(rtts, 0.5), prefix + "_p99": pct(rtts, 0.99)}, nil
		}}
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 9}, []figure.Variant{
		measure("agent", agent), measure("relay", relay),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Ratio("diameter_agent_vs_relay_per_core", figure.AtLeast(0.5), "agent_cpu", "relay_cpu"),
			s.Measured("diameter_agent_requests_per_cpu_second", "req/s", figure.Above(0), "agent_cpu"),
			s.Measured("diameter_relay_requests_per_cpu_second", "req/s", figure.Above(0), "relay_cpu"),
			s.Ratio("diameter_agent_vs_relay_throughput", figure.Above(0), "agent_rps", "relay_rps"),
			s.Measured("diameter_agent_requests_per_s", "req/s", figure.Above(0), "agent_rps"),
			s.Measured("diameter_relay_requests_per_s", "req/s", figure.Above(0), "relay_rps"),
			s.Measured("diameter_agent_latency_p50", "us", figure.Above(0), "agent_p50"),
			s.Measured("diameter_relay_latency_p50", "us", figure.Above(0), "relay_p50"),
			s.Measured("diameter_agent_latency_p99", "us", figure.Above(0), "agent_p99"),
			s.Measured("diameter_relay_latency_p99", "us", figure.Above(0), "relay_p99"),
			s.Ratio("diameter_agent_vs_relay_latency_p50", figure.Above(0), "agent_p50", "relay_p50"),
			s.Ratio("diameter_agent_vs_relay_latency_p99", figure.Above(0), "agent_p99", "relay_p99"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
