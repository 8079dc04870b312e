// Package l2 is the lab for L2 VIP announcement: a client and several LB
// nodes on one bridged segment; each node runs the L2 announcer (ha/member
// liveness + ha/l2 ARP/NDP answering, in cmd/l2node) and a UDP echo on the
// VIPs, which are local addresses of every node's dummy interface. Only the
// owner answers ARP / NS, so the client's traffic reaches one node; failover
// moves the VIP with a gratuitous ARP / unsolicited NA burst.
package l2

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// Lab is the built topology.
type Lab struct {
	L          *lab.Lab
	Client     *lab.Host
	Nodes      []*lab.Host
	Names      []string
	VIP4, VIP6 netip.Addr
	bin        string
	t          testing.TB

	mu    sync.Mutex
	procs map[string]*lab.Proc
}

const hbPort = 7946

func nodeAddr(i int, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x99, 15: byte(11 + i)})
	}
	return netip.AddrFrom4([4]byte{10, 99, 0, byte(11 + i)})
}

// BuildL2Node compiles cmd/l2node into a temporary directory.
func BuildL2Node(t testing.TB, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "l2node")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/telcolb/telcolb/scenarios/l2/cmd/l2node")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build l2node: %v\n%s", err, out)
	}
	return bin
}

// Build creates the client and n nodes on a bridge, picks an IPv4 and an
// IPv6 VIP that the first node owns while all are alive, and puts both VIPs
// on every node's dummy interface. Nodes are not started.
func Build(t testing.TB, ctx context.Context, bin string, n int) *Lab {
	t.Helper()
	l := lab.NewEmpty(t)
	x := &Lab{L: l, bin: bin, t: t, procs: map[string]*lab.Proc{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	sw, err := l.AddHost(ctx, "sw")
	must(err)
	_, err = sw.AddBridge(ctx, "br0")
	must(err)
	hosts := []string{"client"}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("n%d", i+1)
		hosts = append(hosts, name)
		x.Names = append(x.Names, name)
	}
	for i, name := range hosts {
		h, err := l.AddHost(ctx, name)
		must(err)
		must(h.Sysctl("net.ipv6.conf.all.accept_dad", "0"))
		must(h.Sysctl("net.ipv6.conf.default.accept_dad", "0"))
		// A node whose link goes down and up keeps its IPv6 addresses (and
		// routes), as a production node with static addresses would.
		must(h.Sysctl("net.ipv6.conf.all.keep_addr_on_down", "1"))
		must(h.Sysctl("net.ipv6.conf.default.keep_addr_on_down", "1"))
		port := fmt.Sprintf("p%d", i)
		_, _, err = l.Connect(ctx, h, "eth0", sw, port)
		must(err)
		must(sw.AttachToBridge(ctx, port, "br0"))
		if i == 0 {
			x.Client = h
			must(h.AddAddr(ctx, "eth0", netip.MustParsePrefix("10.99.0.1/24")))
			must(h.AddAddr(ctx, "eth0", netip.MustParsePrefix("fd00:99::1/64")))
			continue
		}
		x.Nodes = append(x.Nodes, h)
		must(h.AddAddr(ctx, "eth0", netip.PrefixFrom(nodeAddr(i-1, false), 24)))
		must(h.AddAddr(ctx, "eth0", netip.PrefixFrom(nodeAddr(i-1, true), 64)))
	}
	// VIPs in the client's subnet (it resolves them with ARP / NS), owned by
	// n1. With more than one node, they are also chosen so that a split
	// brain between n1 and the others (fencing, issue 15) shows both
	// outcomes of the tie-breaker: n1 keeps the IPv4 VIP and yields the IPv6
	// one to the survivor that takes it over.
	splitWinner := func(v netip.Addr) string {
		if n < 2 {
			return x.Names[0]
		}
		other := x.NodeIndex(member.Owner(x.Names[1:], v))
		w := member.ClaimWinner(v, x.MAC(0), x.MAC(other))
		if w == x.MAC(0) {
			return x.Names[0]
		}
		return x.Names[other]
	}
	for k := 100; k < 250 && (!x.VIP4.IsValid() || !x.VIP6.IsValid()); k++ {
		v4 := netip.AddrFrom4([4]byte{10, 99, 0, byte(k)})
		v6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x99, 14: 1, 15: byte(k)})
		if !x.VIP4.IsValid() && member.Owner(x.Names, v4) == x.Names[0] && (n < 2 || splitWinner(v4) == x.Names[0]) {
			x.VIP4 = v4
		}
		if !x.VIP6.IsValid() && member.Owner(x.Names, v6) == x.Names[0] && (n < 2 || splitWinner(v6) != x.Names[0]) {
			x.VIP6 = v6
		}
	}
	if !x.VIP4.IsValid() || !x.VIP6.IsValid() {
		t.Fatalf("no VIP pair found for the lab (IPv4 %v, IPv6 %v)", x.VIP4, x.VIP6)
	}
	for _, h := range x.Nodes {
		// Kernels without the dummy driver (this project's CI) get an ifb
		// device instead, as ha/localvip does: either only holds addresses.
		if err := h.IP(ctx, "link", "add", "telcolb0", "type", "dummy"); err != nil {
			must(h.IP(ctx, "link", "add", "telcolb0", "type", "ifb"))
		}
		must(h.IP(ctx, "link", "set", "telcolb0", "up"))
		must(h.AddAddr(ctx, "telcolb0", netip.PrefixFrom(x.VIP4, 32)))
		must(h.AddAddr(ctx, "telcolb0", netip.PrefixFrom(x.VIP6, 128)))
	}
	return x
}

