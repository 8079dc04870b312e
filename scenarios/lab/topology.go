package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
)

// Config describes the default L4 topology:
//
//	client ==(Links veths)== [router ==(Links veths)==] lb ==(Links veths)== switch (one bridge per link) == be1..beN
//
// Addressing for link i (0-based; i=0 is the only link by default), with
// n = 1+10*i, so link 0 uses 10.77.1.x/10.77.2.x and link 1 10.77.11.x/10.77.12.x:
//
//	client side   10.77.n.0/24     fd77:n::/64      client .2 (eth<i>); lb .1 (eth<2i>), or router .1 (eth<2i>) with Router
//	router-lb     10.77.(n+2).0/24 fd77:(n+2)::/64  router .1 (eth<2i+1>), lb .2 (eth<2i>)          (only with Router)
//	backend side  10.77.(n+1).0/24 fd77:(n+1)::/64  lb .1 (eth<2i+1>), beK .(10+K) (eth<i>), bridge br<i> in the switch
//	VIP range     VIPRange(i, v4/v6): 10.77.(100+10*i).0/24, fd77:(100+10*i)::/64, routed from the client towards the lb
//
// (IPv6 groups use the same digits, read as hex: link 1's client subnet is
// fd77:11::/64.) The client's default routes go over link 0; the other links
// carry routes to their own backend subnet and VIP range, so traffic between
// link-i addresses stays on link i. Backends' default routes point to the
// lb over link 0, with routes back to the client subnets of the other links.
// The lb and router forward IPv4 and IPv6; rp_filter is off everywhere,
// because usrsctp (and DSR) send from addresses of other links.
type Config struct {
	// Backends is the number of backend hosts be1..beN (0..80). Zero means 2;
	// use NoBackends for none.
	Backends   int
	NoBackends bool
	// Links is the number of parallel links per side, 1..3 (0 means 1), for
	// SCTP multi-homing.
	Links int
	// Router puts a router namespace between client and lb.
	Router bool
	// DSR prepares backends for direct server return: the VIPs (DSRVIPs, or
	// 10.77.100.1 and fd77:100::1) on the backends' link-0 interface, ARP
	// requests for them dropped, arp_ignore=1 and arp_announce=2.
	DSR     bool
	DSRVIPs []netip.Addr
	// KeepOffload leaves veth checksum/segmentation offloads on. By default
	// they are off so captures anywhere show final checksums.
	KeepOffload bool
	// Logger defaults to slog.Default() (New: the test log).
	Logger *slog.Logger
}

// MaxLinks is the largest Config.Links.
const MaxLinks = 3

// VIPRange returns the VIP prefix routed to the lb over link i.
func VIPRange(link int, v6 bool) netip.Prefix {
	if v6 {
		return netip.MustParsePrefix(fmt.Sprintf("fd77:%d::/64", 100+10*link))
	}
	return netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/24", 100+10*link))
}

// VIP returns address host of VIPRange(link, v6): VIP(0, 1, false) is 10.77.100.1.
func VIP(link, host int, v6 bool) netip.Addr {
	p := VIPRange(link, v6)
	a := p.Addr().As16()
	if v6 {
		a[14], a[15] = byte(host>>8), byte(host)
		return netip.AddrFrom16(a)
	}
	b := p.Addr().As4()
	b[3] = byte(host)
	return netip.AddrFrom4(b)
}

// subnet returns the 10.77.<third>.0/24 or fd77:<third>::/64 prefix and its
// address host.
func subnetAddr(third, host int, v6 bool) netip.Prefix {
	if v6 {
		return netip.MustParsePrefix(fmt.Sprintf("fd77:%d::%d/64", third, host))
	}
	return netip.MustParsePrefix(fmt.Sprintf("10.77.%d.%d/24", third, host))
}

