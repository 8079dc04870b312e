package l4

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// dsrVIPs live on the backends' loopback; no other mode may use them, or the
// backends would take fullnat traffic "from the VIP" as local.
var dsrVIPs = []netip.Addr{lab.VIP(0, 200, false), lab.VIP(0, 200, true)}

func up(t *testing.T, backends int) *Env {
	t.Helper()
	return upWith(t, lab.Config{Backends: backends, DSR: true, DSRVIPs: dsrVIPs})
}

// upWith is an Env on a lab built from cfg, torn down (with the daemon's log
// shown on failure) when the test ends.
func upWith(t *testing.T, cfg lab.Config) *Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: eBPF and network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := Up(ctx, EnvConfig{Lab: cfg})
	if err != nil {
		t.Fatalf("environment: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("telcolb log:\n%s", e.Daemon.Log())
		}
		if err := e.Down(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return e
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

type modeCase struct {
	mode string
	vip  func(v6 bool) netip.Addr
	// source is what the endpoint must see as the client's address.
	source func(e *Env, vip netip.Addr, v6 bool) netip.Addr
}

var modeCases = []modeCase{
	{api.ModeDefault, func(v6 bool) netip.Addr { return lab.VIP(0, 1, v6) },
		func(e *Env, _ netip.Addr, v6 bool) netip.Addr { return e.ClientAddr(v6) }},
	{api.ModeOneArm, func(v6 bool) netip.Addr { return lab.VIP(0, 2, v6) },
		func(e *Env, _ netip.Addr, v6 bool) netip.Addr { return e.LBBackendAddr(v6) }},
	{api.ModeFullNAT, func(v6 bool) netip.Addr { return lab.VIP(0, 3, v6) },
		func(e *Env, vip netip.Addr, _ bool) netip.Addr { return vip }},
	{api.ModeDSR, func(v6 bool) netip.Addr { return lab.VIP(0, 200, v6) },
		func(e *Env, _ netip.Addr, v6 bool) netip.Addr { return e.ClientAddr(v6) }},
}

func endpoints(e *Env, port int, v6 bool) []api.Endpoint {
	var eps []api.Endpoint
	for k := range e.Lab.Backends {
		eps = append(eps, api.Endpoint{Address: e.BackendAddr(k, v6).String(), Port: uint16(port)})
	}
	return eps
}

func family(v6 bool) string {
	if v6 {
		return "v6"
	}
	return "v4"
}

// Each mode carries TCP and UDP, IPv4 and IPv6, to every endpoint in round
// robin order, and the endpoint sees the source address the mode promises.
func TestEveryModeReachesEveryEndpointWithThePromisedSource(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	checkCapturedChecksums(t, e)
	for _, mc := range modeCases {
		for _, v6 := range []bool{false, true} {
			for _, proto := range []string{api.ProtocolTCP, api.ProtocolUDP} {
				name := fmt.Sprintf("%s-%s-%s", mc.mode, proto, family(v6))
				t.Run(name, func(t *testing.T) {
					vip := mc.vip(v6)
					port := HTTPPort
					if proto == api.ProtocolUDP {
						port = UDPPort
					}
					svc := api.Service{Name: name, VIP: vip.String(), Port: uint16(port), Protocol: proto,
						Mode: mc.mode, Select: api.SelectRoundRobin, Endpoints: endpoints(e, port, v6)}
					if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
						t.Fatalf("apply: %v", err)
					}
					t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })
					seen := map[string]int{}
					for i := 0; i < 6; i++ {
						var r Reply
						var err error
						if proto == api.ProtocolTCP {
							r, err = HTTPGet(ctx, e.Lab.Client, "http://"+hostPort(vip, port)+"/")
						} else {
							r, err = UDPAsk(ctx, e.Lab.Client, hostPort(vip, port))
						}
						if err != nil {
							t.Fatalf("request %d: %v", i, err)
						}
						if want := mc.source(e, vip, v6); r.Source.Addr() != want {
							t.Errorf("request %d: endpoint %s saw source %s, want %s", i, r.Server, r.Source.Addr(), want)
						}
						seen[r.Server]++
					}
					if seen["be1"] != 3 || seen["be2"] != 3 {
						t.Errorf("round robin over 2 endpoints, 6 flows: got %v, want 3 each", seen)
					}
				})
			}
		}
	}
}