// MAC returns node i's segment MAC.
func (x *Lab) MAC(i int) string { return x.Nodes[i].Iface("eth0").MAC.String() }

// NodeIndex returns the index of the node named name.
func (x *Lab) NodeIndex(name string) int { return slices.Index(x.Names, name) }

// Start runs node i's l2node and waits until it is up.
func (x *Lab) Start(ctx context.Context, i int) {
	x.t.Helper()
	var members []string
	for k, name := range x.Names {
		members = append(members, fmt.Sprintf("%s=%s", name, netip.AddrPortFrom(nodeAddr(k, false), hbPort)))
	}
	args := []string{"--name", x.Names[i], "--members", strings.Join(members, ","),
		"--interfaces", "eth0", "--vips", x.VIP4.String() + "," + x.VIP6.String()}
	if os.Getenv("TELCOLB_L2_FENCING") == "off" {
		// To see the split-brain check fail without fencing.
		args = append(args, "--fencing=false")
	}
	p, err := x.Nodes[i].Start(x.bin, args...)
	if err != nil {
		x.t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, `"ready":true`); err != nil {
		x.t.Fatalf("l2node %s: %v\n%s", x.Names[i], err, p.Stderr())
	}
	x.mu.Lock()
	x.procs[x.Names[i]] = p
	x.mu.Unlock()
}

// Proc returns node i's running l2node.
func (x *Lab) Proc(i int) *lab.Proc {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.procs[x.Names[i]]
}

// Kill sends SIGKILL to node i's l2node and waits for it to be gone.
func (x *Lab) Kill(i int) {
	p := x.Proc(i)
	_ = p.Signal(syscall.SIGKILL)
	<-p.Done()
}

// FlushClientNeigh makes the client resolve the VIPs again.
func (x *Lab) FlushClientNeigh(ctx context.Context) {
	for _, v := range []netip.Addr{x.VIP4, x.VIP6} {
		_, _ = x.Client.Exec(ctx, "ip", "neigh", "flush", "to", v.String(), "dev", "eth0")
	}
}

