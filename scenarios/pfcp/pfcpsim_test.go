package pfcp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// pfcpsimSessions is how many sessions OMEC's pfcpsim creates, modifies and
// deletes through the proxy: enough to spread over both UPFs many times.
const pfcpsimSessions = 500

// buildPfcpsim builds OMEC's pfcpsim and pfcpctl (v1.2.0) from the module
// pinned in hack/pfcpsim, whose gRPC dependencies stay out of our go.mod.
func buildPfcpsim(t *testing.T, ctx context.Context) (server, ctl string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	mod := filepath.Join(filepath.Dir(file), "..", "..", "hack", "pfcpsim")
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/",
		"github.com/omec-project/pfcpsim/cmd/pfcpsim", "github.com/omec-project/pfcpsim/cmd/pfcpctl")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pfcpsim from %s: %v\n%s", mod, err, out)
	}
	return filepath.Join(dir, "pfcpsim"), filepath.Join(dir, "pfcpctl")
}

// TestN4LabWithOMECPfcpsim puts an SMF we did not write in front of the
// proxy: OMEC's pfcpsim (driven through its gRPC control, pfcpctl)
// associates with the VIP and creates, modifies and deletes sessions, which
// the real daemon spreads over two UPF simulators that allocate the same
// SEIDs. pfcpsim fails a command on any rejected or unanswered request; the
// UPFs must have acted on every request exactly once and hold nothing at
// the end, and tshark must decode every captured PFCP message unflagged.
func TestN4LabWithOMECPfcpsim(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the N4 lab needs root in CI")
		}
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"dumpcap", "tshark", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (hack/install-deps.sh installs it)", tool)
		}
	}
	// Building pfcpsim (gRPC and all) takes minutes on a busy 2-core
	// machine: the budget covers the build, the lab run and tshark.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
	defer cancel()
	pfcpsim, pfcpctl := buildPfcpsim(t, ctx)
	upfsim := filepath.Join(buildCmds(t, ctx, "upfsim"), "upfsim")
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	smfHost, err := l.AddHost(ctx, "smf")
	if err != nil {
		t.Fatal(err)
	}
	link(t, ctx, l, lb, smfHost, "n4smf", 1)
	var upfHosts []*lab.Host
	var upfAddrs []netip.Addr
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("upf%d", k))
		if err != nil {
			t.Fatal(err)
		}
		upfHosts = append(upfHosts, h)
		upfAddrs = append(upfAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("n4upf%d", k), 10+k))
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"n4smf"}, StateDir: t.TempDir(),
		PinPath: filepath.Join("/sys/fs/bpf", "telcolb-pfcpsim-"+l.ID)})
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
			t.Logf("daemon log (tail):\n%s", tail(d.Log(), 40))
		}
	}()
	svc := api.Service{Name: "n4", VIP: labVIP.String(), Port: 8805, Protocol: api.ProtocolUDP, PFCP: true}
	upfs := make([]*lab.Proc, len(upfHosts))
	for k, h := range upfHosts {
		p, err := h.Start(upfsim, "--listen", netip.AddrPortFrom(upfAddrs[k], 8805).String())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("upf%d: %v: %s", k+1, err, p.Stderr())
		}
		upfs[k] = p
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: upfAddrs[k].String(), Port: 8805})
	}
	capDir := t.TempDir()
	var caps []*capture.Capture
	for _, iface := range []string{"n4smf", "n4upf1"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the PFCP service: %v", err)
	}
	l4.RequireLocalVIP(t, ctx, lb, labVIP) // the daemon made the VIP local
	waitFor(t, "both UPF associations", 10*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "n4")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})

	sim, err := smfHost.Start(pfcpsim, "-i", "eth0", "-p", "54321")
	if err != nil {
		t.Fatal(err)
	}
	// pfcpctl talks gRPC to pfcpsim on the SMF host's loopback; pfcpsim
	// logs to stdout and exits only when killed.
	ctl := func(args ...string) string {
		t.Helper()
		var out []byte
		var err error
		for try := 0; try < 50; try++ { // pfcpsim's gRPC server may not listen yet
			out, err = smfHost.Exec(ctx, pfcpctl, append([]string{"-s", "localhost:54321"}, args...)...)
			if err == nil || !strings.Contains(string(out), "connect") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("pfcpctl %s: %v\n%s\npfcpsim: %s", strings.Join(args, " "), err, out, tail(sim.Stdout()+sim.Stderr(), 20))
		}
		return string(out)
	}
	n := fmt.Sprint(pfcpsimSessions)
	ctl("service", "configure", "--remote-peer-addr", labVIP.String(), "--n3-addr", "10.79.200.1")
	ctl("service", "associate")
	out := ctl("session", "create", "--count", n, "--baseID", "1", "--gnb-addr", "10.79.201.1")
	if !strings.Contains(out, n+" sessions were established") {
		t.Fatalf("pfcpctl session create: %s", out)
	}
	// pfcpctl returns once pfcpsim has every answer; the daemon's
	// per-endpoint counts follow the proxy within a stats round.
	var st api.ServiceStatus
	waitFor(t, "the proxy to count every session", 10*time.Second, func() bool {
		st, err = d.Client.GetService(ctx, "n4")
		return err == nil && st.ActiveConnections == pfcpsimSessions
	})
	if st.ActiveConnections != pfcpsimSessions || st.Endpoints[0].ActiveConnections == 0 || st.Endpoints[1].ActiveConnections == 0 {
		t.Errorf("proxy holds %d sessions (%d / %d per UPF), want %d spread over both", st.ActiveConnections,
			st.Endpoints[0].ActiveConnections, st.Endpoints[1].ActiveConnections, pfcpsimSessions)
	}
	if out := ctl("session", "modify", "--count", n, "--baseID", "1", "--gnb-addr", "10.79.201.2"); !strings.Contains(out, n+" sessions were modified") {
		t.Fatalf("pfcpctl session modify: %s", out)
	}
	if out := ctl("session", "delete", "--count", n, "--baseID", "1"); !strings.Contains(out, n+" sessions deleted") {
		t.Fatalf("pfcpctl session delete: %s", out)
	}
	ctl("service", "disassociate")
	waitFor(t, "the proxy to drop every session", 10*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "n4")
		return err == nil && st.ActiveConnections == 0
	})
	var total upfStats
	for k, p := range upfs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = p.Wait(ctx)
		var s upfStats
		lastJSON(t, p, "stats", &s)
		t.Logf("upf%d: %+v", k+1, s)
		if s.Established == 0 {
			t.Errorf("upf%d got no session", k+1)
		}
		total.Established += s.Established
		total.Modified += s.Modified
		total.Deleted += s.Deleted
		total.Duplicates += s.Duplicates
		total.Unknown += s.Unknown
		total.Sessions += s.Sessions
	}
	if total.Established != pfcpsimSessions || total.Modified != pfcpsimSessions || total.Deleted != pfcpsimSessions ||
		total.Duplicates != 0 || total.Unknown != 0 || total.Sessions != 0 {
		t.Errorf("UPFs together: %+v; want %d established, modified and deleted once each, nothing duplicated, unknown or left",
			total, pfcpsimSessions)
	}
	checkPFCPCaptures(t, ctx, caps, pfcpsimSessions)
}
