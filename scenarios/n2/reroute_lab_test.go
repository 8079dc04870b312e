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

// TestN2LabRerouteAndOverload runs the AMF-driven procedures the proxy acts
// on through the daemon, with real SCTP and tshark reading both sides:
//   - amf1 (set 0x3f8) answers every new UE with Reroute NAS Request to set
//     0x100: the proxy re-sends the UE's Initial UE Message, with the AMF
//     Set ID added, to amf3 (set 0x100); the gNB never sees the reroute and
//     every UE registers on amf3;
//   - amf2 sends Overload Start (no traffic load reduction) after NG Setup:
//     it gets no new UE, and the gNB never sees the Overload Start.
func TestN2LabRerouteAndOverload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"dumpcap", "tshark", "nft", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	const (
		ues      = 40
		setA     = 0x3f8
		setB     = 0x100
		rerouter = 1
		overload = 2
		target   = 3
	)
	// Generous: building the daemon and simulators takes most of it on a
	// loaded machine; the run itself takes seconds.
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
	gh, err := l.AddHost(ctx, "gnb1")
	if err != nil {
		t.Fatal(err)
	}
	gnbAddr := link(t, ctx, l, lb, gh, "ran1", 1)
	var amfHosts []*lab.Host
	var amfAddrs []netip.Addr
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
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"ran1"}, StateDir: t.TempDir(), PinPath: filepath.Join("/sys/fs/bpf", "telcolb-n2rr-"+l.ID)})
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

	svc := api.Service{Name: "n2", VIP: labVIP.String(), Port: 38412, Protocol: api.ProtocolSCTP, N2: true}
	var amfs []*lab.Proc
	for k, h := range amfHosts {
		args := []string{"--name", fmt.Sprintf("amf%d", k+1), "--listen", amfAddrs[k].String() + ":38412", "--pointer", fmt.Sprint(k + 1), "--region", "202"}
		switch k + 1 {
		case rerouter:
			args = append(args, "--set-id", fmt.Sprint(setA), "--reroute-to-set", fmt.Sprint(setB))
		case overload:
			args = append(args, "--set-id", fmt.Sprint(setA), "--overload", "0")
		case target:
			args = append(args, "--set-id", fmt.Sprint(setB))
		}
		p, err := h.Start(amfsim, args...)
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
	caps := map[string]*capture.Capture{}
	for _, iface := range []string{"ran1", "core1", "core2", "core3"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps[iface] = c
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the N2 service: %v", err)
	}
	l4.RequireLocalVIP(t, ctx, lb, labVIP)
	// The UEs' 5G-S-TMSIs name set B, where they end up registered.
	g, err := gh.Start(gnbsim, "--name", "gnb1", "--connect", labVIP.String()+":38412", "--bind", gnbAddr.String(),
		"--ues", fmt.Sprint(ues), "--gnb-id", "1", "--set-id", fmt.Sprint(setB), "--parallel", "4")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.WaitOutput(ctx, `"event":"registered"`); err != nil {
		t.Fatalf("gnb1: %v\nstdout %s\nstderr %s", err, g.Stdout(), g.Stderr())
	}
	if err := g.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("gnb1: %v\n%s", err, g.Stderr())
	}
	var grep GNBReport
	lastJSON(t, g, "report", &grep)
	var areps []AMFReport
	for k, p := range amfs {
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

	// What the simulators saw.
	for _, u := range grep.UEs {
		if !u.Registered || u.RegPointer != target {
			t.Errorf("UE %d: registered %v with AMF %d, want AMF %d", u.Index, u.Registered, u.RegPointer, target)
		}
		if u.SRAMFUEID>>32 != target {
			t.Errorf("UE %d: service request answered by AMF %d, want %d", u.Index, u.SRAMFUEID>>32, target)
		}
	}
	if len(grep.UEs) != ues || len(grep.Errors) > 0 {
		t.Errorf("gNB report: %d UEs, errors %v", len(grep.UEs), grep.Errors)
	}
	rr, ov, tg := areps[rerouter-1], areps[overload-1], areps[target-1]
	if rr.Rerouted == 0 || len(rr.UEs) != 0 {
		t.Errorf("amf%d rerouted %d UEs and kept %d, want some rerouted and none kept", rerouter, rr.Rerouted, len(rr.UEs))
	}
	if len(ov.UEs) != 0 {
		t.Errorf("overloaded amf%d got %d UEs", overload, len(ov.UEs))
	}
	if tg.WithSetID != rr.Rerouted {
		t.Errorf("amf%d got %d Initial UE Messages with AMF Set ID, amf%d rerouted %d", target, tg.WithSetID, rerouter, rr.Rerouted)
	}
	for _, r := range areps {
		if len(r.Errors) > 0 {
			t.Errorf("%s: %v", r.Name, r.Errors)
		}
	}

	// What tshark saw on each side of the proxy.
	procs := map[string]map[int]int{}
	for iface, c := range caps {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		msgs, err := capture.NGAP(ctx, c.File)
		if err != nil {
			t.Fatal(err)
		}
		procs[iface] = map[int]int{}
		for _, m := range msgs {
			procs[iface][m.ProcedureCode]++
		}
		bad, err := capture.Fields(ctx, c.File, "_ws.malformed || _ws.expert.severity == error", "frame.number")
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d malformed frames", iface, len(bad))
		}
	}
	const reroute, initialUE, overloadStart = 36, 15, 22
	if n := procs["core1"][reroute]; n != rr.Rerouted {
		t.Errorf("tshark: %d Reroute NAS Requests from amf1, the simulator sent %d", n, rr.Rerouted)
	}
	withSet, err := capture.Fields(ctx, caps["core3"].File, "ngap.procedureCode == 15 && ngap.AMFSetID", "frame.number", "ngap.AMFSetID")
	if err != nil {
		t.Fatal(err)
	}
	sets := 0
	for _, r := range withSet {
		for _, v := range strings.Split(r[1], ",") {
			if v != "" {
				sets++
			}
		}
	}
	if sets != rr.Rerouted {
		t.Errorf("tshark: %d Initial UE Messages with AMF Set ID toward amf3, want %d", sets, rr.Rerouted)
	}
	if procs["core2"][overloadStart] == 0 || procs["core2"][initialUE] != 0 {
		t.Errorf("tshark toward amf2: %d Overload Start, %d Initial UE Messages; want some and none", procs["core2"][overloadStart], procs["core2"][initialUE])
	}
	if procs["ran1"][reroute] != 0 || procs["ran1"][overloadStart] != 0 {
		t.Errorf("tshark toward the gNB: %d Reroute NAS Requests, %d Overload Starts; want none", procs["ran1"][reroute], procs["ran1"][overloadStart])
	}
	t.Logf("rerouted by amf1: %d; UEs on amf3: %d; tshark per interface: %v", rr.Rerouted, len(tg.UEs), procs)
}
