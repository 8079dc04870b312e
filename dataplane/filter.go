package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// The address filter (struct filter_bits in bpf/include/lb_types.h): a TCP or
// UDP packet neither of whose addresses is in it is passed by the datapath
// before any parsing. The daemon owns one bitmap (filterDaemon): VIPs and
// endpoint addresses, set before a service's keys are written so no packet
// of a new service is taken for a miss. The datapath owns the other.
const (
	filterBits     = 65536 // LB_FILTER_BITS
	filterDatapath = 0     // LB_FILTER_DATAPATH
	filterDaemon   = 1     // LB_FILTER_DAEMON
)

// filterBit is lib/filter.h's filter_bit(filter_fold16(a)) for a 16-byte
// (IPv4 v4-mapped) address: the words are loaded little-endian, as the BPF
// program reads them.
func filterBit(a [16]byte) uint32 {
	x := binary.LittleEndian.Uint32(a[0:]) ^ binary.LittleEndian.Uint32(a[4:]) ^
		binary.LittleEndian.Uint32(a[8:]) ^ binary.LittleEndian.Uint32(a[12:])
	return (x ^ x>>16) & (filterBits - 1)
}

func filterHas(f *bpf.LbFilterBits, a [16]byte) bool {
	b := filterBit(a)
	return f.W[b/64]>>(b%64)&1 == 1
}

// filterAdd sets the daemon bitmap's bits of addrs. Callers hold d.mu: the
// read-modify-write is safe because the daemon is the bitmap's only writer.
// The bitmap is read once and kept: reading its 8 KiB for every service
// programmed was a tenth of a 10,000-service restart.
func (d *Datapath) filterAdd(addrs ...[16]byte) error {
	if d.daemonFilter == nil {
		var f bpf.LbFilterBits
		if err := d.objs.AddrFilter.Lookup(uint32(filterDaemon), &f); err != nil {
			return fmt.Errorf("read address filter: %w", err)
		}
		d.daemonFilter = &f
	}
	f := *d.daemonFilter
	changed := false
	for _, a := range addrs {
		b := filterBit(a)
		if f.W[b/64]>>(b%64)&1 == 0 {
			f.W[b/64] |= 1 << (b % 64)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := d.objs.AddrFilter.Put(uint32(filterDaemon), &f); err != nil {
		return fmt.Errorf("write address filter: %w", err)
	}
	*d.daemonFilter = f
	return nil
}

// serviceAddrs are the addresses a service's packets carry: its VIPs (the
// client's packets) and its endpoints (their replies).
func serviceAddrs(s Service) [][16]byte {
	out := make([][16]byte, 0, 1+len(s.SecondaryVIPs)+len(s.Endpoints))
	for _, v := range append([]netip.Addr{s.VIP}, s.SecondaryVIPs...) {
		out = append(out, addr16(v))
	}
	for _, e := range s.Endpoints {
		out = append(out, addr16(e.Addr))
	}
	return out
}

// fillFilterFromConntrack covers connections made before the filter existed
// (an upgrade keeps the pinned conntrack but creates the filter empty): when
// both bitmaps are empty, both addresses of every conntrack key go into the
// daemon's. Entries an old program adds afterwards, until the new one is
// attached, belong to configured services, whose addresses UpsertService
// adds when the daemon re-applies its rules.
func (d *Datapath) fillFilterFromConntrack() error {
	for _, i := range []uint32{filterDatapath, filterDaemon} {
		var f bpf.LbFilterBits
		if err := d.objs.AddrFilter.Lookup(i, &f); err != nil {
			return fmt.Errorf("read address filter: %w", err)
		}
		for _, w := range f.W {
			if w != 0 {
				return nil
			}
		}
	}
	var addrs [][16]byte
	err := d.ct().each(func(k bpf.LbCtKey, _ *bpf.LbCtVal) { addrs = append(addrs, k.Src, k.Dst) })
	// An aborted walk (entries changing under it) still yields most keys;
	// the rest belong to configured services (see above).
	if err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return err
	}
	if len(addrs) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.filterAdd(addrs...)
}
