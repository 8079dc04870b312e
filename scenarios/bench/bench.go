// Package bench measures telcolb in a namespace lab against the kernel's own
// ways of doing the same job: LB-side CPU per forwarded packet (telcolb vs
// nftables DNAT vs plain forwarding) and TCP throughput through the VIP (vs
// nftables DNAT). The figures are printed by TestBench* (TELCOLB_BENCH=1)
// through the figure harness (scenarios/bench/figure: interleaved rounds,
// medians with their spread) for `make bench` (scenarios/bench/run).
//
// Definitions used by the figures (all in one lab: client -> lb -> switch
// bridge -> one backend, veth offloads on):
//
//   - lab_cpu_ns_per_pkt_<variant>_<flows>: CPU time of the whole path per
//     UDP datagram (client stack, lb, bridge, backend ingress drop), steady
//     state, median over rounds. See Flood for why the sender thread's CPU
//     time plus ksoftirqd's is the whole path.
//   - LB-side cost of a variant: its figure minus plain kernel forwarding
//     (client addresses the backend directly, nothing in the lb but
//     routing), paired within a round. For telcolb it also includes what
//     its program costs packets that match no service
//     (lab_lb_cost_ns_per_pkt_telcolb_miss: plain forwarding with the
//     daemon attached minus detached, in adjacent phases), so the ratio is
//     against a world without telcolb.
//   - lab_lb_cost_ratio_telcolb_vs_nftables_<flows>: telcolb's (default,
//     DNAT mode) LB-side cost over nftables prerouting DNAT's.
//   - ..._xdpframes_<flows>: XDP mode with the lb fed xdp_frames (XDPGen)
//     as a NIC would feed it; lb work is a variant's path minus the path
//     that skips the lb (see cpuPerPacketXDPFrames).
//
// This file holds the pieces that do not need the lab: the UDP flood
// generator, CPU accounting, and the parsers of what the tools print;
// xdpgen.go the XDP frame generator.
package bench

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// FloodConfig describes a fixed-count UDP load from one IPv4 source.
type FloodConfig struct {
	Src, Dst netip.Addr
	DstPort  uint16
	// Flows distinct source ports SrcPortBase..SrcPortBase+Flows-1, sent
	// round robin so consecutive packets belong to different flows (the
	// realistic worst case for flow-table lookups).
	SrcPortBase uint16
	Flows       int
	Packets     int
	// Payload bytes per datagram (0 means 18: a minimum-size Ethernet frame).
	Payload int
	// Batch is the number of datagrams per sendmmsg (0 means 64).
	Batch int
}

func (c *FloodConfig) normalize() error {
	if !c.Src.Is4() || !c.Dst.Is4() {
		return fmt.Errorf("bench: flood: IPv4 source and destination required, got %v -> %v", c.Src, c.Dst)
	}
	if c.Flows < 1 || c.Flows > 65535-int(c.SrcPortBase)+1 || c.SrcPortBase == 0 {
		return fmt.Errorf("bench: flood: %d flows from port %d do not fit in 1..65535", c.Flows, c.SrcPortBase)
	}
	if c.Packets < 1 {
		return fmt.Errorf("bench: flood: Packets=%d, want > 0", c.Packets)
	}
	if c.Payload == 0 {
		c.Payload = 18
	}
	if c.Payload < 0 || c.Payload > 1400 {
		return fmt.Errorf("bench: flood: Payload=%d, want 0..1400", c.Payload)
	}
	if c.Batch == 0 {
		c.Batch = 64
	}
	if c.Batch < 1 || c.Batch > 1024 {
		return fmt.Errorf("bench: flood: Batch=%d, want 1..1024", c.Batch)
	}
	return nil
}

// FloodResult is what one flood cost the sending thread.
type FloodResult struct {
	Sent int
	// ThreadCPU is the sending thread's CPU time across the send loop.
	ThreadCPU time.Duration
}

// Flood sends cfg.Packets UDP datagrams through a raw IPv4 socket with
// sendmmsg batches. It must run on a locked OS thread already inside the
// sender's network namespace (lab.Host.Do does both); the raw socket lets
// one sendmmsg carry datagrams of many flows, which per-flow UDP sockets
// cannot.
//
// Why the thread's CPU time is the measure: a veth transmit queues the
// frame on the current CPU's backlog and the softirq that drains it runs
// when the sender re-enables bottom halves, still in the sender's context.
// So the whole path (client stack, lb forwarding and NAT, bridge, backend
// ingress drop) executes on this thread, and without
// CONFIG_IRQ_TIME_ACCOUNTING the scheduler charges that softirq time to it.
// What the softirq budget pushes to ksoftirqd is measured by the caller.
// Unlike /proc/stat this ignores other processes on a busy machine.
func Flood(cfg FloodConfig) (FloodResult, error) {
	if err := cfg.normalize(); err != nil {
		return FloodResult{}, err
	}
	pc, err := net.ListenPacket("ip4:udp", cfg.Src.String())
	if err != nil {
		return FloodResult{}, fmt.Errorf("bench: flood: raw socket: %w", err)
	}
	defer pc.Close()
	// Nothing should come back, but a full receive queue of stray UDP
	// copies must not cost anything either.
	if err := pc.(*net.IPConn).SetReadBuffer(4096); err != nil {
		return FloodResult{}, fmt.Errorf("bench: flood: read buffer: %w", err)
	}
	p := ipv4.NewPacketConn(pc)

	dst := &net.IPAddr{IP: net.IP(cfg.Dst.AsSlice())}
	pkts := make([][]byte, cfg.Flows)
	for i := range pkts {
		pkts[i] = UDPDatagram(cfg.Src, cfg.Dst, cfg.SrcPortBase+uint16(i), cfg.DstPort, make([]byte, cfg.Payload))
	}
	msgs := make([]ipv4.Message, cfg.Batch)
	for i := range msgs {
		msgs[i].Addr = dst
		msgs[i].Buffers = [][]byte{nil}
	}

	start, err := ThreadCPU()
	if err != nil {
		return FloodResult{}, err
	}
	sent, flow := 0, 0
	for sent < cfg.Packets {
		n := min(cfg.Batch, cfg.Packets-sent)
		for i := 0; i < n; i++ {
			msgs[i].Buffers[0] = pkts[flow]
			flow++
			if flow == len(pkts) {
				flow = 0
			}
		}
		w, err := p.WriteBatch(msgs[:n], 0)
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return FloodResult{Sent: sent}, fmt.Errorf("bench: flood: sendmmsg after %d datagrams: %w", sent, err)
		}
		if w < n {
			// Put the flows of the datagrams not sent back in turn.
			flow = ((flow-(n-w))%len(pkts) + len(pkts)) % len(pkts)
		}
		sent += w
	}
	end, err := ThreadCPU()
	if err != nil {
		return FloodResult{Sent: sent}, err
	}
	return FloodResult{Sent: sent, ThreadCPU: end - start}, nil
}

