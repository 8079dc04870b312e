package ha

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// The lab is scenarios/bgp's topology without a routing daemon: the router
// has a static route for the VIP, moved from lb1 to lb2 at the failure.
var (
	vip       = bgp.VIPs[0]
	endpoints = []netip.Addr{bgp.BackendIP[0], netip.MustParseAddr("10.78.2.22")}
)

// The second VIP of the SCTP services and the client's second address
// (multi-homing on both sides of the LB).
var (
	vip2        = netip.MustParseAddr("10.78.100.2")
	clientAddrs = []netip.Addr{netip.MustParseAddr("10.78.1.2"), netip.MustParseAddr("10.78.1.3")}
	clientLAN   = netip.MustParsePrefix("10.78.1.0/24")
	sctpModes   = []sctpMode{{api.ModeDefault, 7102}, {api.ModeFullNAT, 7103}}
)

type sctpMode struct {
	mode string
	port uint16
}

const (
	tcpPort  = 7100
	udpPort  = 7101
	syncPort = 7946
)

// services are the same on both nodes (same names, so the same IDs and
// endpoint indexes: what an imported entry refers to). Round robin makes
// the test able to fail: a node without the flows' entries picks the
// endpoints in the order the flows' next packets reach it, which the test
// chooses to differ from lb1's.
func services() []api.Service {
	var eps = func(port uint16) []api.Endpoint {
		var out []api.Endpoint
		for _, a := range endpoints {
			out = append(out, api.Endpoint{Address: a.String(), Port: port})
		}
		return out
	}
	out := []api.Service{
		{Name: "tcp", VIP: vip.String(), Port: tcpPort, Protocol: api.ProtocolTCP, Mode: api.ModeFullNAT, Select: api.SelectRoundRobin, Endpoints: eps(tcpPort)},
		{Name: "udp", VIP: vip.String(), Port: udpPort, Protocol: api.ProtocolUDP, Mode: api.ModeFullNAT, Select: api.SelectRoundRobin, Endpoints: eps(udpPort)},
	}
	// Multi-homed SCTP: two VIPs, one endpoint (its usrsctp stack would
	// take an association's packets on any of its addresses, so a second
	// endpoint address on it would hide a wrong choice).
	for _, m := range sctpModes {
		out = append(out, api.Service{Name: "sctp-" + m.mode, VIP: vip.String(), SecondaryVIPs: []string{vip2.String()}, Port: m.port,
			Protocol: api.ProtocolSCTP, Mode: m.mode, Endpoints: []api.Endpoint{{Address: endpoints[0].String(), Port: m.port}}})
	}
	return out
}

type udpFlow struct{ c net.Conn }

func (f udpFlow) ask() (l4.Reply, error) { return f.askTries(5, time.Second) }

// askTries asks up to tries times, waiting wait for the answer each time.
func (f udpFlow) askTries(tries int, wait time.Duration) (l4.Reply, error) {
	buf := make([]byte, 512)
	var lastErr error
	for try := 0; try < tries; try++ {
		if _, err := f.c.Write([]byte("ask\n")); err != nil {
			return l4.Reply{}, err
		}
		_ = f.c.SetReadDeadline(time.Now().Add(wait))
		n, err := f.c.Read(buf)
		if err == nil {
			return parseUDPReply(buf[:n])
		}
		lastErr = err
	}
	return l4.Reply{}, fmt.Errorf("udp: no reply: %w", lastErr)
}

