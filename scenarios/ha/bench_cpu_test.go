package ha

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/l4"
)

// Issue 15's "active node CPU per synced flow, <= 20% of that node's
// per-flow cost": the CPU lb1 spends per flow with the HA sync on (a peer
// up, every conntrack change sent to it, the refresh) against the same
// flows through the same lab with lb1 alone (no HA flags), in interleaved
// rounds on a fresh lab each.
//
// The node's CPU: lb1 gets CPU 1 to itself (bench.SteerReceive, PinProcess),
// everything else CPU 0: the client, the backend, lb2 and the test. CPU 1's
// busy time is then what lb1 spends: its datapath and kernel forwarding in
// softirq, its daemon (conntrack ageing, the ring buffer's events, the
// sync's encoding, TLS and writes, the refresh's dumps).
//
// The flows: new UDP flows (fullnat) at cpuFlowRate a second, each one
// question and its answer, then idle until its entry expires (a 5 s idle
// timeout): the cheapest flow a node carries, so the sync's share is the
// largest it gets. The steady state is measured, cpuWindow long after
// cpuWarmup: the conntrack table stays at its size (flows expire as fast
// as they come), and each flow's whole life falls into the window, its
// creation, its refreshes, its expiry and the deletion the peer is sent.
func TestBenchHASyncCPUPerFlow(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmark")
	}
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs: one for lb1, one for the rest")
	}
	// A variant's round on a fresh lab: measure's figures under name.
	variant := func(name string, measure func(*testing.T) cpuRound) figure.Variant {
		return figure.Variant{Name: name, Measure: func(round int) (map[string]float64, error) {
			var res cpuRound
			ok := t.Run(fmt.Sprintf("round%d-%s", round, name), func(t *testing.T) { res = measure(t) })
			if !ok {
				return nil, fmt.Errorf("%s round %d failed", name, round)
			}
			return map[string]float64{name: res.usPerFlow, name + "_records": res.recordsPerFlow, name + "_resent": res.resentPerFlow, name + "_daemon": res.daemonUsPerFlow,
				name + "_alloc": res.allocKBPerFlow}, nil
		}}
	}
	telcolb := func(withHA bool) func(*testing.T) cpuRound {
		return func(t *testing.T) cpuRound { return measureNodeCPU(t, withHA) }
	}
	// The peer: nftables doing the same fullnat, with and without
	// conntrackd (bench_conntrackd_test.go).
	nft := func(withSync bool) func(*testing.T) cpuRound {
		return func(t *testing.T) cpuRound { return measureNftCPU(t, withSync) }
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, []figure.Variant{
		variant("sync", telcolb(true)), variant("alone", telcolb(false)), variant("nft_sync", nft(true)), variant("nft", nft(false)),
	}, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("ha_node_cpu_us_per_udp_flow_alone", "us", figure.Above(0), "alone"),
			s.Measured("ha_node_cpu_us_per_udp_flow_synced", "us", figure.Above(0), "sync"),
			s.Measured("ha_sync_records_per_udp_flow", "records", figure.Above(0), "sync_records"),
			// Of those, sent again: a timeout's probe or a Nack's window
			// (retransmit.go); on a link that loses nothing, what a slow
			// peer costs.
			s.Measured("ha_sync_records_resent_per_udp_flow", "records", figure.AtLeast(0), "sync_resent"),
			// Where the node's CPU goes: its daemon's own time (code and
			// system calls; the rest of a figure above is softirq).
			s.Measured("ha_node_daemon_cpu_us_per_udp_flow_alone", "us", figure.Above(0), "alone_daemon"),
			s.Measured("ha_node_daemon_cpu_us_per_udp_flow_synced", "us", figure.Above(0), "sync_daemon"),
			// What its daemon allocates (Go's TotalAlloc over the window,
			// from its runtime profiles): the garbage collector's work,
			// and a figure that moves little between rounds, where the
			// CPU figures move by a fifth.
			s.Measured("ha_node_daemon_alloc_kb_per_udp_flow_alone", "KiB", figure.Above(0), "alone_alloc"),
			s.Measured("ha_node_daemon_alloc_kb_per_udp_flow_synced", "KiB", figure.Above(0), "sync_alloc"),
			// What the sync adds per flow over what the flow costs the
			// node alone: (synced - alone) / alone, paired within a round.
			s.Combine("ha_sync_cpu_share_of_udp_flow_cost", "ratio", figure.CostRatio, figure.AtMost(0.2),
				func(v []float64) float64 { return (v[0] - v[1]) / v[1] }, "sync", "alone"),
			// The peer's figures: the node as a Linux router (nftables
			// fullnat) alone and with conntrackd syncing it, conntrackd's
			// own CPU, and its sync's share of the router's per-flow cost,
			// as above.
			s.Measured("ha_node_cpu_us_per_udp_flow_nftables", "us", figure.Above(0), "nft"),
			s.Measured("ha_node_cpu_us_per_udp_flow_nftables_conntrackd", "us", figure.Above(0), "nft_sync"),
			s.Measured("ha_conntrackd_cpu_us_per_udp_flow", "us", figure.Above(0), "nft_sync_daemon"),
			s.Combine("ha_conntrackd_cpu_share_of_udp_flow_cost", "ratio", figure.CostRatio, figure.Above(0),
				func(v []float64) float64 { return (v[0] - v[1]) / v[1] }, "nft_sync", "nft"),
			// What telcolb's sync adds to a flow's cost on the node
			// against what conntrackd's adds, each paired within a round:
			// the sync no dearer than the anchor it replaces.
			s.Combine("ha_sync_cpu_per_udp_flow_vs_conntrackd", "ratio", figure.CostRatio, figure.AtMost(1),
				func(v []float64) float64 { return (v[0] - v[1]) / (v[2] - v[3]) }, "sync", "alone", "nft_sync", "nft"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

const (
	cpuFlowRate = 2000 // new flows a second
	cpuWarmup   = 12 * time.Second
	cpuWindow   = 30 * time.Second
	cpuIdle     = 5 // seconds: the bench service's idle timeout
	cpuPort     = 7104
	nodeCPU     = 1 // lb1's
	restCPU     = 0 // everything else's
)

type cpuRound struct {
	usPerFlow, recordsPerFlow float64
	// resentPerFlow: of recordsPerFlow, those sent again (retransmit.go).
	resentPerFlow float64
	// daemonUsPerFlow: lb1's daemon process alone (its code and system
	// calls), the part of usPerFlow not in softirq.
	daemonUsPerFlow float64
	// allocKBPerFlow: what lb1's daemon allocated per flow.
	allocKBPerFlow float64
}

// measureNodeCPU runs one round on a fresh lab, lb1 with or without its
// HA peer, and returns lb1's CPU per flow (and the records it sent per
// flow, 0 alone).
func measureNodeCPU(t *testing.T, withHA bool) cpuRound {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The daemons' default refresh interval (3 s): what a node costs as
	// shipped, not the tests' 1 s.
	//
	// GOMAXPROCS=1: lb1 is a node of one CPU (nodeCPU). Go sizes its
	// processors from the CPUs it may run on when it starts, not after
	// (go 1.26 keeps 2 for a process pinned to one CPU after its start):
	// a daemon started on the lab's 2 CPUs and then pinned kept 2
	// processors on one CPU and switched threads between them, which no
	// node of one CPU does.
	lb := upLabWith(t, ctx, labConfig{withHA: withHA, env: []string{"GOMAXPROCS=1"}, profiling: true})
	for i, d := range lb.daemons {
		waitReady(t, ctx, d, fmt.Sprintf("lb%d", i+1))
	}
	svc := api.Service{Name: "udp-bench", VIP: vip.String(), Port: cpuPort, Protocol: api.ProtocolUDP, Mode: api.ModeFullNAT,
		Select: api.SelectRoundRobin, IdleTimeoutSeconds: cpuIdle}
	for _, a := range endpoints {
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.String(), Port: udpPort})
	}
	for i, d := range lb.daemons {
		if err := d.Client.CreateService(ctx, svc); err != nil {
			t.Fatalf("lb%d: create %s: %v", i+1, svc.Name, err)
		}
	}
	isolateNode(t, ctx, lb.topo, lb.daemons[0].Pid())

	type result struct {
		flows, failed int
		busy, daemon  time.Duration
		counts        daemonCounts
		err           error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		counted := func() (c daemonCounts, err error) {
			err = lb.topo.Nodes[0].Do(func() error {
				c.alloc, err = totalAlloc(ctx, profilingAddr)
				return err
			})
			if err != nil || !withHA {
				return c, err
			}
			// The API from a goroutine of its own: this one is locked
			// to the client's namespace.
			got := make(chan error, 1)
			go func() {
				st, err := lb.daemons[0].Client.HA(ctx)
				if err == nil {
					c.sent, c.resent = st.RecordsSent, st.RecordsResent
				}
				got <- err
			}()
			return c, <-got
		}
		r.err = lb.topo.Client.Do(func() error {
			return paceFlows(ctx, netip.AddrPortFrom(vip, cpuPort), cpuFlowRate, cpuWarmup, cpuWindow, lb.daemons[0].Pid(), counted, &r.flows, &r.failed, &r.busy, &r.daemon, &r.counts)
		})
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The figure is the sync's steady state: a connection that dropped
	// and came back (a bulk resync) would be another measurement.
	if n := strings.Count(lb.daemons[0].Log(), "sync peer connected"); withHA && n != 1 {
		t.Fatalf("lb1's sync connection came up %d times, want once:\n%s", n, digest(lb.daemons[0].Log(), 20, 25))
	}
	checkFlowsAnswered(t, r.flows, r.failed)
	us := float64(r.busy.Microseconds()) / float64(r.flows)
	daemonUs := float64(r.daemon.Microseconds()) / float64(r.flows)
	perFlow := float64(r.counts.sent) / float64(r.flows)
	resentPerFlow := float64(r.counts.resent) / float64(r.flows)
	allocKB := float64(r.counts.alloc) / 1024 / float64(r.flows)
	t.Logf("withHA=%v: %d flows in %v (%d unanswered), lb1's CPU %v busy: %.1f us a flow (its daemon %.1f, allocating %.2f KiB); %d records sent (%.2f a flow), %d of them again; load %s",
		withHA, r.flows, cpuWindow, r.failed, r.busy, us, daemonUs, allocKB, r.counts.sent, perFlow, r.counts.resent, figure.LoadAvg())
	return cpuRound{usPerFlow: us, recordsPerFlow: max(perFlow, 1e-9), resentPerFlow: resentPerFlow, daemonUsPerFlow: daemonUs, allocKBPerFlow: allocKB}
}

// checkFlowsAnswered fails a round whose flows did not get through: it
// measures something else. 1 in 1,000 may lose a datagram on a busy lab.
func checkFlowsAnswered(t *testing.T, flows, failed int) {
	t.Helper()
	if flows < int(cpuFlowRate*cpuWindow.Seconds()*0.9) || failed*1000 > flows {
		t.Fatalf("%d flows answered and %d not in %v, want %d a second", flows, failed, cpuWindow, cpuFlowRate)
	}
}

// recordsSent is the daemon's telcolb_ha_records_sent_total.
func recordsSent(t *testing.T, ctx context.Context, d *l4.Daemon) uint64 {
	t.Helper()
	st, err := d.Client.HA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.RecordsSent
}

// daemonCounts are lb1's daemon's running totals, read at the window's
// start and end: what it allocated (Go's TotalAlloc), the records its sync
// sent (telcolb_ha_records_sent_total, resends included) and sent again
// (telcolb_ha_records_resent_total); no records without HA.
type daemonCounts struct{ alloc, sent, resent uint64 }

func (c daemonCounts) minus(o daemonCounts) daemonCounts {
	return daemonCounts{alloc: c.alloc - o.alloc, sent: c.sent - o.sent, resent: c.resent - o.resent}
}

// isolateNode gives CPU nodeCPU to lb1 (its receive processing and the
// processes node, lb1's daemon: telcolb or conntrackd) and restCPU to
// everything else of the lab (see TestBenchHASyncCPUPerFlow); the test
// process gets its CPUs back at the end.
func isolateNode(t *testing.T, ctx context.Context, topo *bgp.Topo, node ...int) {
	t.Helper()
	for _, h := range topo.Lab.Hosts() {
		cpu := restCPU
		if h == topo.Nodes[0] {
			cpu = nodeCPU
		}
		if err := bench.SteerReceive(ctx, h, cpu); err != nil {
			t.Fatal(err)
		}
	}
	self := os.Getpid()
	kids, err := bench.Children(self)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, runtime.NumCPU())
	for i := range all {
		all[i] = i
	}
	t.Cleanup(func() {
		if err := bench.PinProcess(self, all...); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	for _, pid := range append(kids, self) {
		if err := bench.PinProcess(pid, restCPU); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range node {
		if err := bench.PinProcess(pid, nodeCPU); err != nil {
			t.Fatal(err)
		}
	}
}

// paceFlows opens new UDP flows to vip, rate a second, each one question
// and its answer on a socket of its own, for warmup and then window; it
// counts the flows answered and not answered in the window, CPU nodeCPU's
// busy time over it, the CPU time of the process daemon (0: none) and the change
// of its counts (counted: their running totals). It runs on one thread
// (in the client's namespace): a flow whose answer is late only delays
// the next ones, the pace catches up.
func paceFlows(ctx context.Context, vip netip.AddrPort, rate int, warmup, window time.Duration, daemon int, counted func() (daemonCounts, error),
	flows, failed *int, busy, daemonCPU *time.Duration, counts *daemonCounts) error {
	dst := net.UDPAddrFromAddrPort(vip)
	buf := make([]byte, 512)
	ports := sourcePorts{next: flowPortsFrom}
	start := time.Now()
	end := start.Add(warmup + window)
	measuring := false
	var busy0, daemon0 time.Duration
	var counts0 daemonCounts
	sample := func() (b, d time.Duration, c daemonCounts, err error) {
		// The counts first: the CPU the daemon spends answering is
		// outside the window at its start, inside at its end (a few ms
		// in 30 s).
		if c, err = counted(); err != nil {
			return 0, 0, c, err
		}
		if b, err = bench.CPUBusy(nodeCPU); err != nil {
			return 0, 0, c, err
		}
		if daemon == 0 {
			return b, 0, c, nil // nftables alone: no process of lb1's
		}
		d, err = bench.ProcessCPU(daemon)
		return b, d, c, err
	}
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		due := start.Add(time.Duration(n) * time.Second / time.Duration(rate))
		now := time.Now()
		if !measuring && now.After(start.Add(warmup)) {
			b, d, c, err := sample()
			if err != nil {
				return err
			}
			measuring, busy0, daemon0, counts0 = true, b, d, c
		}
		if !due.Before(end) {
			b, d, c, err := sample()
			if err != nil {
				return err
			}
			*busy, *daemonCPU, *counts = b-busy0, d-daemon0, c.minus(counts0)
			return nil
		}
		if d := due.Sub(now); d > 0 {
			time.Sleep(d)
		}
		err := oneFlow(dst, &ports, buf)
		if !measuring {
			continue
		}
		if err != nil {
			*failed++
		} else {
			*flows++
		}
	}
}

// The flows' source ports, taken in turn: each flow's 5-tuple is one no
// live conntrack entry holds, a new flow for the node. The kernel's
// choice of an ephemeral port is random, and with about 12,000 flows live
// (2,000 a second, each until its 5 s idle timeout and the ageing round
// after it) among its 28,000 ports, a third of new sockets drew the tuple
// of a live flow: the node saw a packet of a known flow, not a new one
// (measured: 1.32 records made per flow where a new flow makes 2, and the
// refresh sent 0.64 for the old flows that carried traffic again). 40,000
// ports in turn come back after 20 s at 2,000 a second, their entries
// long gone.
const (
	flowPortsFrom = 20000
	flowPortsTo   = 60000 // exclusive
)

type sourcePorts struct{ next int }

// take is the next port of the range, wrapping.
func (p *sourcePorts) take() int {
	port := p.next
	p.next++
	if p.next == flowPortsTo {
		p.next = flowPortsFrom
	}
	return port
}

// oneFlow asks once on a new socket, from the next source port of ports (a
// new flow), and waits up to 200 ms for the answer. A port in use here is
// passed over.
func oneFlow(dst *net.UDPAddr, ports *sourcePorts, buf []byte) error {
	var (
		c   *net.UDPConn
		err error
	)
	for range 100 {
		c, err = net.DialUDP("udp", &net.UDPAddr{Port: ports.take()}, dst)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("dial %v: %w", dst, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ask\n")); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if _, err := parseUDPReply(buf[:n]); err != nil {
		return errors.Join(err, fmt.Errorf("flow to %v", dst))
	}
	return nil
}

// totalAlloc is the bytes the daemon serving its runtime profiles on addr
// has allocated since it started (Go's MemStats.TotalAlloc, which the
// text form of the allocations profile ends with). Called in the
// daemon's namespace: the connection is made on this thread, not by
// net/http's dialing goroutine.
func totalAlloc(ctx context.Context, addr string) (uint64, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("profiles: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /debug/pprof/allocs?debug=1 HTTP/1.0\r\nHost: lb\r\n\r\n"); err != nil {
		return 0, fmt.Errorf("profiles: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, fmt.Errorf("profiles: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("profiles: status %d, %v", resp.StatusCode, err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "# TotalAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("profiles: no TotalAlloc in the allocations profile")
}
