package ha

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bgp"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// The lab is scenarios/bgp's topology without a routing daemon: the router
// has a static route for the VIP, moved from lb1 to lb2 at the failure.
var (
	vip       = bgp.VIPs[0]
	endpoints = []netip.Addr{bgp.BackendIP[0], netip.MustParseAddr("10.78.2.22")}
)

const (
	tcpPort  = 7100
	udpPort  = 7101
	syncPort = 7946
)

// services are the same on both nodes (same names, so the same IDs and
// endpoint indexes: what an imported entry refers to). Round robin makes
// the test able to fail: a node without the flows' entries picks the
// endpoints in the order the flows' next packets reach it, which the test
// chooses to differ from lb1's.
func services() []api.Service {
	var eps = func(port uint16) []api.Endpoint {
		var out []api.Endpoint
		for _, a := range endpoints {
			out = append(out, api.Endpoint{Address: a.String(), Port: port})
		}
		return out
	}
	return []api.Service{
		{Name: "tcp", VIP: vip.String(), Port: tcpPort, Protocol: api.ProtocolTCP, Mode: api.ModeFullNAT, Select: api.SelectRoundRobin, Endpoints: eps(tcpPort)},
		{Name: "udp", VIP: vip.String(), Port: udpPort, Protocol: api.ProtocolUDP, Mode: api.ModeFullNAT, Select: api.SelectRoundRobin, Endpoints: eps(udpPort)},
	}
}

type udpFlow struct{ c net.Conn }

