package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// Endpoint counters are per-CPU, so they are the one thing that must not be
// sized services x MaxEndpoints: with 16,384 services that would be a
// million per-CPU slots. Instead every configured endpoint takes one slot of
// a pool shared by all services (ep_slot_stats, LB_EP_SLOTS), recorded in
// its endpoints entry (struct endpoint.stats) where the datapath reads it.
// The endpoints map is therefore also where the assignment persists: Load
// rebuilds the pool from it, so a restart keeps every slot and its counts.
// Slot 0 is never handed out: an endpoint without a slot counts into it and
// nobody reads it.

// ErrCapacity is wrapped by errors a datapath gives when one of its tables
// is full (the daemon answers 507).
var ErrCapacity = errors.New("datapath capacity reached")

// slotPool hands out counter slots 1..len(used)-1.
type slotPool struct {
	used []bool
	free []uint16 // freed slots, reused first
	next int      // lowest slot never handed out
	n    int      // slots in use
}

func newSlotPool(size uint32) *slotPool {
	if size > 1<<16 {
		// struct endpoint.stats is 16 bits wide.
		size = 1 << 16
	}
	return &slotPool{used: make([]bool, size), next: 1}
}

// take marks a slot read back from the maps as in use; false when it cannot
// be (out of range, 0, or already taken by another endpoint).
func (p *slotPool) take(s uint16) bool {
	if s == 0 || int(s) >= len(p.used) || p.used[s] {
		return false
	}
	p.used[s] = true
	p.n++
	for int(s) >= p.next && p.next < len(p.used) && p.used[p.next] {
		p.next++
	}
	return true
}

// alloc returns a free slot.
func (p *slotPool) alloc() (uint16, bool) {
	for len(p.free) > 0 {
		s := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if !p.used[s] {
			p.used[s] = true
			p.n++
			return s, true
		}
	}
	for p.next < len(p.used) {
		s := uint16(p.next)
		p.next++
		if !p.used[s] {
			p.used[s] = true
			p.n++
			return s, true
		}
	}
	return 0, false
}

func (p *slotPool) release(s uint16) {
	if s == 0 || int(s) >= len(p.used) || !p.used[s] {
		return
	}
	p.used[s] = false
	p.n--
	p.free = append(p.free, s)
}

// EndpointSlots reports the endpoint counter slots in use and how many the
// datapath has (every endpoint of every service takes one).
func (d *Datapath) EndpointSlots() (used, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pool.n, len(d.pool.used) - 1
}

// growSlots gives endpoints len(cur)..n-1 of service id a slot each, with
// zeroed counters. On failure nothing is taken.
func (d *Datapath) growSlots(id uint32, cur []uint16, n int) ([]uint16, error) {
	out := append([]uint16(nil), cur...)
	for len(out) < n {
		s, ok := d.pool.alloc()
		if !ok {
			for _, s := range out[len(cur):] {
				d.pool.release(s)
			}
			return nil, fmt.Errorf("service %d: endpoint %d: all %d endpoint counter slots are in use: %w",
				id, len(out), len(d.pool.used)-1, ErrCapacity)
		}
		out = append(out, s)
		if err := d.zeroSlot(s); err != nil {
			for _, s := range out[len(cur):] {
				d.pool.release(s)
			}
			return nil, err
		}
	}
	return out, nil
}

func (d *Datapath) zeroSlot(s uint16) error {
	zero := make([]bpf.LbCounters, ebpf.MustPossibleCPU())
	if err := d.objs.EpSlotStats.Put(uint32(s), zero); err != nil {
		return fmt.Errorf("zero endpoint counter slot %d: %w", s, err)
	}
	return nil
}