func (c *Config) normalize() error {
	if c.Links == 0 {
		c.Links = 1
	}
	if c.Links < 1 || c.Links > MaxLinks {
		return fmt.Errorf("lab: Links=%d: want 1..%d", c.Links, MaxLinks)
	}
	if c.NoBackends {
		c.Backends = 0
	} else if c.Backends == 0 {
		c.Backends = 2
	}
	if c.Backends < 0 || c.Backends > 80 {
		return fmt.Errorf("lab: Backends=%d: want 0..80", c.Backends)
	}
	if c.DSR && len(c.DSRVIPs) == 0 {
		c.DSRVIPs = []netip.Addr{VIP(0, 1, false), VIP(0, 1, true)}
	}
	for _, v := range c.DSRVIPs {
		if !v.IsValid() {
			return fmt.Errorf("lab: invalid DSR VIP")
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Build creates the default topology described by cfg. On error everything
// created so far is removed. The caller must Close the lab.
func Build(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if !cfg.KeepOffload {
		if _, err := exec.LookPath("ethtool"); err != nil {
			return nil, fmt.Errorf("lab: ethtool is needed to disable offloads (or set KeepOffload): %w", err)
		}
	}
	l, err := Empty(ctx, cfg.Logger)
	if err != nil {
		return nil, err
	}
	l.Links = cfg.Links
	if err := l.buildDefault(ctx, cfg); err != nil {
		if cerr := l.Close(); cerr != nil {
			l.log.Error("lab: cleanup after failed build", "err", cerr)
		}
		return nil, err
	}
	l.log.Info("lab: built", "links", cfg.Links, "backends", cfg.Backends, "router", cfg.Router, "dsr", cfg.DSR)
	return l, nil
}

func (l *Lab) buildDefault(ctx context.Context, cfg Config) error {
	var err error
	if l.Client, err = l.AddHost(ctx, "client"); err != nil {
		return err
	}
	if cfg.Router {
		if l.Router, err = l.AddHost(ctx, "router"); err != nil {
			return err
		}
	}
	if l.LB, err = l.AddHost(ctx, "lb"); err != nil {
		return err
	}
	if cfg.Backends > 0 {
		if l.Switch, err = l.AddHost(ctx, "switch"); err != nil {
			return err
		}
	}
	for k := 1; k <= cfg.Backends; k++ {
		be, err := l.AddHost(ctx, fmt.Sprintf("be%d", k))
		if err != nil {
			return err
		}
		l.Backends = append(l.Backends, be)
	}

	// Sysctls before interfaces exist, so "default" applies to every new one.
	for _, h := range l.Hosts() {
		kv := [][2]string{
			{"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf.default.rp_filter", "0"},
			{"net.ipv6.conf.all.accept_dad", "0"},
			{"net.ipv6.conf.default.accept_dad", "0"},
		}
		if h == l.LB || h == l.Router {
			kv = append(kv, [2]string{"net.ipv4.ip_forward", "1"}, [2]string{"net.ipv6.conf.all.forwarding", "1"})
		}
		if cfg.DSR && h != l.Client && h != l.LB && h != l.Router && h != l.Switch {
			kv = append(kv,
				[2]string{"net.ipv4.conf.all.arp_ignore", "1"}, [2]string{"net.ipv4.conf.default.arp_ignore", "1"},
				[2]string{"net.ipv4.conf.all.arp_announce", "2"}, [2]string{"net.ipv4.conf.default.arp_announce", "2"})
		}
		for _, s := range kv {
			if err := h.Sysctl(s[0], s[1]); err != nil {
				return err
			}
		}
	}

	for i := 0; i < cfg.Links; i++ {
		if err := l.buildLink(ctx, cfg, i); err != nil {
			return err
		}
	}

	if !cfg.KeepOffload {
		for _, h := range l.Hosts() {
			for _, ifc := range h.Ifaces() {
				if ifc.Peer == nil {
					continue // bridges
				}
				if err := h.DisableOffload(ctx, ifc.Name); err != nil {
					return err
				}
			}
		}
	}
	if cfg.DSR {
		for k, be := range l.Backends {
			if err := l.prepareDSR(ctx, be, l.BackendIface(k, 0).Name, cfg.DSRVIPs); err != nil {
				return err
			}
		}
	}
	return nil
}

// prepareDSR puts the VIPs on the backend's link-0 interface, not on lo:
// usrsctp never uses addresses on lo toward other hosts, so an SCTP server
// could not bind a VIP there. The backend must still never answer ARP for
// a VIP (the lb owns it), which arp_ignore cannot express for an address on
// the incoming interface, so an nftables arp rule drops those requests.
// IPv6 VIPs are added without DAD; nothing on the segment solicits them.
func (l *Lab) prepareDSR(ctx context.Context, be *Host, ifname string, vips []netip.Addr) error {
	var v4 []string
	for _, v := range vips {
		if v.Is6() {
			// Deprecated (preferred_lft 0), so source address selection
			// never picks the VIP for the backend's other traffic: a /128
			// VIP would otherwise win the longest-prefix rule toward
			// fullnat sources from the same VIP range.
			if err := be.IP(ctx, "addr", "add", netip.PrefixFrom(v, 128).String(), "dev", ifname, "nodad", "preferred_lft", "0"); err != nil {
				return fmt.Errorf("lab: %s: DSR VIP %s: %w", be.Name, v, err)
			}
			continue
		}
		if err := be.AddAddr(ctx, ifname, netip.PrefixFrom(v, v.BitLen())); err != nil {
			return err
		}
		v4 = append(v4, v.String())
	}
	if len(v4) == 0 {
		return nil
	}
	rules := fmt.Sprintf(`table arp tlb_dsr {
	chain in {
		type filter hook input priority 0; policy accept;
		arp operation request arp daddr ip { %s } drop
	}
}
`, strings.Join(v4, ", "))
	cmd := be.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: %s: nft arp rule for DSR VIPs: %w: %s", be.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// buildLink wires link i on every side and its routes.
func (l *Lab) buildLink(ctx context.Context, cfg Config, i int) error {
	n := 1 + 10*i
	cIf := fmt.Sprintf("eth%d", i)
	lbClientIf, lbBackendIf := fmt.Sprintf("eth%d", 2*i), fmt.Sprintf("eth%d", 2*i+1)

	gw := l.LB // the client's next hop host
	if cfg.Router {
		gw = l.Router
	}
	if _, _, err := l.Connect(ctx, l.Client, cIf, gw, lbClientIf); err != nil {
		return err
	}
	for _, v6 := range []bool{false, true} {
		if err := l.Client.AddAddr(ctx, cIf, subnetAddr(n, 2, v6)); err != nil {
			return err
		}
		if err := gw.AddAddr(ctx, lbClientIf, subnetAddr(n, 1, v6)); err != nil {
			return err
		}
	}
	if cfg.Router {
		if _, _, err := l.Connect(ctx, l.Router, lbBackendIf, l.LB, lbClientIf); err != nil {
			return err
		}
		for _, v6 := range []bool{false, true} {
			if err := l.Router.AddAddr(ctx, lbBackendIf, subnetAddr(n+2, 1, v6)); err != nil {
				return err
			}
			if err := l.LB.AddAddr(ctx, lbClientIf, subnetAddr(n+2, 2, v6)); err != nil {
				return err
			}
		}
	}

	if cfg.Backends > 0 {
		br := fmt.Sprintf("br%d", i)
		if _, err := l.Switch.AddBridge(ctx, br); err != nil {
			return err
		}
		swLB := fmt.Sprintf("lb%d", i)
		if _, _, err := l.Connect(ctx, l.LB, lbBackendIf, l.Switch, swLB); err != nil {
			return err
		}
		if err := l.Switch.AttachToBridge(ctx, swLB, br); err != nil {
			return err
		}
		for _, v6 := range []bool{false, true} {
			if err := l.LB.AddAddr(ctx, lbBackendIf, subnetAddr(n+1, 1, v6)); err != nil {
				return err
			}
		}
		for k, be := range l.Backends {
			swPort := fmt.Sprintf("b%dl%d", k+1, i)
			if _, _, err := l.Connect(ctx, be, cIf, l.Switch, swPort); err != nil {
				return err
			}
			if err := l.Switch.AttachToBridge(ctx, swPort, br); err != nil {
				return err
			}
			for _, v6 := range []bool{false, true} {
				if err := be.AddAddr(ctx, cIf, subnetAddr(n+1, 11+k, v6)); err != nil {
					return err
				}
			}
		}
	}

	// Routes.
	for _, v6 := range []bool{false, true} {
		gwAddr := subnetAddr(n, 1, v6).Addr()
		if i == 0 {
			if err := l.Client.AddRoute(ctx, netip.Prefix{}, gwAddr); err != nil {
				return err
			}
		}
		clientRoutes := []netip.Prefix{VIPRange(i, v6)}
		if cfg.Backends > 0 && i > 0 {
			clientRoutes = append(clientRoutes, subnetAddr(n+1, 0, v6).Masked())
		}
		if cfg.Router && i > 0 {
			clientRoutes = append(clientRoutes, subnetAddr(n+2, 0, v6).Masked())
		}
		for _, p := range clientRoutes {
			if err := l.Client.AddRoute(ctx, p, gwAddr); err != nil {
				return err
			}
		}
		if cfg.Router {
			lbAddr := subnetAddr(n+2, 2, v6).Addr()
			routes := []netip.Prefix{VIPRange(i, v6)}
			if cfg.Backends > 0 {
				routes = append(routes, subnetAddr(n+1, 0, v6).Masked())
			}
			for _, p := range routes {
				if err := l.Router.AddRoute(ctx, p, lbAddr); err != nil {
					return err
				}
			}
			if err := l.LB.AddRoute(ctx, subnetAddr(n, 0, v6).Masked(), subnetAddr(n+2, 1, v6).Addr()); err != nil {
				return err
			}
		}
		lbOnSegment := subnetAddr(n+1, 1, v6).Addr()
		for _, be := range l.Backends {
			if i == 0 {
				if err := be.AddRoute(ctx, netip.Prefix{}, lbOnSegment); err != nil {
					return err
				}
				continue
			}
			routes := []netip.Prefix{subnetAddr(n, 0, v6).Masked()}
			if cfg.Router {
				routes = append(routes, subnetAddr(n+2, 0, v6).Masked())
			}
			for _, p := range routes {
				if err := be.AddRoute(ctx, p, lbOnSegment); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ClientIface returns the client's interface of link i.
func (l *Lab) ClientIface(i int) *Iface { return l.Client.Iface(fmt.Sprintf("eth%d", i)) }

// LBClientIface returns the lb's client-side interface of link i.
func (l *Lab) LBClientIface(i int) *Iface { return l.LB.Iface(fmt.Sprintf("eth%d", 2*i)) }

// LBBackendIface returns the lb's backend-side interface of link i.
func (l *Lab) LBBackendIface(i int) *Iface { return l.LB.Iface(fmt.Sprintf("eth%d", 2*i+1)) }

// BackendIface returns backend k's (0-based) interface of link i.
func (l *Lab) BackendIface(k, i int) *Iface { return l.Backends[k].Iface(fmt.Sprintf("eth%d", i)) }

// RouterClientIface returns the router's client-side interface of link i
// (nil without a router).
func (l *Lab) RouterClientIface(i int) *Iface {
	if l.Router == nil {
		return nil
	}
	return l.Router.Iface(fmt.Sprintf("eth%d", 2*i))
}
