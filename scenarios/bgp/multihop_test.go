package bgp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// The client's frr peers with lb1 across the router: one routed hop, so
// each side's packets arrive with TTL 254.
const frrMultihopBGP = `hostname client
log stdout debugging
router bgp 65000
 bgp router-id 10.78.1.2
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor 10.78.2.11 remote-as 65001
 neighbor 10.78.2.11 ebgp-multihop 5
 neighbor 10.78.2.11 update-source 10.78.1.2
 neighbor 10.78.2.11 timers connect 1
 neighbor 10.78.2.11 bfd profile mh
 address-family ipv4 unicast
  neighbor 10.78.2.11 activate
 exit-address-family
!
`

const frrMultihopBFD = `hostname client
bfd
 profile mh
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
 !
!
`

// TestBFDMultihopFRR: lb1's real daemon and frr (bgpd + bfdd in the client
// namespace, one router away) run eBGP multihop with RFC 5883 BFD: the VIP
// reaches frr's BGP table, both BFD sessions are Up in multihop mode,
// tshark decodes the BFD packets on port 4784 (TTL 254 on arrival from lb1,
// which the daemon's default minimum TTL accepts) and none on 3784. Frozen
// (SIGSTOP), the daemon stops BFD and frr drops the route in the detection
// time, well before the 9 s hold time; thawed, the route comes back.
func TestBFDMultihopFRR(t *testing.T) {
	needTool(t, FRRDir+"/bfdd")
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topo, err := BuildTopo(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	capt, err := capture.Start(ctx, topo.Client, "eth0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	frr, err := StartFRRWith(ctx, topo.Client, "", map[string]string{"zebra": "hostname client\n", "bgpd": frrMultihopBGP, "bfdd": frrMultihopBFD})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = frr.Close() })
	bins, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "telcolb-bgp-mh-")
	if err != nil {
		t.Fatal(err)
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bins, Host: topo.Nodes[0], Interfaces: []string{"eth0"},
		StateDir: filepath.Join(dir, "state"), PinPath: "/sys/fs/bpf/" + l.ID + "-lb1", ExtraArgs: []string{"--log-format=text"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lb1 log:\n%s", tail(d.Log(), 60))
			t.Logf("frr log:\n%s", tail(frr.Log(), 60))
		}
		_ = d.Signal(syscall.SIGCONT)
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
		_ = os.RemoveAll(dir)
	})
	if err := d.Client.CreateService(ctx, Services()[0]); err != nil {
		t.Fatal(err)
	}
	bfd := &api.BFDProfile{ReceiveIntervalMs: BFDIntervalMs, TransmitIntervalMs: BFDIntervalMs, DetectMultiplier: BFDMultiplier}
	if err := d.Client.PutAdvertisement(ctx, api.AdvertisementConfig{
		NodeName: "lb1",
		BGP: &api.BGPConfig{ASN: NodeASN, RouterID: NodeAddr(1, 0).String(), Peers: []api.BGPPeer{
			{Name: "client", Address: ClientAddr[0].String(), ASN: RouterASN, HoldTimeSeconds: 9, EBGPMultihop: true, BFD: bfd},
		}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: VIPPrefix[:1]}},
	}); err != nil {
		t.Fatal(err)
	}
	vip := VIPs[0].String() + "/32"
	routed := func() bool {
		out, _ := frr.Vtysh(ctx, "show bgp ipv4 unicast "+vip)
		return strings.Contains(out, NodeAddr(1, 0).String()) && !strings.Contains(out, "Network not in table")
	}
	waitFor := func(what string, within time.Duration, cond func() bool) time.Time {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				bfdOut, _ := frr.Vtysh(ctx, "show bfd peers")
				bgpOut, _ := frr.Vtysh(ctx, "show bgp summary")
				t.Fatalf("%s not within %v; frr:\n%s\n%s", what, within, bfdOut, bgpOut)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Now()
	}
	waitFor("VIP in frr's BGP table", 90*time.Second, routed)
	waitFor("frr's multihop BFD session up", 30*time.Second, func() bool {
		out, _ := frr.Vtysh(ctx, "show bfd peers")
		return strings.Contains(out, "multihop") && strings.Contains(out, "peer "+NodeAddr(1, 0).String()) && strings.Contains(out, "Status: up")
	})
	waitFor("lb1's multihop BFD session Up", 30*time.Second, func() bool {
		st, err := d.Client.Advertisement(ctx)
		return err == nil && len(st.BFDSessions) == 1 && st.BFDSessions[0].State == "Up" && st.BFDSessions[0].Mode == "multihop"
	})

	// Frozen daemon: only BFD can take the route away before the hold time.
	frozenAt := time.Now()
	if err := d.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	goneAt := waitFor("VIP withdrawn from frr after the freeze", 30*time.Second, func() bool { return !routed() })
	if took := goneAt.Sub(frozenAt); took > maxWithdraw {
		t.Errorf("frozen lb1's route withdrawn after %v: the hold time, not multihop BFD, took it down", took)
	} else {
		t.Logf("frozen lb1's route withdrawn by frr after %v (BFD detection time 300 ms)", took.Round(time.Millisecond))
	}
	if err := d.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor("VIP back in frr's table after the thaw", 90*time.Second, routed)

	if err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	rows, err := capture.Fields(ctx, capt.File, "bfd && !icmp", "ip.src", "udp.dstport", "ip.ttl", "bfd.version", "_ws.malformed")
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]int{}
	for _, r := range rows {
		if r[1] != "4784" || r[3] != "1" || r[4] != "" {
			t.Errorf("BFD packet %v: want version 1 to port 4784, not malformed", r)
		}
		from[r[0]+" ttl "+r[2]]++
	}
	// On the client's link: frr's own packets leave with 255, lb1's arrive
	// after the router with 254.
	if from[ClientAddr[0].String()+" ttl 255"] == 0 || from[NodeAddr(1, 0).String()+" ttl 254"] == 0 || len(from) != 2 {
		t.Errorf("BFD packets by source and TTL: %v", from)
	}
	t.Logf("capture: %d multihop BFD packets, by source and TTL %v", len(rows), from)
}
