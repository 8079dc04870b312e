package dataplane

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// Names of enum ct_state (bpf/include/lb_types.h, generated into package bpf).
var stateNames = map[uint8]string{
	bpf.CtStateNone: "NONE", bpf.CtStateTcpSynSent: "SYN_SENT", bpf.CtStateTcpSynRecv: "SYN_RECV",
	bpf.CtStateTcpEstablished: "ESTABLISHED", bpf.CtStateTcpFinWait: "FIN_WAIT", bpf.CtStateTcpClosed: "CLOSED",
	bpf.CtStateUdpNew: "NEW", bpf.CtStateUdpEstablished: "ESTABLISHED", bpf.CtStateSctpInit: "INIT",
	bpf.CtStateSctpCookieWait: "COOKIE_WAIT", bpf.CtStateSctpEstablished: "ESTABLISHED",
	bpf.CtStateSctpShutdown: "SHUTDOWN", bpf.CtStateSctpClosed: "CLOSED",
}

// ntohl converts a tag the datapath stored in wire order.
func ntohl(v uint32) uint32 { return bits.ReverseBytes32(v) }

func (d *Datapath) snapshot() (map[bpf.LbCtKey]bpf.LbCtVal, error) {
	out := d.snapshotMap()
	if err := d.fillSnapshot(out); err != nil {
		return nil, err
	}
	return out, nil
}

// snapshotMap is an empty map sized for the table as the last snapshot
// found it.
func (d *Datapath) snapshotMap() map[bpf.LbCtKey]bpf.LbCtVal {
	n := d.snapHint.Load()
	return make(map[bpf.LbCtKey]bpf.LbCtVal, n+n/8)
}

// fillSnapshot puts every conntrack entry into the empty map snap and
// keeps its size as the next snapshot's hint.
func (d *Datapath) fillSnapshot(snap map[bpf.LbCtKey]bpf.LbCtVal) error {
	if err := d.ct().each(func(k bpf.LbCtKey, v *bpf.LbCtVal) { snap[k] = *v }); err != nil {
		return err
	}
	d.snapHint.Store(int64(len(snap)))
	return nil
}

func peerKey(v *bpf.LbCtVal, proto uint8) bpf.LbCtKey {
	return bpf.LbCtKey{Src: v.NatDst, Dst: v.NatSrc, Sport: v.NatDport, Dport: v.NatSport, Proto: proto}
}

func addrPort(a [16]byte, port uint16, family uint8) netip.AddrPort {
	ip := netip.AddrFrom16(a)
	// NAT64 entries are IPv6 flows whose translated side is v4-mapped IPv4.
	if family == afInet || ip.Is4In6() {
		ip = ip.Unmap()
	}
	return netip.AddrPortFrom(ip, htons(port))
}

// assocID names an SCTP association: every entry of its paths carries it.
type assocID struct {
	svc, vtag uint32
	cport     uint16
}

func assocOf(v *bpf.LbCtVal) assocID { return assocID{svc: v.Svc, vtag: v.VtagClient, cport: v.Cport} }

func isAssoc(k bpf.LbCtKey) bool { return k.Proto == uint8(ProtoSCTP) }

// pathsOf collects the secondary paths (orig entry + counters of its reply
// entry) of every multi-homed association in snap.
func pathsOf(snap map[bpf.LbCtKey]bpf.LbCtVal) map[assocID][]Path {
	out := map[assocID][]Path{}
	for k, v := range snap {
		if v.Flags&ctFPath == 0 || v.Flags&ctFReply != 0 {
			continue
		}
		p := Path{
			Client:      addrPort(k.Src, 0, v.Family).Addr(),
			VIP:         addrPort(k.Dst, 0, v.Family).Addr(),
			Backend:     addrPort(v.NatDst, 0, v.Family).Addr(),
			Source:      addrPort(v.NatSrc, 0, v.Family).Addr(),
			OrigPackets: v.Packets,
			OrigBytes:   v.Bytes,
		}
		if r, ok := snap[peerKey(&v, k.Proto)]; ok {
			p.ReplyPackets, p.ReplyBytes = r.Packets, r.Bytes
		}
		out[assocOf(&v)] = append(out[assocOf(&v)], p)
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b Path) int {
			if c := a.Client.Compare(b.Client); c != 0 {
				return c
			}
			return a.VIP.Compare(b.VIP)
		})
	}
	return out
}

