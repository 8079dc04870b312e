package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Socket-level load balancing: a process in a child cgroup, in the
// datapath's network namespace, connects to VIPs that exist nowhere but in
// the services map (nothing routes them in the namespace: without the
// socket programs every call fails). cgroup sock_addr programs have no
// BPF_PROG_TEST_RUN, hence a real process.

var (
	sockVIP4 = netip.MustParseAddr("192.0.2.10")
	sockVIP6 = netip.MustParseAddr("fd09::1")
)

const sockHelperEnv = "TELCOLB_SOCKLB_HELPER"

// TestSocketLBHelper is the client process: it enters the namespace given
// as descriptor 3 (when the environment says so) and, for each "kind addr:port count" of TELCOLB_SOCKLB_DO,
// makes count calls and prints "kind peer endpoint" for each.
func TestSocketLBHelper(t *testing.T) {
	if os.Getenv(sockHelperEnv) == "" {
		t.Skip("client process of TestSocketLB")
	}
	runtime.LockOSThread()
	if err := netns.Set(netns.NsHandle(3)); err != nil {
		fmt.Printf("ERR setns: %v\n", err)
		return
	}
	for _, job := range strings.Split(os.Getenv("TELCOLB_SOCKLB_DO"), ";") {
		var kind, target string
		var n int
		if _, err := fmt.Sscanf(job, "%s %s %d", &kind, &target, &n); err != nil {
			fmt.Printf("ERR job %q: %v\n", job, err)
			continue
		}
		for i := 0; i < n; i++ {
			peer, ep, err := sockCall(kind, netip.MustParseAddrPort(target))
			if err != nil {
				fmt.Printf("%s ERR %v\n", kind, err)
				continue
			}
			fmt.Printf("%s %s %s\n", kind, peer, ep)
		}
	}
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func addrPortOf(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// sockCall makes one call of kind tcp (connect, getpeername, read), udp
// (connect, send, recv, getpeername) or udp-unconnected (sendto twice on one
// socket, recvfrom: both answers must come from the same endpoint and the
// source the application sees is the peer printed), with raw syscalls so
// that everything runs on this thread, in the namespace.
func sockCall(kind string, to netip.AddrPort) (peer, ep string, err error) {
	fam := unix.AF_INET
	if to.Addr().Is6() {
		fam = unix.AF_INET6
	}
	typ := unix.SOCK_DGRAM
	if kind == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "", err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 64)
	if kind == "udp-unconnected" {
		var eps []string
		for i := 0; i < 2; i++ {
			if err := unix.Sendto(fd, []byte("q"), 0, sockaddrOf(to)); err != nil {
				return "", "", fmt.Errorf("sendto: %w", err)
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return "", "", fmt.Errorf("recvfrom: %w", err)
			}
			peer = addrPortOf(from)
			eps = append(eps, string(buf[:n]))
		}
		if eps[0] != eps[1] {
			return "", "", fmt.Errorf("one socket's datagrams went to %s and %s", eps[0], eps[1])
		}
		return peer, eps[0], nil
	}
	if err := unix.Connect(fd, sockaddrOf(to)); err != nil {
		return "", "", fmt.Errorf("connect: %w", err)
	}
	if kind == "udp" {
		if _, err := unix.Write(fd, []byte("q")); err != nil {
			return "", "", fmt.Errorf("send: %w", err)
		}
	}
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "", "", fmt.Errorf("read: %w", err)
	}
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return "", "", fmt.Errorf("getpeername: %w", err)
	}
	return addrPortOf(sa), string(buf[:n]), nil
}

// sockEndpoints starts a TCP and a UDP server on each address that answer
// with their name ("ep<i>"), closed in Cleanup. Call on the namespace's
// thread.
func sockEndpoints(t *testing.T, addrs []netip.AddrPort) {
	t.Helper()
	for i, ap := range addrs {
		name := fmt.Sprintf("ep%d", i)
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			t.Fatalf("listen %s: %v", ap, err)
		}
		pc, err := net.ListenPacket("udp", ap.String())
		if err != nil {
			t.Fatalf("listen udp %s: %v", ap, err)
		}
		t.Cleanup(func() { ln.Close(); pc.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(name))
				c.Close()
			}
		}()
		go func() {
			b := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(name), from)
			}
		}()
	}
}

