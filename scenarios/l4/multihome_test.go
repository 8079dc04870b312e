package l4

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

const mhPort = 38412

// upLinks is an Env with one backend and three links per side.
func upLinks(t *testing.T) *Env {
	t.Helper()
	return upWith(t, lab.Config{Backends: 1, Links: lab.MaxLinks})
}

func ifaceAddr(i *lab.Iface, v6 bool) netip.Addr {
	if v6 {
		return i.V6()
	}
	return i.V4()
}

// mhCase is one multi-homed association: n addresses per side.
type mhCase struct {
	n    int
	v6   bool
	mode string
	host int // VIP host number, unique per case
	// singleHomed binds the endpoint to its first address only (the
	// service still has n VIPs).
	singleHomed bool
}

func (c mhCase) name() string { return fmt.Sprintf("%s-%s-%dlinks", c.mode, family(c.v6), c.n) }

func (c mhCase) vips() []netip.Addr {
	var out []netip.Addr
	for i := 0; i < c.n; i++ {
		out = append(out, lab.VIP(i, c.host, c.v6))
	}
	return out
}

func (c mhCase) clientAddrs(e *Env) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < c.n; i++ {
		out = append(out, ifaceAddr(e.Lab.ClientIface(i), c.v6))
	}
	return out
}

func (c mhCase) endpointAddrs(e *Env) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < c.n; i++ {
		out = append(out, ifaceAddr(e.Lab.BackendIface(0, i), c.v6))
	}
	return out
}

