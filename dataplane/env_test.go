package dataplane

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

var (
	lbMAC0     = mustMAC("02:00:00:00:00:01")
	clientMAC  = mustMAC("02:00:00:00:00:02")
	lbMAC1     = mustMAC("02:00:00:00:01:01")
	clientV4   = netip.MustParseAddr("10.0.0.2")
	clientV6   = netip.MustParseAddr("fd00::2")
	vipV4      = netip.MustParseAddr("10.9.0.1")
	vipV6      = netip.MustParseAddr("fd09::1")
	lbAddr1V4  = netip.MustParseAddr("10.1.0.1")
	lbAddr1V6  = netip.MustParseAddr("fd01::1")
	numTestEPs = 4
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func epAddr(v6 bool, i int) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd01::%x", 0x10+i))
	}
	return netip.MustParseAddr(fmt.Sprintf("10.1.0.%d", 10+i))
}

func epMAC(i int) net.HardwareAddr { return mustMAC(fmt.Sprintf("02:00:00:00:01:%02x", 0x10+i)) }

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (eBPF, network namespaces)")
	}
}

func randName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func ensureBPFFS(t testing.TB) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
}

// testName names a namespace or pin path of this test process,
// tlb<pid>-t-<random>: hack/sweep-namespaces.sh removes what a test binary
// killed by go test's timeout left (its cleanups never ran).
func testName() string { return randName(fmt.Sprintf("tlb%d-t-", os.Getpid())) }

// newNetns creates a named namespace, deleted in Cleanup.
func newNetns(t testing.TB) string {
	t.Helper()
	name := testName()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// enterNetns moves the calling goroutine's thread into ns until Cleanup.
func enterNetns(t testing.TB, name string) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("netns %s: %v", name, err)
	}
	if err := netns.Set(h); err != nil {
		t.Fatalf("enter netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = netns.Set(orig)
		orig.Close()
		h.Close()
		runtime.UnlockOSThread()
	})
}

