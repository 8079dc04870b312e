package metrics

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/monitoring/promtest"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

const (
	lbASN, peerASN = 65010, 65020
	hbPort         = 7946 // L2 heartbeats
)

// birdConf: one BGP session with BFD toward the lb; routes are imported
// into bird's table only (no kernel protocol: the backend's routing stays
// as the rest of the lab expects).
const birdConf = `router id %[1]s;
log stderr all;
protocol device { scan time 1; }
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
protocol bgp lb {
  local %[1]s as %[2]d;
  neighbor %[3]s as %[4]d;
  hold time 9;
  connect retry time 1;
  bfd on;
  ipv4 { import all; export none; };
}
`

// runAdvertise: bird2 on backend 1 peers with the daemon's BGP speaker
// (BFD on), a second configured peer never answers; the daemon announces the SCTP service's VIP over BGP and the
// HTTP service's VIP with its L2 announcer (a one-member group) on the
// client link, so the BGP/BFD and L2 dashboards have data.
func runAdvertise(t *testing.T, ctx context.Context, env *l4.Env, tmp string) {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird not installed (Debian package bird2; hack/install-deps.sh installs it): %v", err)
	}
	be, lbAddr := env.BackendAddr(0, false), env.LBBackendAddr(false)
	conf := filepath.Join(tmp, "bird.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(birdConf, be, peerASN, lbAddr, lbASN)), 0o600); err != nil {
		t.Fatal(err)
	}
	bird, err := env.Lab.Backends[0].Start("bird", "-f", "-c", conf, "-s", filepath.Join(tmp, "bird.ctl"), "-P", filepath.Join(tmp, "bird.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bird.Stop() })

	lbClient := env.Lab.LBClientIface(0)
	hb := netip.AddrPortFrom(lbClient.V4(), hbPort).String()
	bfd := &api.BFDProfile{ReceiveIntervalMs: 100, TransmitIntervalMs: 100, DetectMultiplier: 3}
	cfg := api.AdvertisementConfig{
		NodeName: "lb",
		BGP: &api.BGPConfig{ASN: lbASN, RouterID: lbAddr.String(), Peers: []api.BGPPeer{
			{Name: "be1", Address: be.String(), ASN: peerASN, HoldTimeSeconds: 9, BFD: bfd},
			// No BGP speaker on backend 2: its session and BFD stay down
			// (the BGP and BFD session down alerts).
			{Name: "be2", Address: env.BackendAddr(1, false).String(), ASN: peerASN, HoldTimeSeconds: 9, BFD: bfd}}},
		L2: &api.L2Config{Interfaces: []string{lbClient.Name}, Members: []api.L2Member{{Name: "lb", Address: hb}}},
		Advertisements: []api.Advertisement{
			{Name: "sig", Mode: api.AdvertiseBGP, Prefixes: []string{lab.VIP(0, 4, false).String() + "/32"}},
			{Name: "lan", Mode: api.AdvertiseL2, Prefixes: []string{lab.VIP(0, 1, false).String() + "/32"}},
		},
	}
	if err := env.Daemon.Client.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatalf("advertisement: %v", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := env.Daemon.Client.Advertisement(ctx)
		if err == nil && be1Up(st, be) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BGP session with bird and BFD not up: %+v (%v)\nbird: %s", st, err, tail(bird.Stderr()))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// be1Up: the session with bird is established with prefixes sent, and its
// BFD session is Up.
func be1Up(st api.AdvertisementStatus, be netip.Addr) bool {
	bgp, bfd := false, false
	for _, p := range st.BGPPeers {
		bgp = bgp || (p.Name == "be1" && p.State == "established" && p.PrefixesSent > 0)
	}
	for _, s := range st.BFDSessions {
		bfd = bfd || ((s.Peer == be.String() || s.Peer == "be1") && s.State == "Up")
	}
	return bgp && bfd
}

// runMultihomed keeps a multi-homed SCTP association (the client bound to
// two addresses) open through the SCTP service while the lab is read, so
// telcolb_sctp_associations has an association of 2 paths.
func runMultihomed(t *testing.T, ctx context.Context, env *l4.Env, pc promtest.Client) {
	t.Helper()
	ci := env.Lab.ClientIface(0)
	var second netip.Prefix
	for _, p := range ci.Addrs() {
		if p.Addr().Is4() {
			a := p.Addr().As4()
			a[3] += 100
			second = netip.PrefixFrom(netip.AddrFrom4(a), p.Bits())
			break
		}
	}
	if err := env.Lab.Client.AddAddr(ctx, ci.Name, second); err != nil {
		t.Fatal(err)
	}
	cl, err := sctppeer.StartClient(ctx, env.Lab.Client, sctppeer.ClientOptions{
		Bind: []netip.Addr{ci.V4(), second.Addr()}, Connect: []netip.Addr{lab.VIP(0, 4, false)}, Port: sctpPort,
		Count: 100000, Size: 100, Interval: 100 * time.Millisecond, Streams: 2, PPID: 60})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Proc.Stop() })
	if err := waitQuery(ctx, pc, `sum(telcolb_sctp_associations{service="sctp",paths="2"})`, 1); err != nil {
		t.Fatalf("the multi-homed association: %v\nclient: %s", err, tail(cl.Proc.Stderr()))
	}
}

// runDiameter: a Diameter agent in front of two go-diameter servers on the
// backends and a third endpoint where nothing listens (its peer stays
// down: the Diameter peer down alert); a go-diameter client runs
// credit-control sessions through it.
func runDiameter(t *testing.T, ctx context.Context, env *l4.Env, tmp string) {
	t.Helper()
	for _, name := range []string{"diamserver", "diamclient"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, name), "github.com/telcolb/telcolb/scenarios/diameter/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	vip := lab.VIP(0, 90, false)
	if err := env.Lab.LB.AddAddr(ctx, "lo", netip.PrefixFrom(vip, 32)); err != nil {
		t.Fatal(err)
	}
	svc := api.Service{Name: "dia", VIP: vip.String(), Port: 3868, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"}}
	for k, h := range env.Lab.Backends {
		a := env.BackendAddr(k, false)
		p, err := h.Start(filepath.Join(tmp, "diamserver"), "--listen", netip.AddrPortFrom(a, 3868).String(),
			"--host", fmt.Sprintf("ocs%d.lab.example", k+1), "--realm", "lab.example")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop() })
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("diamserver %d: %v: %s", k+1, err, p.Stderr())
		}
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.String(), Port: 3868})
	}
	// Nothing listens on backend 2's port 3869.
	svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: env.BackendAddr(1, false).String(), Port: 3869})
	apply(t, ctx, env.Daemon, svc)
	waitService(t, ctx, env.Daemon, "dia", "both servers okay", func(st api.ServiceStatus) bool {
		return st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	cli, err := env.Lab.Client.Start(filepath.Join(tmp, "diamclient"), "--peer", netip.AddrPortFrom(vip, 3868).String(),
		"--sessions", "200", "--window", "16", "--dest-realm", "lab.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Wait(ctx); err != nil {
		t.Fatalf("diamclient: %v\n%s", err, tail(cli.Stderr()))
	}
}