// parseUDPReply reads the UDP echo server's "<server> <source>" answer.
func parseUDPReply(b []byte) (l4.Reply, error) {
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return l4.Reply{}, fmt.Errorf("malformed reply %q", b)
	}
	ap, err := netip.ParseAddrPort(fields[1])
	if err != nil {
		return l4.Reply{}, err
	}
	return l4.Reply{Server: fields[0], Source: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

type lab2 struct {
	topo    *bgp.Topo
	daemons []*l4.Daemon
	sctpSrv []*sctppeer.Server

	bins   l4.Binaries
	certs  map[string]NodeCerts
	dir    string
	labID  string
	withHA bool
	// refresh is the daemons' --ha-refresh-interval, "" for the default.
	refresh string
	// env is added to every daemon's environment.
	env []string
	// profiling: the daemons serve their runtime profiles on
	// profilingAddr, inside their own namespace.
	profiling bool
}

// profilingAddr is where a lab daemon serves its runtime profiles
// (labConfig.profiling), on its namespace's loopback.
const profilingAddr = "127.0.0.1:6060"

// labConfig says how upLabWith sets the lab's daemons up.
type labConfig struct {
	withHA bool
	// refresh: the daemons' --ha-refresh-interval ("" for the default,
	// 3 s). The tests use 1 s so a copy's age converges within their
	// waits; the CPU benchmark measures the default.
	refresh string
	// env is added to every daemon's environment.
	env []string
	// profiling: --profiling-address=profilingAddr on every daemon.
	profiling bool
}

func upLab(t *testing.T, ctx context.Context, withHA bool) *lab2 {
	t.Helper()
	return upLabWith(t, ctx, labConfig{withHA: withHA, refresh: "1s"})
}

func upLabWith(t *testing.T, ctx context.Context, cfg labConfig) *lab2 {
	t.Helper()
	withHA := cfg.withHA
	topo := buildTopo(t, ctx)
	l := topo.Lab
	for i, a := range endpoints {
		id := fmt.Sprintf("ep%d", i+1)
		ts, err := l4.ServeTCPEcho(topo.BE, netip.AddrPortFrom(a, tcpPort).String(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ts.Close() })
		s, err := l4.ServeUDP(topo.BE, netip.AddrPortFrom(a, udpPort).String(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	lb := &lab2{topo: topo, refresh: cfg.refresh, env: cfg.env, profiling: cfg.profiling}
	for _, m := range sctpModes {
		srv, err := sctppeer.StartServer(ctx, topo.BE, sctppeer.ServerOptions{Bind: endpoints[:1], Port: m.port, ID: "ep1-" + m.mode, Timers: sctpTimers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		lb.sctpSrv = append(lb.sctpSrv, srv)
	}
	if err := topo.Client.AddAddr(ctx, "eth0", netip.PrefixFrom(clientAddrs[1], 24)); err != nil {
		t.Fatal(err)
	}
	if err := lb.routeTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	bins, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certs, err := WriteGroupCerts(dir, "lb1", "lb2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i, d := range lb.daemons {
			if t.Failed() {
				t.Logf("lb%d log (warnings, then its end):\n%s", i+1, digest(d.Log(), 20, 25))
			}
			if err := d.Destroy(context.Background()); err != nil {
				t.Errorf("lb%d teardown: %v", i+1, err)
			}
		}
	})
	lb.bins, lb.certs, lb.dir, lb.labID, lb.withHA = bins, certs, dir, l.ID, withHA
	// After the daemons' teardown: its cleanup runs first.
	lb.keepEvidence(t, ctx)
	for i, h := range topo.Nodes {
		lb.daemons = append(lb.daemons, lb.startNode(t, ctx, i, ""))
		for _, key := range []string{"net/ipv4/conf/all/send_redirects", "net/ipv4/conf/eth0/send_redirects"} {
			if v, err := h.ReadSysctl(key); err != nil || v != "0" {
				t.Fatalf("lb%d after its daemon started: %s = %q (%v), want 0 (the daemon turns ICMP redirects off)", i+1, key, v, err)
			}
		}
	}
	return lb
}

// buildTopo builds the lab's hosts and links (bgp.BuildTopo), the
// backend holding both endpoints' addresses, no ICMP redirects.
func buildTopo(t *testing.T, ctx context.Context) *bgp.Topo {
	t.Helper()
	topo, err := bgp.BuildTopo(ctx, lab.NewEmpty(t))
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	// No ICMP redirect may send the backend's packets past the LB nodes:
	// the router's are turned off here, the LB nodes' by the daemon itself
	// (checked by upLabWith: a node's datapath passes up what it holds no
	// entry for, its kernel forwards it and would tell the backend to use
	// the next hop directly), and the backend refuses them besides.
	for _, h := range []*lab.Host{topo.Router, topo.BE} {
		if err := h.NoRedirects(); err != nil {
			t.Fatal(err)
		}
	}
	if err := topo.BE.AddAddr(ctx, "eth0", netip.PrefixFrom(endpoints[1], 24)); err != nil {
		t.Fatal(err)
	}
	return topo
}

// startNode starts lb(i+1)'s daemon and creates the services; boot names a
// fresh state directory and pin path (a node back from a reboot), "" the
// first ones.
func (lb *lab2) startNode(t *testing.T, ctx context.Context, i int, boot string) *l4.Daemon {
	t.Helper()
	h := lb.topo.Nodes[i]
	name, peer := fmt.Sprintf("lb%d", i+1), fmt.Sprintf("lb%d", 2-i)
	args := []string{"--log-format=text"}
	if lb.profiling {
		args = append(args, "--profiling-address="+profilingAddr)
	}
	if lb.withHA {
		nc := lb.certs[name]
		args = append(args, "--ha-node-name="+name,
			"--ha-listen-address="+netip.AddrPortFrom(bgp.NodeAddr(i+1, 0), syncPort).String(),
			"--ha-peers="+peer+"="+netip.AddrPortFrom(bgp.NodeAddr(2-i, 0), syncPort).String(),
			"--ha-tls-cert-file="+nc.Cert, "--ha-tls-key-file="+nc.Key, "--ha-tls-ca-file="+nc.CA,
			// The join timeout outlasts a rejoin with the link still down;
			// the drain's wait for lb2's acknowledgement is asserted, not
			// its speed on a loaded machine.
			"--ha-join-timeout=5m", "--ha-drain-timeout=30s")
		if lb.refresh != "" {
			args = append(args, "--ha-refresh-interval="+lb.refresh)
		}
	}
	state := filepath.Join(lb.dir, name+boot)
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: lb.bins, Host: h, Interfaces: []string{"eth0"},
		StateDir: state, PinPath: "/sys/fs/bpf/" + lb.labID + "-" + h.Name + boot, ExtraArgs: args, Env: lb.env})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, s := range services() {
		if err := d.Client.CreateService(ctx, s); err != nil {
			_ = d.Destroy(context.Background())
			t.Fatalf("%s: create %s: %v", name, s.Name, err)
		}
	}
	return d
}

// apiGet sends an authenticated GET for path to a daemon's API from inside
// its namespace; the caller closes the body.
func apiGet(t *testing.T, ctx context.Context, h *lab.Host, d *l4.Daemon, path string) *http.Response {
	t.Helper()
	tok, err := os.ReadFile(d.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: l4.HostDialer(h), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l4.APIAddress+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// scrape reads a daemon's /metrics from inside its namespace.
func scrape(t *testing.T, ctx context.Context, d *l4.Daemon) string {
	t.Helper()
	body, err := d.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// hasRow says whether a table printed by telcolbctl has a row of exactly
// these cells.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(cells, " ") {
			return true
		}
	}
	return false
}

// hasRowPrefix: a line of out starts with cells.
func hasRowPrefix(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// digest is a daemon log for a failure report: its warnings and errors
// (the first maxWarn of them) and its last n lines. The startup's info lines
// are left out: CI shows a failing run's head and tail only, and they
// would fill the head.
func digest(s string, maxWarn, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	last := max(0, len(lines)-n)
	var out []string
	warned := 0
	for _, l := range lines[:last] {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			if warned++; warned <= maxWarn {
				out = append(out, l)
			}
		}
	}
	if warned > maxWarn {
		out = append(out, fmt.Sprintf("... %d more warnings", warned-maxWarn))
	}
	if last > 0 {
		out = append(out, fmt.Sprintf("... (last %d lines)", n))
	}
	return strings.Join(append(out, lines[last:]...), "\n")
}

// failure is how lb1 leaves the path.
type failure int

const (
	// killed: SIGKILL of lb1's daemon, then its link down (its pinned
	// datapath would otherwise keep forwarding).
	killed failure = iota
	// linkDown: lb1's link down, its daemon alive (and unaware).
	linkDown
)

func (f failure) String() string { return [...]string{"kill -9", "link down"}[f] }

// fail takes lb1 out of the path and moves the routes to lb2, as the BGP
// failover would.
func (lb *lab2) fail(t *testing.T, ctx context.Context, kind failure) {
	t.Helper()
	if kind == killed {
		if err := lb.daemons[0].Kill(); err != nil {
			t.Fatal(err)
		}
	}
	if err := lb.topo.Nodes[0].Iface("eth0").SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := lb.routeTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
}

func waitReady(t *testing.T, ctx context.Context, d *l4.Daemon, who string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		h, err := d.Client.Health(ctx)
		if err == nil && h.Status == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 90s: %+v %v", who, h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runFailover: lb2 ready; half the flows opened through lb1 and held by
// lb2, the other half opened about 100 ms before lb1 fails; after the
// failure every TCP and UDP flow answers through lb2 from its endpoint
// with its SNAT source, no reset. The SCTP clients send all along
// (sctpRun each) and are collected by the caller.
func runFailover(t *testing.T, ctx context.Context, kind failure, sctpRun time.Duration) (*lab2, *flowSet) {
	t.Helper()
	lb := upLab(t, ctx, true)
	waitReady(t, ctx, lb.daemons[1], "lb2")
	n := flowCounts(t)
	fs := &flowSet{}
	fs.openTCPUDP(t, ctx, lb.topo.Client, n.tcp/2, n.udp/2)
	fs.startSCTP(t, ctx, lb, n.sctp/2, sctpRun)
	waitHeld(t, ctx, lb.daemons[1], "lb2", fs, n.sctp/2)
	if kind == killed {
		checkSyncedMetrics(t, ctx, lb)
	}
	// lb1's counts of the old associations (they only grow until the
	// failure): checkSCTPImported compares lb2's with them.
	before := waitSCTPCount(t, ctx, lb.daemons[0], n.sctp > 0)
	// The young half.
	fs.openTCPUDP(t, ctx, lb.topo.Client, n.tcp/2, n.udp/2)
	fs.startSCTP(t, ctx, lb, n.sctp/2, sctpRun)
	time.Sleep(100 * time.Millisecond)
	for i, f := range fs.sctp {
		select {
		case <-f.c.Proc.Done():
			t.Fatalf("sctp client %d (associations %d..%d) finished before the failure (machine too slow for the run of %v)", i, f.first, f.first+f.n-1, sctpRun)
		default:
		}
	}
	lb.fail(t, ctx, kind)
	failed := time.Now()
	t.Logf("%s at %s", kind, failed.Format(stamp))
	applied := recordsApplied(t, ctx, lb)
	checkSCTPImported(t, ctx, lb.daemons[1], before)
	heldAtFailure(t, ctx, lb, fs, kind == linkDown)
	asked := time.Now()
	gap := fs.check(t, "through lb2 after the failure ("+kind.String()+")", asked)
	t.Logf("lb2 had applied %s records from its peer at the failure, %s after the flows were asked", applied, recordsApplied(t, ctx, lb))
	t.Logf("%s: %d TCP and %d UDP flows (half opened 100 ms before) asked %v after the failure (the checks of lb2's entries in between), all answered through lb2 within %v of being asked at once",
		kind, len(fs.tcp), len(fs.udp), asked.Sub(failed).Round(time.Millisecond), gap.Round(time.Millisecond))
	checkOnePortPerAssociation(t, ctx, lb.daemons[1], "lb2")
	lb.logRawDrops(t, ctx, "after the failure's checks")
	return lb, fs
}

func checkSyncedMetrics(t *testing.T, ctx context.Context, lb *lab2) {
	t.Helper()
	metrics := scrape(t, ctx, lb.daemons[1])
	for _, want := range []string{`telcolb_ha_peer_synced{peer="lb1"} 1`, `telcolb_ha_peer_up{peer="lb1"} 1`, "telcolb_ha_ready 1"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("lb2 /metrics lacks %q", want)
		}
	}
	if strings.Contains(metrics, "telcolb_ha_records_received_total 0\n") || !strings.Contains(metrics, "telcolb_ha_records_received_total ") {
		t.Errorf("lb2 received no record according to its metrics")
	}
	if out, err := lb.daemons[1].Ctl(ctx, "get", "ha"); err != nil || !strings.Contains(out, "node lb2, ready") || !hasRowPrefix(out, "lb1", "true", "true") {
		t.Errorf("telcolbctl get ha on lb2: %v\n%s", err, out)
	}
}

// TestFlowsSurviveANodeFailure: TCP and UDP flows (fullnat) and
// multi-homed SCTP associations (default and fullnat), half of them
// opened 100 ms before, carry on through lb2 when lb1's daemon is killed
// and lb1 leaves the path: same endpoint, same SNAT source, no reset, no
// ABORT, every SCTP message echoed. Then lb1 comes back from a reboot
// (fresh pins and state): with its link still down it reports syncing
// (503) and announces nothing; once its link is up and lb2's bulk resync
// arrived it is ready and holds every flow lb2 serves, and the routes
// moving back to lb1 reset nothing.
func TestFlowsSurviveANodeFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	lb, fs := runFailover(t, ctx, killed, 90*time.Second)
	if t.Failed() {
		return
	}
	// lb1 reboots: its pinned state is gone.
	if err := lb.daemons[0].Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	lb.daemons[0] = lb.startNode(t, ctx, 0, "-reboot")
	lb1 := lb.daemons[0]
	if h, err := lb1.Client.Health(ctx); err != nil || h.Status != "syncing" {
		t.Errorf("rebooted lb1 with its link down: health %+v %v, want syncing", h, err)
	}
	if code := healthCode(t, ctx, lb.topo.Nodes[0], lb1); code != http.StatusServiceUnavailable {
		t.Errorf("rebooted lb1 syncing: GET /v1/health HTTP %d, want 503", code)
	}
	vips, err := lb1.Client.VIPs(ctx)
	if err != nil || len(vips) == 0 {
		t.Fatalf("GET /v1/vips on lb1: %v %v", vips, err)
	}
	// No advertisement in this lab: the VIPs' reason is that one (the HA
	// gate's reason is TestNoVIPAnnouncedBeforeHAResync's, cmd/telcolb/app);
	// what counts here is that nothing is announced.
	for _, v := range vips {
		if len(v.Announced) != 0 {
			t.Errorf("lb1 syncing: VIP %+v announced", v)
		}
	}
	if err := lb.topo.Nodes[0].Iface("eth0").SetUp(ctx, true); err != nil {
		t.Fatal(err)
	}
	// Taking the link down removed lb1's default route.
	if err := lb.topo.Nodes[0].AddRoute(ctx, netip.Prefix{}, bgp.RouterLAN[0]); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, lb1, "rebooted lb1")
	waitHeld(t, ctx, lb1, "rebooted lb1", fs, fs.nSCTP())
	if err := lb.routeTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("routes back to lb1 at %s", back.Format(stamp))
	gap := fs.check(t, "back through lb1 after its rejoin", back)
	t.Logf("rejoin: every TCP and UDP flow answered through lb1 within %v of the routes moving back", gap.Round(time.Millisecond))
	moves := settledMoves(t, ctx, lb, len(fs.tcp)+len(fs.udp)+fs.nSCTP())
	sgap := fs.waitSCTP(t, ctx)
	// The associations' ends belong in the moves' window: their entries
	// close (SHUTDOWN, then CLOSED for 10 s) and age out on both nodes,
	// while the nodes send each other the state changes and deletions.
	waitSCTPGone(t, ctx, lb)
	moves()
	fs.logSCTPFailures(t, ctx, lb, 0, 1)
	t.Logf("kill -9 and rejoin: %d SCTP associations (%v), longest gap between two echoes %v (messages every 50 ms)", fs.nSCTP(), sctpModeNames(), sgap)
}

