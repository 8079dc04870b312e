package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// Values shared with bpf/include/lb_types.h.
const (
	svcFValid   = 0x01
	svcFSteer   = 0x02
	ctFReply    = 0x01
	ctFDSR      = 0x02
	ctFReleased = 0x04
	ctFPath     = 0x08
	ifaV4       = 0x01
	ifaV6       = 0x02
	afInet      = 2
	afInet6     = 10
)

func addr16(a netip.Addr) [16]byte { return a.Unmap().As16() }

func familyOf(a netip.Addr) uint8 {
	if a.Unmap().Is4() {
		return afInet
	}
	return afInet6
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// checkID refuses IDs outside the per-service arrays.
func (d *Datapath) checkID(id uint32) error {
	if id == 0 || id >= d.maxServices {
		return fmt.Errorf("service id %d: must be 1..%d", id, d.maxServices-1)
	}
	return nil
}

// MaxServiceID is the highest service ID the loaded datapath accepts (its
// per-service arrays hold IDs 1..MaxServiceID).
func (d *Datapath) MaxServiceID() uint32 { return d.maxServices - 1 }

func validate(s Service) error {
	if s.ID == 0 {
		return fmt.Errorf("service id %d: must be 1..%d", s.ID, MaxServices-1)
	}
	if !s.VIP.IsValid() {
		return fmt.Errorf("service %d: vip: invalid address", s.ID)
	}
	switch s.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
	default:
		return fmt.Errorf("service %d: proto %d: want tcp, udp or sctp", s.ID, s.Proto)
	}
	if s.Mode > ModeDSR {
		return fmt.Errorf("service %d: mode %d unknown", s.ID, s.Mode)
	}
	if s.Select > SelectMaglev {
		return fmt.Errorf("service %d: select %d unknown", s.ID, s.Select)
	}
	if s.PortStart == 0 {
		return fmt.Errorf("service %d: port must be > 0", s.ID)
	}
	end := s.PortEnd
	if end == 0 {
		end = s.PortStart
	}
	if end < s.PortStart {
		return fmt.Errorf("service %d: port range %d-%d reversed", s.ID, s.PortStart, end)
	}
	if int(end)-int(s.PortStart)+1 > MaxPortRange {
		return fmt.Errorf("service %d: port range %d-%d spans more than %d ports", s.ID, s.PortStart, end, MaxPortRange)
	}
	if len(s.Endpoints) > MaxEndpoints {
		return fmt.Errorf("service %d: %d endpoints, at most %d", s.ID, len(s.Endpoints), MaxEndpoints)
	}
	if s.IdleTimeout < 0 || s.IdleTimeout.Seconds() > float64(^uint32(0)) {
		return fmt.Errorf("service %d: idle timeout %s out of range", s.ID, s.IdleTimeout)
	}
	if s.SCTPPathHoldDown < 0 || s.SCTPPathHoldDown > MaxPathHoldDown {
		return fmt.Errorf("service %d: sctp path hold-down %s out of range 0..%s", s.ID, s.SCTPPathHoldDown, MaxPathHoldDown)
	}
	if s.SCTPPathFailover && s.Proto != ProtoSCTP {
		return fmt.Errorf("service %d: sctp path failover needs proto sctp", s.ID)
	}
	fam := familyOf(s.VIP)
	if len(s.SecondaryVIPs) > MaxSecondaryVIPs {
		return fmt.Errorf("service %d: %d secondary VIPs, at most %d", s.ID, len(s.SecondaryVIPs), MaxSecondaryVIPs)
	}
	seen := map[netip.Addr]bool{s.VIP.Unmap(): true}
	for i, v := range s.SecondaryVIPs {
		switch {
		case !v.IsValid():
			return fmt.Errorf("service %d: secondary vip %d: invalid address", s.ID, i)
		case familyOf(v) != fam:
			return fmt.Errorf("service %d: secondary vip %s is not the VIP's family", s.ID, v)
		case seen[v.Unmap()]:
			return fmt.Errorf("service %d: secondary vip %s repeats another VIP of the service", s.ID, v)
		}
		seen[v.Unmap()] = true
	}
	if len(s.SecondaryVIPs) > 0 && s.Proto == ProtoSCTP && (s.Mode == ModeOneArm || s.Mode == ModeDSR) {
		return fmt.Errorf("service %d: SCTP multi-homing (secondary VIPs) needs mode default or fullnat", s.ID)
	}
	for i, e := range s.Endpoints {
		if !e.Addr.IsValid() {
			return fmt.Errorf("service %d: endpoints[%d]: invalid address", s.ID, i)
		}
		// NAT64 (IPv6 VIP, IPv4 endpoint) is translated by the datapath;
		// the reverse has no address to give the IPv6 endpoint.
		if ef := familyOf(e.Addr); ef != fam {
			if fam != afInet6 {
				return fmt.Errorf("service %d: endpoints[%d]: address %s is IPv6 but the VIP is IPv4", s.ID, i, e.Addr)
			}
			if s.Mode == ModeDSR {
				return fmt.Errorf("service %d: endpoints[%d]: dsr cannot translate IPv6 to IPv4 (%s)", s.ID, i, e.Addr)
			}
		}
		if s.Mode == ModeDSR && e.Port != 0 && e.Port != s.PortStart {
			return fmt.Errorf("service %d: endpoints[%d]: dsr cannot translate ports", s.ID, i)
		}
	}
	return nil
}

