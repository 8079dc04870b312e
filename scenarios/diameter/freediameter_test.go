package diameter

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// TestFreeDiameterPeersAroundTheAgent puts freeDiameterd (Debian's 1.2.1)
// on both sides of the daemon's Diameter agent: as the client-side agent a
// go-diameter client talks to, relaying to our VIP, and as a server behind
// us next to a go-diameter server. The go-diameter client's CCRs cross
// freeDiameterd and the agent to the go-diameter server and come back; a
// CCR naming the freeDiameterd server (which serves no application) gets
// that server's error answer, routed back through both agents to the
// client. Both connections to freeDiameterd exchange capabilities, keep
// up across several watchdog intervals (DWR/DWA both ways), and end with
// DPR/DPA when the service is deleted; freeDiameterd logs no error; and
// tshark decodes every Diameter message captured on both freeDiameterd
// links without a malformed flag.
func TestFreeDiameterPeersAroundTheAgent(t *testing.T) {
	needRoot(t, "freeDiameterd", "nsenter", "dumpcap", "tshark")
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Second)
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
	hosts := map[string]*lab.Host{}
	addrs := map[string]netip.Addr{}
	for i, name := range []string{"fdc", "srv", "fds"} {
		h, err := l.AddHost(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		hosts[name] = h
		addrs[name] = link(t, ctx, l, lb, h, "d"+name, 20+i)
	}
	if err := lb.AddAddr(ctx, "dfdc", netip.PrefixFrom(labVIP, 32)); err != nil {
		t.Fatal(err)
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"dfdc"}, StateDir: t.TempDir(),
		PinPath: filepath.Join("/sys/fs/bpf", "telcolb-fd-"+l.ID), ExtraArgs: nil})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("daemon destroy: %v", err)
		}
	})
	startFD := func(name string, c FDConfig) *lab.Proc {
		conf, err := WriteFD(t.TempDir(), c)
		if err != nil {
			t.Fatal(err)
		}
		p, err := hosts[name].Start("freeDiameterd", "-c", conf)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	fds := startFD("fds", FDConfig{Identity: "fd-srv.lab.example", Realm: "lab.example", ListenOn: addrs["fds"].String(), Tw: 6,
		Allow: []string{"*.lab.example"}})
	// The agent redials a server only every Tc (30s): let freeDiameterd
	// listen first.
	waitFor(t, "freeDiameterd server listening", 30*time.Second, func() bool {
		return strings.Contains(fds.Stdout()+fds.Stderr(), "daemon initialized")
	})
	srv, err := hosts["srv"].Start(filepath.Join(dir, "diamserver"), "--listen", netip.AddrPortFrom(addrs["srv"], 3868).String(),
		"--host", "ocs1.lab.example", "--realm", "lab.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitOutput(ctx, `"event":"listening"`); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("freeDiameterd server log:\n%s", tail(fds.Stdout()+fds.Stderr(), 80))
			t.Logf("daemon log:\n%s", tail(d.Log(), 40))
		}
	}()
	// Captures on both freeDiameterd links: tshark must decode every
	// message either side sent.
	capDir := t.TempDir()
	var caps []*capture.Capture
	for _, iface := range []string{"dfdc", "dfds"} {
		c, err := capture.Start(ctx, lb, iface, capDir)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	svc := api.Service{Name: "dia", VIP: labVIP.String(), Port: 3868, Protocol: api.ProtocolTCP,
		Diameter:  &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"},
		Endpoints: []api.Endpoint{{Address: addrs["srv"].String(), Port: 3868}, {Address: addrs["fds"].String(), Port: 3868}}}
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the Diameter service: %v", err)
	}
	waitFor(t, "both servers OKAY (freeDiameterd's CEA)", 60*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "dia")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	fdc := startFD("fdc", FDConfig{Identity: "fd-edge.edge.example", Realm: "edge.example", ListenOn: addrs["fdc"].String(), Tw: 6,
		Allow: []string{"*.edge.example", "*.lab.example"}, ConnectPeers: map[string]string{"dra.lab.example": netip.AddrPortFrom(labVIP, 3868).String()}})
	defer func() {
		if t.Failed() {
			t.Logf("freeDiameterd client-side agent log:\n%s", tail(fdc.Stdout()+fdc.Stderr(), 80))
		}
	}()
	waitFor(t, "freeDiameterd's connection to the agent", 150*time.Second, func() bool {
		return strings.Contains(fdc.Stdout()+fdc.Stderr(), "'STATE_OPEN'") || strings.Contains(fdc.Stdout()+fdc.Stderr(), "-> 'STATE_OPEN'")
	})
	// Each run is a new client with its own Origin-Host: freeDiameterd
	// keeps a closed peer's entry for a moment after its DPR, and a client
	// reconnecting under the same identity in that moment gets its first
	// answer routed to the closed entry and discarded ("Unable to forward
	// answer to deleted / closed peer"), a freeDiameterd race, not ours.
	run := func(origin, destHost string, sessions int) clientResult {
		t.Helper()
		p, err := hosts["fdc"].Start(filepath.Join(dir, "diamclient"), "--peer", netip.AddrPortFrom(addrs["fdc"], 3868).String(),
			"--host", origin, "--realm", "edge.example", "--sessions", fmt.Sprint(sessions), "--window", "8",
			"--dest-realm", "lab.example", "--dest-host", destHost)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("client: %v\n%s\n%s", err, p.Stdout(), p.Stderr())
		}
		var res clientResult
		if err := p.LastJSON("done", &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run("pcef.edge.example", "ocs1.lab.example", 200)
	t.Logf("through freeDiameterd and the agent: %+v", res)
	if res.Failures != 0 || res.Answers != 600 || res.OpaqueMismatch != 0 || res.Duplicates != 0 || res.PerServer["ocs1.lab.example"] != 200 {
		t.Errorf("go-diameter server through freeDiameterd: %+v", res)
	}
	res = run("pcef2.edge.example", "fd-srv.lab.example", 1)
	t.Logf("to the freeDiameterd server: %+v", res)
	if res.Answers != 3 || res.Failures != 3 || !strings.Contains(res.FirstFailure, "from fd-srv.lab.example") {
		t.Errorf("freeDiameterd's answers to an application it does not serve did not come back: %+v", res)
	}
	// Watchdogs both ways for a few Tw.
	time.Sleep(20 * time.Second)
	st, err := d.Client.GetService(ctx, "dia")
	if err != nil || !st.Endpoints[1].Healthy {
		t.Errorf("freeDiameterd server not OKAY after 3 watchdog intervals: %+v %v", st, err)
	}
	if err := d.Client.DeleteService(ctx, "dia"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "freeDiameterd to see the DPR", 20*time.Second, func() bool {
		return strings.Contains(fds.Stdout()+fds.Stderr(), "Peer 'dra.lab.example' sent a DPR with cause: REBOOTING")
	})
	// freeDiameterd logs an ERROR, with a dump of the message, for each
	// request of an application it does not serve: the three CCRs sent to
	// it on purpose. Anything else is a protocol error.
	for name, p := range map[string]*lab.Proc{"server": fds, "client-side agent": fdc} {
		expected := 0
		for _, line := range strings.Split(p.Stdout()+p.Stderr(), "\n") {
			if !strings.Contains(line, "ERROR") {
				continue
			}
			if strings.Contains(line, "ERROR  Parsing error: 'Application unsupported' for the following message received from 'dra.lab.example'") {
				expected++
				continue
			}
			if strings.Contains(line, "ERROR   ") { // indented: the dump of that message
				continue
			}
			t.Errorf("freeDiameterd %s logged: %s", name, line)
		}
		if name == "server" && expected != 3 {
			t.Errorf("freeDiameterd server refused %d requests as 'Application unsupported', want the 3 sent to it", expected)
		}
	}
	// Client side: freeDiameterd's CER, 603 requests and their answers,
	// watchdogs; server side: CER/CEA, the 3 requests and 3007 answers,
	// watchdogs, DPR/DPA.
	for _, c := range caps {
		if n := checkDiameterCapture(t, ctx, c); n < 10 {
			t.Errorf("%s: only %d Diameter frames captured", c.Iface, n)
		}
	}
}

