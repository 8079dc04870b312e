package vm_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/scenarios/vm"
)

// One side of the N2 transport benchmark: a segment 10.79.<n>.0/24 with
// the VM's NIC at .1 and the N2 VIP at .100, a gNB at .2 and an AMF at .3,
// both usrsctp in their own lab namespaces.
type n2BenchSide struct {
	name, transport string
	n               int
	gnb             *lab.Host
	// in runs a command in the guest network namespace of this side's
	// daemon ("" for the guest's own).
	in string
}

func (s n2BenchSide) addr(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 79, byte(s.n), byte(host)})
}
func (s n2BenchSide) vip() netip.Addr { return s.addr(100) }

// TestBenchN2KernelVsUsrsctpInVM measures the N2 proxy's messages per second
// on kernel SCTP and on usrsctp inside the same Debian 6.1 VM, under the
// same load, in interleaved rounds. Two telcolb daemons run in the VM:
// --n2-transport=kernel in the guest's own network namespace (NIC eth0),
// --n2-transport=userspace in a second guest namespace holding NIC eth1.
// usrsctp needs a namespace of its own: its raw socket sees every SCTP
// packet of its namespace, and the kernel's SCTP stack answers the
// usrsctp side's packets as out of the blue (ABORT), so in that namespace
// a tc filter drops the kernel's ABORTs and SHUTDOWN COMPLETEs on eth1's
// egress (usrsctp sends none during a run). The gNB and AMF simulators run
// on the host (usrsctp, native speed), so the emulated guest is the
// bottleneck: the CPU is emulated (TCG), only the ratio means anything.
func TestBenchN2KernelVsUsrsctpInVM(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	vm.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	bins, err := vm.BuildGo(ctx, t.TempDir(), true, "github.com/telcolb/telcolb/cmd/telcolb", "github.com/telcolb/telcolb/cmd/telcolbctl")
	if err != nil {
		t.Fatal(err)
	}
	files := hostTools(t)
	for name, p := range bins {
		files["/usr/bin/"+name] = p
	}
	mods := append(append(append([]string{}, vm.SCTPModules...), vm.DatapathModules...), "cls_u32", "act_gact")
	img := vm.TestImage(t, mods, files)
	simDir := t.TempDir()
	if err := n2.BuildCmds(ctx, simDir, "amfsim", "gnbsim"); err != nil {
		t.Fatal(err)
	}

	l := lab.NewEmpty(t)
	sw, err := l.AddHost(ctx, "sw")
	if err != nil {
		t.Fatal(err)
	}
	node, err := l.AddHost(ctx, "n2b")
	if err != nil {
		t.Fatal(err)
	}
	sides := []*n2BenchSide{{name: "kernel", transport: "kernel", n: 1}, {name: "usrsctp", transport: "userspace", n: 2}}
	for i, s := range sides {
		br := fmt.Sprintf("br%d", s.n)
		if _, err := sw.AddBridge(ctx, br); err != nil {
			t.Fatal(err)
		}
		attach := func(h *lab.Host, ifname, port string) {
			if _, _, err := l.Connect(ctx, h, ifname, sw, port); err != nil {
				t.Fatal(err)
			}
			if err := sw.AttachToBridge(ctx, port, br); err != nil {
				t.Fatal(err)
			}
		}
		attach(node, fmt.Sprintf("eth%d", i), fmt.Sprintf("n%d", s.n))
		if i == 0 { // eth1 is configured inside its guest namespace
			for _, a := range []int{1, 100} {
				if err := node.AddAddr(ctx, "eth0", netip.PrefixFrom(s.addr(a), 24)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, peer := range []struct {
			role string
			host int
		}{{"gnb", 2}, {"amf", 3}} {
			h, err := l.AddHost(ctx, fmt.Sprintf("%s%d", peer.role, s.n))
			if err != nil {
				t.Fatal(err)
			}
			attach(h, "eth0", fmt.Sprintf("%s%d", peer.role, s.n))
			if err := h.AddAddr(ctx, "eth0", netip.PrefixFrom(s.addr(peer.host), 24)); err != nil {
				t.Fatal(err)
			}
			if err := h.DropProtoUnreachable(ctx); err != nil {
				t.Fatal(err)
			}
			if peer.role == "gnb" {
				s.gnb = h
				continue
			}
			amf, err := h.Start(filepath.Join(simDir, "amfsim"), "--name", "amf-"+s.name, "--listen", s.addr(3).String()+":38412",
				"--set-id", fmt.Sprint(n2SetID), "--pointer", "1")
			if err != nil {
				t.Fatal(err)
			}
			if err := amf.WaitOutput(ctx, `"event":"listening"`); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, err := vm.Replace(ctx, node, img, vm.SCTPTimers{}, vm.Config{Name: "n2bench", Logger: vm.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	vm.CloseOnCleanup(t, v)
	t.Logf("VM %s ready in %v", v.Kernel, v.BootToReady)

	// The usrsctp side's guest namespace: held by a sleeping process, eth1
	// moved in and configured, the kernel's out-of-the-blue answers dropped
	// (IPv4 without options: the first chunk's type is byte 32). iproute2's
	// ip and tc by path: busybox sh runs its own applets for bare names.
	// (/sys still shows the guest's first namespace: the carrier is read
	// with ip.)
	u := sides[1]
	if _, err := v.Sh(ctx, fmt.Sprintf(`set -e
setsid unshare -n sleep 1000000 > /dev/null 2>&1 < /dev/null & echo $! > /tmp/netns-u.pid
p=$(cat /tmp/netns-u.pid)
n=0; until [ "$(readlink /proc/$p/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do n=$((n+1)); [ $n -lt 600 ] || { echo "no new netns: $(readlink /proc/$p/ns/net)" >&2; exit 1; }; sleep 0.1; done
/bin/ip link set eth1 netns $p
nsenter -t $p -n sh -c 'set -e
/bin/ip link set lo up
/bin/ip addr add %[1]s/24 dev eth1
/bin/ip addr add %[2]s/24 dev eth1
/bin/ip link set eth1 up
/bin/tc qdisc add dev eth1 clsact
for chunk in 6 14; do /bin/tc filter add dev eth1 egress protocol ip u32 match ip protocol 132 0xff match u8 $chunk 0xff at 32 action drop; done
n=0; until /bin/ip -o link show eth1 | grep -q LOWER_UP; do n=$((n+1)); [ $n -lt 600 ] || { /bin/ip link show eth1 >&2; exit 1; }; sleep 0.1; done'`,
		u.addr(1), u.vip())); err != nil {
		t.Fatal(err)
	}
	u.in = "nsenter -t $(cat /tmp/netns-u.pid) -n "
	defer func() {
		if t.Failed() {
			for _, s := range sides {
				out, err := v.Sh(context.Background(), "tail -n 30 /tmp/telcolb-"+s.name+".out")
				t.Logf("%s daemon (in the VM): %v\n%s", s.name, err, out)
			}
		}
	}()
	// Both daemons start together: 6.1's verifier takes minutes over the
	// datapath under emulation (no --interfaces: the figure is the
	// proxy's; N2 traffic has no eBPF rule anyway).
	for k, s := range sides {
		if err := bg(ctx, v, "telcolb-"+s.name, s.in+"telcolb", "--n2-transport="+s.transport,
			fmt.Sprintf("--api-address=127.0.0.1:%d", 8091+k), "--state-dir=/var/lib/telcolb-"+s.name,
			"--bpf-pin-path=/sys/fs/bpf/telcolb-"+s.name, "--max-conns=1024"); err != nil {
			t.Fatal(err)
		}
	}
	for k, s := range sides {
		if err := waitFileFor(ctx, v, "telcolb-"+s.name, "telcolb running", 15*time.Minute); err != nil {
			t.Fatalf("%s daemon: %v", s.name, err)
		}
		if _, err := v.Sh(ctx, fmt.Sprintf("%stelcolbctl --server http://127.0.0.1:%d --token-file /var/lib/telcolb-%s/api-token create lb n2 --vip %s --port 38412 --protocol sctp --n2 --endpoints %s:38412",
			s.in, 8091+k, s.name, s.vip(), s.addr(3))); err != nil {
			t.Fatalf("%s: create the N2 service: %v", s.name, err)
		}
	}

	gnbsim := filepath.Join(simDir, "gnbsim")
	variant := func(s *n2BenchSide) figure.Variant {
		return figure.One(s.name, func(round int) (float64, error) {
			p, err := s.gnb.Start(gnbsim, "--name", "gnb-"+s.name, "--connect", s.vip().String()+":38412", "--bind", s.addr(2).String(),
				"--set-id", fmt.Sprint(n2SetID), "--ues", "16", "--wait", "60s",
				"--bench", "throughput", "--duration", "5s", "--window", "64")
			if err != nil {
				return 0, err
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := p.WaitOutput(wctx, `"event":"registered"`); err != nil {
				_ = p.Signal(syscall.SIGKILL)
				return 0, fmt.Errorf("registration: %w\n%s", err, p.Stderr())
			}
			if err := p.Signal(syscall.SIGUSR1); err != nil {
				return 0, err
			}
			if err := p.Wait(wctx); err != nil {
				return 0, fmt.Errorf("gnbsim: %w\n%s", err, p.Stderr())
			}
			var r n2.BlastResult
			if err := p.LastJSON("throughput", &r); err != nil {
				return 0, err
			}
			if r.Answered == 0 || r.Seconds <= 0 {
				return 0, fmt.Errorf("%d of %d answered in %.1fs", r.Answered, r.Sent, r.Seconds)
			}
			// Messages carried: each answered Uplink NAS crossed the proxy
			// and so did its answer. gnbsim stops collecting 1 s after the
			// last answer, which an emulated guest on a loaded host may
			// miss: what was never answered is logged, not counted.
			rate := float64(2*r.Answered) / r.Seconds
			t.Logf("round %d %s: %d of %d uplinks answered in %.2fs: %.0f messages/s", round, s.name, r.Answered, r.Sent, r.Seconds, rate)
			return rate, nil
		})
	}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 7, Tolerance: 0.1},
		[]figure.Variant{variant(sides[0]), variant(sides[1])},
		func(s *figure.Samples) []figure.Figure {
			return []figure.Figure{
				s.Measured("vm_n2_proxy_kernel_msgs_per_s", "msgs/s", figure.Above(0), "kernel"),
				s.Measured("vm_n2_proxy_usrsctp_msgs_per_s", "msgs/s", figure.Above(0), "usrsctp"),
				s.Ratio("vm_n2_proxy_kernel_vs_usrsctp_ratio", figure.AtLeast(1), "kernel", "usrsctp"),
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
	for _, s := range sides {
		out, _ := v.Sh(ctx, s.in+"cat /proc/net/sctp/snmp | grep -E 'SctpCurrEstab|SctpOutOfBlues|SctpAborteds'")
		t.Logf("%s side guest SCTP counters: %s", s.name, strings.Join(strings.Fields(out), " "))
	}
}
