// Package bgp is the BGP + BFD advertisement lab: a client, a router
// namespace running a real routing daemon (bird2 or frr: bgpd + bfdd) and
// two LB nodes, each running the real telcolb daemon with the same service,
// in front of one backend:
//
//	client 10.78.1.2 ── router 10.78.1.1 | 10.78.2.1 ──┬── lb1 10.78.2.11
//	                                                   ├── lb2 10.78.2.12
//	                                                   └── be1 10.78.2.21
//
// (IPv6: fd78:1::/64 and fd78:2::/64 with the same host numbers.) The
// router learns the VIPs (10.78.100.1, fd78:100::1) from the daemons over
// eBGP (router AS 65000, nodes AS 65001), with a BFD session per BGP
// session, and installs them in its kernel table (ECMP when both nodes
// announce equally).
package bgp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Addresses of the lab.
var (
	RouterLAN  = [2]netip.Addr{netip.MustParseAddr("10.78.2.1"), netip.MustParseAddr("fd78:2::1")}
	ClientAddr = [2]netip.Addr{netip.MustParseAddr("10.78.1.2"), netip.MustParseAddr("fd78:1::2")}
	BackendIP  = [2]netip.Addr{netip.MustParseAddr("10.78.2.21"), netip.MustParseAddr("fd78:2::21")}
	VIPs       = [2]netip.Addr{netip.MustParseAddr("10.78.100.1"), netip.MustParseAddr("fd78:100::1")}
	VIPPrefix  = [2]string{"10.78.100.0/24", "fd78:100::/64"}
)

// NodeAddr is LB node n's (1, 2, ...) LAN address of a family (0 v4, 1 v6).
func NodeAddr(n, fam int) netip.Addr {
	if fam == 0 {
		return netip.AddrFrom4([4]byte{10, 78, 2, byte(10 + n)})
	}
	return netip.MustParseAddr(fmt.Sprintf("fd78:2::%d", 10+n))
}

const (
	RouterASN = 65000
	NodeASN   = 65001
)

// Topo is the lab's hosts.
type Topo struct {
	Lab    *lab.Lab
	Client *lab.Host
	Router *lab.Host
	Nodes  []*lab.Host // lb1, lb2
	Switch *lab.Host
	BE     *lab.Host
}

// BuildTopo creates the namespaces and links of the lab in l (two nodes).
func BuildTopo(ctx context.Context, l *lab.Lab) (*Topo, error) {
	return BuildTopoN(ctx, l, 2)
}