// TestFlowsSurviveLinkDown: the same flows survive lb1 losing its link
// while its daemon lives on.
func TestFlowsSurviveLinkDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	lb, fs := runFailover(t, ctx, linkDown, 20*time.Second)
	sgap := fs.waitSCTP(t, ctx)
	fs.logSCTPFailures(t, ctx, lb, 1)
	t.Logf("link down: %d SCTP associations (%v), longest gap between two echoes %v (messages every 50 ms)", fs.nSCTP(), sctpModeNames(), sgap)
}

func sctpModeNames() string {
	var out []string
	for _, m := range sctpModes {
		out = append(out, m.mode)
	}
	return strings.Join(out, ", ")
}

// waitSCTPGone waits until neither node holds an SCTP entry (the
// associations ended and their entries aged out), at most a minute.
func waitSCTPGone(t *testing.T, ctx context.Context, lb *lab2) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		held := 0
		var which []string // the entries left, named for the failure
		for i, d := range lb.daemons {
			conns, err := d.Client.Conntrack(ctx)
			if err != nil {
				t.Fatalf("conntrack: %v", err)
			}
			for _, c := range conns {
				if c.Protocol == api.ProtocolSCTP {
					held++
					which = append(which, fmt.Sprintf("lb%d: %s %s -> %s via %s: %s, tags %s/%s, %d paths, %d/%d packets, idle %ds, expires in %ds",
						i+1, c.Service, c.Client, c.VIP, c.Endpoint, c.State, c.VTagClient, c.VTagEndpoint, len(c.Paths), c.OrigPackets, c.ReplyPackets, c.IdleSeconds, c.ExpiresInSeconds))
				}
			}
		}
		if held == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d SCTP entries still held a minute after the associations ended:\n%s", held, strings.Join(which, "\n"))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// healthCode is the HTTP status of GET /v1/health.
