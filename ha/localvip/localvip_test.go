package localvip

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/telcolb/telcolb/scenarios/lab"
)

var (
	vipA = netip.MustParseAddr("192.0.2.10")
	vipB = netip.MustParseAddr("2001:db8::10")
	vipC = netip.MustParseAddr("192.0.2.11")
)

type nsEnv struct {
	h     *lab.Host
	nl    *netlink.Handle
	ns    netns.NsHandle
	state string
}

func newEnv(t *testing.T) *nsEnv {
	t.Helper()
	l := lab.NewEmpty(t)
	h, err := l.AddHost(context.Background(), "node")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(h.NS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	return &nsEnv{h: h, nl: nl, ns: ns, state: filepath.Join(t.TempDir(), "localvips.json")}
}

func (e *nsEnv) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{StateFile: e.state, Netlink: e.nl})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addrs lists "ip/bits" per interface name, plus whether v6 ones skip DAD.
func (e *nsEnv) addrs(t *testing.T, ifname string) []string {
	t.Helper()
	out, err := e.h.Exec(context.Background(), "ip", "-o", "addr", "show", "dev", ifname)
	if err != nil {
		return nil
	}
	var r []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(f[3], "fe80:") {
			continue
		}
		s := f[3]
		if strings.Contains(line, "nodad") {
			s += " nodad"
		}
		r = append(r, s)
	}
	slices.Sort(r)
	return r
}

func TestHoldAndRelease(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	if err := m.Hold("n2", []netip.Addr{vipA, vipB}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.addrs(t, DefaultInterface), []string{"192.0.2.10/32", "2001:db8::10/128 nodad"}; !slices.Equal(got, want) {
		t.Fatalf("telcolb0 holds %v, want %v", got, want)
	}
	if err := m.Hold("pfcp", []netip.Addr{vipA}); err != nil { // a second service on the same VIP
		t.Fatal(err)
	}
	if err := m.Hold("n2", nil); err != nil {
		t.Fatal(err)
	}
	if got, want := e.addrs(t, DefaultInterface), []string{"192.0.2.10/32"}; !slices.Equal(got, want) {
		t.Fatalf("after n2 released: %v, want %v (pfcp still holds .10)", got, want)
	}
	if err := m.Hold("pfcp", nil); err != nil {
		t.Fatal(err)
	}
	if got := e.addrs(t, DefaultInterface); len(got) != 0 {
		t.Fatalf("after all released: %v", got)
	}
	if b, _ := os.ReadFile(e.state); !strings.Contains(string(b), `"added": null`) {
		t.Fatalf("state file still lists addresses:\n%s", b)
	}
}

func TestNeverRemovesForeignAddresses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// One VIP the operator put on lo, one put on telcolb0 by hand.
	if err := e.h.IP(ctx, "addr", "add", vipA.String()+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	m := e.manager(t)
	if err := m.Hold("x", []netip.Addr{vipC}); err != nil { // creates telcolb0
		t.Fatal(err)
	}
	if err := e.h.IP(ctx, "addr", "add", vipB.String()+"/128", "dev", DefaultInterface, "nodad"); err != nil {
		t.Fatal(err)
	}
	if err := m.Hold("svc", []netip.Addr{vipA, vipB}); err != nil {
		t.Fatal(err)
	}
	if got := m.Added(); !slices.Equal(got, []netip.Addr{vipC}) {
		t.Fatalf("recorded as added: %v, want only %v", got, vipC)
	}
	if err := m.Hold("svc", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Hold("x", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := e.addrs(t, "lo"); !slices.Contains(got, "192.0.2.10/32") {
		t.Fatalf("operator's address removed from lo: %v", got)
	}
	if got := e.addrs(t, DefaultInterface); !slices.Equal(got, []string{"2001:db8::10/128 nodad"}) {
		t.Fatalf("telcolb0 holds %v, want only the operator's 2001:db8::10", got)
	}
}

// TestRestartKeepsAddresses: a new manager over the same state file (a
// daemon restart) neither removes nor re-adds an address still held; one
// whose service went away meanwhile goes at Reconcile. A netlink
// subscription in the namespace sees every address event.
func TestRestartKeepsAddresses(t *testing.T) {
	e := newEnv(t)
	m1 := e.manager(t)
	if err := m1.Hold("n2", []netip.Addr{vipA, vipB}); err != nil {
		t.Fatal(err)
	}
	if err := m1.Hold("old", []netip.Addr{vipC}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	ch, done := make(chan netlink.AddrUpdate, 64), make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &e.ns}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for u := range ch {
			if u.LinkAddress.IP.IsLinkLocalUnicast() {
				continue
			}
			mu.Lock()
			events = append(events, map[bool]string{true: "add ", false: "del "}[u.NewAddr]+u.LinkAddress.IP.String())
			mu.Unlock()
		}
	}()

	m2 := e.manager(t) // the daemon restarted; service "old" was deleted meanwhile
	if err := m2.Hold("n2", []netip.Addr{vipA, vipB}); err != nil {
		t.Fatal(err)
	}
	if got := e.addrs(t, DefaultInterface); len(got) != 3 {
		t.Fatalf("before Reconcile: %v, want all three kept", got)
	}
	if err := m2.Reconcile(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, []string{"del 192.0.2.11"}) {
		t.Fatalf("address events across the restart: %v, want only the removal of the deleted service's VIP", events)
	}
}

func TestDamagedStateFile(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.state, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := e.manager(t)
	if len(m.Added()) != 0 {
		t.Fatal("damaged file read as addresses")
	}
	if _, err := os.Stat(e.state + ".damaged"); err != nil {
		t.Fatalf("damaged file not moved aside: %v", err)
	}
}

// TestPresentVIPNeedsNoInterface: a VIP that is local already is used as it
// is, even where the interface cannot be created; one that is not gets a
// clear error naming the interface.
func TestPresentVIPNeedsNoInterface(t *testing.T) {
	e := newEnv(t)
	if err := e.h.IP(context.Background(), "addr", "add", vipA.String()+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	bad := "name-too-long-for-linux"
	m, err := New(Config{StateFile: e.state, Netlink: e.nl, Interface: bad})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Hold("svc", []netip.Addr{vipA}); err != nil {
		t.Fatalf("VIP already on lo: %v", err)
	}
	if err := m.Hold("svc2", []netip.Addr{vipC}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("VIP absent, interface impossible: %v", err)
	}
}