func (f udpFlow) ask() (l4.Reply, error) {
	buf := make([]byte, 512)
	var lastErr error
	for try := 0; try < 5; try++ {
		if _, err := f.c.Write([]byte("ask\n")); err != nil {
			return l4.Reply{}, err
		}
		_ = f.c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := f.c.Read(buf)
		if err == nil {
			fields := strings.Fields(string(buf[:n]))
			if len(fields) != 2 {
				return l4.Reply{}, fmt.Errorf("malformed reply %q", buf[:n])
			}
			ap, err := netip.ParseAddrPort(fields[1])
			if err != nil {
				return l4.Reply{}, err
			}
			return l4.Reply{Server: fields[0], Source: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
		}
		lastErr = err
	}
	return l4.Reply{}, fmt.Errorf("udp: no reply: %w", lastErr)
}

type lab2 struct {
	topo    *bgp.Topo
	daemons []*l4.Daemon
}

func upLab(t *testing.T, ctx context.Context, withHA bool) *lab2 {
	t.Helper()
	l := lab.NewEmpty(t)
	topo, err := bgp.BuildTopo(ctx, l)
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	// No ICMP redirect may pin the backend's replies to lb1.
	for _, kv := range [][3]any{{topo.Router, "net.ipv4.conf.all.send_redirects", "0"}, {topo.Router, "net.ipv4.conf.eth1.send_redirects", "0"},
		{topo.BE, "net.ipv4.conf.all.accept_redirects", "0"}} {
		if err := kv[0].(*lab.Host).Sysctl(kv[1].(string), kv[2].(string)); err != nil {
			t.Fatal(err)
		}
	}
	if err := topo.BE.AddAddr(ctx, "eth0", netip.PrefixFrom(endpoints[1], 24)); err != nil {
		t.Fatal(err)
	}
	for i, a := range endpoints {
		id := fmt.Sprintf("ep%d", i+1)
		ts, err := l4.ServeTCPEcho(topo.BE, netip.AddrPortFrom(a, tcpPort).String(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ts.Close() })
		s, err := l4.ServeUDP(topo.BE, netip.AddrPortFrom(a, udpPort).String(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	if err := topo.Router.IP(ctx, "route", "replace", vip.String()+"/32", "via", bgp.NodeAddr(1, 0).String()); err != nil {
		t.Fatal(err)
	}
	bins, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certs, err := WriteGroupCerts(dir, "lb1", "lb2")
	if err != nil {
		t.Fatal(err)
	}
	lb := &lab2{topo: topo}
	t.Cleanup(func() {
		for i, d := range lb.daemons {
			if t.Failed() {
				t.Logf("lb%d log:\n%s", i+1, tail(d.Log(), 40))
			}
			if err := d.Destroy(context.Background()); err != nil {
				t.Errorf("lb%d teardown: %v", i+1, err)
			}
		}
	})
	for i, h := range topo.Nodes {
		name, peer := fmt.Sprintf("lb%d", i+1), fmt.Sprintf("lb%d", 2-i)
		args := []string{"--log-format=text"}
		if withHA {
			nc := certs[name]
			args = append(args, "--ha-node-name="+name,
				"--ha-listen-address="+netip.AddrPortFrom(bgp.NodeAddr(i+1, 0), syncPort).String(),
				"--ha-peers="+peer+"="+netip.AddrPortFrom(bgp.NodeAddr(2-i, 0), syncPort).String(),
				"--ha-tls-cert-file="+nc.Cert, "--ha-tls-key-file="+nc.Key, "--ha-tls-ca-file="+nc.CA,
				"--ha-refresh-interval=1s")
		}
		state := filepath.Join(dir, name)
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bins, Host: h, Interfaces: []string{"eth0"},
			StateDir: state, PinPath: "/sys/fs/bpf/" + l.ID + "-" + h.Name, ExtraArgs: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		lb.daemons = append(lb.daemons, d)
		for _, s := range services() {
			if err := d.Client.CreateService(ctx, s); err != nil {
				t.Fatalf("%s: create %s: %v", name, s.Name, err)
			}
		}
	}
	return lb
}

// scrape reads a daemon's /metrics from inside its namespace.
func scrape(t *testing.T, ctx context.Context, h *lab.Host, d *l4.Daemon) string {
	t.Helper()
	tok, err := os.ReadFile(d.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: l4.HostDialer(h), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l4.APIAddress+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// hasRow says whether a table printed by telcolbctl has a row of exactly
// these cells.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(cells, " ") {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// flows are two TCP connections and two UDP flows through lb1, each pair
// on both endpoints (round robin), with their first answers.
type flows struct {
	tcp      [2]*l4.TCPSession
	udp      [2]udpFlow
	tcpFirst [2]l4.Reply
	udpFirst [2]l4.Reply
}

func openFlows(t *testing.T, ctx context.Context, client *lab.Host) *flows {
	t.Helper()
	f := &flows{}
	for i := range 2 {
		s, err := l4.DialTCPSession(ctx, client, netip.AddrPortFrom(vip, tcpPort).String())
		if err != nil {
			t.Fatalf("tcp %d: %v", i, err)
		}
		t.Cleanup(func() { _ = s.Close() })
		f.tcp[i] = s
		if f.tcpFirst[i], err = s.Ask(); err != nil {
			t.Fatalf("tcp %d through lb1: %v", i, err)
		}
		c, err := l4.HostDialer(client)(ctx, "udp", netip.AddrPortFrom(vip, udpPort).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		f.udp[i] = udpFlow{c}
		if f.udpFirst[i], err = f.udp[i].ask(); err != nil {
			t.Fatalf("udp %d through lb1: %v", i, err)
		}
	}
	if f.tcpFirst[0].Server == f.tcpFirst[1].Server || f.udpFirst[0].Server == f.udpFirst[1].Server {
		t.Fatalf("round robin did not spread the flows: tcp %v, udp %v", f.tcpFirst, f.udpFirst)
	}
	for _, r := range append(f.tcpFirst[:], f.udpFirst[:]...) {
		if r.Source.Addr() != vip {
			t.Fatalf("fullnat: endpoint saw source %v, want the VIP", r.Source)
		}
	}
	return f
}

// fail kills lb1's daemon with SIGKILL, takes its link down (its pinned
// datapath would otherwise keep forwarding) and moves the VIP's route to
// lb2 on the router, as the BGP failover would.
func (lb *lab2) fail(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := lb.daemons[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := lb.topo.Nodes[0].Iface("eth0").SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := lb.topo.Router.IP(ctx, "route", "replace", vip.String()+"/32", "via", bgp.NodeAddr(2, 0).String()); err != nil {
		t.Fatal(err)
	}
}

// waitImported waits until lb2's conntrack holds every flow (from lb1).
func waitImported(t *testing.T, ctx context.Context, d *l4.Daemon, f *flows) {
	t.Helper()
	var want []string
	for i := range 2 {
		want = append(want, f.tcp[i].LocalAddr().String(), f.udp[i].c.LocalAddr().String())
	}
	deadline := time.Now().Add(30 * time.Second)
	var conns []api.Conn
	for time.Now().Before(deadline) {
		var err error
		conns, err = d.Client.Conntrack(ctx)
		if err == nil {
			have := map[string]bool{}
			for _, c := range conns {
				have[c.Client] = true
			}
			missing := 0
			for _, w := range want {
				if !have[w] {
					missing++
				}
			}
			if missing == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("lb2 never held the flows %v; its conntrack: %+v", want, conns)
}

// TestFlowsSurviveANodeFailure: a TCP connection and a UDP flow opened
// through lb1 carry on through lb2 after lb1's daemon is killed and lb1
// leaves the path: same endpoint, same SNAT source, no reset.
func TestFlowsSurviveANodeFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lb := upLab(t, ctx, true)
	// lb2 reports ready only once lb1's bulk resync completed.
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := lb.daemons[1].Client.Health(ctx)
		if err == nil && h.Status == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb2 not ready after 60s: %+v %v", h, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	f := openFlows(t, ctx, lb.topo.Client)
	waitImported(t, ctx, lb.daemons[1], f)
	metrics := scrape(t, ctx, lb.topo.Nodes[1], lb.daemons[1])
	for _, want := range []string{`telcolb_ha_peer_synced{peer="lb1"} 1`, `telcolb_ha_peer_up{peer="lb1"} 1`, "telcolb_ha_ready 1"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("lb2 /metrics lacks %q", want)
		}
	}
	if strings.Contains(metrics, "telcolb_ha_records_received_total 0\n") || !strings.Contains(metrics, "telcolb_ha_records_received_total ") {
		t.Errorf("lb2 received no record according to its metrics")
	}
	if out, err := lb.daemons[1].Ctl(ctx, "get", "ha"); err != nil || !strings.Contains(out, "node lb2, ready") || !hasRow(out, "lb1", "true", "true") {
		t.Errorf("telcolbctl get ha on lb2: %v\n%s", err, out)
	}
	lb.fail(t, ctx)
	failed := time.Now()
	// The second flow of each kind first: a node without the entries would
	// give it the first endpoint.
	for _, i := range []int{1, 0} {
		r, err := f.tcp[i].Ask()
		if err != nil {
			t.Fatalf("tcp %d through lb2 after the failure: %v", i, err)
		}
		if r != f.tcpFirst[i] {
			t.Errorf("tcp %d: endpoint %v after the failure, %v before", i, r, f.tcpFirst[i])
		}
		u, err := f.udp[i].ask()
		if err != nil {
			t.Fatalf("udp %d through lb2 after the failure: %v", i, err)
		}
		if u != f.udpFirst[i] {
			t.Errorf("udp %d: endpoint %v after the failure, %v before", i, u, f.udpFirst[i])
		}
	}
	t.Logf("all flows answered through lb2 %v after the failure", time.Since(failed).Round(time.Millisecond))
}

// TestFlowsBreakWithoutHASync is the control: the same lab without the
// sync; the flows' next packets reach lb2, which has no entry for them,
// and the second TCP connection is reset (or answered by the other
// endpoint), the second UDP flow reaches the other endpoint.
func TestFlowsBreakWithoutHASync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lb := upLab(t, ctx, false)
	f := openFlows(t, ctx, lb.topo.Client)
	lb.fail(t, ctx)
	r, tcpErr := f.tcp[1].Ask()
	if tcpErr == nil && r == f.tcpFirst[1] {
		t.Errorf("tcp 1 carried on through lb2 without the sync (%v): the failover test could not fail", r)
	}
	u, udpErr := f.udp[1].ask()
	if udpErr == nil && u == f.udpFirst[1] {
		t.Errorf("udp 1 kept its endpoint through lb2 without the sync (%v): the failover test could not fail", u)
	}
	t.Logf("without sync: tcp 1 answered %v (error %v), before %v; udp 1 answered %v (error %v), before %v", r, tcpErr, f.tcpFirst[1], u, udpErr, f.udpFirst[1])
}
