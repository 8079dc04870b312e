package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/telcolb/telcolb/bpf"
)

// Hook says how the datapath runs on an interface. TC (tc_ingress) is
// attached in every mode: it does everything. The XDP modes add xdp_ingress
// in front of it, which carries established flows only (bpf/lib/xdp_fast.h)
// and passes every other frame on to TC.
type Hook string

const (
	// HookTC attaches tc_ingress alone.
	HookTC Hook = "tc"
	// HookXDP adds xdp_ingress in the driver (native XDP); attaching fails
	// when the driver has no XDP support.
	HookXDP Hook = "xdp"
	// HookXDPGeneric adds xdp_ingress in generic (skb) mode, on any
	// driver: only when asked, it saves little over TC.
	HookXDPGeneric Hook = "xdp-generic"
	// HookAuto is HookXDP where the driver supports it, HookTC otherwise
	// and on veth and tun/tap (localSenderLink); logged per interface.
	HookAuto Hook = "auto"
)

// ParseHook checks a hook name.
func ParseHook(s string) (Hook, error) {
	switch h := Hook(s); h {
	case HookTC, HookXDP, HookXDPGeneric, HookAuto:
		return h, nil
	}
	return "", fmt.Errorf("unknown attach mode %q: use tc, xdp, xdp-generic or auto", s)
}

// ParseHooks reads a per-interface hook list: comma-separated entries,
// each a hook (the default for every interface) or ifname=hook, e.g.
// "xdp", "auto,eth2=tc" or "eth0=xdp,eth1=tc". What names no interface
// takes HookTC. The result maps "" to the default and each named
// interface to its hook.
func ParseHooks(s string) (map[string]Hook, error) {
	out := map[string]Hook{"": HookTC}
	seenDefault := false
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, hook, named := strings.Cut(e, "=")
		if !named {
			name, hook = "", e
			if seenDefault {
				return nil, fmt.Errorf("%q: two defaults", s)
			}
			seenDefault = true
		} else if name == "" {
			return nil, fmt.Errorf("%q: empty interface name", e)
		} else if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%q: interface %s named twice", s, name)
		}
		h, err := ParseHook(hook)
		if err != nil {
			return nil, err
		}
		out[name] = h
	}
	return out, nil
}

func (d *Datapath) xdpLinkPin(ifname string) string {
	return filepath.Join(d.cfg.PinPath, "links", "xdp", ifname)
}

// AttachHook attaches the datapath to ifname as hook says: TC always (see
// Attach), then xdp_ingress for the XDP modes. A restart swaps the pinned
// XDP link's program in place; going back to HookTC removes it.
func (d *Datapath) AttachHook(ifname string, hook Hook) error {
	if _, err := ParseHook(string(hook)); err != nil {
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	if err := d.Attach(ifname); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.attached[ifname]
	if hook == HookTC {
		return d.detachXDPLocked(ifname, a)
	}
	if hook == HookAuto {
		if kind, virtual := localSenderLink(a.ifindex); virtual {
			d.log.Info("auto attach: TC only on a virtual interface", "interface", ifname, "type", kind,
				"why", "its local senders' offloaded checksums are invisible to XDP; --attach=xdp forces it")
			return d.detachXDPLocked(ifname, a)
		}
	}
	if a.xdp != nil {
		// Its pin keeps it attached; attachXDP updates it through the pin.
		_ = a.xdp.Close()
		a.xdp = nil
	}
	flags := link.XDPDriverMode
	if hook == HookXDPGeneric {
		flags = link.XDPGenericMode
	}
	l, err := d.attachXDP(ifname, a.ifindex, flags)
	if err != nil {
		if hook == HookAuto {
			d.log.Info("native XDP unavailable, TC only", "interface", ifname, "err", err)
			return d.detachXDPLocked(ifname, a)
		}
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	a.xdp = l
	mode := string(HookXDP)
	if hook == HookXDPGeneric {
		mode = string(HookXDPGeneric)
	}
	d.log.Info("attached XDP fast path", "interface", ifname, "mode", mode)
	return nil
}

// localSenderLink says whether ifindex is a veth or tun/tap: drivers with
// native XDP whose frames come from a local stack (a container, a VM) and
// may carry only the pseudo-header checksum (CHECKSUM_PARTIAL), which XDP
// cannot see and would rewrite as a complete one (docs/architecture.md,
// "XDP mode"). auto keeps them on TC; a NIC's frames come off the wire
// with complete checksums.
func localSenderLink(ifindex int) (string, bool) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", false
	}
	switch t := l.Type(); t {
	case "veth", "tuntap":
		return t, true
	}
	return "", false
}

