package diameter

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

type sctpClientResult struct {
	Transport         string
	CEA               uint32
	Sessions, Answers int
	Failures, Sticky  int
	BadPPID           int
	FirstFailure      string
	PerServer         map[string]int
}

type sctpServerStats struct {
	Requests, CER, DWR, DPR, BadPPID, Malformed, Sessions int
}

// TestDiameterLabOverSCTP: the real daemon's Diameter agent on an SCTP
// service, with an SCTP client and two SCTP servers (diamsctp), each a
// process in its own namespace with its own SCTP stack (usrsctp here,
// where the kernel has no SCTP; the kernel's where it has). The agent
// exchanges capabilities with both servers over SCTP (both OKAY in the
// status), answers the client's CER, relays every session's CCR-I/U/T to
// one server (sessions spread over both), answers the client's DPR, and
// every message travels with PPID 46. tshark decodes every Diameter
// message captured on the client's and a server's side without a
// malformed flag.
func TestDiameterLabOverSCTP(t *testing.T) {
	needRoot(t, "dumpcap", "tshark", "nsenter", "nft")
	const sessions = 200
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	dir := buildCmds(t, ctx, "diamsctp")
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
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("srv%d", k))
		if err != nil {
			t.Fatal(err)
		}
		srvHosts = append(srvHosts, h)
		srvAddrs = append(srvAddrs, link(t, ctx, l, lb, h, fmt.Sprintf("dsrv%d", k), 10+k))
	}
	// One raw-socket SCTP stack per namespace, none answering with ICMP
	// protocol-unreachable (/work/shared/SCTP-TESTING.md).
	for _, h := range append([]*lab.Host{lb, cliHost}, srvHosts...) {
		if err := h.DropProtoUnreachable(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The VIP is local before the daemon's SCTP stack starts: usrsctp
	// reads the local addresses once.
	if err := lb.AddAddr(ctx, "dcli", netip.PrefixFrom(labVIP, 32)); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join("/sys/fs/bpf", "telcolb-dias-"+l.ID)
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
	svc := api.Service{Name: "dias", VIP: labVIP.String(), Port: 3868, Protocol: api.ProtocolSCTP,
		Diameter: &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"}}
	servers := make([]*lab.Proc, 2)
	for k := range srvHosts {
		p, err := srvHosts[k].Start(filepath.Join(dir, "diamsctp"), "--role", "server", "--listen", netip.AddrPortFrom(srvAddrs[k], 3868).String(),
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
	for _, iface := range []string{"dcli", "dsrv1"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the Diameter SCTP service: %v", err)
	}
	waitFor(t, "both servers OKAY over SCTP", 60*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "dias")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	cli, err := cliHost.Start(filepath.Join(dir, "diamsctp"), "--role", "client", "--peer", netip.AddrPortFrom(labVIP, 3868).String(),
		"--sessions", fmt.Sprint(sessions), "--dest-realm", "lab.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Wait(ctx); err != nil {
		t.Fatalf("client: %v\n%s", err, cli.Stderr())
	}
	var res sctpClientResult
	if err := cli.LastJSON("done", &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("client (%s): %+v", res.Transport, res)
	if res.CEA != 2001 {
		t.Errorf("CEA %d over SCTP, want 2001", res.CEA)
	}
	if res.Failures != 0 || res.Answers != 3*sessions {
		t.Errorf("%d answers, %d failures (first: %s); want %d answers", res.Answers, res.Failures, res.FirstFailure, 3*sessions)
	}
	if res.Sticky != sessions || len(res.PerServer) != 2 {
		t.Errorf("%d of %d sessions sticky, per server %v (want all sticky, on both servers)", res.Sticky, sessions, res.PerServer)
	}
	if res.BadPPID != 0 {
		t.Errorf("client got %d messages without PPID 46", res.BadPPID)
	}
	total := 0
	for k, p := range servers {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(ctx); err != nil {
			t.Errorf("server %d: %v", k+1, err)
		}
		var st sctpServerStats
		if err := p.LastJSON("stats", &st); err != nil {
			t.Fatal(err)
		}
		t.Logf("server %d: %+v", k+1, st)
		if st.CER == 0 || st.BadPPID != 0 || st.Malformed != 0 {
			t.Errorf("server %d: %d CERs, %d without PPID 46, %d malformed", k+1, st.CER, st.BadPPID, st.Malformed)
		}
		total += st.Sessions
	}
	if total != sessions {
		t.Errorf("servers saw %d sessions, want %d (a session on two servers counts twice)", total, sessions)
	}
	for _, c := range caps {
		if n := checkDiameterCapture(t, ctx, c); n < sessions {
			t.Errorf("%s: only %d Diameter frames captured", c.Iface, n)
		}
	}
}