func healthCode(t *testing.T, ctx context.Context, h *lab.Host, d *l4.Daemon) int {
	t.Helper()
	resp := apiGet(t, ctx, h, d, "/v1/health")
	resp.Body.Close()
	return resp.StatusCode
}

// TestFlowsBreakWithoutHASync is the control: the same lab without the
// sync; the flows' next packets reach lb2, which has no entry for them:
// TCP connections are reset or answered by the other endpoint, UDP flows
// reach the other endpoint.
func TestFlowsBreakWithoutHASync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lb := upLab(t, ctx, false)
	fs := &flowSet{}
	fs.openTCPUDP(t, ctx, lb.topo.Client, 2, 2)
	lb.fail(t, ctx, killed)
	// The second flow of each kind: lb2 gives its next packet the first
	// endpoint (round robin from the start), not the one lb1 chose.
	r, tcpErr := fs.tcp[1].s.Ask()
	if tcpErr == nil && r == fs.tcp[1].first {
		t.Errorf("tcp 1 carried on through lb2 without the sync (%v): the failover test could not fail", r)
	}
	u, udpErr := fs.udp[1].f.ask()
	if udpErr == nil && u == fs.udp[1].first {
		t.Errorf("udp 1 kept its endpoint through lb2 without the sync (%v): the failover test could not fail", u)
	}
	t.Logf("without sync: tcp 1 answered %v (error %v), before %v; udp 1 answered %v (error %v), before %v", r, tcpErr, fs.tcp[1].first, u, udpErr, fs.udp[1].first)
}