// lastSeenByAssoc is the latest packet of each SCTP association over all
// its paths: traffic that moved to a secondary path keeps it alive.
func lastSeenByAssoc(snap map[bpf.LbCtKey]bpf.LbCtVal) map[assocID]uint64 {
	out := map[assocID]uint64{}
	for k, v := range snap {
		if isAssoc(k) {
			id := assocOf(&v)
			out[id] = max(out[id], v.LastSeen)
		}
	}
	return out
}

// Conntrack returns one Conn per connection, merging both directions; a
// multi-homed SCTP association is one Conn (its primary path) listing its
// other paths.
func (d *Datapath) Conntrack() ([]Conn, error) {
	snap, err := d.snapshot()
	if err != nil {
		return nil, err
	}
	now := d.now()
	paths := pathsOf(snap)
	assocLast := lastSeenByAssoc(snap)
	var out []Conn
	for k, v := range snap {
		if v.Flags&(ctFReply|ctFPath) != 0 {
			continue
		}
		c := Conn{
			Proto:        Proto(k.Proto),
			ServiceID:    v.Svc,
			Endpoint:     int(v.Ep),
			Client:       addrPort(k.Src, k.Sport, v.Family),
			VIP:          addrPort(k.Dst, k.Dport, v.Family),
			Backend:      addrPort(v.NatDst, v.NatDport, v.Family),
			Source:       addrPort(v.NatSrc, v.NatSport, v.Family),
			State:        stateNames[v.State],
			OrigPackets:  v.Packets,
			OrigBytes:    v.Bytes,
			VTagClient:   ntohl(v.VtagClient),
			VTagEndpoint: ntohl(v.VtagEp),
		}
		last := v.LastSeen
		if v.Flags&ctFDSR == 0 {
			if r, ok := snap[peerKey(&v, k.Proto)]; ok {
				c.ReplyPackets, c.ReplyBytes = r.Packets, r.Bytes
				c.VTagEndpoint = max(c.VTagEndpoint, ntohl(r.VtagEp))
				last = max(last, r.LastSeen)
			}
		}
		if isAssoc(k) {
			c.Paths = paths[assocOf(&v)]
			last = max(last, assocLast[assocOf(&v)])
			c.Steering = d.steering(k, &v, now)
		}
		if now > last {
			c.Idle = time.Duration(now - last)
		}
		if to := time.Duration(v.Timeout) * time.Second; to > c.Idle {
			c.ExpiresIn = to - c.Idle
		}
		out = append(out, c)
	}
	return out, nil
}

// steering reads the path failover state of the association whose primary
// orig entry is (k, v); nil when it has no record or was never steered.
func (d *Datapath) steering(k bpf.LbCtKey, v *bpf.LbCtVal, now uint64) *Steering {
	var a bpf.LbAssoc
	ak := bpf.LbAssocKey{Svc: v.Svc, VtagClient: v.VtagClient, Cport: k.Sport, Vport: k.Dport}
	if err := d.objs.Assocs.Lookup(&ak, &a); err != nil || a.Steers == 0 {
		return nil
	}
	idx := func(i uint8) int { return int(i) % len(a.Caddr) }
	s := &Steering{
		Count:  a.Steers,
		Active: a.SteerSince != 0,
		From:   addrPort(a.Caddr[idx(a.SteerFrom)], 0, a.Family).Addr(),
		To:     addrPort(a.Caddr[idx(a.SteerTo)], 0, a.Family).Addr(),
		VIP:    addrPort(a.Vip[idx(a.SteerVip)], 0, a.Family).Addr(),
	}
	if s.Active && now > a.SteerSince {
		s.Since = time.Duration(now - a.SteerSince)
	}
	return s
}

// deleteConns removes the connections (both directions) whose orig or reply
// entry matches, releasing their leastconn count.
func (d *Datapath) deleteConns(match func(*bpf.LbCtVal) bool) error {
	s, err := d.startSweep(d.now(), false)
	if err != nil {
		return err
	}
	for k, v := range s.snap {
		if !match(&v) {
			continue
		}
		s.delete(k)
		if v.Flags&ctFReply == 0 && v.Flags&ctFReleased == 0 {
			s.errs = append(s.errs, d.releaseActive(v.Svc, v.Ep))
		}
	}
	return s.finish()
}

// sweep is one pass that deletes conntrack entries judged from one
// snapshot, then the association records its deletions left without an
// entry (the datapath drops a record only when a new association replaces
// it): the ageing round and deleteConns. The records are judged from the
// same walk, so the table is walked once.
type sweep struct {
	d   *Datapath
	now uint64 // the caller's clock
	// cands are the association records, listed before the walk: a
	// record the datapath makes after the list is not in it, and one in
	// it has its entries in the walk (the datapath writes both in one run
	// of a program). Listed after the walk, a new association's record
	// would have no entries in it and be deleted.
	cands []bpf.LbAssocKey
	snap  map[bpf.LbCtKey]bpf.LbCtVal
	// deleted are the SCTP entries deleted: the others do not matter to
	// the records, and a round deletes thousands of them.
	deleted map[bpf.LbCtKey]bool
	// expiry: the ageing's sweep, whose deletions every node holding a
	// copy makes itself (Record.Expired); a flush's are news to them.
	expiry bool
	errs   []error
}

