package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// Drop reasons; the drops map is indexed by enum drop_reason (bpf/include/lb_types.h, generated into package bpf).
const (
	DropMalformed  DropReason = "malformed"
	DropNoEndpoint DropReason = "no_endpoint"
	DropCTFull     DropReason = "conntrack_full"
	DropSNATPorts  DropReason = "snat_ports_exhausted"
	DropNoIfAddr   DropReason = "no_interface_address"
	DropRewrite    DropReason = "rewrite_failed"
	// DropSCTPParams: an INIT/INIT-ACK whose parameters are malformed or too
	// many to rewrite without risking an address leak.
	DropSCTPParams DropReason = "sctp_init_params"
	// DropSCTPASCONF: an ASCONF or ASCONF-ACK chunk (RFC 5061), which the LB
	// keeps peers from negotiating and would otherwise carry untranslated
	// addresses across.
	DropSCTPASCONF DropReason = "sctp_asconf"
	// DropNAT64TooBig: an IPv4 packet of a NAT64 flow that no longer fits
	// the IPv6 path once translated; its sender got ICMP fragmentation
	// needed with the MTU that fits.
	DropNAT64TooBig DropReason = "nat64_too_big"
)

var dropReasons = []DropReason{
	bpf.DropMalformed: DropMalformed, bpf.DropNoEndpoint: DropNoEndpoint, bpf.DropCtFull: DropCTFull,
	bpf.DropSnatPorts: DropSNATPorts, bpf.DropNoIfaddr: DropNoIfAddr, bpf.DropRewrite: DropRewrite,
	bpf.DropSctpParams: DropSCTPParams, bpf.DropSctpAsconf: DropSCTPASCONF, bpf.DropNat64TooBig: DropNAT64TooBig,
}

func sumCounters(per []bpf.LbCounters) (p, b, s uint64) {
	for _, c := range per {
		p += c.Packets
		b += c.Bytes
		s += c.Sessions
	}
	return
}

// sumPerCPU is the sum over CPUs of the per-CPU u64 counter key of m.
func sumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(key, &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// ServiceStats returns the counters of service id and its first nEndpoints
// endpoints, summed over CPUs.
func (d *Datapath) ServiceStats(id uint32, nEndpoints int) (ServiceStats, error) {
	if err := d.checkID(id); err != nil {
		return ServiceStats{}, err
	}
	if nEndpoints < 0 || nEndpoints > MaxEndpoints {
		return ServiceStats{}, fmt.Errorf("service %d: %d endpoints, at most %d", id, nEndpoints, MaxEndpoints)
	}
	d.mu.Lock()
	slots := d.slots[id]
	d.mu.Unlock()
	var per []bpf.LbCounters
	if err := d.objs.SvcStats.Lookup(id, &per); err != nil {
		return ServiceStats{}, fmt.Errorf("service %d stats: %w", id, err)
	}
	var st ServiceStats
	st.Packets, st.Bytes, st.Sessions = sumCounters(per)
	var err error
	if st.PathSteerings, err = sumPerCPU(d.objs.SteerStats, id); err != nil {
		return ServiceStats{}, fmt.Errorf("service %d path steerings: %w", id, err)
	}
	if st.SlowPathPackets, err = sumPerCPU(d.objs.SlowStats, id); err != nil {
		return ServiceStats{}, fmt.Errorf("service %d slow path packets: %w", id, err)
	}
	st.Endpoints = make([]EndpointStats, nEndpoints)
	for i := range st.Endpoints {
		idx := id*MaxEndpoints + uint32(i)
		e := &st.Endpoints[i]
		if i < len(slots) {
			if err := d.objs.EpSlotStats.Lookup(uint32(slots[i]), &per); err != nil {
				return ServiceStats{}, fmt.Errorf("service %d endpoint %d stats: %w", id, i, err)
			}
			e.Packets, e.Bytes, e.Sessions = sumCounters(per)
		}
		var act uint32
		if err := d.objs.EpActive.Lookup(idx, &act); err != nil {
			return ServiceStats{}, fmt.Errorf("service %d endpoint %d active: %w", id, i, err)
		}
		e.Active = uint64(act)
		st.Active += e.Active
	}
	return st, nil
}

// DropStats returns the datapath's drop counters by reason.
func (d *Datapath) DropStats() (map[DropReason]uint64, error) {
	out := make(map[DropReason]uint64, len(dropReasons))
	for i, r := range dropReasons {
		n, err := sumPerCPU(d.objs.Drops, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("drop stats %s: %w", r, err)
		}
		out[r] = n
	}
	return out, nil
}

// resetCounters zeroes the per-CPU counters, round-robin position,
// active counts and client affinities of one service ID: an ID freed by a
// deletion must not hand its history to the next service given it. The
// endpoint counters go with their slots (zeroed when handed out again).
func (d *Datapath) resetCounters(id uint32) error {
	zero := make([]bpf.LbCounters, ebpf.MustPossibleCPU())
	if err := d.objs.SvcStats.Put(id, zero); err != nil {
		return fmt.Errorf("reset service counters: %w", err)
	}
	for i := uint32(0); i < MaxEndpoints; i++ {
		idx := id*MaxEndpoints + i
		if err := d.objs.EpActive.Put(idx, uint32(0)); err != nil {
			return fmt.Errorf("reset endpoint %d active count: %w", i, err)
		}
	}
	if err := d.objs.SteerStats.Put(id, make([]uint64, ebpf.MustPossibleCPU())); err != nil {
		return fmt.Errorf("reset path steerings: %w", err)
	}
	if err := d.objs.SlowStats.Put(id, make([]uint64, ebpf.MustPossibleCPU())); err != nil {
		return fmt.Errorf("reset slow path packets: %w", err)
	}
	if err := d.objs.RrCtr.Put(id, uint32(0)); err != nil {
		return fmt.Errorf("reset round robin position: %w", err)
	}
	var (
		k    bpf.LbAffKey
		v    bpf.LbAffVal
		dels []bpf.LbAffKey
	)
	it := d.objs.Affinity.Iterate()
	for it.Next(&k, &v) {
		if k.Svc == id {
			dels = append(dels, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate affinity: %w", err)
	}
	for i := range dels {
		if err := d.objs.Affinity.Delete(&dels[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete affinity: %w", err)
		}
	}
	return nil
}
