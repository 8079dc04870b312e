package ha

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// A planned switchover: both nodes announce the VIPs over BGP to an FRR
// router (lb1 with the lower MED, so the router sends the VIPs to lb1
// only), the operator drains lb1 (its advertisement configuration's
// Draining, what the controller sets while the Node is cordoned): lb1
// withdraws its routes, the router moves the VIPs to lb2, whose copies
// carry every flow on while lb1 still forwards what was in flight.
//
// Only fullnat flows: their replies follow the VIP's route too (the
// endpoint answers the VIP), so BGP alone moves them; a default-mode reply
// goes to the client network, which be1 routes statically.

// pinger asks a few flows again and again across the switchover: a UDP
// flow gets one try per question (a lost datagram is a failure, not a
// retry), a TCP connection's retransmissions are read from the kernel.
type pinger struct {
	mu      sync.Mutex
	answers []time.Time
	errs    []string
}

func (p *pinger) note(at time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.errs = append(p.errs, err.Error())
		return
	}
	p.answers = append(p.answers, at)
}

// longestGap is the longest time without an answer from any pinged flow
// between from and until.
func (p *pinger) longestGap(from, until time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := slices.Clone(p.answers)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	return bgp.Blackout(asReplies(ts), from, until)
}

func asReplies(ts []time.Time) []bgp.Reply {
	out := make([]bgp.Reply, 0, len(ts))
	for _, t := range ts {
		out = append(out, bgp.Reply{At: t})
	}
	return out
}

// askUDPOnce sends one question and waits for its answer, no retry.
func askUDPOnce(f udpFlowFirst) error {
	buf := make([]byte, 512)
	if _, err := f.f.c.Write([]byte("ask\n")); err != nil {
		return err
	}
	_ = f.f.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := f.f.c.Read(buf)
	if err != nil {
		return fmt.Errorf("udp %v: no answer to one question: %w", f.f.c.LocalAddr(), err)
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) != 2 || fields[0] != f.first.Server {
		return fmt.Errorf("udp %v: answer %q, first from %s", f.f.c.LocalAddr(), buf[:n], f.first.Server)
	}
	return nil
}

// routeVia is the next hop of the router's route to the VIP ("" without
// one).
func routeVia(ctx context.Context, router *lab.Host) string {
	out, err := router.Exec(ctx, "ip", "-4", "route", "show", vip.String()+"/32")
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		out, err = router.Exec(ctx, "ip", "-4", "route", "show", bgp.VIPPrefix[0])
	}
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			return f[i+1]
		}
	}
	return ""
}

