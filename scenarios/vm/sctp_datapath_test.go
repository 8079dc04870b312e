package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/scenarios/vm"
)

const port = 38412

// kernelLab is the namespace lab with telcolb on its lb, the client and
// backend be1 replaced by VMs running Debian's 6.1 kernel (kernel SCTP),
// be2 left a namespace for a usrsctp endpoint.
type kernelLab struct {
	e      *l4.Env
	client *vm.VM
	server *vm.VM
}

func upKernelLab(t *testing.T, links int) *kernelLab {
	t.Helper()
	vm.RequireVM(t)
	img := vm.TestImage(t, nil, nil, "github.com/telcolb/telcolb/scenarios/vm/cmd/telcolb-ksctp")
	// Generous: emulated boots take a minute on a loaded 2-core machine.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e, err := l4.Up(ctx, l4.EnvConfig{Lab: lab.Config{Backends: 2, Links: links}})
	if err != nil {
		t.Fatalf("environment: %v", err)
	}
	k := &kernelLab{e: e}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("telcolb log:\n%s", e.Daemon.Log())
		}
		if err := e.Down(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	var wg sync.WaitGroup
	var cerr, serr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		k.client, cerr = vm.Replace(ctx, e.Lab.Client, img, vm.FastTimers, vm.Config{Logger: vm.TestLogger(t)})
	}()
	go func() {
		defer wg.Done()
		k.server, serr = vm.Replace(ctx, e.Lab.Backends[0], img, vm.FastTimers, vm.Config{Logger: vm.TestLogger(t)})
	}()
	wg.Wait()
	// Registered after the lab's cleanup, so the VMs go first.
	for _, v := range []*vm.VM{k.client, k.server} {
		if v != nil {
			vm.CloseOnCleanup(t, v)
		}
	}
	if cerr != nil || serr != nil {
		t.Fatalf("VMs: client %v; server %v", cerr, serr)
	}
	return k
}

