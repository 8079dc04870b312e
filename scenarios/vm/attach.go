package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// GuestIface is a NIC of a VM that replaced a lab host: same name and
// addresses as the host's veth it took over.
type GuestIface struct {
	Name  string
	MAC   net.HardwareAddr
	Addrs []netip.Prefix
}

type route struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway"`
	Dev     string `json:"dev"`
}

// Replace boots a VM in place of lab host h: each veth of h becomes a port
// of a bridge (in h's namespace) whose other port is a tap of the VM; the
// veth's addresses and h's gateway routes move into the guest, on NICs
// renamed to the veth names. The rest of the lab sees the guest where the
// namespace was; Iface.SetUp(false) on h's veth still cuts that link.
// Timers are written to the guest's net.sctp sysctls (zero: defaults).
func Replace(ctx context.Context, h *lab.Host, img *Image, t SCTPTimers, cfg Config) (*VM, error) {
	var veths []*lab.Iface
	for _, i := range h.Ifaces() {
		if i.Peer != nil {
			veths = append(veths, i)
		}
	}
	sort.Slice(veths, func(a, b int) bool { return veths[a].Name < veths[b].Name })
	var routes []route
	for _, fam := range []string{"-4", "-6"} {
		out, err := h.Exec(ctx, "ip", fam, "-j", "route", "show")
		if err != nil {
			return nil, fmt.Errorf("vm: replace %s: %w", h.Name, err)
		}
		var rs []route
		if err := json.Unmarshal(out, &rs); err != nil {
			return nil, fmt.Errorf("vm: replace %s: routes: %w", h.Name, err)
		}
		for _, r := range rs {
			if r.Gateway != "" {
				routes = append(routes, r)
			}
		}
	}
	var guest []GuestIface
	seed := rand.Uint32()
	for n, i := range veths {
		br, tap := fmt.Sprintf("vmbr%d", n), fmt.Sprintf("vmtap%d", n)
		if _, err := h.AddBridge(ctx, br); err != nil {
			return nil, err
		}
		if err := h.AttachToBridge(ctx, i.Name, br); err != nil {
			return nil, err
		}
		if err := h.IP(ctx, "addr", "flush", "dev", i.Name); err != nil {
			return nil, fmt.Errorf("vm: replace %s: %w", h.Name, err)
		}
		mac := net.HardwareAddr{0x52, 0x54, byte(seed >> 24), byte(seed >> 16), byte(seed >> 8), byte(n)}
		cfg.NICs = append(cfg.NICs, NIC{Tap: tap, Bridge: br, MAC: mac})
		guest = append(guest, GuestIface{Name: i.Name, MAC: mac, Addrs: i.Addrs()})
	}
	cfg.Host, cfg.Image = h, img
	if cfg.Name == "" {
		cfg.Name = h.Name
	}
	v, err := Boot(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v.Ifaces = guest
	if _, err := v.Sh(ctx, netScript(guest, routes, t)); err != nil {
		_ = v.Close()
		return nil, err
	}
	return v, nil
}

// SCTPTimers are the guest kernel's SCTP timers (net.sctp sysctls).
type SCTPTimers struct {
	RTOMinMs, RTOInitialMs, RTOMaxMs, HeartbeatMs, PathMaxRetrans int
}

// FastTimers notice a dead path within a few seconds (heartbeat 300 ms,
// path max retransmits 2), like sctppeer.FastTimers, but with RTOs of
// 200 ms..1 s instead of 100..400 ms: an emulated guest on a loaded machine
// is often slower than 400 ms to answer, which retransmitted INITs and,
// once, ended an association with ABORT.
var FastTimers = SCTPTimers{RTOMinMs: 200, RTOInitialMs: 1000, RTOMaxMs: 1000, HeartbeatMs: 300, PathMaxRetrans: 2}

// netScript configures the guest like the namespace it replaces: NICs
// found by MAC and renamed, no DAD (as the lab), rp_filter off, addresses,
// carrier awaited (an e1000 link comes up a second or two after the
// first), then routes.
func netScript(ifs []GuestIface, routes []route, t SCTPTimers) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	sys := func(k, v string) { fmt.Fprintf(&b, "echo %s > /proc/sys/%s\n", v, strings.ReplaceAll(k, ".", "/")) }
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		sys(k, "0")
	}
	// The kernel keeps rto_min <= rto_max at every write: lower min first
	// (the default max is 60 s), then max.
	if t.RTOMinMs > 0 {
		sys("net.sctp.rto_min", fmt.Sprint(t.RTOMinMs))
	}
	if t.RTOInitialMs > 0 {
		sys("net.sctp.rto_initial", fmt.Sprint(t.RTOInitialMs))
	}
	if t.RTOMaxMs > 0 {
		sys("net.sctp.rto_max", fmt.Sprint(t.RTOMaxMs))
	}
	if t.HeartbeatMs > 0 {
		sys("net.sctp.hb_interval", fmt.Sprint(t.HeartbeatMs))
	}
	if t.PathMaxRetrans > 0 {
		sys("net.sctp.path_max_retrans", fmt.Sprint(t.PathMaxRetrans))
	}
	// Rename by MAC through temporary names, so eth0/eth1 may swap.
	for n, i := range ifs {
		fmt.Fprintf(&b, "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = %s ] && ip link set dev ${d##*/} name vmtmp%d; done\n", i.MAC, n)
	}
	for n, i := range ifs {
		fmt.Fprintf(&b, "ip link set dev vmtmp%d name %s\n", n, i.Name)
		fmt.Fprintf(&b, "echo 0 > /proc/sys/net/ipv6/conf/%s/accept_dad\n", i.Name)
		fmt.Fprintf(&b, "ip link set dev %s up\n", i.Name)
		for _, a := range i.Addrs {
			fam := "-4"
			if a.Addr().Is6() {
				fam = "-6"
			}
			fmt.Fprintf(&b, "ip %s addr add %s dev %s\n", fam, a, i.Name)
		}
	}
	for _, i := range ifs {
		fmt.Fprintf(&b, "n=0; until [ \"$(cat /sys/class/net/%s/carrier 2>/dev/null)\" = 1 ]; do n=$((n+1)); [ $n -lt 600 ] || { echo no carrier on %s >&2; exit 1; }; sleep 0.1; done\n", i.Name, i.Name)
	}
	for _, r := range routes {
		fam := "-4"
		if strings.Contains(r.Gateway, ":") {
			fam = "-6"
		}
		fmt.Fprintf(&b, "ip %s route replace %s via %s dev %s\n", fam, r.Dst, r.Gateway, r.Dev)
	}
	return b.String()
}
