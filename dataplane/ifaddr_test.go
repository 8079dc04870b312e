package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ifAddrsEntry reads the if_addrs entry of ifname.
func (e *env) ifAddrsEntry(t *testing.T, ifname string) (v4, v6 netip.Addr) {
	t.Helper()
	var v struct {
		V4    [4]byte
		V6    [16]byte
		Flags uint32
	}
	if err := e.d.objs.IfAddrs.Lookup(uint32(e.ifindex(ifname)), &v); err != nil {
		t.Fatalf("if_addrs %s: %v", ifname, err)
	}
	if v.Flags&ifaV4 != 0 {
		v4 = netip.AddrFrom4(v.V4)
	}
	if v.Flags&ifaV6 != 0 {
		v6 = netip.AddrFrom16(v.V6)
	}
	return v4, v6
}

// waitIfAddrs waits (generously: the machine is loaded) until the if_addrs
// entry of lb1 holds want4 and want6 (the zero Addr: no address).
func (e *env) waitIfAddrs(t *testing.T, want4, want6 netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v4, v6 := e.ifAddrsEntry(t, "lb1")
		if v4 == want4 && v6 == want6 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("if_addrs of lb1: %v / %v, want %v / %v", v4, v6, want4, want6)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An address added to or removed from an attached interface reaches the
// datapath with no re-attach: an onearm service's SNAT source (the address
// of the interface toward the endpoint) follows, byte for byte, for IPv4
// and IPv6; the removed address is never used again; an interface left
// with no IPv6 address drops what needs one; and the watcher keeps working
// after its netlink socket fails (it resubscribes and re-reads).
func TestAddressChangeReachesDatapath(t *testing.T) {
	e := newEnv(t)
	ip := func(args ...string) { run(t, append([]string{"ip", "-n", e.ns}, args...)...) }
	// Removing the primary IPv4 address then promotes the secondary instead
	// of removing it too.
	run(t, "ip", "netns", "exec", e.ns, "sysctl", "-qw", "net.ipv4.conf.lb1.promote_secondaries=1")

	// Each subscription's socket can be broken from the test; the watcher
	// must then subscribe again.
	subs := make(chan chan struct{}, 16)
	e.d.subscribe = func(ch chan<- netlink.AddrUpdate, done <-chan struct{}, o netlink.AddrSubscribeOptions) error {
		inner, brk := make(chan struct{}), make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-brk:
			}
			close(inner)
		}()
		if err := netlink.AddrSubscribeWithOptions(ch, inner, o); err != nil {
			close(brk)
			return err
		}
		subs <- brk
		return nil
	}
	nextSub := func() chan struct{} {
		t.Helper()
		select {
		case b := <-subs:
			return b
		case <-time.After(15 * time.Second):
			t.Fatal("the address watcher did not subscribe")
			return nil
		}
	}
	logs := &lockedLog{}
	e.d.log = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- e.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	sub := nextSub()

	const vport = 53
	for id, vip := range map[uint32]netip.Addr{1: vipV4, 2: vipV6} {
		e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: ProtoUDP, Mode: ModeOneArm,
			Endpoints: testEndpoints(vip.Is6(), 1, 5353)})
	}
	cport := uint16(40000)
	// snat sends a new flow's first packet and checks the forwarded frame
	// carries src as its source address.
	snat := func(v6 bool, src netip.Addr) {
		t.Helper()
		cport++
		id, vip, client := uint32(1), vipV4, clientV4
		if v6 {
			id, vip, client = 2, vipV6, clientV6
		}
		first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(ProtoUDP),
			sport: cport, dport: vport, ttl: 64, payload: []byte("hello")}
		ret, out := e.run(first.frame())
		if ret != actRedirect {
			t.Fatalf("client port %d: verdict %d, want redirect", cport, ret)
		}
		var sport uint16
		for _, c := range e.conns() {
			if c.ServiceID == id && c.Client.Port() == cport {
				if c.Source.Addr() != src {
					t.Fatalf("conntrack source %s, want %s", c.Source, src)
				}
				sport = c.Source.Port()
			}
		}
		if sport == 0 {
			t.Fatalf("no connection of client port %d", cport)
		}
		want := first
		want.srcMAC, want.dstMAC, want.ttl = lbMAC1, epMAC(0), 63
		want.src, want.sport, want.dst, want.dport = src, sport, epAddr(v6, 0), 5353
		diffHex(t, "forwarded first packet", out, want.frame())
	}
	new4a, new4b := netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.1.0.3")
	new6 := netip.MustParseAddr("fd01::2")

	snat(false, lbAddr1V4)
	snat(true, lbAddr1V6)

	// Replace the IPv4 address: added as a secondary, the old one removed.
	ip("addr", "add", new4a.String()+"/24", "dev", "lb1")
	ip("addr", "del", lbAddr1V4.String()+"/24", "dev", "lb1")
	e.waitIfAddrs(t, new4a, lbAddr1V6)
	snat(false, new4a)
	if l := logs.String(); !strings.Contains(l, "interface addresses changed") || !strings.Contains(l, "interface=lb1") ||
		!strings.Contains(l, "oldIPv4=10.1.0.1 ipv4=10.1.0.2") {
		t.Fatalf("no log line saying lb1's address changed:\n%s", l)
	}

	// Replace the IPv6 address.
	ip("addr", "add", new6.String()+"/64", "dev", "lb1", "nodad")
	ip("addr", "del", lbAddr1V6.String()+"/64", "dev", "lb1")
	e.waitIfAddrs(t, new4a, new6)
	snat(true, new6)

	// Break the subscription; a change made around the break still
	// arrives, through the next subscription and its re-read.
	close(sub)
	ip("addr", "add", new4b.String()+"/24", "dev", "lb1")
	ip("addr", "del", new4a.String()+"/24", "dev", "lb1")
	nextSub()
	e.waitIfAddrs(t, new4b, new6)
	snat(false, new4b)

	// The last IPv6 address goes: the entry loses it, and a flow that
	// needs it is dropped instead of leaving from the removed address (a
	// route keeps lb1 the way to the endpoint).
	ip("addr", "del", new6.String()+"/64", "dev", "lb1")
	e.waitIfAddrs(t, new4b, netip.Addr{})
	ip("-6", "route", "replace", "fd01::/64", "dev", "lb1")
	cport++
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: uint8(ProtoUDP),
		sport: cport, dport: vport, ttl: 64, payload: []byte("hello")}
	if ret, out := e.run(first.frame()); ret != actShot {
		t.Fatalf("IPv6 flow with no IPv6 address on lb1: verdict %d, want drop; out %x", ret, out)
	}
	// IPv4 is untouched by it.
	snat(false, new4b)
}