// sctpCounts are the client packets of every SCTP entry (by client and
// VIP address and port) of d's conntrack.
func sctpCounts(t *testing.T, ctx context.Context, d *l4.Daemon) map[[2]string]uint64 {
	t.Helper()
	conns, err := d.Client.Conntrack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]uint64{}
	for _, c := range conns {
		if c.Protocol == api.ProtocolSCTP {
			out[[2]string{c.Client, c.VIP}] = c.OrigPackets
		}
	}
	return out
}

// sctpBusy is how many client packets an association's entry must have
// carried through lb1 for checkSCTPImported to look at it; sctpImported
// is the least its imported copy on lb2 must show: a copy is at most one
// refresh (1 s, about 40 packets at a message every 50 ms with its SACKs)
// behind, an entry made on lb2 from the packets after the failure counts
// a handful.
const (
	sctpBusy     = 120
	sctpImported = 40
)

// waitSCTPCount waits until some SCTP entry of d carried sctpBusy client
// packets (when there is SCTP), and returns every entry's count.
func waitSCTPCount(t *testing.T, ctx context.Context, d *l4.Daemon, sctp bool) map[[2]string]uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		counts := sctpCounts(t, ctx, d)
		for _, n := range counts {
			if n >= sctpBusy || !sctp {
				return counts
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SCTP entry carried %d packets through lb1 after 30s: %v", sctpBusy, counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkSCTPImported: right after the failure lb2's entries of the
// associations that had carried sctpBusy packets through lb1 hold at
// least sctpImported: they are lb1's, imported, not made anew from the
// associations' packets reaching lb2.
// Without this the SCTP part could not fail: the datapath takes up an
// association it has no entry for (one endpoint and one SNAT port for all
// its paths, lib/sctp_young.h), so the associations carry on without the
// sync too.
func checkSCTPImported(t *testing.T, ctx context.Context, d *l4.Daemon, lb1 map[[2]string]uint64) {
	t.Helper()
	lb2 := sctpCounts(t, ctx, d)
	checked := 0
	for k, n := range lb1 {
		if n < sctpBusy {
			continue
		}
		checked++
		if lb2[k] < sctpImported {
			t.Errorf("sctp entry %v: %d client packets on lb2 right after the failure, %d on lb1 before: not lb1's entry", k, lb2[k], n)
		}
	}
	if checked == 0 && len(lb1) > 0 {
		t.Errorf("no SCTP entry had carried %d packets through lb1 before the failure: %v", sctpBusy, lb1)
	}
}

// heldAtFailure logs how many of the TCP and UDP flows lb2 held right
// after the failure, before any of their packets reached it (a flow
// missing here was not synced in time), and lb1's sync counters when its
// daemon lives.
func heldAtFailure(t *testing.T, ctx context.Context, lb *lab2, fs *flowSet, lb1Alive bool) {
	t.Helper()
	conns, err := lb.daemons[1].Client.Conntrack(ctx)
	if err != nil {
		t.Errorf("lb2 conntrack: %v", err)
		return
	}
	have := map[string]bool{}
	fs.heldAtFailure = map[string]string{}
	states := map[string]int{}
	for _, c := range conns {
		have[c.Client] = true
		if c.Protocol == api.ProtocolSCTP {
			// What lb2 holds of each association, for a failure's report
			// (logSCTPFailures): an association that dies after the
			// failure is either missing here (sync) or held in a state
			// lb2 does not forward.
			fs.heldAtFailure[c.Client] = sctpEntryLine(c)
			states[fmt.Sprintf("%s %d paths", c.State, len(c.Paths))]++
		}
	}
	t.Logf("right after the failure lb2 held %d SCTP entries (by state and paths: %v)", len(fs.heldAtFailure), states)
	missing := fs.missing(have)
	var lag []string
	if lb1Alive {
		for _, line := range strings.Split(scrape(t, ctx, lb.daemons[0]), "\n") {
			if strings.HasPrefix(line, "telcolb_ha_sync_lag_seconds") || strings.HasPrefix(line, "telcolb_ha_records_") || strings.HasPrefix(line, "telcolb_ha_resyncs_total") || strings.HasPrefix(line, "telcolb_ha_peer_retransmit_timeout_seconds") {
				lag = append(lag, line)
			}
		}
	}
	t.Logf("right after the failure lb2 held %d of %d TCP+UDP flows (missing: %v); lb1's sync:\n%s",
		len(fs.tcp)+len(fs.udp)-len(missing), len(fs.tcp)+len(fs.udp), missing, strings.Join(lag, "\n"))
}

// recordsApplied is lb2's count of records received from its peers and
// applied. Read at the failure and again later it tells a young flow
// missing at the failure because lb1 never sent it from one lb2 had not
// yet applied (the count still grows after lb1 is gone: records waited in
// lb2's receive path).
func recordsApplied(t *testing.T, ctx context.Context, lb *lab2) string {
	t.Helper()
	for _, line := range strings.Split(scrape(t, ctx, lb.daemons[1]), "\n") {
		if strings.HasPrefix(line, "telcolb_ha_records_received_total ") {
			return strings.TrimPrefix(line, "telcolb_ha_records_received_total ")
		}
	}
	return "?"
}