// childCgroup makes a cgroup v2 directory for the test, removed in Cleanup,
// and returns its path and an open descriptor (for clone into it).
func childCgroup(t *testing.T) (string, int) {
	t.Helper()
	root, err := CgroupV2Root()
	if err != nil {
		t.Skipf("no cgroup v2: %v", err)
	}
	dir := filepath.Join(root, randName("telcolb-test-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		// The helper processes have exited; the kernel may take a moment
		// to let go of the cgroup.
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir, fd
}

// sockClient runs the helper in cgroup fd and namespace ns, returning its
// result lines.
func sockClient(t *testing.T, cgfd int, ns string, jobs ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSocketLBHelper$", "-test.count=1")
	// The namespace by descriptor: where `ip netns` keeps its files differs
	// between hosts (/run/netns, /var/run/netns). This goroutine's thread is
	// in it (enterNetns).
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	nsf := os.NewFile(uintptr(nsfd), "netns")
	defer nsf.Close()
	cmd.ExtraFiles = []*os.File{nsf}
	cmd.Env = append(os.Environ(), sockHelperEnv+"=1", "TELCOLB_SOCKLB_DO="+strings.Join(jobs, ";"))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v: %s", err, out)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && (f[0] == "tcp" || f[0] == "udp" || f[0] == "udp-unconnected" || f[0] == "ERR") {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

func TestSocketLB(t *testing.T) {
	requireRoot(t)
	if err := probeSocketLB(); err != nil {
		t.Skipf("kernel: %v", err)
	}
	ns := newNetns(t)
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	eps6 := []netip.Addr{netip.MustParseAddr("fd01::11"), netip.MustParseAddr("fd01::12")}
	for _, a := range eps6 {
		run(t, "ip", "-n", ns, "addr", "add", a.String()+"/128", "dev", "lo", "nodad")
	}
	eps4 := []netip.Addr{netip.MustParseAddr("127.0.1.1"), netip.MustParseAddr("127.0.1.2")}
	enterNetns(t, ns)
	pin := testPinPath(t)
	d, err := Load(Config{PinPath: pin, Logger: testLogger(), MaxConns: 4096})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy() })

	var listen []netip.AddrPort
	for _, a := range append(eps4, eps6...) {
		listen = append(listen, netip.AddrPortFrom(a, 8080))
	}
	sockEndpoints(t, listen)
	eps := func(addrs []netip.Addr) []Endpoint {
		var r []Endpoint
		for _, a := range addrs {
			r = append(r, Endpoint{Addr: a, Port: 8080, Weight: 1})
		}
		return r
	}
	id := uint32(0)
	for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
		for _, v6 := range []bool{false, true} {
			vip, e := sockVIP4, eps(eps4)
			if v6 {
				vip, e = sockVIP6, eps(eps6)
			}
			id++
			if err := d.UpsertService(Service{ID: id, VIP: vip, PortStart: 80, Proto: proto, Endpoints: e}); err != nil {
				t.Fatalf("upsert: %v", err)
			}
		}
	}
	cg, cgfd := childCgroup(t)
	if err := d.AttachSocketLB(cg); err != nil {
		t.Fatalf("attach socket lb: %v", err)
	}
	if got := d.SocketLB(); got != cg {
		t.Fatalf("SocketLB() = %q, want %q", got, cg)
	}

	var jobs []string
	for _, kind := range []string{"tcp", "udp", "udp-unconnected"} {
		for _, vip := range []netip.Addr{sockVIP4, sockVIP6} {
			jobs = append(jobs, fmt.Sprintf("%s %s 4", kind, netip.AddrPortFrom(vip, 80)))
		}
	}
	check := func(lines []string) {
		t.Helper()
		// kind/family -> endpoint -> count
		spread := map[string]map[string]int{}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 || f[1] == "ERR" {
				t.Errorf("client: %s", l)
				continue
			}
			peer := netip.MustParseAddrPort(f[1])
			if peer.Addr() != sockVIP4 && peer.Addr() != sockVIP6 || peer.Port() != 80 {
				t.Errorf("%s: peer %s, want the VIP", f[0], peer)
			}
			k := f[0] + "/" + peer.Addr().String()
			if spread[k] == nil {
				spread[k] = map[string]int{}
			}
			spread[k][f[2]]++
		}
		if len(spread) != 6 {
			t.Errorf("results for %d kind/VIP pairs, want 6: %v", len(spread), lines)
		}
		// Round robin: 4 sockets over 2 endpoints are 2 each.
		for k, m := range spread {
			if len(m) != 2 {
				t.Errorf("%s: endpoints %v, want 2 of 2 endpoints", k, m)
			}
			for ep, n := range m {
				if n != 2 {
					t.Errorf("%s: %s took %d of 4 sockets, want 2", k, ep, n)
				}
			}
		}
	}
	check(sockClient(t, cgfd, ns, jobs...))
	st, err := d.ServiceStats(1, 2)
	if err != nil {
		t.Fatalf("service stats: %v", err)
	}
	if st.Sessions != 4 {
		t.Errorf("service 1 counted %d sessions, want the 4 local connections", st.Sessions)
	}

	// A restart: the pinned links keep balancing while no daemon runs, and
	// the next one takes them over in place.
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	check(sockClient(t, cgfd, ns, jobs...))
	d, err = Load(Config{PinPath: pin, Logger: testLogger(), MaxConns: 4096})
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy() })
	if err := d.AttachSocketLB(cg); err != nil {
		t.Fatalf("attach socket lb again: %v", err)
	}
	check(sockClient(t, cgfd, ns, jobs...))

	// Detached: nothing routes the VIPs, every call fails.
	if err := d.DetachSocketLB(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	for _, l := range sockClient(t, cgfd, ns, jobs...) {
		if f := strings.Fields(l); len(f) < 2 || f[1] != "ERR" {
			t.Errorf("without socket lb: %s, want an error", l)
		}
	}
}
