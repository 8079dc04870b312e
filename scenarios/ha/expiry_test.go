package ha

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
)

// TestCopiesExpireOnTheirOwn: 50 UDP flows through lb1, synced to lb2,
// then idle. Each node's ageing removes them (lb2's copies by the same
// timeout, their last packet never later than lb1's): both tables end
// empty, and lb1 sent the flows' entries and no deletion of them (fewer
// than 3 records a flow: 2 entries each, and the changes their answers
// made; their deletions would make it 4).
func TestCopiesExpireOnTheirOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lb := upLab(t, ctx, true)
	for i, d := range lb.daemons {
		waitReady(t, ctx, d, fmt.Sprintf("lb%d", i+1))
	}
	const flows, port = 50, 7105
	svc := api.Service{Name: "udp-expiry", VIP: vip.String(), Port: port, Protocol: api.ProtocolUDP, Mode: api.ModeFullNAT,
		Select: api.SelectRoundRobin, IdleTimeoutSeconds: 2}
	for _, a := range endpoints {
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.String(), Port: udpPort})
	}
	for i, d := range lb.daemons {
		if err := d.Client.CreateService(ctx, svc); err != nil {
			t.Fatalf("lb%d: create %s: %v", i+1, svc.Name, err)
		}
	}
	held := func(i int) int {
		t.Helper()
		conns, err := lb.daemons[i].Client.Conntrack(ctx)
		if err != nil {
			t.Fatalf("lb%d: conntrack: %v", i+1, err)
		}
		n := 0
		for _, c := range conns {
			if c.Service == svc.Name {
				n++
			}
		}
		return n
	}
	sent0 := recordsSent(t, ctx, lb.daemons[0])
	err := lb.topo.Client.Do(func() error {
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(vip, port))
		buf := make([]byte, 512)
		// Ports in turn: 50 random ones would share one in 25 runs.
		ports := sourcePorts{next: flowPortsFrom}
		for range flows {
			if err := oneFlow(dst, &ports, buf); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !cond(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Fatalf("not %s within %v: lb1 holds %d of the flows, lb2 %d", what, limit, held(0), held(1))
			}
		}
	}
	waitUntil("lb2 holding the 50 flows", 20*time.Second, func() bool { return held(1) == flows })
	waitUntil("both nodes' ageing removing the flows", 30*time.Second, func() bool { return held(0) == 0 && held(1) == 0 })
	sent := recordsSent(t, ctx, lb.daemons[0]) - sent0
	t.Logf("lb1 sent %d records for %d flows (%.2f a flow)", sent, flows, float64(sent)/flows)
	if sent >= 3*flows {
		t.Errorf("lb1 sent %d records for %d flows that expired, want fewer than %d: their expiries are lb2's own", sent, flows, 3*flows)
	}
}
