package dataplane

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	modeTCX    = "tcx"
	modeClsact = "clsact"
	// Fixed handle/priority so a restarted daemon replaces its own filter
	// atomically instead of adding a second one.
	filterHandle = 0x1
	filterPrio   = 1
	filterName   = "telcolb"
)

type attachment struct {
	mode    string
	ifindex int
	link    link.Link // tcx only
	xdp     link.Link // xdp_ingress, when attached in an XDP mode (attach_xdp.go)
}

// Attach runs the datapath on ingress of ifname. Re-attaching (after a
// restart) swaps the program in place: tcx via link update of the pinned
// link, clsact via filter replace; no packet bypasses the datapath.
func (d *Datapath) Attach(ifname string) error {
	nl, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	idx := nl.Attrs().Index
	// Held until the interface is registered as attached, so an address
	// change racing this Attach is applied by the watcher after it.
	d.addrMu.Lock()
	defer d.addrMu.Unlock()
	if err := d.writeIfAddrs(listerOf(&netlink.Handle{}), ifname, idx); err != nil {
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// The XDP link, if any, stays this interface's (attach_xdp.go).
	var xdp link.Link
	if a, ok := d.attached[ifname]; ok {
		xdp = a.xdp
	}
	if a, ok := d.attached[ifname]; ok && a.link != nil {
		if err := a.link.Update(d.objs.TcIngress); err != nil {
			return fmt.Errorf("attach %s: update tcx link: %w", ifname, err)
		}
		return nil
	}
	if !d.cfg.ForceClsact {
		l, err := d.attachTCX(ifname, idx)
		if err == nil {
			d.attached[ifname] = &attachment{mode: modeTCX, ifindex: idx, link: l, xdp: xdp}
			d.log.Info("attached datapath", "interface", ifname, "mode", modeTCX)
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach %s: %w", ifname, err)
		}
		d.log.Info("tcx unsupported, falling back to clsact", "interface", ifname)
	}
	if err := d.attachClsact(idx); err != nil {
		return fmt.Errorf("attach %s: %w", ifname, err)
	}
	d.attached[ifname] = &attachment{mode: modeClsact, ifindex: idx, xdp: xdp}
	d.log.Info("attached datapath", "interface", ifname, "mode", modeClsact)
	return nil
}

func (d *Datapath) linkPin(ifname string) string {
	return filepath.Join(d.cfg.PinPath, "links", ifname)
}

func (d *Datapath) attachTCX(ifname string, idx int) (link.Link, error) {
	pin := d.linkPin(ifname)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		// Only a link still attached to this very interface may be updated in
		// place; an interface re-created under the same name leaves a defunct
		// link behind, which is dropped.
		if info, err := l.Info(); err == nil && info.TCX() != nil && int(info.TCX().Ifindex) == idx {
			if err := l.Update(d.objs.TcIngress); err == nil {
				return l, nil
			}
		}
		d.log.Warn("dropping stale tcx link pin", "interface", ifname, "pin", pin)
		_ = l.Unpin()
		_ = l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: idx,
		Program:   d.objs.TcIngress,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return nil, fmt.Errorf("tcx attach: %w", err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin tcx link: %w", err)
	}
	return l, nil
}

func clsactFilter(idx, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    filterHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPrio,
		},
		Fd:           fd,
		Name:         filterName,
		DirectAction: true,
	}
}

func (d *Datapath) attachClsact(idx int) error {
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: idx,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	if err := netlink.FilterReplace(clsactFilter(idx, d.objs.TcIngress.FD())); err != nil {
		return fmt.Errorf("replace clsact filter: %w", err)
	}
	return nil
}

// Detach removes the datapath from ifname (whichever way it was attached,
// also by an earlier process).
func (d *Datapath) Detach(ifname string) error {
	d.addrMu.Lock()
	defer d.addrMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.attached[ifname]
	delete(d.attached, ifname)
	var errs []error
	errs = append(errs, d.detachXDPLocked(ifname, a))
	if a != nil && a.link != nil {
		errs = append(errs, a.link.Unpin(), a.link.Close())
	} else if l, err := link.LoadPinnedLink(d.linkPin(ifname), nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	}
	nl, err := netlink.LinkByName(ifname)
	if err == nil {
		idx := uint32(nl.Attrs().Index)
		if a == nil || a.mode == modeClsact {
			f := clsactFilter(int(idx), 0)
			if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && a != nil {
				errs = append(errs, fmt.Errorf("delete clsact filter: %w", err))
			}
		}
		if err := d.objs.IfAddrs.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete if_addrs: %w", err))
		}
		if err := d.objs.XdpIfaces.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete xdp_ifaces: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach %s: %w", ifname, err)
	}
	return nil
}

// Interfaces lists the interfaces this process attached to.
func (d *Datapath) Interfaces() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.attached))
	for n := range d.attached {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// AttachMode reports "tcx" or "clsact": the mode of the attachments, or the
// one the next Attach will try first when nothing is attached yet.
func (d *Datapath) AttachMode() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.attached {
		return a.mode
	}
	if d.cfg.ForceClsact {
		return modeClsact
	}
	return modeTCX
}
