package ha

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/n2"
)

// The N2 failover lab is the conntrack lab's topology (scenarios/bgp's)
// with N2 peers around it, each SCTP endpoint a usrsctp process in its
// own namespace:
//
//	gnb1 (client) 10.78.1.2 ─┐
//	gnb2          10.78.3.2 ─┴─ router ── LAN 10.78.2.0/24: lb1 .11, lb2 .12,
//	                                       amf1 (be1) .21, amf2 .22, amf3 .23
//
// Both daemons run the same N2 proxy service on the VIP in one HA group
// and advertise the VIP on the LAN by L2 (ARP), the real election of the
// daemons' member machines with the production defaults (heartbeats on the
// LAN 100 ms apart, a member dead after 3 missed: 300 ms): the router
// reaches the VIP
// on-link on the LAN and resolves it to its owner, lb1 (the rendezvous
// hash's pick for the VIP among lb1 and lb2), then lb2 once lb1 is gone.
// The takeover gate is the default (--ha-n2-takeover-abort=owner).
var (
	n2AMFAddrs = []netip.Addr{bgp.BackendIP[0], netip.MustParseAddr("10.78.2.22"), netip.MustParseAddr("10.78.2.23")}
	n2GNBAddrs = []netip.Addr{bgp.ClientAddr[0], netip.MustParseAddr("10.78.3.2")}
)

const (
	n2Port  = 38412
	n2SetID = 0x3f8 // the AMF Set the simulators' 5G-S-TMSIs name
	// n2Heartbeat is the gNB simulators' heartbeat interval, a real
	// gNB's 30 s: without lb2's takeover ABORT, a gNB would learn of the
	// loss only when its next heartbeat on the dead association meets
	// lb2's stack (an out-of-the-blue ABORT, T bit set), up to 30 s after
	// the VIP moved; the failover test's bounds are far below that.
	n2Heartbeat = 30 * time.Second
	// n2AbortWithin bounds the takeover ABORT after the failure (lb2's
	// sync sees lb1's connection end at lb1's kill); generous for a
	// loaded machine, far below n2Heartbeat.
	n2AbortWithin = 5 * time.Second
	// n2LateUE: a UE answered later than this after the kill logs the
	// drop counters (dropdiag.go); a lost packet costs the gNB's usrsctp
	// its 1 s minimum RTO.
	n2LateUE = time.Second
	// n2HeartbeatPort is the L2 members' heartbeat port on the LAN.
	n2HeartbeatPort = 7950
	// n2AMFLate: how long after the failure amf3 drops lb2's INITs
	// (TestN2UEsSurviveANodeFailureWithAnAMFLate): past the proxy's
	// SetupWait, well within the gNB simulators' 10 s wait for an answer.
	n2AMFLate = 1500 * time.Millisecond
)

type n2Lab struct {
	topo    *bgp.Topo
	bird    *bgp.Bird // the router's BGP daemon (upN2LabWith, bgp only)
	daemons []*l4.Daemon
	amfs    []*lab.Proc
	gnbs    []*lab.Proc
	gnbHost []*lab.Host
	amfHost []*lab.Host
	sims    string
	// amfLate, when set, makes lb2's association to the last AMF late
	// (failover): that AMF drops INITs until amfLate after the failure.
	amfLate time.Duration
}

// upN2Lab builds the lab and starts both daemons (in one HA group when
// withHA), each advertising the VIP by L2 with detectMultiplier (0: the
// production default, 3), the N2 service on each, the AMFs; it returns
// once lb1 owns the VIP in both daemons' view.
func upN2Lab(t *testing.T, ctx context.Context, withHA bool, detectMultiplier uint32) *n2Lab {
	t.Helper()
	return upN2LabWith(t, ctx, n2LabOpts{ha: withHA, detect: detectMultiplier})
}

// n2LabOpts: ha, the daemons in one HA group; detect, the L2 detection
// multiplier; bgp, the VIP announced by BGP instead of L2 (n2_bgp_test.go).
type n2LabOpts struct {
	ha     bool
	detect uint32
	bgp    bool
}