// selectionTable spreads the up endpoints over the slots in proportion to
// their weights, interleaved (smooth weighted round robin) so that walking
// the table in order is a weighted round robin.
func selectionTable(eps []Endpoint) bpf.LbSelTable {
	var t bpf.LbSelTable
	type cand struct {
		idx    int
		w, cur int
	}
	var cs []cand
	total := 0
	for i, e := range eps {
		if e.Down {
			continue
		}
		w := int(e.Weight)
		if w == 0 {
			w = 1
		}
		cs = append(cs, cand{idx: i, w: w})
		total += w
	}
	if len(cs) == 0 {
		return t
	}
	t.N_up = uint32(len(cs))
	for s := range t.Slot {
		best := 0
		for i := range cs {
			cs[i].cur += cs[i].w
			if cs[i].cur > cs[best].cur {
				best = i
			}
		}
		cs[best].cur -= total
		t.Slot[s] = uint8(cs[best].idx)
	}
	return t
}

func serviceKeys(s Service) []bpf.LbSvcKey {
	end := s.PortEnd
	if end == 0 {
		end = s.PortStart
	}
	vips := append([]netip.Addr{s.VIP}, s.SecondaryVIPs...)
	keys := make([]bpf.LbSvcKey, 0, len(vips)*(int(end)-int(s.PortStart)+1))
	for _, v := range vips {
		for p := int(s.PortStart); p <= int(end); p++ {
			keys = append(keys, bpf.LbSvcKey{Vip: addr16(v), Port: htons(uint16(p)), Proto: uint8(s.Proto)})
		}
	}
	return keys
}