// apply programs the multi-homed service and starts the endpoint bound to
// all its addresses (the first only when singleHomed).
func (c mhCase) apply(t *testing.T, e *Env) *sctppeer.Server {
	t.Helper()
	ctx := context.Background()
	vips := c.vips()
	svc := api.Service{Name: c.name(), VIP: vips[0].String(), Port: mhPort, Protocol: api.ProtocolSCTP, Mode: c.mode,
		Endpoints: []api.Endpoint{{Address: c.endpointAddrs(e)[0].String(), Port: mhPort}}}
	for _, v := range vips[1:] {
		svc.SecondaryVIPs = append(svc.SecondaryVIPs, v.String())
	}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, svc.Name) })
	bind := c.endpointAddrs(e)
	if c.singleHomed {
		bind = bind[:1]
	}
	srv, err := sctppeer.StartServer(ctx, e.Lab.Backends[0], sctppeer.ServerOptions{
		Bind: bind, Port: mhPort, ID: "be1", Timers: sctppeer.FastTimers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

// seenBy is what the endpoint must see as the client's addresses.
func (c mhCase) seenBy(e *Env) []netip.Addr {
	if c.mode == api.ModeFullNAT {
		return c.vips()
	}
	return c.clientAddrs(e)
}

func addrSet(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, addrOf(s))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func sorted(a []netip.Addr) []netip.Addr {
	out := slices.Clone(a)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// checkInitAddresses asserts the address parameters of every INIT captured
// toward the endpoints and every INIT-ACK captured toward the client use
// only the allowed addresses, that what the LB dropped is gone rather than
// left as skipped parameters, and that an INIT offers the endpoint no
// address type but the family of the addresses it may see.
func checkInitAddresses(t *testing.T, front, back []*capture.Capture, clientMay, endpointMay []netip.Addr) {
	t.Helper()
	ctx := context.Background()
	for _, chk := range []struct {
		caps  []*capture.Capture
		chunk string
		may   []netip.Addr
	}{{back, "INIT", endpointMay}, {front, "INIT_ACK", clientMay}} {
		n := 0
		for _, c := range chk.caps {
			got, err := InitAddresses(ctx, c.File, chk.chunk)
			if err != nil {
				t.Fatal(err)
			}
			n += len(got)
			for _, addrs := range got {
				for _, a := range addrs {
					if !slices.Contains(chk.may, a) {
						t.Errorf("%s: %s lists %s, allowed only %v", c.Iface, chk.chunk, a, chk.may)
					}
				}
			}
			params, err := InitParams(ctx, c.File, chk.chunk)
			if err != nil {
				t.Fatal(err)
			}
			wantType := uint16(5)
			if chk.may[0].Is6() {
				wantType = 6
			}
			for _, p := range params {
				if p.HasSkipped() {
					t.Errorf("%s: %s keeps skipped parameters (types %#04x) instead of losing them", c.Iface, chk.chunk, p.Types)
				}
				if chk.chunk == "INIT" && len(p.AddrTypes) > 0 && !slices.Equal(p.AddrTypes, []uint16{wantType}) {
					t.Errorf("%s: INIT offers address types %v, want only %d", c.Iface, p.AddrTypes, wantType)
				}
			}
		}
		if n == 0 {
			t.Errorf("no %s captured", chk.chunk)
		}
	}
}

// countInits counts the captured chunks of that type over captures.
func countInits(t *testing.T, caps []*capture.Capture, chunk string) int {
	t.Helper()
	n := 0
	for _, c := range caps {
		got, err := InitAddresses(context.Background(), c.File, chunk)
		if err != nil {
			t.Fatal(err)
		}
		n += len(got)
	}
	return n
}

// startCaps captures on every link of the LB: front toward the client,
// back toward the endpoints (a multi-homed peer may use any link).
func startCaps(t *testing.T, e *Env) (front, back []*capture.Capture) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	for i := 0; i < lab.MaxLinks; i++ {
		for _, side := range []struct {
			ifc  *lab.Iface
			caps *[]*capture.Capture
		}{{e.Lab.LBClientIface(i), &front}, {e.Lab.LBBackendIface(i), &back}} {
			c, err := capture.Start(ctx, e.Lab.LB, side.ifc.Name, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Stop() })
			*side.caps = append(*side.caps, c)
		}
	}
	return front, back
}

func stopCaps(t *testing.T, caps ...[]*capture.Capture) {
	t.Helper()
	for _, cs := range caps {
		for _, c := range cs {
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkOneAssociation asserts that the daemon's conntrack holds exactly one
// association for c's service, with a secondary path per (client address,
// VIP) pair but the primary.
func (c mhCase) checkOneAssociation(t *testing.T, e *Env) {
	t.Helper()
	conns, err := e.Daemon.Client.Conntrack(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mine []api.Conn
	for _, cn := range conns {
		if cn.Service == c.name() {
			mine = append(mine, cn)
		}
	}
	if len(mine) != 1 || len(mine[0].Paths) != c.n*c.n-1 {
		t.Errorf("conntrack %+v: want one association with %d secondary paths", mine, c.n*c.n-1)
	}
}

// checkChecksums fails the test for every frame of caps with a bad
// checksum and returns how many checksums tshark verified over all of them.
func checkChecksums(t *testing.T, caps ...*capture.Capture) int {
	t.Helper()
	good := 0
	for _, cp := range caps {
		rep, err := capture.Checksums(context.Background(), cp.File)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) > 0 {
			t.Errorf("%s: bad checksums %v", cp.Iface, rep.Bad)
		}
		good += rep.Good
	}
	return good
}

// sctpChunks reads the SCTP packets of caps: the chunk counts over all of
// them, and per interface how many packets carried DATA.
func sctpChunks(t *testing.T, caps ...*capture.Capture) (counts, dataOn map[string]int) {
	t.Helper()
	var all []capture.SCTPPacket
	dataOn = map[string]int{}
	for _, cp := range caps {
		pkts, err := capture.SCTP(context.Background(), cp.File)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pkts...)
		for _, p := range pkts {
			if slices.Contains(p.Chunks, "DATA") {
				dataOn[cp.Iface]++
			}
		}
	}
	return capture.CountChunks(all), dataOn
}

// Multi-homed associations (usrsctp on both ends, 2 and 3 addresses per
// side, IPv4 and IPv6, default and fullnat) through the LB: the client sees
// only the service's VIPs, the endpoint sees the addresses the mode
// promises, data flows both ways, and `get ct` shows one association with a
// path per (client address, VIP) pair.
func TestSCTPMultihomedAssociationsThroughTheLB(t *testing.T) {
	e := upLinks(t)
	ctx := context.Background()
	host := 10
	for _, n := range []int{2, 3} {
		for _, v6 := range []bool{false, true} {
			for _, mode := range []string{api.ModeDefault, api.ModeFullNAT} {
				host++
				c := mhCase{n: n, v6: v6, mode: mode, host: host}
				t.Run(c.name(), func(t *testing.T) {
					srv := c.apply(t, e)
					front, back := startCaps(t, e)
					res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
						Bind: c.clientAddrs(e), Connect: c.vips()[:1], Port: mhPort,
						Count: 20, Size: 300, Streams: 2, PPID: 60, Timers: sctppeer.FastTimers})
					if err != nil || !res.OK() {
						t.Fatalf("client: %v (%+v)", err, res)
					}
					if got, want := addrSet(res.PeerAddrs), sorted(c.vips()); !slices.Equal(got, want) {
						t.Errorf("client sees peer addresses %v, want the VIPs %v", got, want)
					}
					peers := serverPeers(t, []*sctppeer.Server{srv})["be1"]
					if got, want := addrSet(peers), sorted(c.seenBy(e)); !slices.Equal(got, want) {
						t.Errorf("endpoint sees peer addresses %v, want %v", got, want)
					}
					c.checkOneAssociation(t, e)
					stopCaps(t, front, back)
					if checkChecksums(t, append(front, back...)...) == 0 {
						t.Errorf("no checksum verified in any capture")
					}
					checkInitAddresses(t, front, back, c.vips(), c.seenBy(e))
				})
			}
		}
	}
}

// A dual-stack client binds addresses of both families: its INIT toward an
// IPv4 VIP lists them all (usrsctp lists no IPv4 address toward an IPv6
// peer), and the LB removes the IPv6 one (no skipped parameter left behind)
// before the endpoint sees the INIT, whose CRC32c tshark verifies after the
// resize. The association works over the addresses the endpoint does see.
func TestSCTPDualStackClientsOtherFamilyIsRemoved(t *testing.T) {
	e := upLinks(t)
	ctx := context.Background()
	for _, c := range []mhCase{{n: 2, mode: api.ModeDefault, host: 60}, {n: 2, mode: api.ModeFullNAT, host: 61}} {
		t.Run(c.name(), func(t *testing.T) {
			c.apply(t, e)
			front, back := startCaps(t, e)
			other := e.Lab.ClientIface(0).V6()
			res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
				Bind: append(c.clientAddrs(e), other), Connect: c.vips()[:1], Port: mhPort,
				Count: 10, Size: 200, Timers: sctppeer.FastTimers})
			if err != nil || !res.OK() {
				t.Fatalf("client: %v (%+v)", err, res)
			}
			if got, want := addrSet(res.PeerAddrs), sorted(c.vips()); !slices.Equal(got, want) {
				t.Errorf("client sees peer addresses %v, want the VIPs %v", got, want)
			}
			stopCaps(t, front, back)
			listed := false
			for _, cp := range front {
				inits, err := InitAddresses(ctx, cp.File, "INIT")
				if err != nil {
					t.Fatal(err)
				}
				for _, addrs := range inits {
					listed = listed || slices.Contains(addrs, other)
				}
			}
			if !listed {
				t.Fatalf("the client's INIT does not list %s: nothing to remove, the checks below prove nothing", other)
			}
			checkChecksums(t, append(front, back...)...)
			checkInitAddresses(t, front, back, c.vips(), c.seenBy(e))
		})
	}
}