// remoteAddrs reads ishidawataru/sctp's SCTPAddr.String(): every peer
// address of the association, "a/b:port" or "[v6%zone]/[v6]:port".
func remoteAddrs(t *testing.T, s string) []netip.Addr {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		t.Errorf("peer %q: no port", s)
		return nil
	}
	var out []netip.Addr
	for _, a := range strings.Split(s[:i], "/") {
		a = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if z := strings.IndexByte(a, '%'); z >= 0 {
			a = a[:z]
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			t.Errorf("peer %q: %v", s, err)
			continue
		}
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func parseAddrs(t *testing.T, ss []string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range ss {
		// telcolb-sctppeer prints peers as addr:port.
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap.Addr())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			t.Errorf("address %q: %v", s, err)
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func sorted(a []netip.Addr) []netip.Addr {
	out := slices.Clone(a)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func addrs(ifs []*lab.Iface, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, i := range ifs {
		if v6 {
			out = append(out, i.V6())
		} else {
			out = append(out, i.V4())
		}
	}
	return out
}

func list(a []netip.Addr) string {
	var s []string
	for _, x := range a {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

type sctpCase struct {
	n    int
	v6   bool
	mode string
	host int
	// usrsctp puts the endpoint on be2 (usrsctp, a namespace) instead of
	// the be1 VM (kernel).
	usrsctp bool
	// defaultTimers runs that usrsctp endpoint on usrsctp's default timers
	// (RTO 1 s/3 s/60 s, heartbeat 30 s) instead of fast ones.
	defaultTimers bool
	// failoverOff sets the service's sctpPathFailover to off.
	failoverOff bool
}

func (c sctpCase) name() string {
	fam := "v4"
	if c.v6 {
		fam = "v6"
	}
	s := fmt.Sprintf("%s-%s-%dvips", c.mode, fam, c.n)
	if c.usrsctp {
		s += "-usrsctp-endpoint"
	}
	return s
}

func (c sctpCase) vips() []netip.Addr {
	var out []netip.Addr
	for i := 0; i < c.n; i++ {
		out = append(out, lab.VIP(i, c.host, c.v6))
	}
	return out
}

func (k *kernelLab) clientAddrs(c sctpCase) []netip.Addr {
	var ifs []*lab.Iface
	for i := 0; i < c.n; i++ {
		ifs = append(ifs, k.e.Lab.ClientIface(i))
	}
	return addrs(ifs, c.v6)
}

func (k *kernelLab) endpointAddrs(c sctpCase) []netip.Addr {
	be := 0
	if c.usrsctp {
		be = 1
	}
	var ifs []*lab.Iface
	for i := 0; i < c.n; i++ {
		ifs = append(ifs, k.e.Lab.BackendIface(be, i))
	}
	return addrs(ifs, c.v6)
}

// apply programs c's service and starts its endpoint; the returned func
// stops the endpoint and returns the peer addresses of the association it
// served, as its stack saw them.
func (k *kernelLab) apply(t *testing.T, c sctpCase) func() []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vips, eps := c.vips(), k.endpointAddrs(c)
	svc := api.Service{Name: c.name(), VIP: vips[0].String(), Port: port, Protocol: api.ProtocolSCTP, Mode: c.mode,
		Endpoints: []api.Endpoint{{Address: eps[0].String(), Port: port}}}
	if c.failoverOff {
		svc.SCTPPathFailover = api.SCTPPathFailoverOff
	}
	for _, v := range vips[1:] {
		svc.SecondaryVIPs = append(svc.SecondaryVIPs, v.String())
	}
	if err := k.e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.e.Daemon.Client.DeleteService(context.Background(), svc.Name) })
	if c.usrsctp {
		timers := sctppeer.FastTimers
		if c.defaultTimers {
			timers = sctppeer.Timers{}
		}
		srv, err := sctppeer.StartServer(ctx, k.e.Lab.Backends[1], sctppeer.ServerOptions{Bind: eps, Port: port, ID: "be2", Timers: timers})
		if err != nil {
			t.Fatal(err)
		}
		return func() []netip.Addr {
			_ = srv.Stop()
			evs, err := srv.Events()
			if err != nil {
				t.Error(err)
			}
			for _, e := range evs {
				if e.Event == "assoc" && len(e.Peers) > 0 {
					return parseAddrs(t, e.Peers)
				}
			}
			return nil
		}
	}
	bg := k.server.Start("telcolb-ksctp", "server", "--bind", list(eps), "--port", fmt.Sprint(port), "--id", "be1")
	// Listening once the kernel lists the endpoint (LPORT column).
	if _, err := k.server.Sh(ctx, fmt.Sprintf("n=0; until grep -q ' %d ' /proc/net/sctp/eps; do n=$((n+1)); [ $n -lt 300 ] || exit 1; sleep 0.1; done", port)); err != nil {
		r := bg.Stop()
		t.Fatalf("kernel server did not listen: %v; %s %s", err, r.Stdout, r.Stderr)
	}
	return func() []netip.Addr {
		r := bg.Stop()
		t.Logf("kernel server: %s%s", r.Stdout, r.Stderr)
		for _, line := range strings.Split(r.Stdout, "\n") {
			var e sctppeer.ServerEvent
			if json.Unmarshal([]byte(line), &e) == nil && e.Event == "assoc" && len(e.Peers) == 1 {
				return remoteAddrs(t, e.Peers[0])
			}
		}
		return nil
	}
}

// runClient runs the kernel client in the client VM.
func (k *kernelLab) runClient(ctx context.Context, c sctpCase, count int, interval time.Duration) (sctppeer.Result, error) {
	r, err := k.client.Run(ctx, "telcolb-ksctp", "client", "--bind", list(k.clientAddrs(c)), "--connect", c.vips()[0].String(),
		"--port", fmt.Sprint(port), "--count", fmt.Sprint(count), "--size", "300", "--streams", "2", "--ppid", "60",
		"--interval", interval.String(), "--wait", "20s")
	if err != nil {
		return sctppeer.Result{}, err
	}
	if r.Exit != 0 {
		// Its report, if any, still says what it saw (missing echoes).
		res, _ := sctppeer.ParseResult(r.Stdout)
		return res, fmt.Errorf("client exited %d: %s%s", r.Exit, r.Stdout, r.Stderr)
	}
	return sctppeer.ParseResult(r.Stdout)
}

// kernelCounters reads both kernels' SCTP counters (the server's only when
// it serves c).
func (k *kernelLab) kernelCounters(t *testing.T, c sctpCase) map[string]map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vms := []*vm.VM{k.client}
	if !c.usrsctp {
		vms = append(vms, k.server)
	}
	out := map[string]map[string]int64{}
	for _, v := range vms {
		snmp, err := v.SCTPCounters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[v.Name] = snmp
	}
	return out
}

// checkKernelCounters fails the test if either kernel saw a bad CRC32c,
// an out-of-the-blue packet or an aborted association since before.
func (k *kernelLab) checkKernelCounters(t *testing.T, c sctpCase, before map[string]map[string]int64) {
	t.Helper()
	for name, snmp := range k.kernelCounters(t, c) {
		for _, ctr := range []string{"SctpChecksumErrors", "SctpOutOfBlues", "SctpAborteds"} {
			if d := snmp[ctr] - before[name][ctr]; d != 0 {
				t.Errorf("%s: %s went up by %d, want 0", name, ctr, d)
			}
		}
		if snmp["SctpInSCTPPacks"] == before[name]["SctpInSCTPPacks"] {
			t.Errorf("%s: no SCTP packet counted: the counters are not this association's", name)
		}
	}
}

func (k *kernelLab) startCaps(t *testing.T, n int) []*capture.Capture {
	t.Helper()
	dir := t.TempDir()
	var caps []*capture.Capture
	for i := 0; i < n; i++ {
		for _, ifc := range []*lab.Iface{k.e.Lab.LBClientIface(i), k.e.Lab.LBBackendIface(i)} {
			cp, err := capture.Start(context.Background(), k.e.Lab.LB, ifc.Name, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cp.Stop() })
			caps = append(caps, cp)
		}
	}
	return caps
}

