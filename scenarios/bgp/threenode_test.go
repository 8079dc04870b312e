package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// spread asks the VIP from n new client sockets (n flows) and counts the
// answers per forwarding node (the source the backend saw).
func spread(t *testing.T, h *lab.Host, vip netip.Addr, n int) map[netip.Addr]int {
	t.Helper()
	out := map[netip.Addr]int{}
	for range n {
		r, err := l4.UDPAsk(context.Background(), h, netip.AddrPortFrom(vip, EchoPort).String())
		if err != nil {
			t.Fatalf("%s: %v", vip, err)
		}
		out[r.Source.Addr().Unmap()]++
	}
	return out
}

func nodes(m map[netip.Addr]int) []netip.Addr {
	var out []netip.Addr
	for a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// TestBirdThreeNodes: three nodes announce the same IPv4 and IPv6 VIPs with
// equal attributes: bird installs all three as next hops (ECMP) and the
// client's flows (the router hashes ports too) reach all three. lb1's
// daemon killed (-9): the route keeps lb2 and lb3 only, within the BFD
// bound; every probing flow resumes, the flows spread over lb2 and lb3
// (BGP ownership: every live node that serves a VIP announces it); lb1
// restarted: three next hops again.
func TestBirdThreeNodes(t *testing.T) {
	needTool(t, "bird")
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topo, err := BuildTopoN(ctx, l, 3)
	if err != nil {
		t.Fatal(err)
	}
	// L4 multipath hash: one client's flows spread over the next hops.
	for _, k := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"} {
		if err := topo.Router.Sysctl(k, "1"); err != nil {
			t.Fatal(err)
		}
	}
	e, err := Up(ctx, topo, func(ctx context.Context, h *lab.Host) (Router, error) { return asRouter(StartBird(ctx, h, 3)) }, make([]*uint32, 3))
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, d := range e.Daemons {
				t.Logf("lb%d log:\n%s", i+1, tail(d.Log(), 40))
			}
		}
		if err := e.Down(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	nodeAddrs := func(fam int, ns ...int) []netip.Addr {
		var out []netip.Addr
		for _, n := range ns {
			out = append(out, NodeAddr(n, fam))
		}
		return out
	}
	for fam := range 2 {
		wait(t, e, fam, 90*time.Second, nodeAddrs(fam, 1, 2, 3)...)
		if got := nodes(spread(t, topo.Client, VIPs[fam], 30)); fmt.Sprint(got) != fmt.Sprint(nodeAddrs(fam, 1, 2, 3)) {
			t.Errorf("%s: 30 flows answered through %v, want all three nodes", VIPs[fam], got)
		}
	}
	// Probing flows, four per family, on whichever nodes they hash to.
	var probers [2][]*Prober
	for fam := range 2 {
		for range 4 {
			p, err := StartProber(ctx, topo.Client, VIPs[fam])
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop() })
			probers[fam] = append(probers[fam], p)
		}
	}
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	if err := e.Daemons[0].Kill(); err != nil {
		t.Fatal(err)
	}
	for fam := range 2 {
		routed := wait(t, e, fam, 30*time.Second, nodeAddrs(fam, 2, 3)...)
		if d := routed.Sub(killedAt); d > maxWithdraw {
			t.Errorf("%s: lb1's route withdrawn only after %v", VIPs[fam], d)
		}
	}
	time.Sleep(time.Second)
	end := time.Now()
	for fam := range 2 {
		for i, p := range probers[fam] {
			r := p.Replies()
			var after []netip.Addr
			for _, x := range r {
				if x.At.After(end.Add(-500 * time.Millisecond)) {
					after = append(after, x.Node)
				}
			}
			if len(after) < 10 {
				t.Errorf("%s flow %d: %d answers in the last 500 ms after lb1 was killed", VIPs[fam], i, len(after))
				continue
			}
			for _, n := range after {
				if n == NodeAddr(1, fam) {
					t.Errorf("%s flow %d: answered through the killed lb1", VIPs[fam], i)
					break
				}
			}
			t.Logf("%s flow %d: blackout %v, now through %v", VIPs[fam], i, Blackout(r, killedAt, end).Round(time.Millisecond), after[len(after)-1])
		}
		if got := nodes(spread(t, topo.Client, VIPs[fam], 30)); fmt.Sprint(got) != fmt.Sprint(nodeAddrs(fam, 2, 3)) {
			t.Errorf("%s: 30 flows answered through %v after lb1 was killed, want lb2 and lb3", VIPs[fam], got)
		}
	}
	if err := e.Daemons[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	for fam := range 2 {
		wait(t, e, fam, 90*time.Second, nodeAddrs(fam, 1, 2, 3)...)
	}
}