// unslot takes the slot away from endpoint entries first..last-1 of service
// id (their connections, if any, stop being counted) and frees the slots.
// The rest of each entry is left as it is: a packet that read the service
// before it shrank may still look the entry up.
func (d *Datapath) unslot(id uint32, slots []uint16, first int) error {
	var errs []error
	for i := first; i < len(slots); i++ {
		idx := id*MaxEndpoints + uint32(i)
		var ep bpf.LbEndpoint
		if err := d.objs.Endpoints.Lookup(idx, &ep); err != nil {
			errs = append(errs, fmt.Errorf("service %d: read endpoint %d: %w", id, i, err))
			continue
		}
		if ep.Stats == slots[i] {
			ep.Stats = 0
			if err := d.objs.Endpoints.Put(idx, &ep); err != nil {
				errs = append(errs, fmt.Errorf("service %d: release endpoint %d counters: %w", id, i, err))
				continue
			}
		}
		d.pool.release(slots[i])
	}
	return errors.Join(errs...)
}

// loadSlots rebuilds the pool from the endpoints of every valid service
// (one scan of the service infos at load) and gives a slot to each endpoint
// that has none: after an upgrade from a release without slots, or an entry
// whose slot another endpoint already holds. Services are visited in ID
// order, so what is handed out does not depend on map iteration order.
func (d *Datapath) loadSlots() error {
	d.pool = newSlotPool(d.objs.EpSlotStats.MaxEntries())
	d.slots = map[uint32][]uint16{}
	infos, err := d.readInfos()
	if err != nil {
		return err
	}
	type fix struct {
		id  uint32
		i   int
		ep  bpf.LbEndpoint
		idx uint32
	}
	var fixes []fix
	for id := uint32(1); id < uint32(len(infos)); id++ {
		info := infos[id]
		if info.Flags&svcFValid == 0 || info.N_eps == 0 {
			continue
		}
		n := min(int(info.N_eps), MaxEndpoints)
		slots := make([]uint16, n)
		for i := 0; i < n; i++ {
			idx := id*MaxEndpoints + uint32(i)
			var ep bpf.LbEndpoint
			if err := d.objs.Endpoints.Lookup(idx, &ep); err != nil {
				return fmt.Errorf("service %d: read endpoint %d: %w", id, i, err)
			}
			if d.pool.take(ep.Stats) {
				slots[i] = ep.Stats
				continue
			}
			fixes = append(fixes, fix{id: id, i: i, ep: ep, idx: idx})
		}
		d.slots[id] = slots
	}
	for _, f := range fixes {
		s, ok := d.pool.alloc()
		if !ok {
			d.log.Warn("endpoint without a counter slot: all in use", "service", f.id, "endpoint", f.i)
			continue
		}
		if err := d.zeroSlot(s); err != nil {
			return err
		}
		f.ep.Stats = s
		if err := d.objs.Endpoints.Put(f.idx, &f.ep); err != nil {
			return fmt.Errorf("service %d: write endpoint %d counter slot: %w", f.id, f.i, err)
		}
		d.slots[f.id][f.i] = s
	}
	if len(fixes) > 0 {
		d.log.Info("endpoint counter slots assigned at load", "endpoints", len(fixes), "inUse", d.pool.n)
	}
	return nil
}

// readInfos reads every service info in batches (one syscall per 4096
// IDs), falling back to one lookup per ID.
func (d *Datapath) readInfos() ([]bpf.LbSvcInfo, error) {
	size := int(d.objs.SvcInfos.MaxEntries())
	out := make([]bpf.LbSvcInfo, 0, size)
	keys := make([]uint32, 4096)
	vals := make([]bpf.LbSvcInfo, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.SvcInfos.BatchLookup(&cursor, keys, vals, nil)
		out = append(out, vals[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read service infos: %w", err)
		}
	}
	out = out[:0]
	for i := 0; i < size; i++ {
		var v bpf.LbSvcInfo
		if err := d.objs.SvcInfos.Lookup(uint32(i), &v); err != nil {
			return nil, fmt.Errorf("read service info %d: %w", i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// slotOf is the counter slot of endpoint ep of service id (0: none).
func (d *Datapath) slotOf(id, ep uint32) uint16 {
	s := d.slots[id]
	if int(ep) >= len(s) {
		return 0
	}
	return s[ep]
}