// upN2LabWith is upN2Lab with the VIP announced by BGP when o.bgp: both
// daemons announce it to bird on the router (scenarios/bgp's sessions,
// BFD 100 ms x 3), lb1 with the lower MED so the router sends the gNBs
// to lb1 alone, and, with the HA group, run the liveness heartbeats on
// the LAN (--ha-liveness-members); it returns once the router's route to
// the VIP goes through lb1 only.
func upN2LabWith(t *testing.T, ctx context.Context, o n2LabOpts) *n2Lab {
	t.Helper()
	withHA, detectMultiplier := o.ha, o.detect
	l := lab.NewEmpty(t)
	topo, err := bgp.BuildTopo(ctx, l)
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	nl := &n2Lab{topo: topo}
	gnb2, err := l.AddHost(ctx, "gnb2")
	must(t, err)
	amf2, err := l.AddHost(ctx, "amf2")
	must(t, err)
	amf3, err := l.AddHost(ctx, "amf3")
	must(t, err)
	for _, h := range []*lab.Host{gnb2, amf2, amf3} {
		must(t, h.Sysctl("net.ipv4.conf.all.rp_filter", "0"))
		must(t, h.Sysctl("net.ipv4.conf.default.rp_filter", "0"))
	}
	// gnb2 behind the router on its own network.
	_, _, err = l.Connect(ctx, gnb2, "eth0", topo.Router, "eth2")
	must(t, err)
	must(t, gnb2.AddAddr(ctx, "eth0", netip.MustParsePrefix("10.78.3.2/24")))
	must(t, topo.Router.AddAddr(ctx, "eth2", netip.MustParsePrefix("10.78.3.1/24")))
	must(t, gnb2.AddRoute(ctx, netip.Prefix{}, netip.MustParseAddr("10.78.3.1")))
	must(t, gnb2.DisableOffload(ctx, "eth0"))
	must(t, topo.Router.DisableOffload(ctx, "eth2"))
	// amf2, amf3 on the LAN next to be1 (amf1).
	for i, h := range []*lab.Host{amf2, amf3} {
		port := fmt.Sprintf("pa%d", i+2)
		_, _, err = l.Connect(ctx, h, "eth0", topo.Switch, port)
		must(t, err)
		must(t, topo.Switch.AttachToBridge(ctx, port, "br0"))
		must(t, h.AddAddr(ctx, "eth0", netip.PrefixFrom(n2AMFAddrs[i+1], 24)))
		must(t, h.AddRoute(ctx, netip.Prefix{}, bgp.RouterLAN[0]))
		must(t, h.DisableOffload(ctx, "eth0"))
		must(t, topo.Switch.DisableOffload(ctx, port))
	}
	nl.gnbHost = []*lab.Host{topo.Client, gnb2}
	amfHosts := []*lab.Host{topo.BE, amf2, amf3}
	nl.amfHost = amfHosts
	// The proxy's AMF associations may use the VIP as a source address:
	// the AMFs' packets to it go through the router, and no ICMP redirect
	// may pin them to lb1 (lb2's dials to the AMFs would go unanswered).
	for _, h := range append(append([]*lab.Host{topo.Router}, amfHosts...), topo.Nodes...) {
		must(t, h.NoRedirects())
	}
	// Every host with a usrsctp stack (and the lbs, whose kernel would
	// answer SCTP to the VIP with protocol-unreachable once the daemon is
	// gone) drops ICMP protocol-unreachable.
	for _, h := range append(append(append([]*lab.Host{}, topo.Nodes...), nl.gnbHost...), amfHosts...) {
		must(t, h.DropProtoUnreachable(ctx))
	}
	if o.bgp {
		bird, err := bgp.StartBird(ctx, topo.Router, 2)
		must(t, err)
		nl.bird = bird
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("bird log:\n%s", tail(bird.Log(), 30))
			}
			_ = bird.Close()
		})
	} else {
		// The VIP on-link on the router's LAN interface: the router ARPs
		// for it and the L2 owner answers.
		must(t, topo.Router.IP(ctx, "route", "replace", vip.String()+"/32", "dev", "eth1"))
	}

	dir := t.TempDir()
	nl.sims = dir
	must(t, n2.BuildCmds(ctx, dir, "amfsim", "gnbsim"))
	bins, err := l4.Build(ctx, "")
	must(t, err)
	certs, err := WriteGroupCerts(dir, "lb1", "lb2")
	must(t, err)
	t.Cleanup(func() {
		for i, d := range nl.daemons {
			if t.Failed() {
				t.Logf("lb%d log (warnings, then its end):\n%s", i+1, digest(d.Log(), 20, 25))
			}
			if err := d.Destroy(context.Background()); err != nil {
				t.Errorf("lb%d teardown: %v", i+1, err)
			}
		}
	})
	for k, h := range amfHosts {
		p, err := h.Start(filepath.Join(dir, "amfsim"), "--name", fmt.Sprintf("amf%d", k+1), "--listen", netip.AddrPortFrom(n2AMFAddrs[k], n2Port).String(),
			"--set-id", fmt.Sprint(n2SetID), "--pointer", fmt.Sprint(k+1), "--region", "202")
		must(t, err)
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("amf%d: %v: %s", k+1, err, p.Stderr())
		}
		nl.amfs = append(nl.amfs, p)
	}
	svc := api.Service{Name: "n2", VIP: vip.String(), Port: n2Port, Protocol: api.ProtocolSCTP, N2: true}
	for _, a := range n2AMFAddrs {
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.String(), Port: n2Port})
	}
	for i, h := range topo.Nodes {
		name, peer := fmt.Sprintf("lb%d", i+1), fmt.Sprintf("lb%d", 2-i)
		args := []string{"--log-format=text"}
		if withHA {
			nc := certs[name]
			args = append(args, "--ha-node-name="+name,
				"--ha-listen-address="+netip.AddrPortFrom(bgp.NodeAddr(i+1, 0), syncPort).String(),
				"--ha-peers="+peer+"="+netip.AddrPortFrom(bgp.NodeAddr(2-i, 0), syncPort).String(),
				"--ha-tls-cert-file="+nc.Cert, "--ha-tls-key-file="+nc.Key, "--ha-tls-ca-file="+nc.CA,
				"--ha-refresh-interval=1s", "--ha-join-timeout=5m")
			if o.bgp {
				args = append(args, fmt.Sprintf("--ha-liveness-members=lb1=%v,lb2=%v",
					netip.AddrPortFrom(bgp.NodeAddr(1, 0), n2HeartbeatPort), netip.AddrPortFrom(bgp.NodeAddr(2, 0), n2HeartbeatPort)))
			}
		}
		state := filepath.Join(dir, name)
		must(t, os.MkdirAll(state, 0o700))
		d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bins, Host: h, Interfaces: []string{"eth0"},
			StateDir: state, PinPath: "/sys/fs/bpf/" + l.ID + "-" + h.Name, ExtraArgs: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nl.daemons = append(nl.daemons, d)
		adv := n2Advertisement(name, detectMultiplier)
		if o.bgp {
			med := uint32(10 * (i + 1))
			adv = bgp.NodeConfig(i+1, &med)
		}
		if err := d.Client.PutAdvertisement(ctx, adv); err != nil {
			t.Fatalf("%s: put the advertisement: %v", name, err)
		}
		if err := d.Client.ApplyService(ctx, svc); err != nil {
			t.Fatalf("%s: create the N2 service: %v", name, err)
		}
		l4.RequireLocalVIP(t, ctx, h, vip)
	}
	if o.bgp {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		_, err := bgp.WaitNexthops(wctx, topo.Router, vip.String(), bgp.NodeAddr(1, 0))
		must(t, err)
		// lb2's session and BFD up too: the router has lb2's route to
		// fall back on, and learns lb1's loss by BFD.
		for n := 1; n <= 2; n++ {
			for up := false; !up; {
				up, err = nl.bird.BFDUp(wctx, bgp.NodeAddr(n, 0))
				if !up && wctx.Err() != nil {
					t.Fatalf("the router's BFD session with lb%d not up: %v", n, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return nl
	}
	nl.waitOwner(t, ctx, "lb1", 30*time.Second)
	return nl
}

// n2Advertisement is node name's L2 advertisement of the VIP on the LAN
// (eth0), lb1 and lb2 its members, heartbeats 100 ms apart (default), a
// member dead after detectMultiplier missed (0: default, 3). Until session
// 14 every N2 test used 8 (800 ms): on the shared 2-core machine (load
// 20-30) a member machine more than 300 ms late took itself for suspended
// and released its VIP, and the VIP moved between the live daemons during
// the registration (ha/member doc.go, "Loaded node").
func n2Advertisement(name string, detectMultiplier uint32) api.AdvertisementConfig {
	var members []api.L2Member
	for n := 1; n <= 2; n++ {
		members = append(members, api.L2Member{Name: fmt.Sprintf("lb%d", n), Address: netip.AddrPortFrom(bgp.NodeAddr(n, 0), n2HeartbeatPort).String()})
	}
	return api.AdvertisementConfig{NodeName: name, L2: &api.L2Config{Interfaces: []string{"eth0"}, Members: members, DetectMultiplier: detectMultiplier},
		Advertisements: []api.Advertisement{{Name: "lan", Mode: api.AdvertiseL2, Prefixes: []string{vip.String() + "/32"}}}}
}

// waitOwner waits until every running daemon reports owner as the VIP's
// L2 owner, the owner announcing it on eth0.
func (nl *n2Lab) waitOwner(t *testing.T, ctx context.Context, owner string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var seen []string
		ok := true
		for i, d := range nl.daemons {
			vs, err := d.Client.VIPs(ctx)
			if err != nil || len(vs) != 1 {
				ok = false
				seen = append(seen, fmt.Sprintf("lb%d: %v %v", i+1, vs, err))
				continue
			}
			v := vs[0]
			seen = append(seen, fmt.Sprintf("lb%d: owner %q announced %v", i+1, v.Owner, v.Announced))
			self := fmt.Sprintf("lb%d", i+1) == owner
			if v.Owner != owner || self != slices.Contains(v.Announced, "l2/eth0") {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VIP's L2 owner is not %s after %v: %v", owner, within, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startGNBs starts one gNB simulator per gNB host, perGNB UEs each, in
// --resume mode, and waits until every UE is registered.
func (nl *n2Lab) startGNBs(t *testing.T, ctx context.Context, perGNB int, wait time.Duration) {
	t.Helper()
	for k, h := range nl.gnbHost {
		p, err := h.Start(filepath.Join(nl.sims, "gnbsim"), "--name", fmt.Sprintf("gnb%d", k+1), "--connect", netip.AddrPortFrom(vip, n2Port).String(),
			"--bind", n2GNBAddrs[k].String(), "--ues", fmt.Sprint(perGNB), "--ran-base", fmt.Sprint(k*100000), "--gnb-id", fmt.Sprint(k+1),
			"--set-id", fmt.Sprint(n2SetID), "--resume", "--heartbeat", n2Heartbeat.String(), "--wait", wait.String(), "--reconnect-within", "60s")
		must(t, err)
		nl.gnbs = append(nl.gnbs, p)
	}
	for k, p := range nl.gnbs {
		if err := p.WaitOutput(ctx, `"event":"registered"`); err != nil {
			t.Fatalf("gnb%d: %v\nstdout %s\nstderr %s", k+1, err, tail(p.Stdout(), 5), tail(p.Stderr(), 20))
		}
		// A UE that did not register has no context anywhere to survive
		// a failure: say so here, with its error, rather than as a short
		// count of replicated records later.
		var r n2.RegistrationResult
		must(t, p.LastJSON("registered", &r))
		if r.Failed > 0 {
			for i, a := range nl.amfs {
				t.Logf("amf%d stderr: %s", i+1, tail(a.Stderr(), 10))
			}
			t.Fatalf("gnb%d: %d of %d UEs did not register through lb1: %q; gNB errors %q", k+1, r.Failed, perGNB, r.UEErrors, r.GNBErrors)
		}
	}
}

// fail: kill -9 of lb1's daemon, then lb1's link down (its pinned
// datapath and its kernel stay). Nothing moves the VIP but lb2's L2
// election (lb1's heartbeats stop) and its gratuitous ARP. The failure's
// time is the kill's start: Kill returns once the process is reaped,
// after its kernel closed its sync connection.
func (nl *n2Lab) fail(t *testing.T, ctx context.Context) time.Time {
	t.Helper()
	failed := time.Now()
	must(t, nl.daemons[0].Kill())
	must(t, nl.topo.Nodes[0].Iface("eth0").SetUp(ctx, false))
	return failed
}

// dropINITs makes h drop every SCTP INIT it receives (verification tag 0)
// until lift is called (at the latest when the test ends); lift returns
// how many it dropped.
func dropINITs(t *testing.T, ctx context.Context, h *lab.Host) (lift func() int) {
	t.Helper()
	const table = "tlb_late"
	if out, err := h.Exec(ctx, "nft", "add table inet "+table+
		" { chain in { type filter hook input priority 0; policy accept; sctp vtag 0 counter drop; }; }"); err != nil {
		t.Fatalf("%s: drop INITs: %v: %s", h.Name, err, out)
	}
	lifted, dropped := false, 0
	lift = func() int {
		if lifted {
			return dropped
		}
		lifted = true
		if out, err := h.Exec(context.Background(), "nft", "list", "table", "inet", table); err == nil {
			if f := strings.Fields(string(out)); slices.Contains(f, "packets") {
				dropped, _ = strconv.Atoi(f[slices.Index(f, "packets")+1])
			}
		}
		if out, err := h.Exec(context.Background(), "nft", "delete", "table", "inet", table); err != nil {
			t.Errorf("%s: stop dropping INITs: %v: %s", h.Name, err, out)
		}
		return dropped
	}
	t.Cleanup(func() { lift() })
	return lift
}

// n2Outcome is what the gNBs and AMFs report after the failover.
type n2Outcome struct {
	ues, registered int
	// same: the UE's uplink NAS after the failover was answered by the AMF
	// that registered it, under the AMF-UE-NGAP-ID it gave.
	same     int
	retained []bool
	// first, median, last: when the UEs' uplink NAS answers arrived after
	// the failure (every UE sends once its gNB is back); rtt50, rttMax:
	// each UE's own wait, answer minus its uplink's sending.
	first, median, last time.Duration
	rtt50, rttMax       time.Duration
	// sentFirst, sentLast: when the first and the last uplink went out
	// after the failure (the gNBs' pace of sending).
	sentFirst, sentLast time.Duration
	reregistered        int
	amfUEs              int
	problems            []string
	amfErrors           []string
	lostAfterFail       []time.Duration
	reconnectAfter      []time.Duration
	// lostBy counts the UEs whose uplink did not reach their AMF, by
	// "gnbN/amfP" (P: the registering AMF's pointer).
	lostBy map[string]int
}

type gnbEvent struct {
	AtNs     int64 `json:"atNs"`
	Retained bool  `json:"retained"`
}

// collect waits for every gNB's report and asks the AMFs for theirs.
func (nl *n2Lab) collect(t *testing.T, ctx context.Context, failed time.Time) n2Outcome {
	t.Helper()
	o := n2Outcome{lostBy: map[string]int{}}
	var answered, rtts, sent []time.Duration
	for k, p := range nl.gnbs {
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("gnb%d: %v\nstdout %s\nstderr %s", k+1, err, tail(p.Stdout(), 5), tail(p.Stderr(), 20))
		}
		var lost, rec gnbEvent
		must(t, p.LastJSON("lost", &lost))
		must(t, p.LastJSON("reconnected", &rec))
		o.retained = append(o.retained, rec.Retained)
		o.lostAfterFail = append(o.lostAfterFail, time.Duration(lost.AtNs-failed.UnixNano()))
		o.reconnectAfter = append(o.reconnectAfter, time.Duration(rec.AtNs-failed.UnixNano()))
		var r n2.GNBReport
		must(t, p.LastJSON("report", &r))
		for _, e := range r.Errors {
			// The one loss the scenario causes on purpose.
			if !strings.HasPrefix(e, "association lost") {
				o.problems = append(o.problems, fmt.Sprintf("gnb%d: %s", k+1, e))
			}
		}
		for _, u := range r.UEs {
			o.ues++
			if !u.Registered {
				o.problems = append(o.problems, fmt.Sprintf("gnb%d ue %d not registered: %s", k+1, u.Index, u.Error))
				continue
			}
			o.registered++
			if u.UplinkAMFUEID == u.AMFUEID && u.UplinkPointer == int(u.RegPointer) && u.UplinkAtNs != 0 {
				o.same++
				answered = append(answered, time.Duration(u.UplinkAtNs-failed.UnixNano()))
				rtts = append(rtts, time.Duration(u.UplinkAtNs-u.UplinkSentNs))
				sent = append(sent, time.Duration(u.UplinkSentNs-failed.UnixNano()))
			} else {
				o.lostBy[fmt.Sprintf("gnb%d/amf%d", k+1, u.RegPointer)]++
				if len(o.problems) < 10 {
					o.problems = append(o.problems, fmt.Sprintf("gnb%d ue %d (AMF-UE-NGAP-ID %#x): uplink answered by %#x: %s", k+1, u.Index, u.AMFUEID, u.UplinkAMFUEID, u.Error))
				}
			}
		}
	}
	if len(answered) > 0 {
		slices.Sort(answered)
		slices.Sort(rtts)
		o.first, o.median, o.last = answered[0], answered[len(answered)/2], answered[len(answered)-1]
		o.rtt50, o.rttMax = rtts[len(rtts)/2], rtts[len(rtts)-1]
		o.sentFirst, o.sentLast = slices.Min(sent), slices.Max(sent)
	}
	for k, p := range nl.amfs {
		must(t, p.Signal(syscall.SIGTERM))
		if err := p.Wait(ctx); err != nil {
			t.Logf("amf%d exit: %v", k+1, err)
		}
		var r n2.AMFReport
		must(t, p.LastJSON("report", &r))
		for _, e := range r.Errors {
			o.amfErrors = append(o.amfErrors, fmt.Sprintf("amf%d: %s", k+1, e))
		}
		for _, u := range r.UEs {
			o.amfUEs++
			// Every Initial UE Message makes a record: one that carries a
			// 5G-S-TMSI, or a second record for a gNB's UE, is a UE that
			// came back through registration or service request.
			if u.STMSI {
				o.reregistered++
			}
		}
	}
	o.reregistered += max(0, o.amfUEs-o.registered)
	return o
}

// TestN2UEsSurviveANodeFailure: two real daemons in one HA group, an N2
// proxy service on the same VIP on both; two gNBs (heartbeats 30 s apart,
// like real gNBs) register 1,000 UEs through lb1. Once lb2 holds lb1's N2
// records (GET /v1/ha n2Records), lb1's daemon is killed (kill -9) and its
// link taken down. lb2's HA sync sees lb1's connection end, lb2's L2
// election sees lb1's heartbeats stop and takes the VIP over (gratuitous
// ARP to the router), and lb2 ABORTs at once each gNB's association with
// lb1 from the VIP with the gNB's own tag from lb1's replicated record
// (T bit clear:
// not the out-of-the-blue answer to a heartbeat, which would come up to
// 30 s later with the T bit set); both gNBs see the loss within
// n2AbortWithin, reconnect to the VIP asking for UE retention, and each
// UE sends its next uplink NAS: at least 99.9% must reach the AMF that
// registered them under the AMF-UE-NGAP-ID it gave (the AMF simulator
// answers only its own IDs with the RAN ID they were given), none
// re-registers.
func TestN2UEsSurviveANodeFailure(t *testing.T) {
	n2LabGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const perGNB = 500
	nl := upN2Lab(t, ctx, true, 0)
	nl.failover(t, ctx, perGNB)
}

// TestN2UEsSurviveANodeFailureWithAnAMFLate is the node failure with lb2's
// association to amf3 late: amf3 drops every INIT (SCTP verification tag
// 0) from just before lb1's failure until n2AMFLate after it, so lb2's
// INIT to amf3 is lost and retransmitted (its RTO from 300 ms). The gNBs'
// NG Setups are answered once the proxy's SetupWait (1 s) passes, with
// the other two AMFs' retention, and each gNB sends its UEs' uplinks at
// once: those of amf3's UEs must wait in lb2's proxy until amf3 confirms
// them on the late association, then reach amf3 under their
// AMF-UE-NGAP-IDs, like every other UE's (>= 99.9%, none re-registers).
func TestN2UEsSurviveANodeFailureWithAnAMFLate(t *testing.T) {
	n2LabGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nl := upN2Lab(t, ctx, true, 0)
	nl.amfLate = n2AMFLate
	nl.failover(t, ctx, 150)
}

// failover is the node failure test on a running lab: the gNBs register
// perGNB UEs each through lb1, lb1 is killed once lb2 holds its N2
// records, and every gNB must see lb2's takeover ABORT and resume its UEs
// through lb2.
func (nl *n2Lab) failover(t *testing.T, ctx context.Context, perGNB int) {
	t.Helper()
	waitReady(t, ctx, nl.daemons[1], "lb2")
	// gnb1's INIT to the VIP, for the tag it chose (what lb2's ABORT
	// must carry): its own capture, SCTP control chunks only are read.
	initCapt, err := capture.Start(ctx, nl.topo.Router, "eth0", t.TempDir())
	must(t, err)
	start := time.Now()
	nl.startGNBs(t, ctx, perGNB, 10*time.Second)
	must(t, initCapt.Stop())
	ues := perGNB * len(nl.gnbs)
	t.Logf("%d UEs registered through lb1 in %v", ues, time.Since(start).Round(time.Second))
	// gnb1's link to the router from here on (tshark over the whole
	// registration is slow on a loaded machine): its old association's
	// packets before the failure, the ABORT that ends it, every NGAP
	// message after.
	capt, err := capture.Start(ctx, nl.topo.Router, "eth0", t.TempDir())
	must(t, err)
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer tcancel()
	gnbTag := initiateTag(t, tctx, initCapt.File)
	// One record per UE and one per gNB.
	want := ues + len(nl.gnbs)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := nl.daemons[1].Client.HA(ctx)
		if err == nil && st.N2Records >= want {
			t.Logf("lb2 holds %d N2 records of lb1's (%d UEs, %d gNBs); records received %d", st.N2Records, ues, len(nl.gnbs), st.RecordsReceived)
			break
		}
		if time.Now().After(deadline) {
			// Which side lost them: what lb1 sent and lb2 received, and
			// lb1's own N2 records (what lb1 holds of lb2's: none).
			st1, err1 := nl.daemons[0].Client.HA(ctx)
			t.Fatalf("lb2 holds %d N2 records after 30s (%v), want %d; lb2 received %d records; lb1 sent %d, resent %d, peers %+v (%v)",
				st.N2Records, err, want, st.RecordsReceived, st1.RecordsSent, st1.RecordsResent, st1.Peers, err1)
		}
		time.Sleep(100 * time.Millisecond)
	}
	drops := watchDrops(ctx, nl.topo.Lab.Hosts())
	var lift func() int
	if nl.amfLate > 0 {
		lift = dropINITs(t, ctx, nl.amfHost[len(nl.amfHost)-1])
	}
	failed := nl.fail(t, ctx)
	if lift != nil {
		time.Sleep(time.Until(failed.Add(nl.amfLate)))
		n := lift()
		t.Logf("amf%d dropped %d INITs in the %v after the failure", len(nl.amfHost), n, nl.amfLate)
		if n == 0 {
			t.Errorf("amf%d dropped no INIT: lb2's association to it was not late", len(nl.amfHost))
		}
	}
	o := nl.collect(t, ctx, failed)
	drops.check(t, ctx, o.last > n2LateUE)
	for k, r := range o.retained {
		if !r {
			t.Errorf("gnb%d: lb2's NG Setup Response did not say ues-retained", k+1)
		}
	}
	if o.ues != ues || o.registered != ues {
		t.Errorf("%d UEs reported, %d registered, want %d", o.ues, o.registered, ues)
	}
	if o.same*1000 < ues*999 {
		// What CI's excerpt must show first: where the lost UEs were
		// registered, and what lb2's proxy did with their AMFs.
		t.Errorf("%d of %d UEs' uplink NAS reached their AMF under their AMF-UE-NGAP-ID after the failover, want >= 99.9%%; lost by (gNB, registering AMF): %v; lb2's N2 takeover log:\n%s",
			o.same, ues, o.lostBy, grepAny(nl.daemons[1].Log(), 30, "adopted", "AMF dial failed", "AMF association", "refused NG Setup", "given up", "NG Setup"))
	}
	if o.reregistered != 0 {
		t.Errorf("%d UEs re-registered or came back by service request (AMFs hold %d UE records for %d UEs)", o.reregistered, o.amfUEs, ues)
	}
	for _, p := range append(o.problems, o.amfErrors...) {
		t.Error(p)
	}
	for k, d := range o.lostAfterFail {
		if d > n2AbortWithin {
			t.Errorf("gnb%d saw its association's loss %v after the failure, want within %v (heartbeats %v apart)", k+1, d.Round(time.Millisecond), n2AbortWithin, n2Heartbeat)
		}
	}
	if log := nl.daemons[1].Log(); !strings.Contains(log, fmt.Sprintf("sent=%d failed=0", len(nl.gnbs))) {
		t.Errorf("lb2 did not log %d takeover ABORTs sent: %s", len(nl.gnbs), grepLines(log, "N2 takeover"))
	}
	t.Logf("kill -9 of lb1: %d/%d UEs' next uplink NAS reached the same AMF with the same AMF-UE-NGAP-ID, %d re-registered; "+
		"gNBs saw the loss after %v, reconnected (ues-retained %v) after %v; every UE's uplink sent at once (out %v to %v after the failure), "+
		"answered after the failure: first %v, median %v, last %v (each UE's wait, answer minus its uplink: median %v, max %v)",
		o.same, ues, o.reregistered, roundAll(o.lostAfterFail), o.retained, roundAll(o.reconnectAfter),
		o.sentFirst.Round(time.Millisecond), o.sentLast.Round(time.Millisecond),
		o.first.Round(time.Millisecond), o.median.Round(time.Millisecond), o.last.Round(time.Millisecond),
		o.rtt50.Round(time.Millisecond), o.rttMax.Round(time.Millisecond))
	for i, d := range nl.daemons {
		t.Logf("lb%d's member log:\n%s", i+1, grepLines(d.Log(), "member: "))
	}
	must(t, capt.Stop())
	// An uplink NAS and its answer per UE, NG Setup Request and Response.
	v, err := capture.CheckNGAP(tctx, capt.File, capture.NGAPExpect{MinMessages: 2*perGNB + 2})
	must(t, err)
	for _, p := range v.Problems {
		t.Error(p)
	}
	t.Logf("gnb1's link: %v", v)
	checkTakeoverAbort(t, tctx, capt.File, failed, gnbTag)
}

// initiateTag is the tag gnb1 chose for its association to the VIP: the
// Initiate Tag of its INIT (retransmissions carry the same).
func initiateTag(t *testing.T, ctx context.Context, file string) string {
	t.Helper()
	rows, err := capture.Fields(ctx, file, "sctp.chunk_type == 1 && ip.src == "+n2GNBAddrs[0].String()+" && ip.dst == "+vip.String(), "sctp.initiate_tag")
	must(t, err)
	tags := map[string]bool{}
	for _, r := range rows {
		tags[r[0]] = true
	}
	if len(tags) != 1 {
		t.Fatalf("gnb1's INITs to the VIP carried initiate tags %v, want one association's", tags)
	}
	for tag := range tags {
		return tag
	}
	return ""
}

// checkTakeoverAbort: gnb1's association with the dead lb1 ends by lb2's
// takeover ABORT: from the VIP, T bit clear, gnb1's own tag (the Initiate
// Tag of its INIT), within n2AbortWithin of the failure. An
// out-of-the-blue ABORT (lb2's stack answering a packet on the old
// association) has the T bit set and cannot pass.
func checkTakeoverAbort(t *testing.T, ctx context.Context, file string, failed time.Time, gnbTag string) {
	t.Helper()
	gnb := n2GNBAddrs[0].String()
	aborts, err := capture.Fields(ctx, file, "sctp.chunk_type == 6 && ip.dst == "+gnb, "frame.time_epoch", "ip.src", "sctp.verification_tag", "sctp.abort_t_bit")
	must(t, err)
	want, err := strconv.ParseUint(strings.TrimPrefix(gnbTag, "0x"), 16, 32)
	must(t, err)
	for _, r := range aborts {
		at, err := epoch(r[0])
		if err != nil || at.Before(failed) {
			continue
		}
		tag, err := strconv.ParseUint(strings.TrimPrefix(r[2], "0x"), 16, 32)
		if err != nil || tag != want || r[1] != vip.String() || r[3] == "1" || r[3] == "True" {
			continue
		}
		if d := at.Sub(failed); d > n2AbortWithin {
			t.Errorf("lb2's ABORT of gnb1's old association came %v after the failure, want within %v", d.Round(time.Millisecond), n2AbortWithin)
		}
		t.Logf("gnb1's old association: ABORT from %s, T bit clear, gnb1's tag %s, %v after the failure", r[1], r[2], at.Sub(failed).Round(time.Millisecond))
		return
	}
	t.Errorf("no ABORT from the VIP with the T bit clear and gnb1's tag %s after the failure; ABORTs to gnb1: %v", gnbTag, aborts)
}

// grepAny is the lines of s containing any of subs, at most max of them
// (then "..." when more match; max < 0: all).
func grepAny(s string, max int, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(l, sub) }) {
			continue
		}
		if len(out) == max {
			out = append(out, "...")
			break
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// grepLines is every line of s containing sub.
func grepLines(s, sub string) string { return grepAny(s, -1, sub) }

func epoch(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, int64(f*1e9)), nil
}

// TestN2UEsLostWithoutHASync is the control: the same lab and failure
// without the HA sync. lb2 knows none of the UEs: the gNBs' NG Setup
// Responses do not say ues-retained and no UE's uplink NAS reaches its
// AMF.
func TestN2UEsLostWithoutHASync(t *testing.T) {
	n2LabGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const perGNB = 20
	nl := upN2Lab(t, ctx, false, 0)
	nl.startGNBs(t, ctx, perGNB, 3*time.Second)
	failed := nl.fail(t, ctx)
	o := nl.collect(t, ctx, failed)
	if slices.Contains(o.retained, true) {
		t.Errorf("lb2 without the sync answered ues-retained: %v", o.retained)
	}
	if o.registered != perGNB*len(nl.gnbs) {
		t.Fatalf("%d UEs registered, want %d: %v", o.registered, perGNB*len(nl.gnbs), o.problems)
	}
	if o.same != 0 {
		t.Errorf("%d UEs resumed on their AMF without the sync: the failover test could not fail", o.same)
	}
	t.Logf("without sync: %d/%d UEs resumed, retained %v", o.same, o.registered, o.retained)
}

func n2LabGate(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"dumpcap", "tshark", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
