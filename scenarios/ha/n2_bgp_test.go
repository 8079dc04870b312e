package ha

import (
	"context"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/bgp"
)

// The N2 lab with the VIP announced by BGP (issue 15): both daemons
// announce it to bird on the router (BFD 100 ms x 3 on each session), lb1
// with the lower MED, so the router sends both gNBs to lb1 alone and to
// lb2 once lb1's route is gone. No advertisement elects an owner: the
// takeover gate (default, --ha-n2-takeover-abort=owner) goes by the
// liveness heartbeats the daemons exchange on the LAN
// (--ha-liveness-members, cmd/telcolb/app/n2liveness.go).

// TestN2BGPUEsSurviveANodeFailure: kill -9 of lb1 (and its link down):
// lb2's sync sees lb1's connection end, its liveness heartbeats lose lb1
// 300 ms later, and lb2 ABORTs each gNB's association with lb1 (from the
// VIP, gnb1's own tag, T bit clear: the capture) at once; the router's
// BFD moves the route to lb2; both gNBs reconnect through lb2 with UE
// retention and every UE's next uplink NAS reaches the AMF that
// registered it (the checks of TestN2UEsSurviveANodeFailure). Without the
// liveness path the default gate leaves BGP VIPs alone: no ABORT, the
// gNBs learn the loss at their next heartbeat, 30 s later, and the test
// fails (n2AbortWithin, lb2's "sent=2" log, the capture's ABORT).
func TestN2BGPUEsSurviveANodeFailure(t *testing.T) {
	n2LabGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nl := upN2LabWith(t, ctx, n2LabOpts{ha: true, bgp: true})
	nl.failover(t, ctx, 50)
	at, err := bgp.Nexthops(ctx, nl.topo.Router, vip.String())
	must(t, err)
	t.Logf("the router's route to the VIP after the failover: %v", at)
}

// TestN2BGPCutSyncLinkAbortsNothing: the sync link alone cut (nft on
// lb2) while lb1 serves: lb2's sync declares lb1 lost by its peer timeout,
// the liveness heartbeats on the LAN still hear lb1, and lb2 sends no
// ABORT (none reaches gnb1: the capture), logging why; every UE's second
// phase then runs through lb1 on its first association, the router still
// routing the VIP to lb1. Without the liveness path lb2 gives another
// reason (no advertisement elects an owner), which the test refuses.
func TestN2BGPCutSyncLinkAbortsNothing(t *testing.T) {
	n2LabGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nl := upN2LabWith(t, ctx, n2LabOpts{ha: true, bgp: true})
	nl.cutSync(t, ctx, 20, func() {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := bgp.WaitNexthops(wctx, nl.topo.Router, vip.String(), bgp.NodeAddr(1, 0))
		must(t, err)
	})
}
