package l2

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/l4"
)

// TestL2AnnouncerInsideTheDaemon runs L2 announcement the way a user does:
// no l2node, each node's real daemon loads an --advertisement-config with
// an l2 advertisement covering its services' VIPs. The owner the ownership
// hash picks answers the client's ARP and Neighbor Solicitations, and
// /v1/vips says so; when the owner's daemon is killed (-9), the other node
// takes the VIPs over and the client resolves them to it.
func TestL2AnnouncerInsideTheDaemon(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	x := Build(t, ctx, "", 2)
	t.Cleanup(func() {
		if t.Failed() {
			x.Dump(context.Background())
		}
	})
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for k, name := range x.Names {
		members = append(members, fmt.Sprintf("{name: %s, address: '%s'}", name, netip.AddrPortFrom(nodeAddr(k, false), hbPort)))
	}
	daemons := make([]*l4.Daemon, len(x.Nodes))
	for i, h := range x.Nodes {
		cfg := filepath.Join(t.TempDir(), "advertisement.yaml")
		yaml := fmt.Sprintf("nodeName: %s\nl2:\n  interfaces: [eth0]\n  members: [%s]\nadvertisements:\n- {name: lan, mode: l2, prefixes: ['%s/32', '%s/128']}\n",
			x.Names[i], strings.Join(members, ", "), x.VIP4, x.VIP6)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: h, Interfaces: []string{"eth0"}, StateDir: t.TempDir(),
			PinPath:   filepath.Join("/sys/fs/bpf", "telcolb-l2d-"+x.L.ID+"-"+x.Names[i]),
			ExtraArgs: []string{"--advertisement-config=" + cfg}})
		if err != nil {
			t.Fatal(err)
		}
		daemons[i] = d
		t.Cleanup(func() { _ = d.Destroy(context.Background()) })
		for _, v := range []netip.Addr{x.VIP4, x.VIP6} {
			svc := api.Service{Name: "web" + strings.NewReplacer(".", "-", ":", "-").Replace(v.String()), VIP: v.String(), Port: 80,
				Protocol: api.ProtocolTCP, Endpoints: []api.Endpoint{{Address: nodeAddr(i, v.Is6()).String(), Port: 8080}}}
			if err := d.Client.ApplyService(ctx, svc); err != nil {
				t.Fatalf("%s: service on %v: %v", x.Names[i], v, err)
			}
		}
	}
	// owner(i): node i's daemon reports both VIPs owned by node i and
	// announced on eth0.
	owner := func(i int) func() bool {
		return func() bool {
			vs, err := daemons[i].Client.VIPs(ctx)
			if err != nil || len(vs) != 2 {
				return false
			}
			for _, v := range vs {
				if v.Owner != x.Names[i] || !slices.Contains(v.Announced, "l2/eth0") {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, "n1 owns and announces both VIPs (its /v1/vips)", 20*time.Second, owner(0))
	for _, v := range []netip.Addr{x.VIP4, x.VIP6} {
		p, err := x.StartProber(v, 20*time.Millisecond) // traffic makes the client resolve the VIP
		if err != nil {
			t.Fatal(err)
		}
		if err := x.WaitClientUses(ctx, v, 0, 10*time.Second); err != nil {
			p.Stop()
			t.Fatalf("before the kill: %v", err)
		}
		p.Stop()
	}
	if err := daemons[0].Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitUntil(t, "n2 owns and announces both VIPs (its /v1/vips)", 20*time.Second, owner(1))
	x.FlushClientNeigh(ctx)
	for _, v := range []netip.Addr{x.VIP4, x.VIP6} {
		p, err := x.StartProber(v, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.WaitClientUses(ctx, v, 1, 10*time.Second); err != nil {
			p.Stop()
			t.Fatalf("after the kill: %v", err)
		}
		p.Stop()
	}
	t.Logf("n1's daemon killed: n2 owns the VIPs and the client resolves them to it %v later", time.Since(killed).Round(time.Millisecond))
}

func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !ok() {
		if time.Now().After(end) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