// attachXDP attaches (or updates in place) xdp_ingress on ifindex idx and
// registers the interface in xdp_ifaces, after the program runs there:
// from then on other interfaces' xdp_ingress may redirect frames to it.
func (d *Datapath) attachXDP(ifname string, idx int, flags link.XDPAttachFlags) (link.Link, error) {
	nl, err := net.InterfaceByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("xdp: %w", err)
	}
	var v bpf.LbXdpIface
	if len(nl.HardwareAddr) != len(v.Mac) {
		return nil, fmt.Errorf("xdp: %s has no Ethernet address", ifname)
	}
	copy(v.Mac[:], nl.HardwareAddr)
	pin := d.xdpLinkPin(ifname)
	var l link.Link
	if old, err := link.LoadPinnedLink(pin, nil); err == nil {
		if info, err := old.Info(); err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == idx &&
			old.Update(d.objs.XdpIngress) == nil {
			l = old
		} else {
			d.log.Warn("dropping stale xdp link pin", "interface", ifname, "pin", pin)
			_ = old.Unpin()
			_ = old.Close()
		}
	}
	if l == nil {
		if l, err = link.AttachXDP(link.XDPOptions{Program: d.objs.XdpIngress, Interface: idx, Flags: flags}); err != nil {
			return nil, fmt.Errorf("xdp attach: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(pin), 0o755); err != nil {
			l.Close()
			return nil, fmt.Errorf("xdp link pin directory: %w", err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, fmt.Errorf("pin xdp link: %w", err)
		}
	}
	if err := d.objs.XdpIfaces.Put(uint32(idx), &v); err != nil {
		_ = l.Unpin()
		l.Close()
		return nil, fmt.Errorf("write xdp_ifaces: %w", err)
	}
	return l, nil
}

// detachXDPLocked removes ifname's XDP link (this process's or a pinned
// one) and its xdp_ifaces entry: first the entry, so no other interface
// redirects to it once its program is gone.
func (d *Datapath) detachXDPLocked(ifname string, a *attachment) error {
	var errs []error
	if a != nil {
		if err := d.objs.XdpIfaces.Delete(uint32(a.ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete xdp_ifaces: %w", err))
		}
	}
	if a != nil && a.xdp != nil {
		errs = append(errs, a.xdp.Unpin(), a.xdp.Close())
		a.xdp = nil
	} else if l, err := link.LoadPinnedLink(d.xdpLinkPin(ifname), nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach xdp %s: %w", ifname, err)
	}
	return nil
}

// XDPInterfaces lists the interfaces this process attached xdp_ingress to.
func (d *Datapath) XDPInterfaces() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for n, a := range d.attached {
		if a.xdp != nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// XDPStats is what xdp_ingress carried itself, summed over CPUs: packets
// and bytes of established flows that never reached TC.
func (d *Datapath) XDPStats() (packets, bytes uint64, err error) {
	var per []bpf.LbCounters
	if err := d.objs.XdpStats.Lookup(uint32(0), &per); err != nil {
		return 0, 0, fmt.Errorf("read xdp_stats: %w", err)
	}
	for _, c := range per {
		packets += c.Packets
		bytes += c.Bytes
	}
	return packets, bytes, nil
}
