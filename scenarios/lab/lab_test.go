package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
)

func rootLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-br", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	return string(out)
}

func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func ping(ctx context.Context, t *testing.T, h *Host, dst netip.Addr, src ...netip.Addr) {
	t.Helper()
	var from netip.Addr
	if len(src) > 0 {
		from = src[0]
	}
	if err := h.Ping(ctx, dst, from); err != nil {
		t.Errorf("ping %s from %s: %v", dst, h.Name, err)
	}
}

func TestBuildPingsAcrossAndCloseLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	before := rootLinks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := Build(ctx, Config{Backends: 2})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = l.Close()
		}
	})
	if got := len(namespacesWithPrefix(t, l.ID)); got != 5 { // client lb switch be1 be2
		t.Fatalf("namespaces: got %d, want 5", got)
	}
	tests := []struct {
		name string
		dst  netip.Addr
	}{
		{"lb v4", netip.MustParseAddr("10.77.1.1")},
		{"lb v6", netip.MustParseAddr("fd77:1::1")},
		{"be1 v4 through lb", netip.MustParseAddr("10.77.2.11")},
		{"be2 v4 through lb", netip.MustParseAddr("10.77.2.12")},
		{"be1 v6 through lb", netip.MustParseAddr("fd77:2::11")},
		{"be2 v6 through lb", netip.MustParseAddr("fd77:2::12")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { ping(ctx, t, l.Client, tc.dst) })
	}
	if got, want := l.BackendIface(1, 0).V4(), netip.MustParseAddr("10.77.2.12"); got != want {
		t.Errorf("be2 eth0 v4 = %s, want %s", got, want)
	}
	out, err := l.Client.Exec(ctx, "ip", "route", "get", "10.77.100.7")
	if err != nil || !strings.Contains(string(out), "via 10.77.1.1") {
		t.Errorf("VIP range not routed to the lb: %v %s", err, out)
	}
	out, err = l.Client.Exec(ctx, "ip", "-6", "route", "get", "fd77:100::7")
	if err != nil || !strings.Contains(string(out), "via fd77:1::1") {
		t.Errorf("v6 VIP range not routed to the lb: %v %s", err, out)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	closed = true
	if left := namespacesWithPrefix(t, l.ID); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if after := rootLinks(t); after != before {
		t.Errorf("root namespace links changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestMultiLinkThroughRouterKeepsEachLinkSeparate(t *testing.T) {
	l := New(t, Config{Backends: 1, Links: 2, Router: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		dst     string
		wantDev string
	}{
		{"10.77.2.11", "eth0"},
		{"10.77.12.11", "eth1"},
		{"fd77:2::11", "eth0"},
		{"fd77:12::11", "eth1"},
	}
	for _, tc := range tests {
		t.Run(tc.dst, func(t *testing.T) {
			out, err := l.Client.Exec(ctx, "ip", "route", "get", tc.dst)
			if err != nil || !strings.Contains(string(out), "dev "+tc.wantDev) {
				t.Fatalf("route to %s: want dev %s, got %v %s", tc.dst, tc.wantDev, err, out)
			}
			ping(ctx, t, l.Client, netip.MustParseAddr(tc.dst))
		})
	}
	out, err := l.Client.Exec(ctx, "ip", "route", "get", "10.77.110.5")
	if err != nil || !strings.Contains(string(out), "dev eth1") {
		t.Errorf("link-1 VIP range not routed over link 1: %v %s", err, out)
	}
	// The backend answers link-1 sources over link 1.
	out, err = l.Backends[0].Exec(ctx, "ip", "route", "get", "10.77.11.2")
	if err != nil || !strings.Contains(string(out), "dev eth1") {
		t.Errorf("backend route back to link 1: %v %s", err, out)
	}
	ping(ctx, t, l.Client, netip.MustParseAddr("10.77.12.11"), netip.MustParseAddr("10.77.11.2"))

	// Cutting link 0 at the router isolates link-0 addresses only.
	if err := l.RouterClientIface(0).SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := l.Client.Ping(ctx, netip.MustParseAddr("10.77.2.11"), netip.Addr{}); err == nil {
		t.Errorf("link 0 is down but 10.77.2.11 still answers")
	}
	ping(ctx, t, l.Client, netip.MustParseAddr("10.77.12.11"), netip.MustParseAddr("10.77.11.2"))
}

func TestSysctlsForwardingOnlyOnLBAndRouter(t *testing.T) {
	l := New(t, Config{Backends: 1, Router: true})
	ctx := context.Background()
	tests := []struct {
		host *Host
		key  string
		want string
	}{
		{l.LB, "net.ipv4.ip_forward", "1"},
		{l.LB, "net.ipv6.conf.all.forwarding", "1"},
		{l.Router, "net.ipv4.ip_forward", "1"},
		{l.Client, "net.ipv4.ip_forward", "0"},
		{l.Backends[0], "net.ipv4.ip_forward", "0"},
		{l.LB, "net.ipv4.conf.all.rp_filter", "0"},
		{l.LB, "net.ipv4.conf.eth0.rp_filter", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.host.Name+" "+tc.key, func(t *testing.T) {
			// Read through sysctl(8) in the namespace, independent of Host.Sysctl.
			out, err := tc.host.Exec(ctx, "sysctl", "-n", tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("%s = %s, want %s", tc.key, got, tc.want)
			}
		})
	}
}

func TestDSRPutsVIPOnBackendInterfaceAndIgnoresARPForIt(t *testing.T) {
	l := New(t, Config{Backends: 2, DSR: true})
	ctx := context.Background()
	for k, be := range l.Backends {
		dev := l.BackendIface(k, 0).Name
		out, err := be.Exec(ctx, "ip", "addr", "show", "dev", dev)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"10.77.100.1/32", "fd77:100::1/128"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s %s lacks %s:\n%s", be.Name, dev, want, out)
			}
		}
		if !strings.Contains(string(out), "deprecated") {
			t.Errorf("%s: IPv6 DSR VIP must be deprecated so it is never chosen as a source:\n%s", be.Name, out)
		}
		rules, err := be.Exec(ctx, "nft", "list", "table", "arp", "tlb_dsr")
		if err != nil || !strings.Contains(string(rules), "10.77.100.1") {
			t.Errorf("%s: no ARP drop rule for the DSR VIP: %v\n%s", be.Name, err, rules)
		}
		if v, err := be.ReadSysctl("net.ipv4.conf.all.arp_ignore"); err != nil || v != "1" {
			t.Errorf("%s arp_ignore = %q (%v), want 1", be.Name, v, err)
		}
		if v, err := be.ReadSysctl("net.ipv4.conf.all.arp_announce"); err != nil || v != "2" {
			t.Errorf("%s arp_announce = %q (%v), want 2", be.Name, v, err)
		}
	}
	// The lb itself has no VIP: it must not answer for it.
	out, _ := l.LB.Exec(ctx, "ip", "addr")
	if strings.Contains(string(out), "10.77.100.1") {
		t.Errorf("lb carries the DSR VIP")
	}
}

func TestDoRunsInsideTheNamespace(t *testing.T) {
	l := New(t, Config{NoBackends: true})
	var ifaces []net.Interface
	err := l.LB.Do(func() error {
		var err error
		ifaces, err = net.Interfaces()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := l.LBClientIface(0).MAC.String()
	found := false
	for _, i := range ifaces {
		if i.Name == "eth0" && i.HardwareAddr.String() == want {
			found = true
		}
	}
	if !found {
		t.Errorf("Do did not see lb's eth0 (%s): %v", want, ifaces)
	}
	// And the calling goroutine is back in the root namespace.
	root, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range root {
		if i.HardwareAddr.String() == want {
			t.Errorf("root namespace sees lab interface %s", i.Name)
		}
	}
}

func TestCloseStopsBackgroundProcesses(t *testing.T) {
	l := NewEmpty(t)
	h, err := l.AddHost(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Start("sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("process still running after Close")
	}
	if _, err := h.Start("true"); err == nil {
		t.Error("Start on a closed lab succeeded")
	}
}

func TestDropProtoUnreachableInstallsRule(t *testing.T) {
	l := NewEmpty(t)
	h, err := l.AddHost(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := h.DropProtoUnreachable(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	out, err := h.Exec(context.Background(), "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "prot-unreachable drop"); n != 1 {
		t.Errorf("want the rule once, got %d:\n%s", n, out)
	}
}

func TestSweepRemovesOnlyNamespacesOfDeadProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadNS := fmt.Sprintf("tlb%d-sweep", dead.Process.Pid)
	liveNS := fmt.Sprintf("tlb%d-sweeplive", os.Getpid())
	for _, ns := range []string{deadNS, liveNS} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	removed, err := Sweep(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(removed, deadNS) {
		t.Errorf("Sweep did not remove %s (removed %v)", deadNS, removed)
	}
	if contains(removed, liveNS) || len(namespacesWithPrefix(t, liveNS)) != 1 {
		t.Errorf("Sweep removed the live run's namespace %s", liveNS)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestBuildRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"too many links", Config{Links: 4}},
		{"negative links", Config{Links: -1}},
		{"negative backends", Config{Backends: -2}},
		{"too many backends", Config{Backends: 81}},
		{"invalid DSR VIP", Config{DSR: true, DSRVIPs: []netip.Addr{{}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Build(context.Background(), tc.cfg); err == nil {
				t.Fatal("Build accepted a bad config")
			}
		})
	}
}

func TestAddHostRejectsBadNames(t *testing.T) {
	l := NewEmpty(t)
	for _, name := range []string{"", "Client", "a-b", "1abc", "averyveryverylongname"} {
		if _, err := l.AddHost(context.Background(), name); err == nil {
			t.Errorf("AddHost(%q) accepted", name)
		}
	}
}

func TestVIPAddressing(t *testing.T) {
	tests := []struct {
		link, host int
		v6         bool
		want       string
	}{
		{0, 1, false, "10.77.100.1"},
		{1, 5, false, "10.77.110.5"},
		{0, 1, true, "fd77:100::1"},
		{2, 0x102, true, "fd77:120::102"},
	}
	for _, tc := range tests {
		if got := VIP(tc.link, tc.host, tc.v6).String(); got != tc.want {
			t.Errorf("VIP(%d,%d,%v) = %s, want %s", tc.link, tc.host, tc.v6, got, tc.want)
		}
	}
}

// TestSilenceOutOfTheBlueDropsOnlyReflectedAborts: with the rule, an
// ABORT with the T bit (a stack's answer to an out-of-the-blue packet,
// which would end the peer's association) does not leave the host; an
// ABORT with the T bit clear (a stack ending its own association) does.
func TestSilenceOutOfTheBlueDropsOnlyReflectedAborts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	_, a, b := twoHosts(t)
	src, dst := netip.MustParseAddrPort("10.99.0.1:5000"), netip.MustParseAddrPort("10.99.0.2:6000")
	if err := a.AddAddr(ctx, "eth0", netip.PrefixFrom(src.Addr(), 24)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr(ctx, "eth0", netip.PrefixFrom(dst.Addr(), 24)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := a.SilenceOutOfTheBlue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// b reads every SCTP packet that reaches it.
	var fd int
	if err := b.Do(func() error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_SCTP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(int64(500 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	// Reflected (T bit) with tag 0x11111111, own (no T bit) with 0x22222222.
	if err := a.Do(func() error {
		for _, p := range []struct {
			tag       uint32
			reflected bool
		}{{0x11111111, true}, {0x22222222, false}, {0x11111111, true}} {
			// A packet netfilter drops on output fails the send with EPERM.
			if err := abort.Send(src, dst, p.tag, p.reflected); err != nil && !(p.reflected && errors.Is(err, syscall.EPERM)) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	buf := make([]byte, 1500)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			break // the timeout: nothing more came
		}
		if n >= 20+16 { // IP header, SCTP common header, chunk header
			sctp := buf[20:n]
			got = append(got, fmt.Sprintf("tag %08x chunk %d flags %d", binary.BigEndian.Uint32(sctp[4:8]), sctp[12], sctp[13]))
		}
	}
	if want := []string{"tag 22222222 chunk 6 flags 0"}; !slices.Equal(got, want) {
		t.Errorf("b received %q, want only %q", got, want)
	}
	out, err := a.Exec(ctx, "nft", "list", "table", "inet", "tlb_sctp_ootb")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "counter packets 2 ") {
		t.Errorf("the rule's counter should show the 2 reflected ABORTs dropped:\n%s", out)
	}
}

// TestNoRedirectsCoversEveryInterface: the per-interface switches are off
// too (the kernel ORs them with "all" for sending, and for accepting on a
// host that does not forward), and interfaces made later inherit "default".
func TestNoRedirectsCoversEveryInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	l, a, b := twoHosts(t)
	if err := a.NoRedirects(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Connect(ctx, a, "eth1", b, "eth1"); err != nil { // made after
		t.Fatal(err)
	}
	for _, key := range []string{"net/ipv4/conf/eth0/accept_redirects", "net/ipv4/conf/eth0/send_redirects", "net/ipv6/conf/eth0/accept_redirects",
		"net/ipv4/conf/all/accept_redirects", "net/ipv4/conf/eth1/accept_redirects", "net/ipv4/conf/eth1/send_redirects", "net/ipv6/conf/eth1/accept_redirects"} {
		if v, err := a.ReadSysctl(key); err != nil || v != "0" {
			t.Errorf("%s = %q (%v), want 0", key, v, err)
		}
	}
	// b was left alone: the kernel's defaults are on.
	if v, _ := b.ReadSysctl("net/ipv4/conf/eth0/accept_redirects"); v != "1" {
		t.Errorf("b's eth0 accept_redirects = %q: the defaults this test relies on changed", v)
	}
}

// twoHosts is an empty lab with hosts a and b joined by a veth pair (eth0
// on both sides).
func twoHosts(t *testing.T) (*Lab, *Host, *Host) {
	t.Helper()
	ctx := context.Background()
	l := NewEmpty(t)
	a, err := l.AddHost(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddHost(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Connect(ctx, a, "eth0", b, "eth0"); err != nil {
		t.Fatal(err)
	}
	return l, a, b
}