// Prober sends a UDP request every interval to a VIP's echo and records when
// answers come back.
type Prober struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent map[uint64]time.Time
	got  []time.Time
	stop chan struct{}
	done chan struct{}
}

// StartProber begins probing vip:7 from the client every interval.
func (x *Lab) StartProber(vip netip.Addr, interval time.Duration) (*Prober, error) {
	var conn *net.UDPConn
	err := x.Client.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(vip, 7)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("prober to %v: %w", vip, err)
	}
	p := &Prober{conn: conn, sent: map[uint64]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.read()
	go p.send(interval)
	return p, nil
}

func (p *Prober) send(interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	var seq uint64
	for {
		select {
		case <-p.stop:
			close(p.done)
			return
		case <-tk.C:
			seq++
			b := binary.BigEndian.AppendUint64(nil, seq)
			// A failed send (no neighbour yet) is a lost probe, like any other.
			_, _ = p.conn.Write(b)
		}
	}
}

func (p *Prober) read() {
	buf := make([]byte, 64)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			if strings.Contains(err.Error(), "closed") {
				return
			}
			continue // ICMP errors surface as read errors on a connected socket
		}
		if n == 8 {
			p.mu.Lock()
			p.got = append(p.got, time.Now())
			p.mu.Unlock()
		}
	}
}

// Stop ends probing.
func (p *Prober) Stop() {
	close(p.stop)
	<-p.done
	p.conn.Close()
}

// Replies returns the answer times so far.
func (p *Prober) Replies() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.got...)
}

// WaitAnswered waits until an answer arrives after t.
func (p *Prober) WaitAnswered(ctx context.Context, after time.Time) (time.Time, error) {
	for {
		r := p.Replies()
		if i, _ := slices.BinarySearchFunc(r, after, func(a, b time.Time) int { return a.Compare(b) }); i < len(r) {
			return r[i], nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no answer after %v: %w", after.Format(time.StampMilli), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Blackout returns the longest gap between consecutive answers from the
// last answer before t (the failure) to the last answer before end: the
// service interruption the failure caused. -1 when there is no answer on
// either side of t.
func (p *Prober) Blackout(t, end time.Time) time.Duration {
	r := p.Replies()
	i, _ := slices.BinarySearchFunc(r, t, func(a, b time.Time) int { return a.Compare(b) })
	if i == 0 || i >= len(r) {
		return -1
	}
	var worst time.Duration
	for k := i; k < len(r) && !r[k].After(end); k++ {
		worst = max(worst, r[k].Sub(r[k-1]))
	}
	return worst
}

// Dump logs the state that explains a failed check: neighbour tables,
// addresses and each node's announcer log.
func (x *Lab) Dump(ctx context.Context) {
	out, _ := x.Client.Exec(ctx, "ip", "neigh", "show")
	x.t.Logf("client neighbours:\n%s", out)
	for i, h := range x.Nodes {
		a, _ := h.Exec(ctx, "ip", "-br", "addr")
		r, _ := h.Exec(ctx, "ip", "neigh", "show")
		x.t.Logf("%s (%s) addresses:\n%s neighbours:\n%s", x.Names[i], x.MAC(i), a, r)
		if p := x.Proc(i); p != nil {
			x.t.Logf("%s log:\n%s", x.Names[i], p.Stderr())
		}
	}
}

// ClientNeighMAC returns the MAC the client's neighbour table holds for vip ("" if none).
func (x *Lab) ClientNeighMAC(ctx context.Context, vip netip.Addr) string {
	out, _ := x.Client.Exec(ctx, "ip", "neigh", "show", "to", vip.String(), "dev", "eth0")
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// WaitClientUses waits until the client resolves vip to node i's MAC.
func (x *Lab) WaitClientUses(ctx context.Context, vip netip.Addr, i int, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		got := x.ClientNeighMAC(ctx, vip)
		if got == x.MAC(i) {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("client resolves %v to %q, want %s's %s", vip, got, x.Names[i], x.MAC(i))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
