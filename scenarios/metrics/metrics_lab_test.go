package metrics

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/monitoring/dashboards"
	"github.com/telcolb/telcolb/monitoring/metricsdoc"
	"github.com/telcolb/telcolb/monitoring/promtest"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/n2"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

const (
	promListen = "127.0.0.1:19090" // inside the lb namespace
	sctpPort   = 5000
	n2SetID    = 0x3f8
	ueWave     = 60 // UEs per gNB
)

// notExercised are the panel queries this lab cannot make return data,
// and why. Evaluate fails when one of them does return series (the list
// is stale) and when any other query returns nothing.
var notExercised = promtest.Unexercised{
	`alert TelcolbVIPPoolNearlyExhausted`:                           "controller metric: k8s/controller TestControllerDashboardAndAlertsAgainstPrometheus fills a pool",
	`alert TelcolbHASyncCertificateExpiring`:                        "HA sync metric: this lab runs no HA group; the rule's promtool test (monitoring/alerts/testdata) evaluates it, cmd/telcolb/app TestHATLSMetricsFollowRenewal checks the gauge",
	`dashboard n2, panel "Rejected PDUs by reason"`:                 "the simulators send only valid NGAP; the section 10 rejections are tested in sctplb/steer",
	`dashboard n2, panel "Malformed PDUs"`:                          "the simulators send only decodable NGAP; malformed input is fuzzed in sctplb/steer",
	`dashboard pfcp, panel "Sessions replayed or moved"`:            "no UPF restarts here; scenarios/pfcp TestN4LabThroughTheDaemon restarts one",
	`dashboard pfcp, panel "Steering failures"`:                     "every PFCP message here has a live UPF",
	`dashboard pfcp, panel "Malformed messages"`:                    "the simulators send valid PFCP; malformed input is fuzzed in l7parse/pfcp and sctplb/n4",
	`dashboard diameter, panel "Retransmissions to another server"`: "no server fails with requests in flight here; scenarios/diameter TestDiameterLabThroughTheDaemon kills one mid-run",
	`dashboard diameter, panel "Rejected by the agent"`:             "every request here has a server to go to; the agent's own answers are tested in sctplb/diam",
}

