package n2

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
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

// Lab addresses: gNB k on 10.78.k.0/24 (lb .1, gNB .2), AMF k on
// 10.78.(10+k).0/24 (lb .1, AMF .2); the N2 VIP sits on the lb's gNB-1
// interface (usrsctp ignores lo).
var labVIP = netip.MustParseAddr("10.78.100.1")

const (
	labSetID = 0x3f8 // free5GC's amfId cafe00: region 0xca, set 0x3f8
	labUEs   = 300
	// amfStall is how long AMF 1 stops answering during the registration:
	// over the 2.5 s the daemon's usrsctp once gave a silent peer, under
	// the 4.5 s it gives now (app.N2Timers).
	amfStall = 3 * time.Second
)

func buildSims(t *testing.T, ctx context.Context) (amfsim, gnbsim string) {
	t.Helper()
	dir := buildCmds(t, ctx, "amfsim", "gnbsim")
	return filepath.Join(dir, "amfsim"), filepath.Join(dir, "gnbsim")
}

// buildCmds builds scenarios/n2/cmd/<name>s into a temporary directory.
func buildCmds(t *testing.T, ctx context.Context, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := BuildCmds(ctx, dir, names...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// link connects the lb to a peer on 10.78.n.0/24 and routes the peer's
// traffic through the lb.
func link(t *testing.T, ctx context.Context, l *lab.Lab, lb, peer *lab.Host, lbIf string, n int) netip.Addr {
	t.Helper()
	a, err := Link(ctx, l, lb, peer, lbIf, n)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// lastJSON is lab.Proc.LastJSON, fatal on error.
func lastJSON(t *testing.T, p *lab.Proc, event string, v any) {
	t.Helper()
	if err := p.LastJSON(event, v); err != nil {
		t.Fatal(err)
	}
}

func TestN2LabThroughTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"dumpcap", "tshark", "nft", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	// Building the daemon and the simulators takes most of this on a loaded
	// machine (150 s ran out in tshark's checks with the run itself done).
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	amfsim, gnbsim := buildSims(t, ctx)
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.DropProtoUnreachable(ctx); err != nil {
		t.Fatal(err)
	}
	var gnbAddrs, amfAddrs []netip.Addr
	var gnbHosts, amfHosts []*lab.Host
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("gnb%d", k))
		if err != nil {
			t.Fatal(err)
		}
		gnbHosts = append(gnbHosts, h)
		gnbAddrs = append(gnbAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("ran%d", k), k))
	}
	for k := 1; k <= 3; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("amf%d", k))
		if err != nil {
			t.Fatal(err)
		}
		amfHosts = append(amfHosts, h)
		amfAddrs = append(amfAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("core%d", k), 10+k))
	}
	// The VIP is not added here: the daemon makes it a local address
	// (telcolb0) when the service is applied, which the test checks.

	pin := filepath.Join("/sys/fs/bpf", "telcolb-n2-"+l.ID)
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"ran1", "ran2"}, StateDir: t.TempDir(), PinPath: pin})
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
			t.Logf("daemon log:\n%s", d.Log())
		}
	}()

	var amfs []*lab.Proc
	svc := api.Service{Name: "n2", VIP: labVIP.String(), Port: 38412, Protocol: api.ProtocolSCTP, N2: true}
	for k, h := range amfHosts {
		p, err := h.Start(amfsim, "--name", fmt.Sprintf("amf%d", k+1), "--listen", amfAddrs[k].String()+":38412",
			"--set-id", fmt.Sprint(labSetID), "--pointer", fmt.Sprint(k+1), "--region", "202")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatalf("amf%d: %v: %s", k+1, err, p.Stderr())
		}
		amfs = append(amfs, p)
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: amfAddrs[k].String(), Port: 38412})
	}
	capDir := t.TempDir()
	var caps []*capture.Capture
	for _, at := range []struct {
		h     *lab.Host
		iface string
	}{{lb, "ran1"}, {lb, "core1"}} {
		c, err := capture.Start(ctx, at.h, at.iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the N2 service: %v", err)
	}
	l4.RequireLocalVIP(t, ctx, lb, labVIP)

	lostFile := filepath.Join(t.TempDir(), "lost")
	var gnbs []*lab.Proc
	for k, h := range gnbHosts {
		p, err := h.Start(gnbsim, "--name", fmt.Sprintf("gnb%d", k+1), "--connect", labVIP.String()+":38412", "--bind", gnbAddrs[k].String(),
			"--ues", fmt.Sprint(labUEs/2), "--ran-base", fmt.Sprint(k*100000), "--gnb-id", fmt.Sprint(k+1), "--set-id", fmt.Sprint(labSetID),
			"--lost-file", lostFile)
		if err != nil {
			t.Fatal(err)
		}
		gnbs = append(gnbs, p)
	}
	// AMF 1 stalls for amfStall as registration begins (a paused pod, a
	// starved process): the UEs steered to it wait, unanswered, and the
	// proxy's DATA to it goes unacknowledged. The proxy must keep the
	// association and its UEs (the daemon's N2Timers give a silent peer
	// 4.5 s; with 2.5 s, as before, this stall dropped the association and
	// released AMF 1's UEs toward the gNBs).
	if err := gnbs[0].WaitOutput(ctx, `"event":"ready"`); err != nil {
		t.Fatalf("gnb1: %v\nstderr %s", err, gnbs[0].Stderr())
	}
	if err := amfs[0].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(amfStall)
	if err := amfs[0].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for k, p := range gnbs {
		if err := p.WaitOutput(ctx, `"event":"registered"`); err != nil {
			t.Fatalf("gnb%d: %v\nstdout %s\nstderr %s", k+1, err, p.Stdout(), p.Stderr())
		}
	}
	if strings.Contains(d.Log(), "AMF association down") {
		t.Errorf("the proxy dropped an association of AMF 1, stalled for %v during the registration", amfStall)
	}

	// Every UE is connected: the daemon shows them per AMF.
	var perAMF []uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := d.Client.GetService(ctx, "n2")
		if err != nil {
			t.Fatal(err)
		}
		perAMF = perAMF[:0]
		for _, e := range st.Endpoints {
			perAMF = append(perAMF, e.ActiveConnections)
		}
		if st.ActiveConnections == labUEs || time.Now().After(deadline) {
			if st.ActiveConnections != labUEs {
				t.Errorf("daemon reports %d UE contexts, want %d", st.ActiveConnections, labUEs)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := d.Ctl(ctx, "get", "lb", "-o", "wide")
	if err != nil || !strings.Contains(out, " n2 ") {
		t.Errorf("telcolbctl get lb -o wide: %v\n%s", err, out)
	}
	t.Logf("UE contexts per AMF after registration: %v\n%s", perAMF, out)

	// AMF 2 crashes mid-run: no SHUTDOWN or ABORT, the proxy notices from
	// its unanswered heartbeats and retransmissions (the daemon's N2Timers).
	const dead = 2
	killedAt := time.Now()
	if err := amfs[dead-1].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = amfs[dead-1].Wait(ctx)
	// By heartbeats on an idle association: seven unanswered, each a
	// second plus the doubling RTO (13 s here at low load).
	deadline = time.Now().Add(30 * time.Second)
	for {
		st, err := d.Client.GetService(ctx, "n2")
		if err != nil {
			t.Fatal(err)
		}
		if st.Endpoints[dead-1].ActiveConnections == 0 {
			t.Logf("the proxy released the crashed AMF's UEs %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crashed AMF still holds %d UEs after 30s", st.Endpoints[dead-1].ActiveConnections)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(lostFile, []byte(fmt.Sprint(dead)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range gnbs {
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	var greps []GNBReport
	for k, p := range gnbs {
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("gnb%d: %v\n%s", k+1, err, p.Stderr())
		}
		var r GNBReport
		lastJSON(t, p, "report", &r)
		greps = append(greps, r)
	}
	var areps []AMFReport
	for k, p := range amfs {
		if k+1 == dead {
			continue
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(ctx); err != nil {
			t.Logf("amf%d exit: %v", k+1, err)
		}
		var r AMFReport
		lastJSON(t, p, "report", &r)
		areps = append(areps, r)
	}
	v := Check(greps, areps, dead)
	for _, p := range v.Problems {
		t.Error(p)
	}
	for ptr := uint8(1); ptr <= 3; ptr++ {
		if v.Registered[ptr] == 0 {
			t.Errorf("no UE registered with AMF %d: %v", ptr, v.Registered)
		}
	}
	if v.Rehomed != v.Registered[dead] {
		t.Errorf("%d of the dead AMF's %d UEs came back on a live AMF", v.Rehomed, v.Registered[dead])
	}
	if want := labUEs - v.Registered[dead]; v.ServiceRequests != want {
		t.Errorf("%d service requests reached the AMF their 5G-S-TMSI names, want %d", v.ServiceRequests, want)
	}
	t.Logf("registered per AMF %v, service requests to the named AMF %d, re-homed after AMF loss %d", v.Registered, v.ServiceRequests, v.Rehomed)

	for _, c := range caps {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		checkCapture(t, ctx, c.File)
	}
}

// checkCapture holds a capture to the checks every N2 lab shares
// (capture.CheckNGAP): valid NGAP, nothing malformed, PPID 60 on every DATA
// chunk, non-UE-associated signalling on stream 0 and UE-associated on the
// others, every checksum good.
func checkCapture(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	v, err := capture.CheckNGAP(ctx, file, capture.NGAPExpect{MinMessages: labUEs})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Problems {
		t.Error(p)
	}
	t.Logf("%s: %v", filepath.Base(file), v)
}