func waitRouteVia(t *testing.T, ctx context.Context, router *lab.Host, n int) time.Time {
	t.Helper()
	want := bgp.NodeAddr(n, 0).String()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if routeVia(ctx, router) == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			out, _ := router.Exec(ctx, "ip", "route")
			t.Fatalf("the router's route to %v never went via lb%d (%s):\n%s", vip, n, want, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frrConfs: the router peers with both nodes over IPv4, without BFD (the
// failure detection is not what this test is about, and BFD at 100 ms
// flaps on a loaded 2-core machine: with lb1 drained, a flap of lb2's
// session would leave the VIPs without a route).
func frrConfs() map[string]string {
	var b strings.Builder
	fmt.Fprintf(&b, "hostname router\nlog stdout debugging\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n timers bgp 3 9\n",
		bgp.RouterASN, bgp.RouterLAN[0])
	for n := 1; n <= 2; n++ {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n", bgp.NodeAddr(n, 0), bgp.NodeASN, bgp.NodeAddr(n, 0))
	}
	b.WriteString(" address-family ipv4 unicast\n  maximum-paths 8\n")
	for n := 1; n <= 2; n++ {
		fmt.Fprintf(&b, "  neighbor %s activate\n", bgp.NodeAddr(n, 0))
	}
	b.WriteString(" exit-address-family\n!\n")
	return map[string]string{"zebra": "hostname router\n", "bfdd": "hostname router\n", "bgpd": b.String()}
}

// advertisement announces the IPv4 VIPs of node n over BGP, lb1 with the
// lower MED (the router's only path while it announces).
func advertisement(n int) api.AdvertisementConfig {
	med := uint32(10 * n)
	return api.AdvertisementConfig{
		NodeName: fmt.Sprintf("lb%d", n),
		BGP: &api.BGPConfig{ASN: bgp.NodeASN, RouterID: bgp.NodeAddr(n, 0).String(), Peers: []api.BGPPeer{
			{Name: "router4", Address: bgp.RouterLAN[0].String(), ASN: bgp.RouterASN, HoldTimeSeconds: 9},
		}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: bgp.VIPPrefix[:1], MED: &med}},
	}
}

// TestPlannedSwitchoverLosesNothing: lb1 drained, the VIPs move to lb2 by
// BGP; every TCP connection, UDP flow and SCTP association (fullnat), half
// of them opened 100 ms before the drain, carries on through lb2 without a
// lost packet: no TCP retransmission, every UDP question answered at the
// first try, every SCTP message echoed, no ABORT.
func TestPlannedSwitchoverLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	lb := upLab(t, ctx, true)
	router := lb.topo.Router
	frr, err := bgp.StartFRRWith(ctx, router, "", frrConfs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("frr log:\n%s", tail(frr.Log(), 40))
		}
		_ = frr.Close()
	})
	// BGP replaces the static routes standing for it in the other tests.
	for _, v := range []netip.Addr{vip, vip2} {
		if err := router.IP(ctx, "route", "del", v.String()+"/32"); err != nil {
			t.Fatal(err)
		}
	}
	cfgs := make([]api.AdvertisementConfig, 2)
	for i, d := range lb.daemons {
		cfgs[i] = advertisement(i + 1)
		if err := d.Client.PutAdvertisement(ctx, cfgs[i]); err != nil {
			t.Fatalf("lb%d: put advertisement: %v", i+1, err)
		}
	}
	waitReady(t, ctx, lb.daemons[1], "lb2")
	waitRouteVia(t, ctx, router, 1)

	n := flowCounts(t)
	fs := &flowSet{sctpMode: api.ModeFullNAT}
	fs.openTCPUDP(t, ctx, lb.topo.Client, n.tcp/2, n.udp/2)
	fs.startSCTP(t, ctx, lb, n.sctp/2, 30*time.Second)
	waitHeld(t, ctx, lb.daemons[1], "lb2", fs, n.sctp/2)
	fs.openTCPUDP(t, ctx, lb.topo.Client, n.tcp/2, n.udp/2)
	fs.startSCTP(t, ctx, lb, n.sctp/2, 30*time.Second)
	retransBefore := make([]uint32, len(fs.tcp))
	for i, f := range fs.tcp {
		if retransBefore[i], err = f.s.Retransmits(); err != nil {
			t.Fatal(err)
		}
	}
	// The pingers: the oldest and the youngest flows of each kind, asked
	// every 20 ms from 300 ms before the drain to 1 s after the move.
	p := &pinger{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pick := func(total int) []int {
		k := min(8, total)
		var out []int
		for i := 0; i < k/2; i++ {
			out = append(out, i, total-1-i)
		}
		return out
	}
	for _, i := range pick(len(fs.tcp)) {
		wg.Add(1)
		go func(f tcpFlow) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				r, err := f.s.Ask()
				if err == nil && r != f.first {
					err = fmt.Errorf("tcp %v: %v, first %v", f.s.LocalAddr(), r, f.first)
				}
				p.note(time.Now(), err)
			}
		}(fs.tcp[i])
	}
	for _, i := range pick(len(fs.udp)) {
		wg.Add(1)
		go func(f udpFlowFirst) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				p.note(time.Now(), askUDPOnce(f))
			}
		}(fs.udp[i])
	}
	time.Sleep(100 * time.Millisecond)
	// The youngest: four TCP connections and four UDP flows opened right
	// before the drain, within the sync lag.
	youngest := len(fs.tcp)
	fs.openTCPUDP(t, ctx, lb.topo.Client, 4, 4)
	for _, f := range fs.tcp[youngest:] {
		r, err := f.s.Retransmits()
		if err != nil {
			t.Fatal(err)
		}
		retransBefore = append(retransBefore, r)
	}
	drained := time.Now()
	drain := cfgs[0]
	drain.Draining = true
	// The PUT returns once lb1 has withdrawn, which it does only once lb2
	// has acknowledged every change lb1 had made (the drain's barrier).
	if err := lb.daemons[0].Client.PutAdvertisement(ctx, drain); err != nil {
		t.Fatalf("drain lb1: %v", err)
	}
	withdrawn := time.Now()
	missing := missingOn(t, ctx, lb.daemons[1], fs)
	moved := waitRouteVia(t, ctx, router, 2)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	end := time.Now()
	if len(p.errs) > 0 {
		t.Errorf("pinged flows across the switchover: %d errors:\n%s", len(p.errs), strings.Join(p.errs, "\n"))
	}
	if len(missing) > 0 {
		t.Errorf("when lb1's drain returned (VIPs withdrawn) lb2 lacked %d TCP+UDP flows: %v", len(missing), missing)
	}
	st, err := lb.daemons[0].Client.HA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Drain == nil || st.Drain.State != api.HADrainAcknowledged {
		t.Errorf("lb1's drain: %+v, want withdrawn once lb2 acknowledged", st.Drain)
	}
	if vips, err := lb.daemons[0].Client.VIPs(ctx); err != nil {
		t.Error(err)
	} else {
		for _, v := range vips {
			if len(v.Announced) != 0 || v.Reason != "node draining" {
				t.Errorf("drained lb1: VIP %+v, want withdrawn (node draining)", v)
			}
		}
	}
	checked := time.Now()
	gap := fs.check(t, "through lb2 after the drain", checked)
	for i, f := range fs.tcp {
		r, err := f.s.Retransmits()
		if err != nil {
			t.Fatal(err)
		}
		if r != retransBefore[i] {
			t.Errorf("tcp %d %v: %d segments retransmitted across the switchover (a loss)", i, f.s.LocalAddr(), r-retransBefore[i])
		}
	}
	sgap := fs.waitSCTP(t, ctx)
	var barrier float64
	if st.Drain != nil {
		barrier = st.Drain.WaitSeconds
	}
	t.Logf("drain: lb1 waited %.3fs for lb2's acknowledgement, withdrew %v after the drain began; route via lb2 %v after the drain; pinged flows' longest gap %v (asked every 20 ms); %d TCP and %d UDP flows then asked at once, all answered through lb2 within %v; %d SCTP associations (fullnat), longest gap between two echoes %v (messages every 50 ms)",
		barrier, withdrawn.Sub(drained).Round(time.Millisecond), moved.Sub(drained).Round(time.Millisecond), p.longestGap(drained.Add(-200*time.Millisecond), end).Round(time.Millisecond),
		len(fs.tcp), len(fs.udp), gap.Round(time.Millisecond), fs.nSCTP(), sgap)
}

// missingOn lists the TCP connections and UDP flows of fs that d's
// conntrack does not hold.
func missingOn(t *testing.T, ctx context.Context, d *l4.Daemon, fs *flowSet) []string {
	t.Helper()
	conns, err := d.Client.Conntrack(ctx)
	if err != nil {
		t.Fatalf("conntrack: %v", err)
	}
	have := map[string]bool{}
	for _, c := range conns {
		have[c.Client] = true
	}
	return fs.missing(have)
}