// UDPDatagram returns a UDP header and payload with a valid IPv4 checksum.
func UDPDatagram(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	cs := ^fold(udpSum(src, dst, b))
	if cs == 0 {
		cs = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(b[6:], cs)
	return b
}

// udpSum is the one's complement sum (unfolded) of the IPv4 pseudo-header
// and the UDP header and payload b, checksum field as it is in b.
func udpSum(src, dst netip.Addr, b []byte) uint32 {
	s, d := src.As4(), dst.As4()
	sum := uint32(0)
	for _, w := range [][]byte{s[:], d[:], {0, unix.IPPROTO_UDP}, b[4:6], b} {
		sum = onesAdd(sum, w)
	}
	return sum
}

func onesAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// ThreadCPU returns the calling OS thread's CPU time (the scheduler's
// nanosecond sum_exec_runtime, not tick samples).
func ThreadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("bench: thread cpu clock: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// PinThread binds the calling OS thread to cpu and returns a function that
// restores its previous affinity (the Go runtime reuses the thread).
func PinThread(cpu int) (restore func() error, err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("bench: get affinity: %w", err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("bench: pin to cpu %d: %w", cpu, err)
	}
	return func() error {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			return fmt.Errorf("bench: restore affinity: %w", err)
		}
		return nil
	}, nil
}

// KsoftirqdPID finds the ksoftirqd thread of cpu by scanning /proc.
func KsoftirqdPID(cpu int) (int, error) {
	want := fmt.Sprintf("ksoftirqd/%d", cpu)
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return 0, fmt.Errorf("bench: list /proc: %w", err)
	}
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil {
			continue // the process exited meanwhile
		}
		if strings.TrimSpace(string(b)) == want {
			return strconv.Atoi(filepath.Base(filepath.Dir(c)))
		}
	}
	return 0, fmt.Errorf("bench: no %s thread in /proc", want)
}

// TaskRuntime returns the CPU time of a task from /proc/<pid>/schedstat.
func TaskRuntime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: schedstat of %d: %w", pid, err)
	}
	return ParseSchedstat(string(b))
}

// ParseSchedstat parses /proc/<pid>/schedstat ("<run ns> <wait ns>
// <timeslices>") and returns the run time.
func ParseSchedstat(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return 0, fmt.Errorf("bench: schedstat %q: want 3 fields, got %d", s, len(f))
	}
	var v [3]uint64
	for i, x := range f {
		n, err := strconv.ParseUint(x, 10, 63)
		if err != nil {
			return 0, fmt.Errorf("bench: schedstat field %d %q: %w", i, x, err)
		}
		v[i] = n
	}
	return time.Duration(v[0]), nil
}

// ParseNftCounter returns the packets of the single named counter in the
// output of `nft -j list|reset counter ...`.
func ParseNftCounter(b []byte) (uint64, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string  `json:"name"`
				Packets *uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("bench: nft counter json: %w", err)
	}
	var found []uint64
	for _, o := range doc.Nftables {
		if o.Counter == nil {
			continue
		}
		if o.Counter.Packets == nil {
			return 0, fmt.Errorf("bench: nft counter %q has no packets field", o.Counter.Name)
		}
		found = append(found, *o.Counter.Packets)
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("bench: nft output holds %d counters, want 1", len(found))
	}
	return found[0], nil
}

// ParseIperf3 returns the receiver-side throughput in bit/s from
// `iperf3 -J` client output.
func ParseIperf3(b []byte) (float64, error) {
	var doc struct {
		Error string `json:"error"`
		End   struct {
			SumReceived *struct {
				Bps float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("bench: iperf3 json: %w", err)
	}
	if doc.Error != "" {
		return 0, fmt.Errorf("bench: iperf3: %s", doc.Error)
	}
	if doc.End.SumReceived == nil {
		return 0, errors.New("bench: iperf3 json has no end.sum_received")
	}
	if doc.End.SumReceived.Bps <= 0 {
		return 0, fmt.Errorf("bench: iperf3 received %g bit/s", doc.End.SumReceived.Bps)
	}
	return doc.End.SumReceived.Bps, nil
}