// checkWire stops the captures and checks what crossed the LB: every
// checksum good (tshark verifies the CRC32c the datapath recomputed), one
// handshake, no ABORT, PPID 60 on every DATA chunk. (The addresses the
// rewritten INIT/INIT-ACK carried are checked through the kernels' view.)
func checkWire(t *testing.T, caps []*capture.Capture) map[string]int {
	t.Helper()
	ctx := context.Background()
	var all []capture.SCTPPacket
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
			t.Errorf("%s: bad checksums %v", cp.Iface, rep.Bad)
		}
		good += rep.Good
		pkts, err := capture.SCTP(ctx, cp.File)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pkts...)
	}
	if good == 0 {
		t.Errorf("tshark verified no checksum at all")
	}
	counts := capture.CountChunks(all)
	// One association: its COOKIE_ECHO/COOKIE_ACK cross the LB once each
	// side. (An INIT may be retransmitted when the emulated CPU is slow to
	// answer within the 200 ms initial RTO; that is not a new association.)
	if counts["COOKIE_ECHO"] != 2 || counts["COOKIE_ACK"] != 2 || counts["INIT"] < 2 || counts["INIT_ACK"] < 2 || counts["ABORT"] != 0 {
		t.Errorf("chunks %v: want one handshake (COOKIE_ECHO/ACK once each side of the LB), no ABORT", counts)
	}
	for _, p := range all {
		for _, ppid := range p.PPIDs {
			if ppid != 60 {
				t.Errorf("frame %d: DATA with PPID %d, want 60", p.Frame, ppid)
			}
		}
	}
	return counts
}

