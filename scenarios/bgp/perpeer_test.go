package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// SecondBirdAddr is be1's LAN address: in TestPerPeerBird a second bird
// runs there, a second router the nodes can peer with.
var SecondBirdAddr = BackendIP[0]

// TestPerPeerBird: two bird2 routers (the lab's router and a second bird on
// be1) peer with lb1's real daemon. An advertisement naming one peer puts
// the VIP in that bird's table only; changing the peers it names (a PUT of
// the advertisement, bgp section unchanged) moves the VIP from one bird to
// the other without resetting either session; naming no peer puts it in
// both. The marker communities that choose the peers never reach a bird.
func TestPerPeerBird(t *testing.T) {
	needTool(t, "bird")
	e, capt := upLab(t, func(ctx context.Context, h *lab.Host) (Router, error) { return asRouter(StartBird(ctx, h, 2)) })
	_ = capt.Stop()
	ctx := context.Background()
	second, err := StartBirdAs(ctx, e.Topo.BE, SecondBirdAddr, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close() })
	birds := map[string]*Bird{"router": e.Router.(*Bird), "be1": second}
	lb1 := e.Daemons[0]

	cfg := func(peers ...string) api.AdvertisementConfig {
		c := NodeConfig(1, nil)
		c.BGP.Peers = append(c.BGP.Peers, api.BGPPeer{Name: "be4", Address: SecondBirdAddr.String(), ASN: RouterASN, HoldTimeSeconds: 9})
		c.Advertisements[0].Peers = peers
		return c
	}
	vip := netip.PrefixFrom(VIPs[0], 32).String()
	// has reports whether bird b holds the VIP from lb1, with the
	// advertisement's communities and no marker.
	has := func(name string) (bool, string) {
		out, err := birds[name].Birdc(ctx, "show", "route", vip, "protocol", "lb1", "all")
		if err != nil && strings.Contains(out, "Network not found") {
			return false, out // birdc exits 1 then
		}
		if err != nil {
			t.Fatalf("birdc on %s: %v: %s", name, err, out)
		}
		return strings.Contains(out, vip), out
	}
	expect := func(step string, want map[string]bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ok := true
			var outs []string
			for name, w := range want {
				got, out := has(name)
				outs = append(outs, name+":\n"+out)
				if got != w {
					ok = false
				}
				if got && (strings.Contains(out, "1953260032") || !strings.Contains(out, "(65001, 1, 2)")) {
					t.Errorf("%s: %s holds %s with the wrong large communities (a marker, or not the advertisement's):\n%s", step, name, vip, out)
				}
			}
			if ok {
				t.Logf("%s: %v", step, want)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want %v, birds have:\n%s", step, want, strings.Join(outs, "\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// since is the line of bird's protocol table for lb1's session: state
	// and the time it last changed (a reset changes both).
	since := func(name string) string {
		out, err := birds[name].Birdc(ctx, "show", "protocols", "lb1")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "lb1 ") {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		t.Fatalf("%s: no lb1 protocol: %s", name, out)
		return ""
	}

	if err := lb1.Client.PutAdvertisement(ctx, cfg("router4", "router6")); err != nil {
		t.Fatal(err)
	}
	expect("peers router4, router6", map[string]bool{"router": true, "be1": false})
	// Both sessions established (the second bird's too) before the marks.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(since("be1"), "Established") || !strings.Contains(since("router"), "Established") {
		if time.Now().After(deadline) {
			t.Fatalf("sessions: router %q, be1 %q", since("router"), since("be1"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	marks := map[string]string{"router": since("router"), "be1": since("be1")}
	logMark := len(lb1.Log())

	if err := lb1.Client.PutAdvertisement(ctx, cfg("be4")); err != nil {
		t.Fatal(err)
	}
	expect("peers be4", map[string]bool{"router": false, "be1": true})
	announced(t, lb1, "bgp/be4")
	if err := lb1.Client.PutAdvertisement(ctx, cfg()); err != nil {
		t.Fatal(err)
	}
	expect("every peer", map[string]bool{"router": true, "be1": true})
	// The peer changes must not reset a session. The lab's BFD (100 ms x 3)
	// can still miss its detection time on a loaded 2-core machine and then
	// resets the BGP session on purpose; such a reset is told apart by the
	// daemon's own log line for that peer, and the daemon must never have
	// restarted its speaker for these PUTs.
	since0 := lb1.Log()[logMark:]
	if strings.Contains(since0, "bgp speaker stopped") || strings.Contains(since0, "restartedAnnouncers=true") {
		t.Errorf("a peer change restarted lb1's BGP speaker:\n%s", since0)
	}
	lbPeer := map[string]string{"router": "router4", "be1": "be4"}
	for name, m := range marks {
		if got := since(name); !sameBirdSession(m, got) {
			if strings.Contains(since0, "bfd down: resetting the bgp session and holding it down\" component=advertise component=bgp peer="+lbPeer[name]+" ") {
				t.Logf("%s's session with lb1 was reset by a BFD detection timeout (machine load), not by the peer change: %q, then %q", name, m, got)
				continue
			}
			t.Errorf("%s's session with lb1 was reset: %q, then %q", name, m, got)
		}
	}
	announced(t, lb1, "bgp/be4", "bgp/router4")
}

// announced checks how lb1's /v1/vips says the IPv4 VIP is announced: via
// the established sessions its advertisement names, and no other.
func announced(t *testing.T, d *l4.Daemon, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		vips, err := d.Client.VIPs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vips {
			if v.VIP == VIPs[0].String() {
				got = v.Announced
			}
		}
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/v1/vips: %s announced via %v, want %v", VIPs[0], got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameBirdSession says whether two lines of bird's protocol table for one
// protocol ("lb1 BGP --- up 14:06:43.902 Established") show the same
// session: the same state, changed at the same time. bird keeps the time
// of the last change on its monotonic clock and converts it to wall time
// when printing, so two readings of an unchanged session can differ by a
// millisecond (seen: 43.902, then 43.901). A reset cannot hide in that
// tolerance: re-establishing takes a TCP connection and an OPEN exchange
// after bird's connect delay and gobgp's idle hold time, seconds at least.
func sameBirdSession(a, b string) bool {
	fa, fb := strings.Fields(a), strings.Fields(b)
	if len(fa) != len(fb) || len(fa) < 5 {
		return a == b
	}
	for i := range fa {
		if i != 4 && fa[i] != fb[i] {
			return false
		}
	}
	ta, errA := time.Parse("15:04:05.000", fa[4])
	tb, errB := time.Parse("15:04:05.000", fb[4])
	if errA != nil || errB != nil {
		return fa[4] == fb[4]
	}
	d := ta.Sub(tb)
	return d >= -50*time.Millisecond && d <= 50*time.Millisecond
}
