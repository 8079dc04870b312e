package ha

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// The peer of TestBenchHASyncCPUPerFlow: the same flows through the same
// lab with lb1 a Linux router doing what telcolb's fullnat service does
// (nftables DNAT to the two endpoints in turn, SNAT to its own address),
// alone and with conntrackd syncing its conntrack table to lb2. conntrackd
// is the anchor issue 15 names: FTFW mode (sequence numbers, an
// acknowledgement window, a resend queue), event-driven from the kernel's
// conntrack events, over UDP on the LAN. Its conntrack entries expire
// after cpuIdle seconds idle, as telcolb's do.
//
// What the node's CPU holds then: lb1's receive processing (netfilter's
// conntrack and NAT, and the events it sends conntrackd) and conntrackd
// itself. The kernel's conntrack garbage collector runs in a kworker that
// may run on either CPU: the expiries' share of it is outside the figure
// (telcolb's ageing is inside its daemon's), which favours the peer. The
// kernel counts CPU time by ticks (no CONFIG_IRQ_TIME_ACCOUNTING): softirq
// work run on a process's system calls is charged to that process, so
// conntrackd's own figure, like telcolb's daemon's, holds some of the
// node's forwarding; the node's busy time is exact.

// conntrackdConf is conntrackd's configuration for the lb node at self,
// syncing with the one at peer over dev; its files live in dir.
func conntrackdConf(dir string, self, peer netip.Addr, dev string) string {
	return fmt.Sprintf(`Sync {
	Mode FTFW {
		DisableExternalCache Off
	}
	UDP {
		IPv4_address %[2]s
		IPv4_Destination_Address %[3]s
		Port 3780
		Interface %[4]s
		SndSocketBuffer 4194304
		RcvSocketBuffer 4194304
		Checksum on
	}
}
General {
	HashSize 32768
	HashLimit 262144
	LogFile %[1]s/conntrackd.log
	Syslog off
	LockFile %[1]s/lock
	UNIX {
		Path %[1]s/ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 16777216
	Filter From Userspace {
		Protocol Accept {
			UDP
			TCP
			SCTP
		}
	}
}
`, dir, self, peer, dev)
}

// nftFullNAT is lb1's ruleset: the bench service's VIP and port to the
// endpoints in turn (round robin, as the telcolb service), its source
// rewritten to lb1's address (fullnat).
func nftFullNAT(self netip.Addr) string {
	return fmt.Sprintf(`table ip bench {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s udp dport %[2]d dnat to numgen inc mod 2 map { 0 : %[3]s, 1 : %[4]s } : %[5]d
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr { %[3]s, %[4]s } udp dport %[5]d snat to %[6]s
	}
}
`, vip, cpuPort, endpoints[0], endpoints[1], udpPort, self)
}