// Kernel SCTP (Debian 6.1) on both ends, multi-homed, through telcolb's
// datapath: default and fullnat, IPv4 and IPv6, 2 and 3 VIPs, and once a
// usrsctp endpoint; then failover when a primary link is cut. The kernel peers validate every CRC32c, INIT/INIT-ACK
// rewrite, compaction and growth the datapath produces: their own
// counters of checksum errors, out-of-the-blue packets and aborted
// associations stay at 0.
func TestKernelSCTPThroughTheDatapath(t *testing.T) {
	k := upKernelLab(t, 3)
	cases := []sctpCase{
		{n: 2, mode: api.ModeDefault, host: 11},
		{n: 2, mode: api.ModeFullNAT, host: 12},
		{n: 2, v6: true, mode: api.ModeDefault, host: 13},
		{n: 2, v6: true, mode: api.ModeFullNAT, host: 14},
		{n: 3, mode: api.ModeFullNAT, host: 15},
		{n: 3, v6: true, mode: api.ModeDefault, host: 16},
		{n: 2, mode: api.ModeFullNAT, host: 17, usrsctp: true},
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			before := k.kernelCounters(t, c)
			stop := k.apply(t, c)
			caps := k.startCaps(t, c.n)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := k.runClient(ctx, c, 20, 0)
			if err != nil || !res.OK() {
				stop()
				t.Fatalf("client: %v (%+v)", err, res)
			}
			wantID := "be1"
			if c.usrsctp {
				wantID = "be2"
			}
			if res.ServerID != wantID {
				t.Errorf("answered by %q, want %q", res.ServerID, wantID)
			}
			// The client's kernel learnt the association's peer addresses from
			// the INIT-ACK the datapath rewrote (and grew): only the VIPs.
			if len(res.PeerAddrs) != 1 {
				t.Fatalf("client peer addresses %v", res.PeerAddrs)
			}
			if got := remoteAddrs(t, res.PeerAddrs[0]); !slices.Equal(got, sorted(c.vips())) {
				t.Errorf("client's kernel sees peer addresses %v, want the VIPs %v", got, c.vips())
			}
			// Let the graceful SHUTDOWN finish before reading counters.
			time.Sleep(500 * time.Millisecond)
			// The endpoint's stack learnt the client's addresses from the INIT
			// the datapath rewrote: the client's own (default) or the VIPs
			// (fullnat).
			want := sorted(k.clientAddrs(c))
			if c.mode == api.ModeFullNAT {
				want = sorted(c.vips())
			}
			if got := stop(); !slices.Equal(got, want) {
				t.Errorf("endpoint sees client addresses %v, want %v", got, want)
			}
			counts := checkWire(t, caps)
			t.Logf("chunks across the LB: %v", counts)
			k.checkKernelCounters(t, c, before)
		})
	}
	// One lab (two VM boots) serves both: booting is most of the cost.
	failover(t, k)
}

