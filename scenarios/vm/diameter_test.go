package vm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/vm"
)

// The Diameter agent on kernel SCTP, in the N2 VM lab: the daemon in the
// "n2" VM (--n2-transport kernel, which Diameter SCTP services share),
// diamsctp servers and a diamsctp client in the "ran" VM, each on the
// guest kernel's SCTP (RFC 6733 §2.1.1: one Diameter message per user
// message, PPID 46).
const (
	diamService  = "gy"
	diamSessions = 60
	diamAgent    = "dra.lab.example"
)

var diamServers = []string{"10.78.11.2", "10.78.12.2", "10.78.13.2"}

type diamClientResult struct {
	Transport         string
	CEA               uint32
	CEAOrigin         string
	Sessions, Answers int
	Failures, Sticky  int
	BadPPID           int
	FirstFailure      string
	PerServer         map[string]int
}

type diamServerStats struct {
	Requests, CER, DWR, DPR, BadPPID, Malformed, Sessions int
}

// TestDiameterAgentOnKernelSCTP: a Diameter SCTP service created with
// telcolbctl in the VM; the agent exchanges capabilities with three
// diamsctp servers over kernel SCTP (all OKAY in the status), answers the
// client's CER itself (2001, with its own Origin-Host: an L4 path would
// hand the client a server's CEA), relays each session's CCR-I/U/T to
// one server, sessions spread over all three (one association could only
// reach one server without the agent), every answer back, every message
// with PPID 46 (checked by both peers), the servers seeing each session
// once in all; tshark decodes every Diameter message captured on the
// daemon's link without a malformed flag.
func TestDiameterAgentOnKernelSCTP(t *testing.T) {
	n := upN2Lab(t, "github.com/telcolb/telcolb/scenarios/diameter/cmd/diamsctp")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	defer func() {
		if t.Failed() {
			out, _ := n.lb.Sh(context.Background(), "cat /tmp/telcolb.out")
			peers, _ := n.ran.Sh(context.Background(), "tail -n 20 /tmp/*.out")
			t.Logf("Diameter peers (in the VM):\n%s", peers)
			t.Logf("daemon log (in the VM):\n%s", out)
		}
	}()
	// The servers start while the daemon's datapath is being verified.
	var endpoints []string
	for k, a := range diamServers {
		name := fmt.Sprintf("ocs%d", k+1)
		if err := bg(ctx, n.ran, name, "diamsctp", "--role", "server", "--listen", a+":3868",
			"--host", name+".lab.example", "--realm", "lab.example"); err != nil {
			t.Fatal(err)
		}
		endpoints = append(endpoints, a+":3868")
	}
	n.startDaemon(t, ctx, "kernel")
	for k := range diamServers {
		name := fmt.Sprintf("ocs%d", k+1)
		if err := waitFile(ctx, n.ran, name, `"event":"listening"`); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out, _ := n.ran.Sh(ctx, "cat /tmp/"+name+".out"); !strings.Contains(out, `"transport":"kernel"`) {
			t.Fatalf("%s is not on kernel SCTP:\n%s", name, out)
		}
	}
	cp, err := capture.Start(ctx, n.sw, n.lbPort, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	if out, err := n.lb.Sh(ctx, fmt.Sprintf("telcolbctl create lb %s --vip %s --port 3868 --protocol sctp --diameter --origin-host %s --origin-realm lab.example --endpoints %s",
		diamService, n2VIP, diamAgent, strings.Join(endpoints, ","))); err != nil {
		t.Fatalf("telcolbctl create lb %s: %v", diamService, err)
	} else {
		t.Logf("telcolbctl in the VM:\n%s", out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := n.client.GetService(ctx, diamService)
		if err != nil {
			t.Fatal(err)
		}
		up := 0
		for _, e := range st.Endpoints {
			if e.Healthy {
				up++
			}
		}
		if up == len(diamServers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Diameter servers OKAY after 60s: %+v", up, len(diamServers), st.Endpoints)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := bg(ctx, n.ran, "client", "diamsctp", "--role", "client", "--peer", n2VIP+":3868",
		"--host", "pcef.lab.example", "--realm", "client.example", "--sessions", fmt.Sprint(diamSessions), "--dest-realm", "lab.example"); err != nil {
		t.Fatal(err)
	}
	if err := waitFile(ctx, n.ran, "client", `"event":"done"`); err != nil {
		t.Fatalf("client: %v", err)
	}
	var res diamClientResult
	if err := lastEvent(ctx, n.ran, "client", "done", &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("client: %+v", res)
	if res.Transport != "kernel" {
		t.Errorf("client on %q SCTP, want kernel", res.Transport)
	}
	if res.CEA != 2001 || res.CEAOrigin != diamAgent {
		t.Errorf("CEA %d from %q, want 2001 from the agent %s", res.CEA, res.CEAOrigin, diamAgent)
	}
	if res.Failures != 0 || res.Answers != 3*diamSessions {
		t.Errorf("%d answers, %d failures (first: %s); want %d answers", res.Answers, res.Failures, res.FirstFailure, 3*diamSessions)
	}
	if res.Sticky != diamSessions || len(res.PerServer) != len(diamServers) {
		t.Errorf("%d of %d sessions sticky, per server %v (want all sticky, on all %d servers)", res.Sticky, diamSessions, res.PerServer, len(diamServers))
	}
	if res.BadPPID != 0 {
		t.Errorf("client got %d messages without PPID 46", res.BadPPID)
	}
	total := 0
	for k := range diamServers {
		name := fmt.Sprintf("ocs%d", k+1)
		if _, err := n.ran.Sh(ctx, fmt.Sprintf("kill -TERM $(cat /tmp/%s.pid)", name)); err != nil {
			t.Fatal(err)
		}
		if err := waitFile(ctx, n.ran, name, `"event":"stats"`); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var st diamServerStats
		if err := lastEvent(ctx, n.ran, name, "stats", &st); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", name, st)
		if st.CER == 0 || st.BadPPID != 0 || st.Malformed != 0 {
			t.Errorf("%s: %d CERs, %d without PPID 46, %d malformed", name, st.CER, st.BadPPID, st.Malformed)
		}
		total += st.Sessions
	}
	if total != diamSessions {
		t.Errorf("servers saw %d sessions, want %d (a session on two servers counts twice)", total, diamSessions)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	// Every frame tshark decodes as Diameter, with any malformed flag or
	// error-level expert note (none expected: guest checksums are real).
	rows, err := capture.Fields(ctx, cp.File, "diameter", "diameter.cmd.code", "sctp.data_payload_proto_id", "_ws.malformed", "_ws.expert.severity")
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, r := range rows {
		if r[2] != "" || strings.Contains(r[3], "8388608") {
			if bad++; bad <= 5 {
				t.Errorf("tshark flags %q", r)
			}
		}
	}
	t.Logf("capture on the daemon's link: %d frames with Diameter decoded, %d flagged", len(rows), bad)
	// Each request and answer crosses the daemon's link twice (client
	// side, server side).
	if len(rows) < 4*3*diamSessions/2 {
		t.Errorf("only %d Diameter frames captured, want at least %d", len(rows), 4*3*diamSessions/2)
	}
	for _, g := range []*vm.VM{n.lb, n.ran} {
		snmp, err := g.SCTPCounters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if snmp["SctpChecksumErrors"] != 0 {
			t.Errorf("%s: SctpChecksumErrors = %d", g.Name, snmp["SctpChecksumErrors"])
		}
	}
}