// A service whose endpoint stops answering its probe is marked down and new
// flows avoid that endpoint; when it comes back, it is used again.
func TestProbeMarksDeadEndpointDownAndNewFlowsAvoidIt(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	vip := lab.VIP(0, 10, false)
	const port = 8081
	var servers []*Server
	for k, be := range e.Lab.Backends {
		s, err := ServeHTTP(be, "[::]:8081", fmt.Sprintf("be%d", k+1))
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	svc := api.Service{Name: "probed", VIP: vip.String(), Port: port, Protocol: api.ProtocolTCP,
		Mode: api.ModeFullNAT, Select: api.SelectRoundRobin, Endpoints: endpoints(e, port, false),
		Probe: &api.Probe{Type: api.ProbeHTTP, Request: "/healthz", Response: "ok", IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 1}}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitHealth := func(addr string, healthy bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err := e.Daemon.Client.GetService(ctx, "probed")
			if err != nil {
				t.Fatal(err)
			}
			for _, ep := range st.Endpoints {
				if ep.Address == addr && ep.Healthy == healthy {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("endpoint %s never became healthy=%v: %+v", addr, healthy, st.Endpoints)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	be2 := e.BackendAddr(1, false).String()
	waitHealth(be2, true)
	if err := servers[1].Close(); err != nil {
		t.Fatal(err)
	}
	waitHealth(be2, false)
	for i := 0; i < 6; i++ {
		r, err := HTTPGet(ctx, e.Lab.Client, "http://"+hostPort(vip, port)+"/")
		if err != nil {
			t.Fatalf("request %d with be2 down: %v", i, err)
		}
		if r.Server != "be1" {
			t.Fatalf("request %d reached %s although be2 is down", i, r.Server)
		}
	}
	s, err := ServeHTTP(e.Lab.Backends[1], "[::]:8081", "be2")
	if err != nil {
		t.Fatal(err)
	}
	servers[1] = s
	waitHealth(be2, true)
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		r, err := HTTPGet(ctx, e.Lab.Client, "http://"+hostPort(vip, port)+"/")
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Server] = true
	}
	if !seen["be2"] {
		t.Errorf("be2 is healthy again but got no new flow: %v", seen)
	}
}

// An established TCP connection keeps working while the daemon is stopped
// and after it starts again, and conntrack still shows it.
func TestEstablishedTCPSurvivesDaemonRestart(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	for _, mode := range []string{api.ModeDefault, api.ModeFullNAT} {
		t.Run(mode, func(t *testing.T) {
			vip := lab.VIP(0, 20, false)
			if mode == api.ModeFullNAT {
				vip = lab.VIP(0, 21, false)
			}
			svc := api.Service{Name: "restart-" + mode, VIP: vip.String(), Port: EchoPort, Protocol: api.ProtocolTCP,
				Mode: mode, Endpoints: endpoints(e, EchoPort, false)}
			if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
				t.Fatal(err)
			}
			sess, err := DialTCPSession(ctx, e.Lab.Client, hostPort(vip, EchoPort))
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			first, err := sess.Ask()
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Daemon.Stop(); err != nil {
				t.Fatal(err)
			}
			if r, err := sess.Ask(); err != nil || r.Server != first.Server {
				t.Fatalf("while the daemon is down: %+v, %v (want answers from %s)", r, err, first.Server)
			}
			if err := e.Daemon.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if r, err := sess.Ask(); err != nil || r.Server != first.Server {
					t.Fatalf("after restart: %+v, %v (want answers from %s)", r, err, first.Server)
				}
			}
			conns, err := e.Daemon.Client.Conntrack(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, c := range conns {
				if c.Client == sess.LocalAddr().String() && c.Protocol == "tcp" {
					found = true
					if !strings.Contains(strings.ToLower(c.State), "est") {
						t.Errorf("connection state %q, want established", c.State)
					}
				}
			}
			if !found {
				t.Errorf("conntrack after restart lacks %s: %+v", sess.LocalAddr(), conns)
			}
			st, err := e.Daemon.Client.GetService(ctx, svc.Name)
			if err != nil {
				t.Fatalf("service lost over restart: %v", err)
			}
			if st.Service.VIP != svc.VIP {
				t.Errorf("service after restart: %+v", st.Service)
			}
		})
	}
}

// The selection algorithms, observed from the client: hash keeps a flow's
// endpoint and spreads distinct flows, persist keeps a client on one
// endpoint across flows, leastconn sends a new flow to the endpoint with
// fewer open connections.
func TestSelectionAlgorithmsEndToEnd(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	apply := func(t *testing.T, name string, vip netip.Addr, proto string, port int, sel string) {
		t.Helper()
		svc := api.Service{Name: name, VIP: vip.String(), Port: uint16(port), Protocol: proto,
			Mode: api.ModeDefault, Select: sel, Endpoints: endpoints(e, port, false)}
		if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("hash", func(t *testing.T) {
		vip := lab.VIP(0, 30, false)
		apply(t, "sel-hash", vip, api.ProtocolUDP, UDPPort, api.SelectHash)
		seen := map[string]int{}
		for i := 0; i < 16; i++ {
			c, err := HostDialer(e.Lab.Client)(ctx, "udp", hostPort(vip, UDPPort))
			if err != nil {
				t.Fatal(err)
			}
			first, err := udpExchange(c)
			if err != nil {
				c.Close()
				t.Fatal(err)
			}
			for j := 0; j < 3; j++ {
				r, err := udpExchange(c)
				if err != nil || r.Server != first.Server {
					c.Close()
					t.Fatalf("same flow moved: %s then %+v (%v)", first.Server, r, err)
				}
			}
			c.Close()
			seen[first.Server]++
		}
		if len(seen) != 2 {
			t.Errorf("16 distinct flows all hashed to one endpoint: %v", seen)
		}
	})
	t.Run("persist", func(t *testing.T) {
		vip := lab.VIP(0, 31, false)
		apply(t, "sel-persist", vip, api.ProtocolTCP, HTTPPort, api.SelectPersist)
		first := ""
		for i := 0; i < 8; i++ {
			r, err := HTTPGet(ctx, e.Lab.Client, "http://"+hostPort(vip, HTTPPort)+"/")
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = r.Server
			} else if r.Server != first {
				t.Fatalf("flow %d from the same client went to %s, earlier ones to %s", i, r.Server, first)
			}
		}
	})
	t.Run("leastconn", func(t *testing.T) {
		vip := lab.VIP(0, 32, false)
		apply(t, "sel-leastconn", vip, api.ProtocolTCP, EchoPort, api.SelectLeastConn)
		var held []*TCPSession
		defer func() {
			for _, s := range held {
				s.Close()
			}
		}()
		count := map[string]int{}
		for i := 0; i < 4; i++ {
			s, err := DialTCPSession(ctx, e.Lab.Client, hostPort(vip, EchoPort))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, s)
			r, err := s.Ask()
			if err != nil {
				t.Fatal(err)
			}
			count[r.Server]++
			if d := count["be1"] - count["be2"]; d > 1 || d < -1 {
				t.Fatalf("after %d held connections: %v; leastconn must keep them balanced", i+1, count)
			}
		}
	})
}