// failover has the client, bound to bind, send 60 messages to vip over one
// association; once the association is up and carrying data, during (run
// before the cut, may be nil) and then cut (a link taken down). It returns
// the client's result after asserting that every message was echoed and
// that the client saw a peer address become unreachable.
func failover(t *testing.T, e *Env, srv *sctppeer.Server, bind []netip.Addr, vip netip.Addr, during func(), cut *lab.Iface) sctppeer.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const count = 60
	cl, err := sctppeer.StartClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
		Bind: bind, Connect: []netip.Addr{vip}, Port: mhPort,
		Count: count, Size: 200, Interval: 50 * time.Millisecond, Streams: 2, PPID: 60,
		Wait: 20 * time.Second, Timers: sctppeer.FastTimers})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitEvent(ctx, "assoc", "COMM_UP"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if during != nil {
		during()
	}
	if err := cut.SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	res, err := cl.Wait(ctx)
	if err != nil || res.Echoed != count || res.Lost != 0 {
		t.Fatalf("client: %v; echoed %d lost %d, want %d/0 (%+v)", err, res.Echoed, res.Lost, count, res)
	}
	if res.Failovers == 0 {
		t.Errorf("client reported no unreachable peer address; events %+v", res.Events)
	}
	t.Logf("%s cut: max echo gap %d ms", cut.Name, res.MaxGapMs)
	return res
}

// The client's primary link is cut mid-transfer: the association carries
// on over a secondary path through the LB, every message is echoed, and no
// new INIT is sent.
func TestSCTPMultihomedFailoverThroughTheLB(t *testing.T) {
	for _, c := range []mhCase{{n: 2, mode: api.ModeDefault, host: 40}, {n: 2, v6: true, mode: api.ModeFullNAT, host: 41}} {
		t.Run(c.name(), func(t *testing.T) {
			e := upLinks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv := c.apply(t, e)
			dir := t.TempDir()
			var caps []*capture.Capture
			for _, ifc := range []*lab.Iface{e.Lab.LBBackendIface(0), e.Lab.LBBackendIface(1), e.Lab.LBClientIface(1)} {
				cp, err := capture.Start(ctx, e.Lab.LB, ifc.Name, dir)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = cp.Stop() })
				caps = append(caps, cp)
			}
			failover(t, e, srv, c.clientAddrs(e), c.vips()[0], nil, e.Lab.ClientIface(0))
			stopCaps(t, caps)
			counts, dataOn := sctpChunks(t, caps...)
			if counts["INIT"] != 1 || counts["ABORT"] != 0 {
				t.Errorf("chunks %v: want exactly one INIT (no new association) and no ABORT", counts)
			}
			if dataOn[e.Lab.LBClientIface(1).Name] == 0 {
				t.Errorf("no DATA crossed the LB on the secondary link")
			}
		})
	}
}