func testPinPath(t testing.TB) string {
	t.Helper()
	ensureBPFFS(t)
	p := "/sys/fs/bpf/" + testName()
	t.Cleanup(func() { _ = os.RemoveAll(p) })
	return p
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is a namespace with two veth LB interfaces (lb0 toward clients, lb1
// toward endpoints) whose neighbours are static, so bpf_fib_lookup answers
// deterministically with known MACs.
type env struct {
	t        testing.TB
	ns       string
	d        *Datapath
	ifindex0 int
	pinPath  string
}

func newEnv(t testing.TB) *env { return newEnvConns(t, 4096) }

// newEnvConns is newEnv with a conntrack of maxConns entries.
func newEnvConns(t testing.TB, maxConns int) *env {
	t.Helper()
	requireRoot(t)
	ns := newNetns(t)
	ip := func(args ...string) { run(t, append([]string{"ip", "-n", ns}, args...)...) }
	ip("link", "add", "lb0", "address", lbMAC0.String(), "type", "veth", "peer", "name", "lb0p")
	ip("link", "add", "lb1", "address", lbMAC1.String(), "type", "veth", "peer", "name", "lb1p")
	for _, l := range []string{"lo", "lb0", "lb0p", "lb1", "lb1p"} {
		ip("link", "set", l, "up")
	}
	ip("addr", "add", "10.0.0.1/24", "dev", "lb0")
	ip("addr", "add", "fd00::1/64", "dev", "lb0", "nodad")
	ip("addr", "add", "10.1.0.1/24", "dev", "lb1")
	ip("addr", "add", "fd01::1/64", "dev", "lb1", "nodad")
	ip("neigh", "replace", clientV4.String(), "lladdr", clientMAC.String(), "dev", "lb0", "nud", "permanent")
	ip("neigh", "replace", clientV6.String(), "lladdr", clientMAC.String(), "dev", "lb0", "nud", "permanent")
	for i := 0; i < numTestEPs; i++ {
		for _, v6 := range []bool{false, true} {
			ip("neigh", "replace", epAddr(v6, i).String(), "lladdr", epMAC(i).String(), "dev", "lb1", "nud", "permanent")
		}
	}
	run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	enterNetns(t, ns)

	pin := testPinPath(t)
	d, err := Load(Config{PinPath: pin, MaxConns: maxConns, Logger: testLogger()})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	e := &env{t: t, ns: ns, d: d, pinPath: pin}
	// e.d, not d: reload replaces it.
	t.Cleanup(func() { _ = e.d.Destroy() })
	for _, l := range []string{"lb0", "lb1"} {
		if err := d.Attach(l); err != nil {
			t.Fatalf("attach %s: %v", l, err)
		}
	}
	l0, err := netlink.LinkByName("lb0")
	if err != nil {
		t.Fatal(err)
	}
	e.ifindex0 = l0.Attrs().Index
	return e
}

// reload is a daemon restart: the Go side closes (pins and attachments
// stay), a new datapath with cfg loads over the same pin path and attaches.
func (e *env) reload(cfg Config) {
	e.t.Helper()
	if err := e.d.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	cfg.PinPath = e.pinPath
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	d, err := Load(cfg)
	if err != nil {
		e.t.Fatalf("reload: %v", err)
	}
	e.d = d
	attachAndMigrate(e.t, d)
}

// attachAndMigrate attaches d to both lab links and completes its map
// migrations, as a daemon does once its programs replace the old ones.
func attachAndMigrate(t testing.TB, d *Datapath) {
	t.Helper()
	for _, l := range []string{"lb0", "lb1"} {
		if err := d.Attach(l); err != nil {
			t.Fatalf("attach %s: %v", l, err)
		}
	}
	if err := d.CompleteMigration(); err != nil {
		t.Fatalf("complete migration: %v", err)
	}
}

// skbCtx is the prefix of struct __sk_buff up to ifindex: BPF_PROG_TEST_RUN
// takes the ingress device from it (so bpf_fib_lookup starts from lb0).
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

func (e *env) runOn(prog *ebpf.Program, ifindex int, frame []byte) (uint32, []byte) {
	e.t.Helper()
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: skbCtx{Ifindex: uint32(ifindex)}}
	ret, err := prog.Run(opts)
	if err != nil {
		e.t.Fatalf("prog run: %v", err)
	}
	return ret, opts.DataOut
}

func (e *env) run(frame []byte) (uint32, []byte) {
	e.t.Helper()
	return e.runOn(e.d.objs.TcIngress, e.ifindex0, frame)
}

func (e *env) conns() []Conn {
	e.t.Helper()
	cs, err := e.d.Conntrack()
	if err != nil {
		e.t.Fatalf("conntrack: %v", err)
	}
	return cs
}

// conn is the one connection of service id (the test fails otherwise).
func (e *env) conn(id uint32) Conn {
	e.t.Helper()
	var got []Conn
	for _, c := range e.conns() {
		if c.ServiceID == id {
			got = append(got, c)
		}
	}
	if len(got) != 1 {
		e.t.Fatalf("service %d has %d connections, want 1: %+v", id, len(got), got)
	}
	return got[0]
}

func (e *env) ctEntries() int {
	e.t.Helper()
	s, err := e.d.snapshot()
	if err != nil {
		e.t.Fatal(err)
	}
	return len(s)
}

func (e *env) upsert(s Service) {
	e.t.Helper()
	if err := e.d.UpsertService(s); err != nil {
		e.t.Fatalf("upsert: %v", err)
	}
}

func testEndpoints(v6 bool, n int, port uint16) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Addr: epAddr(v6, i), Port: port, Weight: 1}
	}
	return eps
}

// sub is the env for a subtest: t.Run runs it on another goroutine (thread),
// which must enter the namespace too.
func (e *env) sub(t *testing.T) *env {
	enterNetns(t, e.ns)
	c := *e
	c.t = t
	return &c
}
