package dataplane

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread inside namespace name; sockets it opens stay
// in that namespace.
func inNetns(t testing.TB, name string, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			done <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			done <- err
			return
		}
		fn()
		done <- netns.Set(orig)
	}()
	if err := <-done; err != nil {
		t.Fatalf("netns %s: %v", name, err)
	}
}

type trafficEnv struct {
	lb, client, backend string
	pin                 string
}

// newTrafficEnv builds client -- lb -- backend namespaces joined by veth
// pairs; the LB namespace routes, the datapath attaches to lb0 and lb1.
func newTrafficEnv(t *testing.T) *trafficEnv {
	requireRoot(t)
	te := &trafficEnv{lb: newNetns(t), client: newNetns(t), backend: newNetns(t), pin: testPinPath(t)}
	ip := func(ns string, args ...string) { run(t, append([]string{"ip", "-n", ns}, args...)...) }
	ip(te.lb, "link", "add", "lb0", "type", "veth", "peer", "name", "eth0", "netns", te.client)
	ip(te.lb, "link", "add", "lb1", "type", "veth", "peer", "name", "eth0", "netns", te.backend)
	ip(te.lb, "addr", "add", "10.0.0.1/24", "dev", "lb0")
	ip(te.lb, "addr", "add", "10.1.0.1/24", "dev", "lb1")
	ip(te.client, "addr", "add", "10.0.0.2/24", "dev", "eth0")
	ip(te.backend, "addr", "add", "10.1.0.10/24", "dev", "eth0")
	for _, ns := range []string{te.lb, te.client, te.backend} {
		ip(ns, "link", "set", "lo", "up")
	}
	ip(te.lb, "link", "set", "lb0", "up")
	ip(te.lb, "link", "set", "lb1", "up")
	ip(te.client, "link", "set", "eth0", "up")
	ip(te.backend, "link", "set", "eth0", "up")
	ip(te.client, "route", "add", "default", "via", "10.0.0.1")
	ip(te.backend, "route", "add", "default", "via", "10.1.0.1")
	run(t, "ip", "netns", "exec", te.lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	enterNetns(t, te.lb)
	return te
}

func (te *trafficEnv) load(t *testing.T, clsact bool) *Datapath {
	t.Helper()
	d, err := Load(Config{PinPath: te.pin, MaxConns: 1024, Logger: testLogger(), ForceClsact: clsact})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	for _, l := range []string{"lb0", "lb1"} {
		if err := d.Attach(l); err != nil {
			t.Fatalf("attach %s: %v", l, err)
		}
	}
	return d
}

// echoServer accepts TCP connections in the backend namespace and echoes
// lines back.
func (te *trafficEnv) echoServer(t *testing.T) {
	var ln net.Listener
	inNetns(t, te.backend, func() {
		var err error
		ln, err = net.Listen("tcp", "10.1.0.10:8080")
		if err != nil {
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
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func (te *trafficEnv) dial(t *testing.T, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	inNetns(t, te.client, func() { c, err = net.DialTimeout("tcp", addr, 2*time.Second) })
	return c, err
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, line, err)
	}
}

// Traffic flows through the attached datapath with tcx and with the forced
// clsact fallback; a restart (Close, Load, Attach) keeps services and
// conntrack so an established TCP connection survives; Detach removes the
// hook.
func TestAttachRestartDetachKeepTraffic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		clsact bool
		mode   string
	}{{"tcx", false, "tcx"}, {"clsact", true, "clsact"}} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTrafficEnv(t)
			te.echoServer(t)
			d := te.load(t, tc.clsact)
			destroyed := false
			t.Cleanup(func() {
				if !destroyed {
					_ = d.Destroy()
				}
			})
			if got := d.AttachMode(); got != tc.mode {
				t.Fatalf("attach mode %s, want %s", got, tc.mode)
			}
			if got := strings.Join(d.Interfaces(), ","); got != "lb0,lb1" {
				t.Fatalf("interfaces %s", got)
			}
			if err := d.UpsertService(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP,
				Endpoints: []Endpoint{{Addr: epAddr(false, 0), Port: 8080}}}); err != nil {
				t.Fatal(err)
			}
			c, err := te.dial(t, "10.9.0.1:80")
			if err != nil {
				t.Fatalf("dial through lb: %v", err)
			}
			defer c.Close()
			echo(t, c, "before restart")

			if err := d.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			// Still forwarding with no daemon at all.
			echo(t, c, "while down")
			d = te.load(t, tc.clsact)
			echo(t, c, "after restart")
			conns, err := d.Conntrack()
			if err != nil {
				t.Fatal(err)
			}
			if len(conns) != 1 || conns[0].State != "ESTABLISHED" || conns[0].OrigPackets < 6 {
				t.Fatalf("conntrack after restart: %+v", conns)
			}
			if tc.clsact {
				out, _ := exec.Command("ip", "netns", "exec", te.lb, "tc", "filter", "show", "dev", "lb0", "ingress").CombinedOutput()
				if n := strings.Count(string(out), "telcolb"); n != 1 {
					t.Fatalf("%d telcolb filters after re-attach:\n%s", n, out)
				}
			}

			if err := d.Detach("lb0"); err != nil {
				t.Fatalf("detach: %v", err)
			}
			if _, err := os.Stat(d.linkPin("lb0")); !os.IsNotExist(err) {
				t.Fatalf("tcx link pin remains: %v", err)
			}
			if c2, err := te.dial(t, "10.9.0.1:80"); err == nil {
				c2.Close()
				t.Fatal("VIP still served after detach")
			}
			if err := d.Destroy(); err != nil {
				t.Fatalf("destroy: %v", err)
			}
			destroyed = true
			if _, err := os.Stat(te.pin); !os.IsNotExist(err) {
				t.Fatalf("pin path remains: %v", err)
			}
		})
	}
}