// The endpoint restarts (same addresses and port): the client's new
// association is rewritten like the first, and no INIT or INIT-ACK on either
// side of the LB lists an address the mode does not promise.
func TestSCTPEndpointRestartLeaksNoAddress(t *testing.T) {
	e := upLinks(t)
	ctx := context.Background()
	c := mhCase{n: 2, mode: api.ModeFullNAT, host: 50}
	srv := c.apply(t, e)
	front, back := startCaps(t, e)
	run := func(what string) {
		res, err := sctppeer.RunClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
			Bind: c.clientAddrs(e), Connect: c.vips()[:1], Port: mhPort, Count: 5, Size: 100, Timers: sctppeer.FastTimers})
		if err != nil || !res.OK() {
			t.Fatalf("%s: %v (%+v)", what, err, res)
		}
		if got, want := addrSet(res.PeerAddrs), sorted(c.vips()); !slices.Equal(got, want) {
			t.Errorf("%s: client sees %v, want %v", what, got, want)
		}
	}
	run("before restart")
	if err := srv.Stop(); err != nil && !strings.Contains(err.Error(), "signal") {
		t.Logf("stop server: %v", err)
	}
	srv2, err := sctppeer.StartServer(ctx, e.Lab.Backends[0], sctppeer.ServerOptions{
		Bind: c.endpointAddrs(e), Port: mhPort, ID: "be1", Timers: sctppeer.FastTimers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv2.Stop() })
	run("after restart")
	if got, want := addrSet(serverPeers(t, []*sctppeer.Server{srv2})["be1"]), sorted(c.vips()); !slices.Equal(got, want) {
		t.Errorf("restarted endpoint sees %v, want %v", got, want)
	}
	stopCaps(t, front, back)
	if n := countInits(t, back, "INIT"); n < 2 {
		t.Errorf("%d INIT chunks toward the endpoint, want one per association", n)
	}
	if n := countInits(t, front, "INIT_ACK"); n < 2 {
		t.Errorf("%d INIT_ACK chunks toward the client, want one per association", n)
	}
	checkInitAddresses(t, front, back, c.vips(), c.vips())
}

func TestParseInitAddressRows(t *testing.T) {
	tests := []struct {
		name    string
		rows    [][]string
		want    [][]netip.Addr
		wantErr bool
	}{
		{"v4 and v6 columns", [][]string{{"10.0.0.1,10.0.0.2", "fd00::1"}}, [][]netip.Addr{{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::1")}}, false},
		{"no parameters", [][]string{{"", ""}}, [][]netip.Addr{nil}, false},
		{"garbage", [][]string{{"10.0.0.x", ""}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInitAddressRows(tt.rows)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseInitParamRows(t *testing.T) {
	tests := []struct {
		name        string
		rows        [][]string
		want        []InitParameters
		wantSkipped bool
		wantErr     bool
	}{
		{"hex types and decimal address types", [][]string{{"0x0005,0x000c,0xbffe", "5,6"}},
			[]InitParameters{{Types: []uint16{5, 12, 0xbffe}, AddrTypes: []uint16{5, 6}}}, true, false},
		{"no skipped parameter", [][]string{{"0x0005,0x8008", ""}},
			[]InitParameters{{Types: []uint16{5, 0x8008}}}, false, false},
		{"no parameters", [][]string{{"", ""}}, []InitParameters{{}}, false, false},
		{"wider than a type", [][]string{{"0x10000", ""}}, nil, false, true},
		{"missing column", [][]string{{"5"}}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInitParamRows(tt.rows)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if got[0].HasSkipped() != tt.wantSkipped {
				t.Fatalf("HasSkipped %v for types %v, want %v", got[0].HasSkipped(), got[0].Types, tt.wantSkipped)
			}
		})
	}
}

func FuzzParseInitAddressRows(f *testing.F) {
	f.Add("10.0.0.1,10.0.0.2", "fd00::1")
	f.Add("", ",,")
	f.Fuzz(func(t *testing.T, v4, v6 string) {
		got, err := parseInitAddressRows([][]string{{v4, v6}})
		if err == nil {
			for _, a := range got[0] {
				if !a.IsValid() {
					t.Fatalf("invalid address accepted from %q %q", v4, v6)
				}
			}
		}
	})
}