// BuildTopoN is BuildTopo with n LB nodes (lb3 is 10.78.2.13, and so on).
func BuildTopoN(ctx context.Context, l *lab.Lab, n int) (*Topo, error) {
	t := &Topo{Lab: l}
	var err error
	add := func(name string) *lab.Host {
		if err != nil {
			return nil
		}
		var h *lab.Host
		h, err = l.AddHost(ctx, name)
		return h
	}
	t.Client, t.Router, t.Switch, t.BE = add("client"), add("router"), add("switch"), add("be1")
	for i := 1; i <= n; i++ {
		t.Nodes = append(t.Nodes, add(fmt.Sprintf("lb%d", i)))
	}
	if err != nil {
		return nil, err
	}
	for _, h := range l.Hosts() {
		kv := [][2]string{
			{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
			{"net.ipv6.conf.all.accept_dad", "0"}, {"net.ipv6.conf.default.accept_dad", "0"},
			// A link-down test must not lose the node's IPv6 address: by
			// default Linux removes it when the link goes down.
			{"net.ipv6.conf.all.keep_addr_on_down", "1"}, {"net.ipv6.conf.default.keep_addr_on_down", "1"},
		}
		if h == t.Router || slices.Contains(t.Nodes, h) {
			kv = append(kv, [2]string{"net.ipv4.ip_forward", "1"}, [2]string{"net.ipv6.conf.all.forwarding", "1"})
		}
		for _, s := range kv {
			if err := h.Sysctl(s[0], s[1]); err != nil {
				return nil, err
			}
		}
	}
	if _, _, err := l.Connect(ctx, t.Client, "eth0", t.Router, "eth0"); err != nil {
		return nil, err
	}
	if _, err := t.Switch.AddBridge(ctx, "br0"); err != nil {
		return nil, err
	}
	lan := []struct {
		h    *lab.Host
		port string
		host int
	}{{t.Router, "pr", 1}, {t.BE, "pb", 21}}
	for i, h := range t.Nodes {
		lan = append(lan, struct {
			h    *lab.Host
			port string
			host int
		}{h, fmt.Sprintf("p%d", i+1), 11 + i})
	}
	for _, m := range lan {
		ifn := "eth0"
		if m.h == t.Router {
			ifn = "eth1"
		}
		if _, _, err := l.Connect(ctx, m.h, ifn, t.Switch, m.port); err != nil {
			return nil, err
		}
		if err := t.Switch.AttachToBridge(ctx, m.port, "br0"); err != nil {
			return nil, err
		}
		// Host n is .n in IPv4 and ::n (the same digits) in IPv6.
		for fam, pfx := range []string{"10.78.2.%d/24", "fd78:2::%d/64"} {
			if err := m.h.AddAddr(ctx, ifn, netip.MustParsePrefix(fmt.Sprintf(pfx, m.host))); err != nil {
				return nil, err
			}
			if m.h != t.Router {
				if err := m.h.AddRoute(ctx, netip.Prefix{}, RouterLAN[fam]); err != nil {
					return nil, err
				}
			}
		}
	}
	for fam, pfx := range []string{"10.78.1.%d/24", "fd78:1::%d/64"} {
		if err := t.Client.AddAddr(ctx, "eth0", netip.MustParsePrefix(fmt.Sprintf(pfx, 2))); err != nil {
			return nil, err
		}
		if err := t.Router.AddAddr(ctx, "eth0", netip.MustParsePrefix(fmt.Sprintf(pfx, 1))); err != nil {
			return nil, err
		}
		if err := t.Client.AddRoute(ctx, netip.Prefix{}, []netip.Addr{netip.MustParseAddr("10.78.1.1"), netip.MustParseAddr("fd78:1::1")}[fam]); err != nil {
			return nil, err
		}
	}
	for _, h := range l.Hosts() {
		for _, ifc := range h.Ifaces() {
			if ifc.Peer == nil {
				continue
			}
			if err := h.DisableOffload(ctx, ifc.Name); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// Router is the routing daemon in the router namespace.
type Router interface {
	// Name is bird or frr.
	Name() string
	// ShowRoute is the daemon's own view of a prefix (birdc show route all
	// / vtysh show bgp), for logs and assertions.
	ShowRoute(ctx context.Context, prefix string) (string, error)
	// BFDUp reports whether the router's BFD session with peer is up (a
	// failover measured before it is would time the hold timer, not BFD).
	BFDUp(ctx context.Context, peer netip.Addr) (bool, error)
	Close() error
}

// bfdTableUp finds peer's row in a table of BFD sessions (birdc show bfd
// sessions; vtysh show bfd peers brief) and reports whether its state
// column says up.
func bfdTableUp(out string, peer netip.Addr, stateCol int) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) <= stateCol || !slices.Contains(f[:stateCol], peer.String()) {
			continue
		}
		return strings.EqualFold(f[stateCol], "up")
	}
	return false
}

// Nexthops lists the gateways of the router's kernel route to prefix
// (several with ECMP), sorted; none when there is no route.
func Nexthops(ctx context.Context, h *lab.Host, prefix string) ([]netip.Addr, error) {
	fam := "-4"
	if strings.Contains(prefix, ":") {
		fam = "-6"
	}
	out, err := h.Exec(ctx, "ip", "-j", fam, "route", "show", prefix)
	if err != nil {
		return nil, fmt.Errorf("ip route show %s: %w: %s", prefix, err, out)
	}
	var routes []struct {
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("parse ip route: %w: %s", err, out)
	}
	var gws []netip.Addr
	for _, r := range routes {
		if r.Gateway != "" {
			if a, err := netip.ParseAddr(r.Gateway); err == nil {
				gws = append(gws, a)
			}
		}
		for _, n := range r.Nexthops {
			if a, err := netip.ParseAddr(n.Gateway); err == nil {
				gws = append(gws, a)
			}
		}
	}
	sort.Slice(gws, func(i, j int) bool { return gws[i].Less(gws[j]) })
	return gws, nil
}

// WaitNexthops polls the router's kernel route to prefix until its
// gateways are want (empty: no route), and returns when that happened.
func WaitNexthops(ctx context.Context, h *lab.Host, prefix string, want ...netip.Addr) (time.Time, error) {
	sort.Slice(want, func(i, j int) bool { return want[i].Less(want[j]) })
	var last []netip.Addr
	for {
		got, err := Nexthops(ctx, h, prefix)
		if err != nil {
			return time.Time{}, err
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return time.Now(), nil
		}
		last = got
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("route %s: next hops %v, want %v: %w", prefix, last, want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// BFDTimers are the router's BFD timers (ms): 100 ms x 3, the target.
const (
	BFDIntervalMs = 100
	BFDMultiplier = 3
)

var birdConf = template.Must(template.New("bird").Parse(`router id {{.RouterID}};
log stderr all;
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { export all; }; merge paths on; }
protocol kernel k6 { ipv6 { export all; }; merge paths on; }
protocol bfd {
  interface "*" { min rx interval {{.BFD}} ms; min tx interval {{.BFD}} ms; multiplier {{.Mult}}; };
}
template bgp node {
  local as {{.RouterASN}};
  hold time 9;
  connect retry time 1;
  error wait time 1, 5;
  bfd on;
}
{{range .Peers}}protocol bgp {{.Name}} from node {
  neighbor {{.Addr}} as {{$.NodeASN}};
  {{.Fam}} { import all; export none; };
}
{{end}}`))

type birdPeer struct{ Name, Addr, Fam string }

// Bird runs bird2 in the router namespace.
type Bird struct {
	h    *lab.Host
	dir  string
	sock string
	proc *lab.Proc
}

// StartBird writes the configuration (one BGP session per node and family,
// BFD on each) and starts bird in h, the lab's router.
func StartBird(ctx context.Context, h *lab.Host, nodes int) (*Bird, error) {
	return StartBirdAs(ctx, h, RouterLAN[0], nodes)
}

// StartBirdAs is StartBird with another router ID (a second bird in the
// lab, on another host).
func StartBirdAs(ctx context.Context, h *lab.Host, routerID netip.Addr, nodes int) (*Bird, error) {
	if _, err := exec.LookPath("bird"); err != nil {
		return nil, errors.New("bird not installed (Debian package bird2; hack/install-deps.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "telcolb-bird-")
	if err != nil {
		return nil, err
	}
	var peers []birdPeer
	for n := 1; n <= nodes; n++ {
		peers = append(peers, birdPeer{fmt.Sprintf("lb%d", n), NodeAddr(n, 0).String(), "ipv4"},
			birdPeer{fmt.Sprintf("lb%dv6", n), NodeAddr(n, 1).String(), "ipv6"})
	}
	var b bytes.Buffer
	if err := birdConf.Execute(&b, map[string]any{"RouterID": routerID, "BFD": BFDIntervalMs, "Mult": BFDMultiplier,
		"RouterASN": RouterASN, "NodeASN": NodeASN, "Peers": peers}); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, b.Bytes(), 0o600); err != nil {
		return nil, err
	}
	bd := &Bird{h: h, dir: dir, sock: filepath.Join(dir, "bird.ctl")}
	// -f: foreground, so the lab stops it; -s/-P: its own socket and pid
	// file, so several birds run side by side.
	bd.proc, err = h.Start("bird", "-f", "-c", conf, "-s", bd.sock, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, err := h.Exec(ctx, "birdc", "-s", bd.sock, "show", "status"); err == nil && strings.Contains(string(out), "Daemon is up") {
			return bd, nil
		}
		select {
		case <-bd.proc.Done():
			return nil, fmt.Errorf("bird exited: %s", bd.proc.Stderr())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bird not up after 20s: %s", bd.proc.Stderr())
		}
	}
}

func (b *Bird) Name() string { return "bird" }

// Birdc runs a birdc command.
func (b *Bird) Birdc(ctx context.Context, args ...string) (string, error) {
	out, err := b.h.Exec(ctx, "birdc", append([]string{"-s", b.sock}, args...)...)
	return string(out), err
}

func (b *Bird) ShowRoute(ctx context.Context, prefix string) (string, error) {
	return b.Birdc(ctx, "show", "route", "for", prefix, "all")
}

// BFDUp reads birdc show bfd sessions: address, interface, state, ...
func (b *Bird) BFDUp(ctx context.Context, peer netip.Addr) (bool, error) {
	out, err := b.Birdc(ctx, "show", "bfd", "sessions")
	if err != nil {
		return false, err
	}
	return bfdTableUp(out, peer, 2), nil
}

// Log is what bird printed.
func (b *Bird) Log() string { return b.proc.Stderr() }

func (b *Bird) Close() error {
	err := b.proc.Stop()
	return errors.Join(err, os.RemoveAll(b.dir))
}

// execLookPath finds a program by name or checks an absolute path.
func execLookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	return exec.LookPath(name)
}