// TestFreeDiameterLoadBalanceBaseline runs the same credit-control traffic
// through freeDiameterd as the relay, with its rt_load_balance extension
// (least-loaded peer per request, no Session-Id stickiness), to three
// go-diameter servers, and reports how many sessions kept all their
// requests on one server, next to the daemon's agent in the same lab. The
// agent must keep every session on one server; the baseline's figure is
// reported, not asserted.
func TestFreeDiameterLoadBalanceBaseline(t *testing.T) {
	needRoot(t, "freeDiameterd", "nsenter")
	const sessions = 1000
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
	hosts := map[string]*lab.Host{}
	addrs := map[string]netip.Addr{}
	for i, name := range []string{"cli", "fdr", "srv1", "srv2", "srv3"} {
		h, err := l.AddHost(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		hosts[name] = h
		addrs[name] = link(t, ctx, l, lb, h, "d"+name, 30+i)
	}
	if err := lb.AddAddr(ctx, "dcli", netip.PrefixFrom(labVIP, 32)); err != nil {
		t.Fatal(err)
	}
	// The freeDiameterd relay reaches the servers through lb.
	if err := lb.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	peers := map[string]string{}
	svc := api.Service{Name: "dia", VIP: labVIP.String(), Port: 3868, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"}}
	for k := 1; k <= 3; k++ {
		name := fmt.Sprintf("srv%d", k)
		p, err := hosts[name].Start(filepath.Join(dir, "diamserver"), "--listen", "0.0.0.0:3868",
			"--host", fmt.Sprintf("ocs%d.lab.example", k), "--realm", "lab.example")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitOutput(ctx, `"event":"listening"`); err != nil {
			t.Fatal(err)
		}
		peers[fmt.Sprintf("ocs%d.lab.example", k)] = netip.AddrPortFrom(addrs[name], 3868).String()
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: addrs[name].String(), Port: 3868})
	}
	conf, err := WriteFD(t.TempDir(), FDConfig{Identity: "fd-relay.edge.example", Realm: "edge.example", ListenOn: addrs["fdr"].String(),
		Tw: 6, Allow: []string{"*.edge.example", "*.lab.example"}, ConnectPeers: peers, Extensions: []string{"rt_load_balance.fdx"}})
	if err != nil {
		t.Fatal(err)
	}
	fdr, err := hosts["fdr"].Start("freeDiameterd", "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("freeDiameterd relay log:\n%s", tail(fdr.Stdout()+fdr.Stderr(), 60))
		}
	}()
	waitFor(t, "freeDiameterd connected to the three servers", 150*time.Second, func() bool {
		return strings.Count(fdr.Stdout()+fdr.Stderr(), "-> 'STATE_OPEN'") >= 3
	})
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"dcli"}, StateDir: t.TempDir(),
		PinPath: filepath.Join("/sys/fs/bpf", "telcolb-fdlb-"+l.ID)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("daemon destroy: %v", err)
		}
	})
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three servers OKAY", 60*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "dia")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy && st.Endpoints[2].Healthy
	})
	run := func(peer netip.Addr) clientResult {
		p, err := hosts["cli"].Start(filepath.Join(dir, "diamclient"), "--peer", netip.AddrPortFrom(peer, 3868).String(),
			"--host", "pcef.edge.example", "--realm", "edge.example", "--sessions", fmt.Sprint(sessions), "--window", "32",
			"--dest-realm", "lab.example")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("client: %v\n%s\n%s", err, p.Stdout(), p.Stderr())
		}
		var res clientResult
		if err := p.LastJSON("done", &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	base := run(addrs["fdr"])
	ours := run(labVIP)
	t.Logf("freeDiameterd rt_load_balance: %d of %d sessions on one server (%d split), %d failures, %v", base.Sticky, sessions, base.Moved+base.Split, base.Failures, base.PerServer)
	t.Logf("telcolb agent:                 %d of %d sessions on one server (%d split), %d failures, %v", ours.Sticky, sessions, ours.Moved+ours.Split, ours.Failures, ours.PerServer)
	fmt.Printf("BASELINE diameter_session_stickiness freediameter_rt_load_balance %.3f telcolb %.3f\n",
		float64(base.Sticky)/sessions, float64(ours.Sticky)/sessions)
	if ours.Sticky != sessions || ours.Failures != 0 {
		t.Errorf("agent: %+v", ours)
	}
	if base.Failures != 0 {
		t.Errorf("baseline relay failed requests: %s", base.FirstFailure)
	}
}