// The address the datapath uses per family: the first usable one in the
// kernel's order; link-local, loopback and DAD-failed addresses never.
func TestIfAddrsOfPicksTheFirstUsableAddress(t *testing.T) {
	addr := func(s string, flags int) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: flags}
	}
	for _, tc := range []struct {
		name         string
		addrs        []netlink.Addr
		want4, want6 string
	}{
		{"none", nil, "none", "none"},
		{"link-local only", []netlink.Addr{addr("169.254.1.1/16", 0), addr("fe80::1/64", 0)}, "none", "none"},
		{"first of each family", []netlink.Addr{addr("fe80::1/64", 0), addr("10.1.0.1/24", 0), addr("2001:db8::1/64", 0),
			addr("10.1.0.2/24", unix.IFA_F_SECONDARY), addr("2001:db8::2/64", 0)}, "10.1.0.1", "2001:db8::1"},
		{"dad failed skipped", []netlink.Addr{addr("fd01::1/64", unix.IFA_F_DADFAILED|unix.IFA_F_TENTATIVE), addr("fd01::2/64", 0)}, "none", "fd01::2"},
		{"tentative taken", []netlink.Addr{addr("fd01::3/64", unix.IFA_F_TENTATIVE)}, "none", "fd01::3"},
		{"loopback skipped", []netlink.Addr{addr("127.0.0.1/8", 0), addr("::1/128", 0), addr("192.0.2.1/24", 0)}, "192.0.2.1", "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v4, v6 := describeIfAddrs(ifAddrsOf(tc.addrs))
			if v4 != tc.want4 || v6 != tc.want6 {
				t.Fatalf("got %s / %s, want %s / %s", v4, v6, tc.want4, tc.want6)
			}
		})
	}
}

// lockedLog collects log output written from several goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The same through real packets (client -- lb -- backend namespaces, the
// datapath attached with tcx): an onearm TCP service's endpoint sees the
// LB's lb1 address as the client; after that address is replaced (no
// re-attach), new connections reach the endpoint from the new address.
func TestAddressChangeReachesTrafficOnearm(t *testing.T) {
	te := newTrafficEnv(t)
	var ln net.Listener
	inNetns(t, te.backend, func() {
		var err error
		if ln, err = net.Listen("tcp", "10.1.0.10:8080"); err != nil {
			t.Errorf("listen: %v", err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The endpoint answers with the address it sees the client at.
			_, _ = fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	d := te.load(t, false)
	t.Cleanup(func() { _ = d.Destroy() })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
	})
	if err := d.UpsertService(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Mode: ModeOneArm,
		Endpoints: []Endpoint{{Addr: epAddr(false, 0), Port: 8080}}}); err != nil {
		t.Fatal(err)
	}
	// seenAs is the source address the endpoint saw on a new connection.
	seenAs := func() (string, error) {
		c, err := te.dial(t, "10.9.0.1:80")
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	if got, err := seenAs(); err != nil || got != "10.1.0.1" {
		t.Fatalf("endpoint saw %q (%v), want 10.1.0.1", got, err)
	}
	run(t, "ip", "netns", "exec", te.lb, "sysctl", "-qw", "net.ipv4.conf.lb1.promote_secondaries=1")
	run(t, "ip", "-n", te.lb, "addr", "add", "10.1.0.2/24", "dev", "lb1")
	run(t, "ip", "-n", te.lb, "addr", "del", "10.1.0.1/24", "dev", "lb1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := seenAs()
		if err == nil && got == "10.1.0.2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the address change the endpoint saw %q (%v), want 10.1.0.2", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And keeps doing so.
	if got, err := seenAs(); err != nil || got != "10.1.0.2" {
		t.Fatalf("endpoint saw %q (%v), want 10.1.0.2", got, err)
	}
}
