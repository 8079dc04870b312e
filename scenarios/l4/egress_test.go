package l4

import (
	"context"
	"fmt"
	"testing"

	"github.com/telcolb/telcolb/api"
)

// A client on the LB node itself (a probe, a proxy, an operator's curl)
// reaches a VIP like a client on the other side does: the daemon's socket
// programs (--socket-lb, on by default) give its connect() and sendmsg() an
// endpoint, round robin, for every mode but DSR (left to routing, see
// docs/architecture.md). Tc ingress never sees this traffic. With
// --socket-lb=false the same requests find no route to the VIP.
func TestLocalClientOnTheLBNodeReachesTheVIP(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	ask := func(proto, addr string) (Reply, error) {
		if proto == api.ProtocolTCP {
			return HTTPGet(ctx, e.Lab.LB, "http://"+addr+"/")
		}
		return UDPAsk(ctx, e.Lab.LB, addr)
	}
	type svc struct{ name, addr, proto string }
	var svcs []svc
	for _, mc := range modeCases {
		if mc.mode == api.ModeDSR {
			continue
		}
		for _, v6 := range []bool{false, true} {
			for _, proto := range []string{api.ProtocolTCP, api.ProtocolUDP} {
				name := fmt.Sprintf("local-%s-%s-%s", mc.mode, proto, family(v6))
				vip := mc.vip(v6)
				port := HTTPPort
				if proto == api.ProtocolUDP {
					port = UDPPort
				}
				s := api.Service{Name: name, VIP: vip.String(), Port: uint16(port), Protocol: proto,
					Mode: mc.mode, Select: api.SelectRoundRobin, Endpoints: endpoints(e, port, v6)}
				if err := e.Daemon.Client.ApplyService(ctx, s); err != nil {
					t.Fatalf("apply %s: %v", name, err)
				}
				svcs = append(svcs, svc{name, hostPort(vip, port), proto})
				t.Run(name, func(t *testing.T) {
					seen := map[string]int{}
					for i := 0; i < 6; i++ {
						r, err := ask(proto, hostPort(vip, port))
						if err != nil {
							t.Fatalf("request %d from the lb node: %v", i, err)
						}
						// The node's own socket: its address toward the
						// backends, whatever the mode.
						if want := e.LBBackendAddr(v6); r.Source.Addr() != want {
							t.Errorf("request %d: %s saw source %s, want %s", i, r.Server, r.Source.Addr(), want)
						}
						seen[r.Server]++
					}
					if seen["be1"] != 3 || seen["be2"] != 3 {
						t.Errorf("round robin over 2 endpoints, 6 local flows: got %v, want 3 each", seen)
					}
				})
			}
		}
	}

	// Turned off, the programs are detached (pinned links removed): the
	// node's own traffic to a VIP is not balanced any more.
	if err := e.Daemon.RestartWith(ctx, "--socket-lb=false"); err != nil {
		t.Fatalf("restart with --socket-lb=false: %v", err)
	}
	for _, s := range svcs {
		if r, err := ask(s.proto, s.addr); err == nil {
			t.Errorf("%s with --socket-lb=false: reached %s, want no route", s.name, r.Server)
		}
	}
	// And on again after a restart.
	if err := e.Daemon.RestartWith(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	for _, s := range svcs {
		if _, err := ask(s.proto, s.addr); err != nil {
			t.Errorf("%s after turning socket lb on again: %v", s.name, err)
		}
	}
}