func (d *Datapath) startSweep(now uint64, expiry bool) (*sweep, error) {
	cands, err := d.assocKeys()
	if err != nil {
		return nil, err
	}
	snap, err := d.sweepSnapshot()
	if err != nil {
		return nil, err
	}
	return &sweep{d: d, now: now, cands: cands, snap: snap, deleted: map[bpf.LbCtKey]bool{}, expiry: expiry}, nil
}

// sweepSnapshot is snapshot into the map the last sweep used: an ageing
// round every 2 s made and grew a map of the whole table, a twentieth of
// a loaded daemon's CPU (making the map's table) and most of what an
// unsynced node allocates. The callers hold d.mu and their sweep ends
// before they unlock it, so one map serves them all; clear keeps its
// table. Once the conntrack table has shrunk to under a quarter of the
// most the map held, the map is let go after this sweep and the next one
// makes a map of the new size, so a flushed table does not keep its
// largest map for good.
func (d *Datapath) sweepSnapshot() (map[bpf.LbCtKey]bpf.LbCtVal, error) {
	if d.sweepSnap == nil {
		d.sweepSnap, d.sweepPeak = d.snapshotMap(), 0
	} else {
		clear(d.sweepSnap)
	}
	snap := d.sweepSnap
	if err := d.fillSnapshot(snap); err != nil {
		clear(snap)
		return nil, err
	}
	d.sweepPeak = max(d.sweepPeak, len(snap))
	if len(snap) < d.sweepPeak/4 {
		d.sweepSnap = nil // this sweep's still
	}
	return snap, nil
}

// delete removes entry k and queues its deletion to the change readers.
func (s *sweep) delete(k bpf.LbCtKey) {
	if err := s.d.ct().delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		s.errs = append(s.errs, fmt.Errorf("delete conntrack entry: %w", err))
		return
	}
	if isAssoc(k) {
		s.deleted[k] = true
	}
	s.note(s.d.deletedCT(k, s.now))
}

// note queues the deletion r to the change readers, marked Expired when
// the sweep is the ageing's.
func (s *sweep) note(r Record) {
	r.Expired = s.expiry
	s.d.noteDeleted(r)
}

// finish deletes the association records no entry left in the snapshot
// refers to and returns the sweep's errors.
func (s *sweep) finish() error {
	live := map[assocID]bool{}
	for k, v := range s.snap {
		if isAssoc(k) && !s.deleted[k] {
			live[assocOf(&v)] = true
		}
	}
	for i := range s.cands {
		k := &s.cands[i]
		if live[assocID{svc: k.Svc, vtag: k.VtagClient, cport: k.Cport}] {
			continue
		}
		if err := s.d.objs.Assocs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			s.errs = append(s.errs, fmt.Errorf("delete association: %w", err))
			break
		}
		s.note(s.d.deletedAssoc(*k, s.now))
	}
	return errors.Join(s.errs...)
}

// assocKeys lists the association records (see sweep.cands).
func (d *Datapath) assocKeys() ([]bpf.LbAssocKey, error) {
	var (
		k   bpf.LbAssocKey
		a   bpf.LbAssoc
		out []bpf.LbAssocKey
	)
	it := d.objs.Assocs.Iterate()
	for it.Next(&k, &a) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate associations: %w", err)
	}
	return out, nil
}

// releaseActive decrements a leastconn counter. The read-modify-write can race
// with a datapath increment; a lost update skews one counter by one until the
// service is re-created, which leastconn tolerates.
func (d *Datapath) releaseActive(svc, ep uint32) error {
	if svc >= d.maxServices || ep >= MaxEndpoints {
		return nil
	}
	idx := svc*MaxEndpoints + ep
	var n uint32
	if err := d.objs.EpActive.Lookup(idx, &n); err != nil {
		return fmt.Errorf("read active count: %w", err)
	}
	if n == 0 {
		return nil
	}
	if err := d.objs.EpActive.Put(idx, n-1); err != nil {
		return fmt.Errorf("write active count: %w", err)
	}
	return nil
}