// A pinned map whose shape changed (here conntrack size) is replaced rather
// than failing the load.
func TestIncompatiblePinnedMapIsRecreated(t *testing.T) {
	requireRoot(t)
	pin := testPinPath(t)
	d, err := Load(Config{PinPath: pin, MaxConns: 1024, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertService(Service{ID: 2, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err = Load(Config{PinPath: pin, MaxConns: 2048, Logger: testLogger()})
	if err != nil {
		t.Fatalf("reload with another conntrack size: %v", err)
	}
	defer d.Destroy()
	for _, m := range []*ebpf.Map{d.objs.Conntrack, d.objs.Conntrack4} {
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.MaxEntries != 2048 {
			t.Fatalf("%s max entries %d, want 2048", info.Name, info.MaxEntries)
		}
	}
	if keys := serviceKeysIn(t, d); len(keys) != 1 {
		t.Fatalf("services lost across reload: %d keys", len(keys))
	}
}

// An interface deleted and re-created under the same name leaves a defunct
// pinned tcx link; Attach must replace it, not "update" it.
func TestAttachReplacesStaleTCXLink(t *testing.T) {
	e := newEnv(t)
	if e.d.AttachMode() != "tcx" {
		t.Skip("tcx unavailable")
	}
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", e.ns, "link", "del", "lb1")
	run(t, "ip", "-n", e.ns, "link", "add", "lb1", "address", lbMAC1.String(), "type", "veth", "peer", "name", "lb1p")
	run(t, "ip", "-n", e.ns, "link", "set", "lb1", "up")
	d, err := Load(Config{PinPath: e.d.cfg.PinPath, MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	t.Cleanup(func() { _ = d.Destroy() })
	if err := d.Attach("lb1"); err != nil {
		t.Fatalf("attach re-created interface: %v", err)
	}
	l, err := link.LoadPinnedLink(d.linkPin("lb1"), nil)
	if err != nil {
		t.Fatalf("pinned link: %v", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil || info.TCX() == nil {
		t.Fatalf("link info %+v: %v", info, err)
	}
	nl, err := netlink.LinkByName("lb1")
	if err != nil {
		t.Fatal(err)
	}
	if int(info.TCX().Ifindex) != nl.Attrs().Index {
		t.Fatalf("link on ifindex %d, re-created lb1 is %d", info.TCX().Ifindex, nl.Attrs().Index)
	}
}
