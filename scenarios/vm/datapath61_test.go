package vm_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/scenarios/vm"
)

// hostTools are iproute2's ip and tc from the test machine, for guests
// whose tests need more than busybox's ip (netns, veth, tc filters).
func hostTools(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, tool := range []string{"ip", "tc"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s (iproute2) missing: %v", tool, err)
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatal(err)
		}
		files["/bin/"+tool] = real
	}
	return files
}

var testLine = regexp.MustCompile(`(?m)^(--- (PASS|FAIL|SKIP)): (\S+)`)

// The byte-exact datapath tests (BPF_PROG_TEST_RUN) run on Debian's 6.1
// kernel: the program must pass 6.1's verifier and use no helper 6.1 lacks.
// (Attaching through clsact, without tcx, is TestDatapathOnKernel61EndToEnd.)
func TestDataplaneTestsOnKernel61(t *testing.T) {
	vm.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "dataplane.test")
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "github.com/telcolb/telcolb/dataplane")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c ./dataplane: %v\n%s", err, out)
	}
	files := hostTools(t)
	files["/usr/bin/dataplane.test"] = bin
	// The earlier releases' objects the upgrade tests load (the tests run
	// in /opt/dataplane, where testdata/ is then found).
	objs, err := filepath.Glob("../../dataplane/testdata/*.o")
	if err != nil || len(objs) == 0 {
		t.Fatalf("dataplane/testdata objects: %v %v", objs, err)
	}
	for _, o := range objs {
		abs, err := filepath.Abs(o)
		if err != nil {
			t.Fatal(err)
		}
		files["/opt/dataplane/testdata/"+filepath.Base(o)] = abs
	}
	img := vm.TestImage(t, append(append([]string{}, vm.SCTPModules...), vm.DatapathModules...), files)
	l := lab.NewEmpty(t)
	h, err := l.AddHost(ctx, "vmhost")
	if err != nil {
		t.Fatal(err)
	}
	v, err := vm.Boot(ctx, vm.Config{Name: "k61", Host: h, Image: img, Logger: vm.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	vm.CloseOnCleanup(t, v)
	// Benchmarks skip without TELCOLB_BENCH; the fuzz corpora run as tests.
	// Every dataplane test loads the program, and 6.1's verifier takes
	// minutes per load under emulation: CI runs the byte-exact tests of
	// each translation family (L4 NAT, SCTP multi-homing rewrite and growth,
	// NAT64, HA conntrack events and import, the established fast path in
	// TC and in XDP),
	// the socket-level load balancing (its cgroup programs on 6.1, about a
	// minute) and the datapath's clock on 6.1's jiffies (one load more, the
	// probe's checks a few ms); TELCOLB_VM_DATAPLANE_RUN=. runs them all.
	sel := "^(TestForwardAndReplyAreTranslatedByteExact|TestEstablishedFastPathIsByteExact|TestXDPFastPathMatchesTC|TestSCTPMultihomedAssociationIsRewrittenByteExact|TestSCTPInitAckOffersEveryVIP|TestNAT64TranslatesBothDirectionsByteExact|TestNAT64EstablishedFastPathIsByteExact|TestImportedSNATPortIsReserved|TestEntryEventsCarryTheirEntries|TestSocketLB|TestDatapathClockFollowsMonotonic|TestClockCalibrationRefusesWrongTick)$"
	if re := os.Getenv("TELCOLB_VM_DATAPLANE_RUN"); re != "" {
		sel = re
	}
	run := " -test.run '" + sel + "'"
	r, err := v.Run(ctx, "/bin/sh", "-c", "cd /opt/dataplane && dataplane.test -test.v -test.count=1 -test.timeout=15m"+run+" 2>&1")
	if err != nil {
		t.Fatal(err)
	}
	var passed, failed, skipped []string
	for _, m := range testLine.FindAllStringSubmatch(r.Stdout, -1) {
		switch m[2] {
		case "PASS":
			passed = append(passed, m[3])
		case "FAIL":
			failed = append(failed, m[3])
		case "SKIP":
			skipped = append(skipped, m[3])
		}
	}
	if r.Exit != 0 || len(failed) > 0 || len(passed) == 0 {
		t.Errorf("dataplane tests on %s: exit %d, failed %v\n%s", v.Kernel, r.Exit, failed, r.Stdout)
	}
	for _, s := range skipped {
		if !strings.Contains(s, "Bench") && !strings.Contains(strings.ToLower(s), "tcx") && !strings.Contains(s, "Pinned") {
			t.Logf("skipped on 6.1: %s", s)
		}
	}
	t.Logf("on %s: %d passed, %d skipped (%v), %d failed", v.Kernel, len(passed), len(skipped), skipped, len(failed))
}

// telcolb runs as the LB on Debian's 6.1 kernel (a VM in place of the lab's
// lb namespace): it attaches with clsact, and TCP, UDP and SCTP (usrsctp
// peers in the namespaces) flow through it, IPv4 and IPv6, every checksum
// verified by tshark on both sides.
func TestDatapathOnKernel61EndToEnd(t *testing.T) {
	vm.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bins, err := vm.BuildGo(ctx, t.TempDir(), true, "github.com/telcolb/telcolb/cmd/telcolb")
	if err != nil {
		t.Fatal(err)
	}
	img := vm.TestImage(t, append(append([]string{}, vm.SCTPModules...), vm.DatapathModules...), map[string]string{"/usr/bin/telcolb": bins["telcolb"]})
	l := lab.New(t, lab.Config{Backends: 2})
	for k, be := range l.Backends {
		id := fmt.Sprintf("be%d", k+1)
		for _, srv := range []struct {
			serve func(*lab.Host, string, string) (*l4.Server, error)
			port  int
		}{{l4.ServeHTTP, l4.HTTPPort}, {l4.ServeUDP, l4.UDPPort}} {
			s, err := srv.serve(be, fmt.Sprintf("[::]:%d", srv.port), id)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
		}
	}
	lbIfs := []string{l.LBClientIface(0).Name, l.LBBackendIface(0).Name}
	apiAddr := l.LBClientIface(0).V4()
	v, err := vm.Replace(ctx, l.LB, img, vm.SCTPTimers{}, vm.Config{Name: "lb61", Logger: vm.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	vm.CloseOnCleanup(t, v)
	if _, err := v.Sh(ctx, "echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding && umask 077 && echo tok > /tmp/token && mkdir -p /tmp/state"); err != nil {
		t.Fatal(err)
	}
	if err := bg(ctx, v, "telcolb", "telcolb", "--interfaces="+strings.Join(lbIfs, ","), fmt.Sprintf("--api-address=%s:8091", apiAddr), "--api-allow-insecure-http",
		"--token-file=/tmp/token", "--state-dir=/tmp/state", "--bpf-pin-path=/sys/fs/bpf/telcolb"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			out, _ := v.Sh(context.Background(), "cat /tmp/telcolb.out")
			t.Logf("daemon log (in the VM):\n%s", out)
		}
	}()
	// 6.1's verifier takes minutes over the datapath under emulation.
	if err := waitFileFor(ctx, v, "telcolb", "telcolb running", 10*time.Minute); err != nil {
		t.Fatalf("daemon: %v", err)
	}
	logVerifierStats(t, ctx, v, "telcolb")
	log, _ := v.Sh(ctx, "cat /tmp/telcolb.out")
	if !strings.Contains(log, `"attachMode":"clsact"`) {
		t.Errorf("daemon on %s did not attach with clsact:\n%s", v.Kernel, log)
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: l4.HostDialer(l.Client), DisableKeepAlives: true}}
	client, err := api.NewClient(api.ClientConfig{BaseURL: fmt.Sprintf("http://%s:8091", apiAddr), Token: "tok", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := client.Health(ctx); err != nil || h.AttachMode != "clsact" {
		t.Errorf("health on %s: %+v %v, want attach mode clsact", v.Kernel, h, err)
	}
	dir := t.TempDir()
	var caps []*capture.Capture
	for _, at := range []*lab.Iface{l.ClientIface(0), l.BackendIface(0, 0), l.BackendIface(1, 0)} {
		cp, err := capture.Start(ctx, at.Host, at.Name, dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cp.Stop() })
		caps = append(caps, cp)
	}
	beAddr := func(k int, v6 bool) netip.Addr {
		if v6 {
			return l.BackendIface(k, 0).V6()
		}
		return l.BackendIface(k, 0).V4()
	}
	for _, c := range []struct {
		proto, mode string
		v6          bool
		host        int
	}{
		{api.ProtocolTCP, api.ModeFullNAT, false, 1},
		{api.ProtocolTCP, api.ModeDefault, true, 2},
		{api.ProtocolUDP, api.ModeDefault, false, 3},
		{api.ProtocolUDP, api.ModeFullNAT, true, 4},
	} {
		name := fmt.Sprintf("%s-%s-v6=%v", c.proto, c.mode, c.v6)
		vip := lab.VIP(0, c.host, c.v6)
		port := l4.HTTPPort
		if c.proto == api.ProtocolUDP {
			port = l4.UDPPort
		}
		svc := api.Service{Name: fmt.Sprintf("svc%d", c.host), VIP: vip.String(), Port: uint16(port), Protocol: c.proto, Mode: c.mode,
			Select: api.SelectRoundRobin, Endpoints: []api.Endpoint{{Address: beAddr(0, c.v6).String(), Port: uint16(port)}, {Address: beAddr(1, c.v6).String(), Port: uint16(port)}}}
		if err := client.ApplyService(ctx, svc); err != nil {
			t.Fatalf("%s: apply: %v", name, err)
		}
		seen := map[string]int{}
		for i := 0; i < 4; i++ {
			hp := netip.AddrPortFrom(vip, uint16(port)).String()
			var r l4.Reply
			var err error
			if c.proto == api.ProtocolTCP {
				r, err = l4.HTTPGet(ctx, l.Client, "http://"+hp+"/")
			} else {
				r, err = l4.UDPAsk(ctx, l.Client, hp)
			}
			if err != nil {
				t.Fatalf("%s request %d: %v", name, i, err)
			}
			want := l.ClientIface(0).V4()
			if c.v6 {
				want = l.ClientIface(0).V6()
			}
			if c.mode == api.ModeFullNAT {
				want = vip
			}
			if r.Source.Addr() != want {
				t.Errorf("%s: endpoint saw source %s, want %s", name, r.Source.Addr(), want)
			}
			seen[r.Server]++
		}
		if seen["be1"] != 2 || seen["be2"] != 2 {
			t.Errorf("%s: round robin over 2 endpoints, 4 flows: %v", name, seen)
		}
	}
	// SCTP, fullnat, usrsctp peers on both sides of the 6.1 datapath.
	vip := lab.VIP(0, 9, false)
	if err := client.ApplyService(ctx, api.Service{Name: "sctp", VIP: vip.String(), Port: port, Protocol: api.ProtocolSCTP, Mode: api.ModeFullNAT,
		Endpoints: []api.Endpoint{{Address: beAddr(0, false).String(), Port: port}}}); err != nil {
		t.Fatal(err)
	}
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{Bind: []netip.Addr{beAddr(0, false)}, Port: port, ID: "be1", Timers: sctppeer.FastTimers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	res, err := sctppeer.RunClient(ctx, l.Client, sctppeer.ClientOptions{Bind: []netip.Addr{l.ClientIface(0).V4()}, Connect: []netip.Addr{vip}, Port: port,
		Count: 20, Size: 300, Streams: 2, PPID: 60, Timers: sctppeer.FastTimers})
	if err != nil || !res.OK() || res.ServerID != "be1" {
		t.Fatalf("sctp through the 6.1 datapath: %v (%+v)", err, res)
	}
	good := 0
	for _, cp := range caps {
		if err := cp.Stop(); err != nil {
			t.Fatal(err)
		}
		rep, err := capture.Checksums(ctx, cp.File)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) > 0 {
			t.Errorf("%s/%s: bad checksums %v", cp.Host.Name, cp.Iface, rep.Bad)
		}
		good += rep.Good
	}
	if good == 0 {
		t.Error("tshark verified no checksum")
	}
	t.Logf("6.1 datapath: %d checksums verified good by tshark", good)
}
