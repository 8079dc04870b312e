package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/bpf"
)

// The if_addrs map holds, per attached interface, the address the datapath
// uses as the onearm SNAT source of traffic leaving through it. Attach
// writes it; the address watcher (watchAddresses, run by Run) rewrites it
// whenever an address of an attached interface is added or removed, so an
// address change takes effect without a re-attach or a program reload.
//
// The address filter needs no update: onearm replies carry the endpoint's
// address as source, which is in the daemon bitmap (serviceAddrs), and
// adding the node's own addresses would send every packet for the node
// through the full path.

const (
	addrResubscribeMin = 100 * time.Millisecond
	addrResubscribeMax = 5 * time.Second
)

// addrSubscriber opens an address subscription (netlink.AddrSubscribeWithOptions
// in production; tests wrap it to break the socket).
type addrSubscriber func(ch chan<- netlink.AddrUpdate, done <-chan struct{}, opts netlink.AddrSubscribeOptions) error

// addrLister lists the addresses of the interface with index idx.
type addrLister func(idx int) ([]netlink.Addr, error)

func listerOf(h *netlink.Handle) addrLister {
	return func(idx int) ([]netlink.Addr, error) {
		return h.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}, netlink.FAMILY_ALL)
	}
}

// ifAddrsOf picks the interface's first global (or private) IPv4 and IPv6
// address, in the kernel's order (the primary IPv4 address first). An IPv6
// address whose duplicate address detection failed is never usable, so it
// is skipped; a tentative one is taken (the datapath translates replies
// before the stack sees them), and its DAD outcome arrives as a change.
func ifAddrsOf(addrs []netlink.Addr) bpf.LbIfaddrVal {
	var v bpf.LbIfaddrVal
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.IsGlobalUnicast() && !ip.IsPrivate() || a.Flags&unix.IFA_F_DADFAILED != 0 {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && v.Flags&ifaV4 == 0 {
			v.V4 = ip.As4()
			v.Flags |= ifaV4
		} else if ip.Is6() && v.Flags&ifaV6 == 0 {
			v.V6 = ip.As16()
			v.Flags |= ifaV6
		}
	}
	return v
}

func describeIfAddrs(v bpf.LbIfaddrVal) (v4, v6 string) {
	v4, v6 = "none", "none"
	if v.Flags&ifaV4 != 0 {
		v4 = netip.AddrFrom4(v.V4).String()
	}
	if v.Flags&ifaV6 != 0 {
		v6 = netip.AddrFrom16(v.V6).String()
	}
	return v4, v6
}

// writeIfAddrs records the addresses of interface idx (named ifname) in
// if_addrs, logging when they differ from what the datapath used so far.
// Callers hold d.addrMu, so a watcher event and an Attach never write an
// older listing over a newer one.
func (d *Datapath) writeIfAddrs(list addrLister, ifname string, idx int) error {
	addrs, err := list(idx)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	v := ifAddrsOf(addrs)
	var old bpf.LbIfaddrVal
	err = d.objs.IfAddrs.Lookup(uint32(idx), &old)
	switch {
	case err == nil && old == v:
		return nil
	case err != nil && !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("read if_addrs: %w", err)
	}
	if err := d.objs.IfAddrs.Put(uint32(idx), &v); err != nil {
		return fmt.Errorf("write if_addrs: %w", err)
	}
	if err == nil { // an entry existed: an address changed
		o4, o6 := describeIfAddrs(old)
		n4, n6 := describeIfAddrs(v)
		d.log.Info("interface addresses changed; datapath updated", "interface", ifname, "ifindex", idx,
			"oldIPv4", o4, "ipv4", n4, "oldIPv6", o6, "ipv6", n6)
	}
	return nil
}

// attachedIndex returns the name of the attached interface with index idx.
func (d *Datapath) attachedIndex(idx int) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, a := range d.attached {
		if a.ifindex == idx {
			return name, true
		}
	}
	return "", false
}

// refreshIfAddrs rewrites the entry of interface idx if it is attached.
func (d *Datapath) refreshIfAddrs(list addrLister, idx int) {
	d.addrMu.Lock()
	defer d.addrMu.Unlock()
	name, ok := d.attachedIndex(idx)
	if !ok {
		return
	}
	if err := d.writeIfAddrs(list, name, idx); err != nil {
		d.log.Warn("update interface addresses", "interface", name, "ifindex", idx, "error", err)
	}
}

// refreshAllIfAddrs rewrites the entries of every attached interface: after
// a (re)subscription, changes made while no socket listened (an address
// removed leaves nothing for ListExisting to report) are caught up.
func (d *Datapath) refreshAllIfAddrs(list addrLister) {
	d.mu.Lock()
	idxs := make([]int, 0, len(d.attached))
	for _, a := range d.attached {
		idxs = append(idxs, a.ifindex)
	}
	d.mu.Unlock()
	for _, idx := range idxs {
		d.refreshIfAddrs(list, idx)
	}
}

// watchAddresses follows address changes of the attached interfaces until
// ctx ends. The subscription is opened in the network namespace the
// datapath was loaded in; when its socket fails (an overrun drops events,
// ENOBUFS), it is opened again after a backoff and every attached interface
// is re-read.
func (d *Datapath) watchAddresses(ctx context.Context) error {
	// A copy of the namespace handle: Close may close the datapath's own
	// while this goroutine winds down.
	d.mu.Lock()
	fd, err := unix.Dup(int(d.netns))
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("address watch: duplicate namespace handle: %w", err)
	}
	ns := netns.NsHandle(fd)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("address watch: netlink handle: %w", err)
	}
	defer h.Close()
	list := listerOf(h)
	backoff := addrResubscribeMin
	for {
		ch := make(chan netlink.AddrUpdate, 64)
		done := make(chan struct{})
		err := d.subscribe(ch, done, netlink.AddrSubscribeOptions{
			Namespace:    &ns,
			ListExisting: true,
			// Room for a burst (thousands of local VIPs added at start);
			// an overrun still only costs a resubscription.
			ReceiveBufferSize: 1 << 20,
			ErrorCallback: func(err error) {
				if ctx.Err() == nil {
					d.log.Warn("address subscription", "error", err)
				}
			},
		})
		if err != nil {
			close(done)
			d.log.Warn("subscribe to address changes; retrying", "error", err, "retryIn", backoff)
		} else {
			start := time.Now()
			d.refreshAllIfAddrs(list)
			if d.followAddrs(ctx, ch, list) {
				close(done)
				for range ch { // the receiver exits once its socket is closed
				}
				return nil
			}
			close(done)
			if time.Since(start) > 10*addrResubscribeMax {
				backoff = addrResubscribeMin
			}
			d.log.Warn("address subscription closed; resubscribing", "retryIn", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, addrResubscribeMax)
	}
}

// followAddrs applies updates until ctx ends (true) or the subscription
// closes its channel (false).
func (d *Datapath) followAddrs(ctx context.Context, ch <-chan netlink.AddrUpdate, list addrLister) bool {
	for {
		select {
		case <-ctx.Done():
			return true
		case u, ok := <-ch:
			if !ok {
				return false
			}
			// The listing, not the update, decides: the kernel's order picks
			// the address (a removed primary promotes a secondary).
			d.refreshIfAddrs(list, u.LinkIndex)
		}
	}
}

// currentNetns is the network namespace of the calling thread: the one the
// datapath's interfaces live in.
func currentNetns() (netns.NsHandle, error) {
	ns, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("open network namespace: %w", err)
	}
	return ns, nil
}