// UpsertService programs a service: endpoints and selection table first, then
// the service info, then the lookup keys, so a packet that finds a key always
// finds a complete service. Idempotent.
func (d *Datapath) UpsertService(s Service) error {
	if err := d.checkID(s.ID); err != nil {
		return err
	}
	if err := validate(s); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	keys := serviceKeys(s)
	want := make(map[bpf.LbSvcKey]bool, len(keys))
	for _, k := range keys {
		var id uint32
		err := d.objs.Services.Lookup(&k, &id)
		if err == nil && id != s.ID {
			return fmt.Errorf("service %d: %s port %d proto %d already belongs to service %d",
				s.ID, netip.AddrFrom16(k.Vip).Unmap(), htons(k.Port), s.Proto, id)
		}
		want[k] = true
	}
	if err := d.maglevRoom(s); err != nil {
		return err
	}
	// validate has checked the secondary VIPs.
	fam := familyOf(s.VIP)
	oldSlots := d.slots[s.ID]
	slots, err := d.growSlots(s.ID, oldSlots[:min(len(oldSlots), len(s.Endpoints))], len(s.Endpoints))
	if err != nil {
		return err
	}
	// Slots taken here are given back if the service cannot be written.
	grown := slots[min(len(oldSlots), len(slots)):]
	undo := func() {
		for _, sl := range grown {
			d.pool.release(sl)
		}
	}
	for i, e := range s.Endpoints {
		w := e.Weight
		if w == 0 {
			w = 1
		}
		ep := bpf.LbEndpoint{Addr: addr16(e.Addr), Port: htons(e.Port), Weight: w, Family: familyOf(e.Addr), Stats: slots[i]}
		if e.Down {
			ep.Down = 1
		}
		if err := d.objs.Endpoints.Put(s.ID*MaxEndpoints+uint32(i), &ep); err != nil {
			undo()
			return fmt.Errorf("service %d: write endpoint %d: %w", s.ID, i, err)
		}
	}
	// From here on the endpoints hold their slots: a failure below leaves
	// them assigned (the service is re-applied or deleted, both settle it).
	d.slots[s.ID] = slots
	sel := selectionTable(s.Endpoints)
	if err := d.objs.SelTables.Put(s.ID, &sel); err != nil {
		return fmt.Errorf("service %d: write selection table: %w", s.ID, err)
	}
	info := bpf.LbSvcInfo{
		IdleTimeout: uint32(s.IdleTimeout.Seconds()),
		N_eps:       uint16(len(s.Endpoints)),
		Mode:        uint8(s.Mode),
		Sel:         uint8(s.Select),
		Family:      fam,
		Flags:       svcFValid,
	}
	if s.SCTPPathFailover {
		info.Flags |= svcFSteer
		info.SteerHoldMs = uint16(s.SCTPPathHoldDown.Milliseconds())
	}
	var vl bpf.LbSvcVips
	for i, v := range append([]netip.Addr{s.VIP}, s.SecondaryVIPs...) {
		vl.Vip[i] = addr16(v)
		vl.N++
	}
	if err := d.objs.SvcVipList.Put(s.ID, &vl); err != nil {
		return fmt.Errorf("service %d: write vip list: %w", s.ID, err)
	}
	if err := d.writeMaglev(s); err != nil {
		return err
	}
	if err := d.objs.SvcInfos.Put(s.ID, &info); err != nil {
		return fmt.Errorf("service %d: write info: %w", s.ID, err)
	}
	if s.Select != SelectMaglev {
		if err := d.dropMaglev(s.ID); err != nil {
			return err
		}
	}
	// Before the keys: a packet that finds the service must not be a miss.
	if err := d.filterAdd(serviceAddrs(s)...); err != nil {
		return fmt.Errorf("service %d: %w", s.ID, err)
	}
	// VIPs first: a packet that finds a key must be known as ours.
	for _, k := range keys {
		if err := d.refVIP(k.Vip, +1); err != nil {
			return fmt.Errorf("service %d: %w", s.ID, err)
		}
	}
	ids := make([]uint32, len(keys))
	for i := range ids {
		ids[i] = s.ID
	}
	if _, err := d.objs.Services.BatchUpdate(keys, ids, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			d.unrefKeys(keys)
			return fmt.Errorf("service %d: write keys: %w", s.ID, err)
		}
		for i := range keys {
			if err := d.objs.Services.Put(&keys[i], s.ID); err != nil {
				d.unrefKeys(keys)
				return fmt.Errorf("service %d: write key: %w", s.ID, err)
			}
		}
	}
	// Keys of an earlier version of this service (VIP or ports changed).
	old := d.keysByID[s.ID]
	var stale []bpf.LbSvcKey
	for _, k := range old {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	d.keysByID[s.ID] = keys
	d.unrefKeys(old)
	if err := d.deleteKeys(stale); err != nil {
		return err
	}
	// Endpoints the service no longer has give their counter slots back,
	// now that n_eps keeps new flows off them.
	if len(oldSlots) > len(slots) {
		if err := d.unslot(s.ID, oldSlots, len(slots)); err != nil {
			return err
		}
	}
	return nil
}

