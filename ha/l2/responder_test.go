package l2

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// claimLog records the claims a responder reports.
type claimLog struct {
	mu  sync.Mutex
	got map[netip.Addr]string // VIP -> claiming MAC
}

func (c *claimLog) add(_ string, vip netip.Addr, _, theirs net.HardwareAddr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[vip] = theirs.String()
}

func (c *claimLog) get(vip netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[vip]
}

// TestResponderFencingOnTheWire: two responders on a veth pair, a answering
// for an IPv4 and an IPv6 VIP, b fenced from both. b probes; a answers the
// probes, and b reports a's answers as claims by a's MAC while sending no
// answer or announcement itself; a sees nothing to report. Then b answers
// too (a split brain): its announcements reach a as claims by b's MAC.
func TestResponderFencingOnTheWire(t *testing.T) {
	ha, hb, ia, ib := vethPair(t)
	ca, cb := &claimLog{got: map[netip.Addr]string{}}, &claimLog{got: map[netip.Addr]string{}}
	ra := NewResponder(ResponderConfig{OnClaim: ca.add, BurstCount: 2, BurstInterval: 50 * time.Millisecond})
	rb := NewResponder(ResponderConfig{OnClaim: cb.add, BurstCount: 2, BurstInterval: 50 * time.Millisecond, ProbeInterval: 50 * time.Millisecond})
	t.Cleanup(func() { ra.Close(); rb.Close() })
	both := map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}}
	if err := ha.Do(func() error { return ra.Update(both, nil) }); err != nil {
		t.Fatal(err)
	}
	if err := hb.Do(func() error { return rb.Update(nil, both) }); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: a %+v, b %+v, claims seen by a %v, by b %v", what, ra.Stats(), rb.Stats(), ca.got, cb.got)
			}
		}
	}
	waitFor("fenced b sees a's answers to its probes", func() bool {
		return cb.get(vip4) == ia.MAC.String() && cb.get(vip6) == ia.MAC.String()
	})
	time.Sleep(300 * time.Millisecond) // several more probe rounds
	sa, sb := ra.Stats()["eth0"], rb.Stats()["eth0"]
	if sb.Probes < 4 || sb.ARPReplies+sb.NAReplies+sb.Announcements != 0 {
		t.Fatalf("fenced b: %+v, want probes and no answer or announcement", sb)
	}
	if sa.ARPReplies == 0 || sa.NAReplies == 0 {
		t.Fatalf("a answered no probe: %+v", sa)
	}
	if ca.get(vip4) != "" || ca.get(vip6) != "" {
		t.Fatalf("a reported claims %v: b's probes claim nothing", ca.got)
	}
	if err := hb.Do(func() error { return rb.Update(both, nil) }); err != nil {
		t.Fatal(err)
	}
	waitFor("a sees b's announcements", func() bool {
		return ca.get(vip4) == ib.MAC.String() && ca.get(vip6) == ib.MAC.String()
	})
}

// TestResponderAnnouncesBeforeUpdateReturns: a VIP taken over has its
// first gratuitous ARP / unsolicited NA written by the time Update
// returns (b, fenced from both VIPs, sees a's claims on the wire). The
// announcer publishes ownership (Announced) only after Update, and the N2 takeover ABORTs at once on a VIP owned here: the
// gNBs' router must have been told before they reconnect.
func TestResponderAnnouncesBeforeUpdateReturns(t *testing.T) {
	ha, hb, ia, _ := vethPair(t)
	cb := &claimLog{got: map[netip.Addr]string{}}
	// One frame per VIP, the one Update must send itself; b, fenced from
	// both VIPs, reports a's frames as claims.
	ra := NewResponder(ResponderConfig{BurstCount: 1})
	rb := NewResponder(ResponderConfig{OnClaim: cb.add})
	t.Cleanup(func() { ra.Close(); rb.Close() })
	both := map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}}
	if err := hb.Do(func() error { return rb.Update(nil, both) }); err != nil {
		t.Fatal(err)
	}
	var at Stats
	if err := ha.Do(func() error {
		err := ra.Update(both, nil)
		at = ra.Stats()["eth0"]
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if at.Announcements != 2 {
		t.Fatalf("announcements written when Update returned: %d, want 2 (one per VIP)", at.Announcements)
	}
	for end := time.Now().Add(5 * time.Second); cb.get(vip4) != ia.MAC.String() || cb.get(vip6) != ia.MAC.String(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("b did not see a's announcements: claims %v, a %+v", cb.got, ra.Stats())
		}
	}
}

// vethPair is two namespaces, a and b, joined by a veth pair (eth0 on
// each); it skips the test without root.
func vethPair(t *testing.T) (ha, hb *lab.Host, ia, ib *lab.Iface) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, packet sockets)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := lab.NewEmpty(t)
	ha, err := l.AddHost(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if hb, err = l.AddHost(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if ia, ib, err = l.Connect(ctx, ha, "eth0", hb, "eth0"); err != nil {
		t.Fatal(err)
	}
	return ha, hb, ia, ib
}