// FlushConntrack removes every connection.
func (d *Datapath) FlushConntrack() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.deleteConns(func(*bpf.LbCtVal) bool { return true }); err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	// Connections the datapath created during the flush keep their count;
	// everything else goes back to what conntrack holds.
	return d.recomputeActiveLocked()
}

// Run expires idle connections and affinities every AgeInterval and follows
// address changes of the attached interfaces until ctx is done.
func (d *Datapath) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.AgeInterval)
	defer t.Stop()
	// Address changes of attached interfaces reach if_addrs (ifaddr.go). A
	// watcher that cannot start leaves the addresses of attach time in
	// place: logged, not fatal to forwarding.
	watched := make(chan error, 1)
	go func() { watched <- d.watchAddresses(ctx) }()
	for {
		select {
		case <-ctx.Done():
			if watched != nil {
				<-watched
			}
			return nil
		case err := <-watched:
			if err != nil {
				d.log.Error("interface address changes will not reach the datapath", "error", err)
			}
			watched = nil
		case <-t.C:
			if n, err := d.ageOnce(d.now()); err != nil {
				d.log.Warn("conntrack ageing", "err", err)
			} else if n > 0 {
				d.log.Debug("conntrack aged", "removed", n)
			}
		}
	}
}

// ageOnce removes connections idle past their state's timeout at time now
// (CLOCK_MONOTONIC ns). A connection is idle since the later of its two
// directions' last packets. Returns how many connections were removed.
func (d *Datapath) ageOnce(now uint64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// One walk of conntrack for the round: the association records are
	// judged from it too (sweep).
	sw, err := d.startSweep(now, true)
	if err != nil {
		return 0, err
	}
	snap, del := sw.snap, sw.delete
	expired := func(last uint64, timeout uint32) bool {
		return now > last && now-last > uint64(timeout)*uint64(time.Second)
	}
	removed := 0
	// An SCTP association ages as one: idle since the last packet on any of
	// its paths, with the timeout of its primary entry's state.
	assocLast := lastSeenByAssoc(snap)
	primaries := map[assocID]bool{}
	expiredAssoc := map[assocID]bool{}
	for k, v := range snap {
		if v.Flags&ctFReply != 0 {
			// Orphaned reply side (its orig was evicted by the LRU).
			ok := peerKey(&v, k.Proto)
			if _, has := snap[ok]; !has && v.Flags&ctFPath == 0 && expired(v.LastSeen, v.Timeout) {
				del(k)
			}
			continue
		}
		if v.Flags&ctFPath != 0 {
			continue
		}
		last := v.LastSeen
		pk := peerKey(&v, k.Proto)
		r, hasPeer := snap[pk]
		if v.Flags&ctFDSR == 0 && hasPeer {
			last = max(last, r.LastSeen)
		}
		if isAssoc(k) {
			primaries[assocOf(&v)] = true
			last = max(last, assocLast[assocOf(&v)])
		}
		if !expired(last, v.Timeout) {
			continue
		}
		if isAssoc(k) {
			expiredAssoc[assocOf(&v)] = true
		}
		del(k)
		if v.Flags&ctFDSR == 0 && hasPeer {
			del(pk)
		}
		if v.Flags&ctFReleased == 0 {
			sw.errs = append(sw.errs, d.releaseActive(v.Svc, v.Ep))
		}
		removed++
	}
	for k, v := range snap {
		if v.Flags&ctFPath == 0 {
			continue
		}
		id := assocOf(&v)
		// Paths go with their association; a path whose primary is gone
		// (evicted) lives out its own timeout.
		if expiredAssoc[id] || (!primaries[id] && expired(assocLast[id], v.Timeout)) {
			del(k)
		}
	}
	errs := []error{sw.finish(), d.ageAffinity(now)}
	// Entries the LRU evicted never released their count: recount.
	errs = append(errs, d.recomputeActiveLocked())
	return removed, errors.Join(errs...)
}

func (d *Datapath) ageAffinity(now uint64) error {
	var (
		k    bpf.LbAffKey
		v    bpf.LbAffVal
		dels []bpf.LbAffKey
	)
	it := d.objs.Affinity.Iterate()
	for it.Next(&k, &v) {
		var info bpf.LbSvcInfo
		to := uint64(defaultAffinity)
		if k.Svc < d.maxServices && d.objs.SvcInfos.Lookup(k.Svc, &info) == nil && info.IdleTimeout > 0 {
			to = uint64(info.IdleTimeout) * uint64(time.Second)
		}
		if now > v.LastNs && now-v.LastNs > to {
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

// defaultAffinity mirrors the datapath's persist timeout when a service has
// no idle timeout (LB_TO_PERSIST).
const defaultAffinity = 7440 * time.Second