// checkCapturedChecksums captures on both lb interfaces for the rest of the
// test and, when it ends, has tshark verify every IPv4, TCP, UDP and SCTP
// checksum the datapath rewrote.
func checkCapturedChecksums(t *testing.T, e *Env) {
	t.Helper()
	ctx := context.Background()
	front, back := startLBCaptures(t, e)
	caps := []*capture.Capture{front, back}
	t.Cleanup(func() {
		for _, c := range caps {
			if err := c.Stop(); err != nil {
				t.Error(err)
				continue
			}
			rep, err := capture.Checksums(ctx, c.File)
			if err != nil {
				t.Error(err)
				continue
			}
			if len(rep.Bad) > 0 || rep.Good == 0 {
				t.Errorf("%s: %d frames with bad checksums %v, %d good checksums", c.Iface, len(rep.Bad), rep.Bad, rep.Good)
				describeBadFrames(t, c.File, rep.Bad)
			}
			t.Logf("%s: %d checksums verified by tshark", c.Iface, rep.Good)
		}
	})
}

// describeBadFrames logs what tshark says of each frame with a bad checksum
// (addresses, ports, flags, the checksum found and the one expected) and,
// with TELCOLB_KEEP_CAPTURES=dir, keeps the capture there: a bad checksum
// seen once is otherwise gone with the test's temporary directory.
func describeBadFrames(t *testing.T, file string, bad []capture.Frame) {
	t.Helper()
	ctx := context.Background()
	for i, f := range bad {
		if i == 10 {
			break
		}
		rows, err := capture.Fields(ctx, file, fmt.Sprintf("frame.number == %d", f.Number),
			"frame.time_relative", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.ttl", "ip.checksum",
			"tcp.srcport", "tcp.dstport", "tcp.flags.str", "tcp.len", "tcp.checksum", "tcp.checksum_calculated",
			"udp.srcport", "udp.dstport", "udp.checksum", "udp.checksum_calculated")
		if err != nil {
			t.Logf("frame %d: %v", f.Number, err)
			continue
		}
		t.Logf("bad frame %d (%s): %q", f.Number, f.Protocol, rows)
	}
	if dir := os.Getenv("TELCOLB_KEEP_CAPTURES"); dir != "" {
		dst := filepath.Join(dir, fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(t.Name(), "/", "_"),
			time.Now().UnixNano(), filepath.Base(file)))
		b, err := os.ReadFile(file)
		if err == nil {
			if err = os.MkdirAll(dir, 0o755); err == nil {
				err = os.WriteFile(dst, b, 0o644)
			}
		}
		if err != nil {
			t.Logf("keeping the capture: %v", err)
			return
		}
		t.Logf("capture kept: %s", dst)
	}
}
