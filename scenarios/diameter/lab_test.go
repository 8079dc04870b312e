package diameter

import (
	"context"
	"fmt"
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
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// Lab addresses: the client on 10.80.1.0/24 (lb .1, client .2), server k
// on 10.80.(10+k).0/24 (lb .1, server .2); the VIP sits on the lb's
// client-side interface.
var labVIP = netip.MustParseAddr("10.80.100.1")

// labSessions is the number of credit-control sessions of the lab run;
// TELCOLB_DIAMETER_SESSIONS overrides the 10,000.
func labSessions() int {
	if n, err := strconv.Atoi(os.Getenv("TELCOLB_DIAMETER_SESSIONS")); err == nil && n > 0 {
		return n
	}
	return 10000
}

func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the Diameter lab needs root in CI")
		}
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (hack/install-deps.sh installs it)", tool)
		}
	}
}

func buildCmds(t *testing.T, ctx context.Context, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range names {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), "github.com/telcolb/telcolb/scenarios/diameter/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

// link connects peer to lb and routes the lab's 10.80.0.0/16 through lb
// (no default route: freeDiameterd looks peers' identities up in DNS
// before using ConnectTo, and a resolver reachable only through a black
// hole costs it tens of seconds per attempt).
func link(t *testing.T, ctx context.Context, l *lab.Lab, lb, peer *lab.Host, lbIf string, n int) netip.Addr {
	t.Helper()
	if _, _, err := l.Connect(ctx, lb, lbIf, peer, "eth0"); err != nil {
		t.Fatal(err)
	}
	lbAddr := netip.AddrFrom4([4]byte{10, 80, byte(n), 1})
	peerAddr := netip.AddrFrom4([4]byte{10, 80, byte(n), 2})
	if err := lb.AddAddr(ctx, lbIf, netip.PrefixFrom(lbAddr, 24)); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddAddr(ctx, "eth0", netip.PrefixFrom(peerAddr, 24)); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddRoute(ctx, netip.MustParsePrefix("10.80.0.0/16"), lbAddr); err != nil {
		t.Fatal(err)
	}
	return peerAddr
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type clientResult struct {
	Sessions, Sticky, Moved, Split                int
	Answers, Failures, OpaqueMismatch, Duplicates int64
	FirstFailure                                  string
	PerServer, MovedFrom                          map[string]int
	Seconds                                       float64
}

type serverStats struct {
	Requests, Retransmitted, Sessions, OpaqueMismatch int
}

// TestDiameterLabThroughTheDaemon: a go-diameter client opens 10,000
// credit-control sessions (CCR-Initial, -Update, -Termination) through the
// real daemon's Diameter agent to three go-diameter servers, each a
// process in its own namespace. Server 1 is killed (SIGKILL) mid-run. Every
// request must be answered exactly once with success; every session's
// requests answered by one server, or by server 1 and then one other; the
// unknown vendor AVP must reach the servers and come back byte for byte;
// the requests pending on server 1 reach another server with the T flag;
// and tshark must decode every captured Diameter message on the client
// side and on server 2's side without a malformed flag.
func TestDiameterLabThroughTheDaemon(t *testing.T) {
	needRoot(t, "dumpcap", "tshark", "nsenter")
	sessions := labSessions()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	dir := buildCmds(t, ctx, "diamserver", "diamclient")
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	cliHost, err := l.AddHost(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	link(t, ctx, l, lb, cliHost, "dcli", 1)
	var srvHosts []*lab.Host
	var srvAddrs []netip.Addr
	for k := 1; k <= 3; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("srv%d", k))
		if err != nil {
			t.Fatal(err)
		}
		srvHosts = append(srvHosts, h)
		srvAddrs = append(srvAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("dsrv%d", k), 10+k))
	}
	if err := lb.AddAddr(ctx, "dcli", netip.PrefixFrom(labVIP, 32)); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join("/sys/fs/bpf", "telcolb-dia-"+l.ID)
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"dcli"}, StateDir: t.TempDir(), PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("daemon destroy: %v", err)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(d.Log(), 60))
		}
	}()
	svc := api.Service{Name: "dia", VIP: labVIP.String(), Port: 3868, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"}}
	servers := make([]*lab.Proc, 3)
	for k := range srvHosts {
		p, err := srvHosts[k].Start(filepath.Join(dir, "diamserver"), "--listen", netip.AddrPortFrom(srvAddrs[k], 3868).String(),
			"--host", fmt.Sprintf("ocs%d.lab.example", k+1), "--realm", "lab.example")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("server %d: %v: %s", k+1, err, p.Stderr())
		}
		servers[k] = p
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: srvAddrs[k].String(), Port: 3868})
	}
	capDir := t.TempDir()
	var caps []*capture.Capture
	for _, iface := range []string{"dcli", "dsrv2"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the Diameter service: %v", err)
	}
	waitFor(t, "three servers OKAY", 20*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "dia")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy && st.Endpoints[2].Healthy
	})
	pause := filepath.Join(t.TempDir(), "go-on")
	cli, err := cliHost.Start(filepath.Join(dir, "diamclient"), "--peer", netip.AddrPortFrom(labVIP, 3868).String(),
		"--sessions", fmt.Sprint(sessions), "--window", "64", "--dest-realm", "lab.example",
		"--pause-at", fmt.Sprint(sessions/4), "--pause-file", pause)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.WaitOutput(ctx, `"event":"paused"`); err != nil {
		t.Fatalf("client: %v\n%s\n%s", err, cli.Stdout(), cli.Stderr())
	}
	// Mid-run, with sessions bound and in flight, telcolbctl shows the
	// bindings per server.
	out, err := d.Ctl(ctx, "-o", "wide", "get", "lb")
	if err != nil || !strings.Contains(out, " diameter ") {
		t.Errorf("telcolbctl -o wide get lb: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	if err := os.WriteFile(pause, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Kill server 1 while requests are in flight.
	time.Sleep(500 * time.Millisecond)
	var before serverStats
	if err := servers[0].LastJSON("stats", &before); err != nil {
		t.Fatal(err)
	}
	if err := servers[0].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("server 1 killed after %d requests", before.Requests)
	if err := cli.Wait(ctx); err != nil {
		t.Fatalf("client: %v\n%s", err, cli.Stderr())
	}
	var res clientResult
	if err := cli.LastJSON("done", &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("client: %+v", res)
	if res.Failures != 0 || res.Answers != int64(3*sessions) || res.Duplicates != 0 {
		t.Errorf("%d answers, %d failures (first: %s), %d unexpected answers; want %d answers", res.Answers, res.Failures, res.FirstFailure, res.Duplicates, 3*sessions)
	}
	if res.Split != 0 || res.Sticky+res.Moved != sessions {
		t.Errorf("stickiness: %d sticky, %d moved, %d split over more servers", res.Sticky, res.Moved, res.Split)
	}
	for from := range res.MovedFrom {
		if from != "ocs1.lab.example" {
			t.Errorf("sessions moved off %s, which stayed up", from)
		}
	}
	if res.OpaqueMismatch != 0 {
		t.Errorf("%d vendor AVPs did not come back byte for byte", res.OpaqueMismatch)
	}
	resent := 0
	for k := 1; k < 3; k++ {
		var st serverStats
		if err := servers[k].LastJSON("stats", &st); err != nil {
			t.Fatal(err)
		}
		if st.OpaqueMismatch != 0 {
			t.Errorf("server %d: %d vendor AVPs arrived changed", k+1, st.OpaqueMismatch)
		}
		resent += st.Retransmitted
	}
	t.Logf("%d sessions in %.1fs; %d moved off the killed server, %d pending requests re-sent with T", sessions, res.Seconds, res.Moved, resent)
	// tshark decodes every Diameter message captured, on both sides.
	for _, c := range caps {
		if n := checkDiameterCapture(t, ctx, c); n < sessions/2 {
			t.Errorf("%s: only %d Diameter frames captured", c.Iface, n)
		}
	}
}

// checkDiameterCapture stops c and has tshark decode every Diameter
// message in it: a frame with a malformed flag or an error-level expert
// note fails the test (except the TCP checksums veth leaves to offload;
// unknown-vendor warnings are expected, vendor 99999). It returns the
// frames decoded as Diameter.
func checkDiameterCapture(t *testing.T, ctx context.Context, c *capture.Capture) int {
	t.Helper()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	rows, err := capture.Fields(ctx, c.File, "diameter", "diameter.cmd.code", "diameter.flags.request", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message")
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, r := range rows {
		sev, msg := strings.Split(r[3], ","), strings.Split(r[4], ",")
		errs := 0
		for i := range sev {
			if sev[i] == "8388608" && (i >= len(msg) || !strings.HasPrefix(msg[i], "Bad checksum")) {
				errs++
			}
		}
		if r[2] != "" || errs > 0 {
			bad++
			if bad < 5 {
				t.Errorf("%s: tshark flags %q", c.Iface, r)
			}
		}
	}
	t.Logf("%s: %d frames with Diameter decoded, %d flagged", c.Iface, len(rows), bad)
	return len(rows)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