// upNftLab builds the bench lab with lb1 (and lb2) as nftables routers,
// conntrackd on both when withSync; it returns conntrackd's process on
// lb1 and its configuration file (nil and "" alone).
func upNftLab(t *testing.T, ctx context.Context, withSync bool) (*bgp.Topo, *lab.Proc, string) {
	t.Helper()
	topo := buildTopo(t, ctx)
	for i, a := range endpoints {
		s, err := l4.ServeUDP(topo.BE, netip.AddrPortFrom(a, udpPort).String(), fmt.Sprintf("ep%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	lb := &lab2{topo: topo}
	if err := lb.routeTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var (
		lb1     *lab.Proc
		lb1Conf string
	)
	for i, h := range topo.Nodes {
		self := bgp.NodeAddr(i+1, 0)
		// What telcolb's daemon does on its node (upLabWith checks it).
		if err := h.NoRedirects(); err != nil {
			t.Fatal(err)
		}
		for _, s := range [][2]string{
			// The bench service's idle timeout, for the kernel's
			// entries too (a UDP flow that saw its answer is a
			// "stream" only from its third packet: both timeouts).
			{"net.netfilter.nf_conntrack_udp_timeout", fmt.Sprint(cpuIdle)},
			{"net.netfilter.nf_conntrack_udp_timeout_stream", fmt.Sprint(cpuIdle)},
		} {
			if err := h.Sysctl(s[0], s[1]); err != nil {
				t.Fatal(err)
			}
		}
		rules := filepath.Join(dir, fmt.Sprintf("lb%d.nft", i+1))
		if err := os.WriteFile(rules, []byte(nftFullNAT(self)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := h.Exec(ctx, "nft", "-f", rules); err != nil {
			t.Fatalf("lb%d: nft -f: %v: %s", i+1, err, out)
		}
		if !withSync {
			continue
		}
		cd := filepath.Join(dir, fmt.Sprintf("conntrackd-lb%d", i+1))
		if err := os.MkdirAll(cd, 0o700); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(cd, "conntrackd.conf")
		if err := os.WriteFile(conf, []byte(conntrackdConf(cd, self, bgp.NodeAddr(2-i, 0), "eth0")), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := h.Start("conntrackd", "-C", conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = p.Stop()
			if t.Failed() {
				log, _ := os.ReadFile(filepath.Join(cd, "conntrackd.log"))
				t.Logf("lb%d's conntrackd log:\n%s", i+1, log)
			}
		})
		if err := waitConntrackd(ctx, h, conf); err != nil {
			t.Fatalf("lb%d: %v", i+1, err)
		}
		if i == 0 {
			lb1, lb1Conf = p, conf
		}
	}
	return topo, lb1, lb1Conf
}

// measureNftCPU runs one round of TestBenchHASyncCPUPerFlow's flows on a
// fresh nftables lab, conntrackd syncing or not, and returns lb1's CPU
// per flow (and conntrackd's own).
func measureNftCPU(t *testing.T, withSync bool) cpuRound {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topo, ctd, conf := upNftLab(t, ctx, withSync)
	pid := 0 // nftables alone: no process of lb1's
	var pins []int
	if ctd != nil {
		pid = ctd.Cmd.Process.Pid
		pins = append(pins, pid)
	}
	isolateNode(t, ctx, topo, pins...)
	// The entries conntrackd took in (counts.sent): a round in which it
	// missed flows measured less than the sync of every flow.
	counted := func() (c daemonCounts, err error) {
		if withSync {
			c.sent, err = conntrackdCreated(ctx, topo.Nodes[0], conf)
		}
		return c, err
	}
	var (
		flows, failed int
		busy, daemon  time.Duration
		counts        daemonCounts
	)
	err := topo.Client.Do(func() error {
		return paceFlows(ctx, netip.AddrPortFrom(vip, cpuPort), cpuFlowRate, cpuWarmup, cpuWindow, pid, counted, &flows, &failed, &busy, &daemon, &counts)
	})
	if err != nil {
		t.Fatal(err)
	}
	checkFlowsAnswered(t, flows, failed)
	if seen := float64(counts.sent) / float64(flows); withSync && seen < 0.9 {
		t.Fatalf("lb1's conntrackd took in %d entries for %d flows: it missed flows", counts.sent, flows)
	}
	us := float64(busy.Microseconds()) / float64(flows)
	daemonUs := float64(daemon.Microseconds()) / float64(flows)
	t.Logf("nftables, conntrackd=%v: %d flows in %v (%d unanswered), lb1's CPU %v busy: %.1f us a flow (conntrackd %.1f, %d entries taken in); load %s",
		withSync, flows, cpuWindow, failed, busy, us, daemonUs, counts.sent, figure.LoadAvg())
	return cpuRound{usPerFlow: us, daemonUsPerFlow: daemonUs}
}

// waitConntrackd waits until the conntrackd of conf answers on its
// control socket with its statistics.
func waitConntrackd(ctx context.Context, h *lab.Host, conf string) error {
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err = conntrackdCreated(ctx, h, conf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("conntrackd did not come up: %w", err)
}

// conntrackdCreated is how many conntrack entries lb1's conntrackd has
// taken into its internal cache (its "-s" statistics): one a flow when it
// saw them all.
func conntrackdCreated(ctx context.Context, h *lab.Host, conf string) (uint64, error) {
	out, err := h.Exec(ctx, "conntrackd", "-C", conf, "-s")
	if err != nil {
		return 0, fmt.Errorf("conntrackd -s: %v: %s", err, out)
	}
	return parseConntrackdCreated(string(out))
}

// parseConntrackdCreated reads "connections created" of the "cache
// internal" section of conntrackd's statistics.
func parseConntrackdCreated(s string) (uint64, error) {
	_, rest, ok := strings.Cut(s, "cache internal:")
	if !ok {
		return 0, fmt.Errorf("no internal cache in conntrackd's statistics:\n%s", s)
	}
	for _, l := range strings.Split(rest, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "connections created:"); ok {
			var n uint64
			if _, err := fmt.Sscan(v, &n); err != nil {
				return 0, fmt.Errorf("conntrackd's statistics: %q: %w", l, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no \"connections created\" in conntrackd's statistics:\n%s", s)
}

// conntrackd 1.4.7's "-s" statistics, as lb1's gave them.
const conntrackdStats = `cache internal:
current active connections:	       23964
connections created:		       59999	failed:	           0
connections updated:		       59999	failed:	           0
connections destroyed:		       36035	failed:	           0

cache external:
current active connections:	           0
connections created:		           7	failed:	           0
connections updated:		           0	failed:	           0
connections destroyed:		           0	failed:	           0

UDP traffic (active device=eth0):
              212400 Bytes sent                 2400 Bytes recv
                1200 Pckts sent                  200 Pckts recv
                   0 Error send                    0 Error recv
`

func TestParseConntrackdCreated(t *testing.T) {
	n, err := parseConntrackdCreated(conntrackdStats)
	if err != nil || n != 59999 {
		t.Fatalf("got %d, %v; want the internal cache's 59999", n, err)
	}
	// The external cache's count is not the internal one's.
	if _, err := parseConntrackdCreated(strings.Replace(conntrackdStats, "cache internal:", "", 1)); err == nil {
		t.Fatal("statistics without an internal cache parsed")
	}
	if _, err := parseConntrackdCreated("cache internal:\nconnections created:\tmany\n"); err == nil {
		t.Fatal("a count that is no number parsed")
	}
}