// TestDashboardsAndAlertsAgainstPrometheus is the metrics lab (see doc.go).
// The scenario: an HTTP service with one endpoint whose port is closed
// (endpoint down, probe failures), TCP, UDP and SCTP traffic through the
// eBPF datapath; an N2 proxy between 2 gNB and 3 AMF simulators where UEs
// register, then every AMF stops and the gNBs' service requests find no
// AMF (steering failures, AMF associations down); a PFCP proxy between an
// SMF simulator and 2 UPF simulators; Prometheus also has a daemon target
// nobody listens on (daemon unreachable).
func TestDashboardsAndAlertsAgainstPrometheus(t *testing.T) {
	promtest.RequireTools(t, "prometheus", "promtool", "bird")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the metrics lab needs root in CI")
		}
		t.Skip("needs root for network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()

	env, err := l4.Up(ctx, l4.EnvConfig{Lab: lab.Config{Backends: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	lb, d := env.Lab.LB, env.Daemon
	tmp := t.TempDir()
	if err := lb.DropProtoUnreachable(ctx); err != nil {
		t.Fatal(err)
	}

	// Prometheus in the lb namespace: the daemon's API is on its loopback.
	args, err := promtest.WriteConfig(tmp, promListen, []promtest.Job{
		// 127.0.0.1:8092 is a daemon target where nothing listens.
		{Name: "telcolb-daemon", Targets: []string{l4.APIAddress, "127.0.0.1:8092"}, TokenFile: d.TokenFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	prom, err := lb.Start("prometheus", args...)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: l4.HostDialer(lb), DisableKeepAlives: true}}
	pc := promtest.Client{Base: "http://" + promListen, HTTP: hc}
	if err := pc.WaitReady(ctx); err != nil {
		t.Fatalf("%v: %s", err, prom.Stderr())
	}

	runL4(t, ctx, env)
	runMultihomed(t, ctx, env, pc)
	runAdvertise(t, ctx, env, tmp)
	runDiameter(t, ctx, env, tmp)
	runPFCP(t, ctx, env, tmp)
	runN2(t, ctx, env, tmp, pc)

	// Everything above is scraped: give Prometheus a few scrapes of the
	// final state so every rate window holds two samples.
	time.Sleep(4 * time.Second)
	targets, err := pc.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		t.Logf("target %s %s: %s %s", tg.Job, tg.Instance, tg.Health, tg.LastError)
		if tg.Instance == l4.APIAddress && tg.Health != "up" {
			t.Errorf("the daemon target is %s: %s", tg.Health, tg.LastError)
		}
	}

	// promtool check metrics on the daemon's exposition.
	body := scrapeDaemon(t, ctx, d)
	cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on the daemon's /metrics: %v\n%s", err, out)
	}

	// Every family the running daemon exports is in docs/metrics.md with
	// its type, whichever subsystem registered it.
	table, err := metricsdoc.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	known := metricsdoc.Names(table)
	for _, l := range strings.Split(body, "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		if m, ok := known[f[2]]; !ok {
			t.Errorf("the daemon exports %s (%s), which %s does not list", f[2], f[3], metricsdoc.Path)
		} else if m.Type != f[3] {
			t.Errorf("the daemon exports %s as a %s, %s says %s", f[2], f[3], metricsdoc.Path, m.Type)
		}
	}

	var ds []dashboards.Spec
	for _, s := range dashboards.All() {
		if s.File != "controller" { // k8s/controller evaluates it with envtest
			ds = append(ds, s)
		}
	}
	checks, problems := promtest.PanelChecks(ctx, pc, ds)
	checks = append(checks, promtest.AlertChecks()...)
	p, notes := promtest.Evaluate(ctx, pc, checks, notExercised)
	problems = append(problems, p...)
	for _, n := range notes {
		t.Log(n)
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d queries evaluated, %d listed as not exercised, lab time %v", len(checks), len(notExercised), time.Since(start).Round(time.Second))
}

func scrapeDaemon(t *testing.T, ctx context.Context, d *l4.Daemon) string {
	t.Helper()
	body, err := d.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func apply(t *testing.T, ctx context.Context, d *l4.Daemon, s api.Service) {
	t.Helper()
	if err := d.Client.ApplyService(ctx, s); err != nil {
		t.Fatalf("apply %s: %v", s.Name, err)
	}
}

// runL4: HTTP, UDP and SCTP through the datapath; an endpoint that is down.
func runL4(t *testing.T, ctx context.Context, env *l4.Env) {
	t.Helper()
	d := env.Daemon
	be := []string{env.BackendAddr(0, false).String(), env.BackendAddr(1, false).String()}
	ep := func(i, port int) api.Endpoint { return api.Endpoint{Address: be[i], Port: uint16(port)} }
	vip := func(h int) string { return lab.VIP(0, h, false).String() }
	apply(t, ctx, d, api.Service{Name: "web", VIP: vip(1), Port: l4.HTTPPort, Protocol: api.ProtocolTCP, Mode: api.ModeFullNAT,
		Endpoints: []api.Endpoint{ep(0, l4.HTTPPort), ep(1, l4.HTTPPort)}, Probe: &api.Probe{Type: api.ProbeHTTP, Request: "/healthz", IntervalSeconds: 2}})
	// be2:8099 has no server: its TCP probe fails.
	apply(t, ctx, d, api.Service{Name: "web-half", VIP: vip(2), Port: l4.HTTPPort, Protocol: api.ProtocolTCP,
		Endpoints: []api.Endpoint{ep(0, l4.HTTPPort), ep(1, 8099)}, Probe: &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2}})
	apply(t, ctx, d, api.Service{Name: "dns", VIP: vip(3), Port: l4.UDPPort, Protocol: api.ProtocolUDP,
		Endpoints: []api.Endpoint{ep(0, l4.UDPPort), ep(1, l4.UDPPort)}})
	apply(t, ctx, d, api.Service{Name: "sctp", VIP: vip(4), Port: sctpPort, Protocol: api.ProtocolSCTP,
		Endpoints: []api.Endpoint{ep(0, sctpPort), ep(1, sctpPort)}})

	for i := 0; i < 10; i++ {
		if _, err := l4.HTTPGet(ctx, env.Lab.Client, "http://"+netip.AddrPortFrom(lab.VIP(0, 1, false), l4.HTTPPort).String()+"/"); err != nil {
			t.Fatalf("GET through the VIP: %v", err)
		}
		if _, err := l4.UDPAsk(ctx, env.Lab.Client, netip.AddrPortFrom(lab.VIP(0, 3, false), l4.UDPPort).String()); err != nil {
			t.Fatalf("UDP through the VIP: %v", err)
		}
	}
	for k, h := range env.Lab.Backends {
		s, err := sctppeer.StartServer(ctx, h, sctppeer.ServerOptions{Bind: []netip.Addr{env.BackendAddr(k, false)}, Port: sctpPort, ID: fmt.Sprintf("be%d", k+1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Stop() })
	}
	for i := 0; i < 2; i++ {
		if _, err := sctppeer.RunClient(ctx, env.Lab.Client, sctppeer.ClientOptions{Bind: []netip.Addr{env.ClientAddr(false)},
			Connect: []netip.Addr{lab.VIP(0, 4, false)}, Port: sctpPort, Count: 20, Streams: 2, PPID: 60}); err != nil {
			t.Fatalf("SCTP through the VIP: %v", err)
		}
	}
}

// runPFCP: an N4 proxy on a local VIP, UPF simulators on the backends, an
// SMF simulator on the client running sessions through it.
func runPFCP(t *testing.T, ctx context.Context, env *l4.Env, tmp string) {
	t.Helper()
	for _, name := range []string{"smfsim", "upfsim"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, name), "github.com/telcolb/telcolb/scenarios/pfcp/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	vip := lab.VIP(0, 88, false)
	if err := env.Lab.LB.AddAddr(ctx, "lo", netip.PrefixFrom(vip, 32)); err != nil {
		t.Fatal(err)
	}
	svc := api.Service{Name: "n4", VIP: vip.String(), Port: 8805, Protocol: api.ProtocolUDP, PFCP: true}
	for k, h := range env.Lab.Backends {
		a := env.BackendAddr(k, false).String()
		p, err := h.Start(filepath.Join(tmp, "upfsim"), "--listen", a+":8805", "--report")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, "listening"); err != nil {
			t.Fatalf("upfsim: %v: %s", err, p.Stderr())
		}
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a, Port: 8805})
	}
	apply(t, ctx, env.Daemon, svc)
	waitService(t, ctx, env.Daemon, "n4", "both UPFs associated", func(st api.ServiceStatus) bool {
		return st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	smf, err := env.Lab.Client.Start(filepath.Join(tmp, "smfsim"), "--bind", env.ClientAddr(false).String(),
		"--peer", vip.String()+":8805", "--sessions", "40", "--report-wait", "20s")
	if err != nil {
		t.Fatal(err)
	}
	if err := smf.Wait(ctx); err != nil {
		t.Fatalf("smfsim: %v\n%s\n%s", err, smf.Stdout(), smf.Stderr())
	}
}

func waitService(t *testing.T, ctx context.Context, d *l4.Daemon, name, what string, ok func(api.ServiceStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := d.Client.GetService(ctx, name)
		if err == nil && ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached: %+v (%v)", name, what, st.Endpoints, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runN2: 2 gNB and 3 AMF simulators on their own links to the lb; UEs
// register; amf2 is killed, then amf1 and amf3 stop; the gNBs' service
// requests (one gNB, then the other, so the failure counter exists before
// the second wave) find no AMF. The gNBs stay connected, waiting for
// answers, so the proxy still wants its NG associations to every AMF.
func runN2(t *testing.T, ctx context.Context, env *l4.Env, tmp string, pc promtest.Client) {
	t.Helper()
	if err := n2.BuildCmds(ctx, tmp, "amfsim", "gnbsim"); err != nil {
		t.Fatal(err)
	}
	l, lb := env.Lab, env.Lab.LB
	var gnbHosts, amfHosts []*lab.Host
	var gnbAddrs, amfAddrs []netip.Addr
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("gnb%d", k))
		if err != nil {
			t.Fatal(err)
		}
		a, err := n2.Link(ctx, l, lb, h, fmt.Sprintf("ran%d", k), k)
		if err != nil {
			t.Fatal(err)
		}
		gnbHosts, gnbAddrs = append(gnbHosts, h), append(gnbAddrs, a)
	}
	for k := 1; k <= 3; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("amf%d", k))
		if err != nil {
			t.Fatal(err)
		}
		a, err := n2.Link(ctx, l, lb, h, fmt.Sprintf("core%d", k), 10+k)
		if err != nil {
			t.Fatal(err)
		}
		amfHosts, amfAddrs = append(amfHosts, h), append(amfAddrs, a)
	}
	vip := netip.MustParseAddr("10.78.100.1")
	if err := lb.AddAddr(ctx, "ran1", netip.PrefixFrom(vip, 32)); err != nil {
		t.Fatal(err)
	}
	var amfs []*lab.Proc
	svc := api.Service{Name: "amf", VIP: vip.String(), Port: 38412, Protocol: api.ProtocolSCTP, N2: true, Select: "rr"}
	for k, h := range amfHosts {
		p, err := h.Start(filepath.Join(tmp, "amfsim"), "--name", fmt.Sprintf("amf%d", k+1), "--listen", amfAddrs[k].String()+":38412",
			"--set-id", fmt.Sprint(n2SetID), "--pointer", fmt.Sprint(k+1), "--region", "202")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("amf%d: %v: %s", k+1, err, p.Stderr())
		}
		amfs = append(amfs, p)
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: amfAddrs[k].String(), Port: 38412})
	}
	apply(t, ctx, env.Daemon, svc)
	lost := filepath.Join(tmp, "lost")
	var gnbs []*lab.Proc
	for k, h := range gnbHosts {
		p, err := h.Start(filepath.Join(tmp, "gnbsim"), "--name", fmt.Sprintf("gnb%d", k+1), "--connect", vip.String()+":38412",
			"--bind", gnbAddrs[k].String(), "--ues", strconv.Itoa(ueWave), "--ran-base", fmt.Sprint(k*100000),
			"--gnb-id", fmt.Sprint(k+1), "--set-id", fmt.Sprint(n2SetID), "--lost-file", lost, "--parallel", strconv.Itoa(ueWave),
			// Answers that never come keep the gNB connected (and its NG
			// associations to the dead AMFs wanted) while the lab is read.
			"--wait", "90s")
		if err != nil {
			t.Fatal(err)
		}
		gnbs = append(gnbs, p)
	}
	for k, p := range gnbs {
		if err := p.WaitOutput(ctx, `"event":"registered"`); err != nil {
			t.Fatalf("gnb%d: %v: %s", k+1, err, p.Stderr())
		}
	}
	waitService(t, ctx, env.Daemon, "amf", "every UE registered", func(st api.ServiceStatus) bool { return st.ActiveConnections == 2*ueWave })
	// Let Prometheus see the registered state before the AMFs go.
	time.Sleep(3 * time.Second)
	if err := amfs[1].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 2} {
		if err := amfs[k].Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	waitService(t, ctx, env.Daemon, "amf", "every AMF's UEs released", func(st api.ServiceStatus) bool { return st.ActiveConnections == 0 })
	if err := os.WriteFile(lost, []byte("1\n2\n3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, p := range gnbs {
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		// The first wave creates the failure series, the second raises it
		// (rate() needs two samples of a series).
		want := float64(ueWave/2 + ueWave*k)
		if err := waitQuery(ctx, pc, `sum(telcolb_n2_steering_failures_total)`, want); err != nil {
			t.Fatalf("steering failures after gnb%d's service requests: %v\ngnb: %s", k+1, err, tail(p.Stderr()))
		}
	}
}

// waitQuery waits until expr's single value reaches min.
func waitQuery(ctx context.Context, pc promtest.Client, expr string, min float64) error {
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		res, err := pc.Query(ctx, expr)
		if err == nil && len(res) == 1 {
			last = fmt.Sprint(res[0].Value[1])
			if v, err := strconv.ParseFloat(last, 64); err == nil && v >= min {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s = %s, want >= %v", expr, last, min)
}

func tail(s string) string {
	b := []byte(s)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}