// loadIndex builds keysByID and vipRefs from the pinned services map (one
// scan at load) and makes the vips map agree with it.
func (d *Datapath) loadIndex() error {
	d.keysByID = map[uint32][]bpf.LbSvcKey{}
	d.vipRefs = map[bpf.LbAddr16]int{}
	var (
		k  bpf.LbSvcKey
		id uint32
	)
	it := d.objs.Services.Iterate()
	for it.Next(&k, &id) {
		d.keysByID[id] = append(d.keysByID[id], k)
		d.vipRefs[bpf.LbAddr16{A: k.Vip}]++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate services: %w", err)
	}
	return d.syncVIPs()
}

// refVIP counts one more (or one fewer) service key on a VIP, writing the
// vips map when the VIP appears or disappears.
func (d *Datapath) refVIP(vip [16]byte, delta int) error {
	a := bpf.LbAddr16{A: vip}
	before := d.vipRefs[a]
	after := before + delta
	if after <= 0 {
		delete(d.vipRefs, a)
		if before > 0 {
			if err := d.objs.Vips.Delete(&a); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete vip: %w", err)
			}
		}
		return nil
	}
	d.vipRefs[a] = after
	if before == 0 {
		if err := d.objs.Vips.Put(&a, uint32(1)); err != nil {
			return fmt.Errorf("write vip: %w", err)
		}
	}
	return nil
}

func (d *Datapath) unrefKeys(keys []bpf.LbSvcKey) {
	for _, k := range keys {
		if err := d.refVIP(k.Vip, -1); err != nil {
			d.log.Error("release vip", "err", err)
		}
	}
}

func (d *Datapath) deleteKeys(keys []bpf.LbSvcKey) error {
	for i := range keys {
		if err := d.objs.Services.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service key: %w", err)
		}
	}
	return nil
}

// syncVIPs makes the vips map the set of addresses some service key uses
// (it tells the datapath which malformed packets and echo requests are ours).
func (d *Datapath) syncVIPs() error {
	var (
		a    bpf.LbAddr16
		v    uint32
		dels []bpf.LbAddr16
	)
	vit := d.objs.Vips.Iterate()
	for vit.Next(&a, &v) {
		if d.vipRefs[a] == 0 {
			dels = append(dels, a)
		}
	}
	if err := vit.Err(); err != nil {
		return fmt.Errorf("iterate vips: %w", err)
	}
	for i := range dels {
		if err := d.objs.Vips.Delete(&dels[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete vip: %w", err)
		}
	}
	for a := range d.vipRefs {
		if err := d.objs.Vips.Put(&a, uint32(1)); err != nil {
			return fmt.Errorf("write vip: %w", err)
		}
	}
	return nil
}

// DeleteService removes the service's keys, info and connections, and
// zeroes its counters so that the next service given this ID starts from
// nothing.
func (d *Datapath) DeleteService(id uint32) error {
	if err := d.checkID(id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := d.keysByID[id]
	if err := d.deleteKeys(keys); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	delete(d.keysByID, id)
	d.unrefKeys(keys)
	if err := d.objs.SvcInfos.Put(id, &bpf.LbSvcInfo{}); err != nil {
		return fmt.Errorf("delete service %d: clear info: %w", id, err)
	}
	if err := d.objs.SelTables.Put(id, &bpf.LbSelTable{}); err != nil {
		return fmt.Errorf("delete service %d: clear selection: %w", id, err)
	}
	if err := d.objs.SvcVipList.Put(id, &bpf.LbSvcVips{}); err != nil {
		return fmt.Errorf("delete service %d: clear vip list: %w", id, err)
	}
	if err := d.dropMaglev(id); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	if err := d.deleteConns(func(v *bpf.LbCtVal) bool { return v.Svc == id }); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	if err := d.resetCounters(id); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	if err := d.unslot(id, d.slots[id], 0); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	delete(d.slots, id)
	return nil
}