// failover cuts the kernel client's primary link, then the kernel
// server's, mid-transfer: the association carries on over a secondary path
// through the LB, every message is echoed, no new INIT, no ABORT. The last
// case is LB-assisted path failover (issue 19) with a kernel client: the
// endpoint is usrsctp on its default timers (RTO.max 60 s), which on its
// own would keep sending to the dead client address and back off; the LB
// steers its packets onto the client's live path, `get ct` shows it, and
// the longest echo gap stays under steerGapLimit. The same with the feature
// off stalls the echoes (checkStalled).
func failover(t *testing.T, k *kernelLab) {
	for _, cut := range []struct {
		name string
		c    sctpCase
		ifc  func() *lab.Iface
	}{
		{"client-primary-link", sctpCase{n: 2, mode: api.ModeDefault, host: 21}, func() *lab.Iface { return k.e.Lab.ClientIface(0) }},
		{"server-primary-link", sctpCase{n: 2, v6: true, mode: api.ModeFullNAT, host: 22}, func() *lab.Iface { return k.e.Lab.BackendIface(0, 0) }},
		{"client-primary-link-lb-steered", sctpCase{n: 2, mode: api.ModeDefault, host: 23, usrsctp: true, defaultTimers: true},
			func() *lab.Iface { return k.e.Lab.ClientIface(0) }},
		{"client-primary-link-lb-off", sctpCase{n: 2, mode: api.ModeDefault, host: 24, usrsctp: true, defaultTimers: true, failoverOff: true},
			func() *lab.Iface { return k.e.Lab.ClientIface(0) }},
	} {
		t.Run("failover-"+cut.name+"-"+cut.c.name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if cut.c.mode == api.ModeFullNAT {
				// In fullnat the endpoint's peers are the VIPs; as an operator
				// would (and as the usrsctp test does), route each VIP range
				// over its own link. Unlike usrsctp, the kernel stack sends
				// every path by the routing table: without these routes every
				// path to the client leaves by link 0 (the default route), and
				// the association dies with that link.
				for i := 1; i < cut.c.n; i++ {
					gw := k.e.Lab.LBBackendIface(i).V4()
					if cut.c.v6 {
						gw = k.e.Lab.LBBackendIface(i).V6()
					}
					if _, err := k.server.Sh(ctx, fmt.Sprintf("ip route replace %s via %s dev eth%d", lab.VIPRange(i, cut.c.v6), gw, i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := k.kernelCounters(t, cut.c)
			stop := k.apply(t, cut.c)
			caps := k.startCaps(t, cut.c.n)
			const count = 60
			type out struct {
				res sctppeer.Result
				err error
			}
			ch := make(chan out, 1)
			go func() {
				r, err := k.runClient(ctx, cut.c, count, 50*time.Millisecond)
				ch <- out{r, err}
			}()
			// Cut once the association is up and a second of data flowed.
			if _, err := k.client.Sh(ctx, "n=0; until [ $(wc -l < /proc/net/sctp/assocs) -gt 1 ]; do n=$((n+1)); [ $n -lt 600 ] || exit 1; sleep 0.1; done"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			ifc := cut.ifc()
			if err := ifc.SetUp(ctx, false); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ifc.SetUp(context.Background(), true) })
			o := <-ch
			stop()
			if cut.c.failoverOff {
				// Without the LB's help the endpoint waits out its T3
				// backoff (1 s, 2 s, 4 s ...) on the dead address.
				checkStalled(t, o.res)
				return
			}
			if o.err != nil || o.res.Echoed != count || o.res.Lost != 0 || !o.res.OK() {
				t.Fatalf("client: %v; %+v", o.err, o.res)
			}
			t.Logf("%s cut: max echo gap %d ms", ifc.Name, o.res.MaxGapMs)
			if cut.c.defaultTimers {
				checkSteered(t, k, cut.c, o.res)
			}
			counts := checkWire(t, caps)
			t.Logf("chunks across the LB: %v", counts)
			k.checkKernelCounters(t, cut.c, before)
			if err := ifc.SetUp(ctx, true); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// steerGapLimit is the bound on the longest echo gap with
// LB-assisted path failover (as in scenarios/l4): the kernel client's own
// failover (its first T3, 200 ms to 1 s with vm.FastTimers under emulation),
// the LB's 200 ms confirmation and the endpoint's recovery. Without the LB
// the endpoint's T3 backoff (1 s, 2 s, 4 s ...) stalls the echoes longer.
const steerGapLimit = 1500 * time.Millisecond

// checkSteered checks that the LB carried the endpoint across the kernel
// client's path failure: `get ct` shows the association steered from the
// cut client address to the live one, and the longest echo gap is bounded.
func checkSteered(t *testing.T, k *kernelLab, c sctpCase, res sctppeer.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conns, err := k.e.Daemon.Client.Conntrack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st *api.ConnSteering
	for _, cn := range conns {
		if cn.Service == c.name() && cn.Steering != nil {
			st = cn.Steering
		}
	}
	want := k.clientAddrs(c)
	if st == nil || st.Count == 0 || st.From != want[0].String() || st.To != want[1].String() {
		t.Errorf("get ct steering %+v, want from %s to %s", st, want[0], want[1])
	}
	if gap := time.Duration(res.MaxGapMs) * time.Millisecond; gap >= steerGapLimit {
		t.Errorf("longest echo gap %s, want < %s", gap, steerGapLimit)
	}
}

// checkStalled checks the feature-off run: the endpoint's backoff shows as an
// echo gap of 3 s or more, or as echoes still missing when the client
// stopped waiting (20 s after its last send).
func checkStalled(t *testing.T, res sctppeer.Result) {
	t.Helper()
	t.Logf("feature off: echoed %d/%d, longest echo gap %d ms", res.Echoed, res.Sent, res.MaxGapMs)
	if !res.Associated {
		t.Fatalf("feature off: the client never associated (%+v)", res)
	}
	if gap := time.Duration(res.MaxGapMs) * time.Millisecond; gap < 3*time.Second && res.Lost == 0 && res.Echoed == res.Sent {
		t.Errorf("feature off: longest echo gap %s and every echo back, want the endpoint's backoff stall (>= 3s)", gap)
	}
}
