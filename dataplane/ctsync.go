package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/telcolb/telcolb/bpf"
)

// Conntrack state for HA peers: the datapath's change events (ring buffer
// ct_events, bpf/lib/ct_events.h) and the daemon's own deletions (ageing,
// flush) become Records; ImportConntrack writes another node's records into
// this datapath; DumpConntrack gives every record for a bulk resync.

// ErrChangesClosed is returned by ChangeReader.Read once it is closed.
var ErrChangesClosed = errors.New("conntrack change reader closed")

// ChangeReader turns conntrack changes into records, in the order they
// happened on each CPU. Its Read and Poll are for one goroutine at a time
// (each sets the ring's deadline for itself).
type ChangeReader struct {
	d  *Datapath
	rd *ringbuf.Reader

	mu sync.Mutex
	// pending are the daemon's own deletions, queued by the datapath.
	pending []Record
	// blocked: a Read waits in the ring with no deadline, and only a
	// flush of the reader (an eventfd write, a system call) wakes it for
	// a deletion. A deletion queued at any other time is taken by the
	// next read anyway: the ageing queues thousands a round, one by one,
	// and a flush for each was one system call and one wake-up of the
	// reader per deleted entry. woken: flushed since it blocked.
	blocked, woken bool
	// wakes counts the flushes (tests).
	wakes int
	// evs is the last read's events slice, for the next one, ents the
	// memory of its entry events and last its deduplication (read's own:
	// reads are not concurrent). A read on a loaded node takes tens of
	// events every few ms: allocated per read, they were a sixth of what
	// the sync allocated per flow (issue 15).
	evs  []change
	ents entrySlab
	last lastEntries
}

// ConntrackChanges starts reading the datapath's conntrack changes. Events
// arrive from the datapath only while a reader is open (the ring buffer
// holds 1 MiB of them when it is read late); the daemon's deletions are
// queued to every open reader. Close it when done.
func (d *Datapath) ConntrackChanges() (*ChangeReader, error) {
	rd, err := ringbuf.NewReader(d.objs.CtEvents)
	if err != nil {
		return nil, fmt.Errorf("open conntrack change events: %w", err)
	}
	r := &ChangeReader{d: d, rd: rd}
	d.readersMu.Lock()
	d.readers[r] = struct{}{}
	d.readersMu.Unlock()
	return r, nil
}

// Close stops the reader; a blocked Read returns ErrChangesClosed.
func (r *ChangeReader) Close() error {
	r.d.readersMu.Lock()
	delete(r.d.readers, r)
	r.d.readersMu.Unlock()
	return r.rd.Close()
}

// Read waits for at least one change and returns the records of every
// change available by then.
func (r *ChangeReader) Read() ([]Record, error) { return r.read(true) }

// Poll returns the records of the changes available now, without waiting.
func (r *ChangeReader) Poll() ([]Record, error) { return r.read(false) }

func (r *ChangeReader) read(wait bool) ([]Record, error) {
	for {
		r.mu.Lock()
		out := r.pending
		r.pending = nil
		// Set with the queue taken: a deletion queued from now on sees it
		// and wakes the wait below.
		r.blocked, r.woken = wait && len(out) == 0, false
		block := r.blocked
		r.mu.Unlock()
		if block {
			r.rd.SetDeadline(time.Time{})
		} else {
			r.rd.SetDeadline(time.Now())
		}
		// A daemon's deletion queued before this read may be older or
		// newer than an entry event of the same entry read with it (the
		// ring and the queue are not ordered with each other): such an
		// event is answered from the map, as it is now, not from its
		// values. The ageing queues its deletions one by one while it
		// runs, so this is most reads of a round on a busy node: only
		// the keys deleted are looked up.
		var gone map[string]bool
		for _, d := range out {
			if d.Kind == RecordConntrack && d.Deleted {
				if gone == nil {
					gone = make(map[string]bool, len(out))
				}
				gone[string(d.Key)] = true
			}
		}
		var (
			rec ringbuf.Record
			err error
		)
		// The events of a read are made into records before it returns:
		// their slice is the next read's (one read every few ms on a
		// loaded node, each growing a new one).
		evs := r.evs[:0]
		for {
			err = r.rd.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
				err = nil
				break
			}
			if err != nil {
				break
			}
			if block {
				// No longer waiting: what is queued now waits for the
				// next read, unflushed.
				r.mu.Lock()
				r.blocked = false
				r.mu.Unlock()
				block = false
			}
			if c, derr := decodeChangeInto(rec.RawSample, &r.ents); derr != nil {
				r.d.log.Warn("conntrack change event", "err", derr)
			} else {
				evs = append(evs, c)
			}
			// Drain what is there without waiting again.
			r.rd.SetDeadline(time.Now())
		}
		// One clock read for the read's records: every change in it was
		// made before now (a system call per read, not per change, where
		// the clock has no vDSO).
		now := r.d.now()
		var kb []byte
		last := r.last.of(evs)
		// An entry event is mostly two records (the entry and its peer).
		out = slices.Grow(out, 2*len(last))
		for i := range last {
			out = r.d.appendRecordsOfChange(out, &last[i], gone, now, &kb)
		}
		// The slab's memory is the next read's: no event of this one
		// stays referenced (last may be evs itself, or its own slice).
		clear(last)
		clear(evs)
		r.evs = evs[:0]
		r.ents.reset()
		if errors.Is(err, ringbuf.ErrClosed) {
			if len(out) > 0 {
				return out, nil
			}
			return nil, ErrChangesClosed
		}
		if err != nil {
			return out, fmt.Errorf("read conntrack change events: %w", err)
		}
		if len(out) > 0 || !wait {
			return out, nil
		}
	}
}

// noteDeleted queues the daemon's own deletions to every open reader.
func (d *Datapath) noteDeleted(recs ...Record) {
	if len(recs) == 0 {
		return
	}
	d.readersMu.Lock()
	defer d.readersMu.Unlock()
	for r := range d.readers {
		r.mu.Lock()
		r.pending = append(r.pending, recs...)
		wake := r.blocked && !r.woken
		if wake {
			r.woken = true
			r.wakes++
		}
		r.mu.Unlock()
		if wake {
			_ = r.rd.Flush() // wakes the blocked Read
		}
	}
}

// deletedIn says whether gone (encoded keys) holds k, encoding it in
// *kb: during an ageing round every event of a read is looked up, and
// encoding each key anew was an allocation per event.
func (d *Datapath) deletedIn(gone map[string]bool, k *bpf.LbCtKey, now uint64, kb *[]byte) bool {
	*kb = d.codec.ctKey.encodeInto(*kb, view(k), now)
	return gone[string(*kb)]
}

// deletedCT is the record of k's deletion. Keys carry no times: now (the
// caller's clock, read once for many deletions) changes nothing in them.
func (d *Datapath) deletedCT(k bpf.LbCtKey, now uint64) Record {
	return Record{Kind: RecordConntrack, Key: d.codec.ctKey.encode(view(&k), now), Deleted: true}
}

func (d *Datapath) deletedAssoc(k bpf.LbAssocKey, now uint64) Record {
	return Record{Kind: RecordAssoc, Key: d.codec.assocKey.encode(view(&k), now), Deleted: true}
}

// ConntrackEventsLost is how many change events the datapath dropped
// because the ring buffer was full (a peer needs a resync from a dump).
func (d *Datapath) ConntrackEventsLost() (uint64, error) {
	var per []uint64
	if err := d.objs.CtEventsLost.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read lost conntrack events: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// view is the memory of one of the datapath's generated structs: its
// binary.LittleEndian encoding, which newRecordCodec checks it is (a
// little-endian host, no padding the generated struct does not spell
// out). The reflective encoder cost more than the rest of a record's
// encoding. The result aliases v: encode copies it.
func view[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// viewable reports whether view of a T is its binary.LittleEndian encoding.
func viewable[T any]() error {
	var v T
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return errors.New("records need a little-endian host")
	}
	if n := binary.Size(&v); n != int(unsafe.Sizeof(v)) {
		return fmt.Errorf("%T: %d bytes in memory, %d encoded", v, unsafe.Sizeof(v), n)
	}
	return nil
}

// change is one event of the ring: its key (bpf.LbCtEvent) and, for an
// entry event, the entry and its peer as the datapath read them.
type change struct {
	bpf.LbCtEvent
	entry *bpf.LbCtEntryEvent
}

// decodeChangeInto reads one ring record: an entry event (struct
// ct_entry_event), its memory taken from slab, or a deletion or
// association event (struct ct_event).
func decodeChangeInto(raw []byte, slab *entrySlab) (change, error) {
	var c change
	if len(raw) < 4 {
		return c, fmt.Errorf("%d bytes, want at least 4", len(raw))
	}
	if binary.NativeEndian.Uint32(raw) == bpf.CtEvEntry {
		e := slab.next()
		if n := copy(view(e), raw); n < len(view(e)) {
			return c, fmt.Errorf("entry event of %d bytes, want %d", n, len(view(e)))
		}
		c.Kind, c.Key, c.entry = e.Kind, e.Key, e
		return c, nil
	}
	if n := copy(view(&c.LbCtEvent), raw); n < len(view(&c.LbCtEvent)) {
		return c, fmt.Errorf("%d bytes, want %d", n, len(view(&c.LbCtEvent)))
	}
	return c, nil
}

// lastEntryEvents returns evs without every entry event whose key
// comes again later in evs, keeping the order of the rest: a new flow's
// entry and its reply's state change (which names the same entry) nearly
// always arrive together, and each would be two records. The last one
// has the entry's latest state (the datapath reads it after taking the
// event's place in the ring). Keeping the last one keeps an entry made
// again after its deletion after that deletion; association and deletion
// events are all kept (an association's record must come before its
// paths' entries).
func lastEntryEvents(evs []change) []change {
	var l lastEntries
	return l.of(evs)
}

// lastEntries is lastEntryEvents with its memory kept from one call to
// the next: what of returns is valid until the next call.
type lastEntries struct {
	later map[bpf.LbCtKey]struct{}
	keep  []bool
	out   []change
}

func (l *lastEntries) of(evs []change) []change {
	if len(evs) < 2 {
		return evs
	}
	if l.later == nil {
		l.later = make(map[bpf.LbCtKey]struct{}, len(evs))
	}
	clear(l.later)
	l.keep = slices.Grow(l.keep[:0], len(evs))[:len(evs)]
	n := 0
	for i := len(evs) - 1; i >= 0; i-- {
		l.keep[i] = false
		if evs[i].Kind == bpf.CtEvEntry {
			if _, dup := l.later[evs[i].Key]; dup {
				continue
			}
			l.later[evs[i].Key] = struct{}{}
		}
		l.keep[i] = true
		n++
	}
	if n == len(evs) {
		return evs
	}
	out := l.out[:0]
	for i, ev := range evs {
		if l.keep[i] {
			out = append(out, ev)
		}
	}
	l.out = out
	return out
}

// entrySlab holds the entry events of one read, reused by the next: an
// entry event is 344 bytes, and a read takes tens of them.
type entrySlab struct {
	chunks [][]bpf.LbCtEntryEvent
	n      int
}

const (
	slabChunk = 64
	// slabKeep: chunks kept past a reset; a read that took more (a
	// burst after a stall) gives the rest back to the collector.
	slabKeep = 16
)

// next is the memory of one more entry event.
func (s *entrySlab) next() *bpf.LbCtEntryEvent {
	c := s.n / slabChunk
	if c == len(s.chunks) {
		s.chunks = append(s.chunks, make([]bpf.LbCtEntryEvent, slabChunk))
	}
	e := &s.chunks[c][s.n%slabChunk]
	s.n++
	return e
}

// reset makes the slab's memory free for the next read's events.
func (s *entrySlab) reset() {
	s.n = 0
	if len(s.chunks) > slabKeep {
		clear(s.chunks[slabKeep:])
		s.chunks = s.chunks[:slabKeep]
	}
}

// appendRecordsOfChange appends an event's records to out: an entry
// event's from the values it carries (no map lookup), unless the daemon
// deleted its entry or the entry's peer in the same read (gone: their
// encoded keys), when the map says what is left.
func (d *Datapath) appendRecordsOfChange(out []Record, c *change, gone map[string]bool, now uint64, kb *[]byte) []Record {
	e := c.entry
	if e == nil {
		return append(out, d.recordsOfEvent(&c.LbCtEvent, now)...)
	}
	if gone != nil && (d.deletedIn(gone, &e.Key, now, kb) || (e.Found&bpf.CtEvfPeer != 0 && d.deletedIn(gone, &e.PeerKey, now, kb))) {
		return append(out, d.recordsOfEvent(&c.LbCtEvent, now)...)
	}
	if e.Found&bpf.CtEvfEntry == 0 {
		return append(out, d.deletedCT(e.Key, now))
	}
	out = append(out, d.ctRecord(&e.Key, &e.Val, now))
	if e.Found&bpf.CtEvfPeer != 0 {
		out = append(out, d.ctRecord(&e.PeerKey, &e.PeerVal, now))
	}
	return out
}

// recordsOfEvent reads the current state an event names: the entry and its
// peer, or the association and every entry of its paths; what is gone by
// now is sent as deleted.
func (d *Datapath) recordsOfEvent(ev *bpf.LbCtEvent, now uint64) []Record {
	switch ev.Kind {
	case bpf.CtEvEntry:
		var v bpf.LbCtVal
		if err := d.ct().lookup(&ev.Key, &v); err != nil {
			return []Record{d.deletedCT(ev.Key, now)}
		}
		out := []Record{d.ctRecord(&ev.Key, &v, now)}
		if v.Flags&ctFDSR == 0 {
			pk := peerKey(&v, ev.Key.Proto)
			var pv bpf.LbCtVal
			if d.ct().lookup(&pk, &pv) == nil {
				out = append(out, d.ctRecord(&pk, &pv, now))
			}
		}
		return out
	case bpf.CtEvDeleted:
		return []Record{d.deletedCT(ev.Key, now)}
	case bpf.CtEvAssoc:
		var a bpf.LbAssoc
		if err := d.objs.Assocs.Lookup(&ev.Assoc, &a); err != nil {
			return []Record{d.deletedAssoc(ev.Assoc, now)}
		}
		out := []Record{d.assocRecord(&ev.Assoc, &a, now)}
		return append(out, d.pathRecords(&ev.Assoc, &a, now)...)
	}
	d.log.Warn("conntrack change event of unknown kind", "kind", ev.Kind)
	return nil
}

// pathRecords are the entries of every path of an association (the
// primary's too), both directions where they exist.
func (d *Datapath) pathRecords(ak *bpf.LbAssocKey, a *bpf.LbAssoc, now uint64) []Record {
	var out []Record
	for i := 0; i < int(a.Nc) && i < len(a.Caddr); i++ {
		for j := 0; j < int(a.Ne) && j < len(a.Vip); j++ {
			k := bpf.LbCtKey{Src: a.Caddr[i], Dst: a.Vip[j], Sport: ak.Cport, Dport: ak.Vport, Proto: uint8(ProtoSCTP)}
			var v bpf.LbCtVal
			if d.ct().lookup(&k, &v) != nil {
				continue
			}
			out = append(out, d.ctRecord(&k, &v, now))
			pk := peerKey(&v, k.Proto)
			var pv bpf.LbCtVal
			if d.ct().lookup(&pk, &pv) == nil {
				out = append(out, d.ctRecord(&pk, &pv, now))
			}
		}
	}
	return out
}

func (d *Datapath) ctRecord(k *bpf.LbCtKey, v *bpf.LbCtVal, now uint64) Record {
	return d.codec.record(RecordConntrack, &d.codec.ctKey, &d.codec.ctVal, view(k), view(v), now)
}

func (d *Datapath) assocRecord(k *bpf.LbAssocKey, a *bpf.LbAssoc, now uint64) Record {
	return d.codec.record(RecordAssoc, &d.codec.assocKey, &d.codec.assoc, view(k), view(a), now)
}

// DumpConntrack returns a record of every conntrack entry and association:
// a peer's bulk resync. Associations come first, so a peer applying the
// records in order has each record before its paths' entries.
func (d *Datapath) DumpConntrack() ([]Record, error) {
	now := d.now()
	var out []Record
	// Straight from the walk: a map of the table first (snapshot) cost
	// as much as the encoding, every refresh.
	err := d.walkRecords("dump", func(kind uint16, kl, vl *layout, key, val []byte) {
		out = append(out, d.codec.record(kind, kl, vl, key, val, now))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ScanConntrack walks what DumpConntrack dumps, in its order, and returns
// the records of the entries keep chose, encoded as DumpConntrack encodes
// them, and the walk's mark. keep is given each entry's kind, its encoded
// key (valid during the call only) and how long its flow has been idle at
// the walk's start (known false: the entry keeps no time). It is the HA
// refresh's walk: on a loaded node almost every entry is idle since it was
// last sent, and encoding its value only to skip it cost as much as the
// walk itself.
//
// since, an earlier walk's mark (0: none), leaves out unoffered and
// unencoded every entry whose flow was last seen before that walk began:
// that walk was offered it as it is now. A refresh after one that judged
// the whole table looks only at what moved since, not at the rest of a
// loaded node's table.
func (d *Datapath) ScanConntrack(since ScanMark, keep func(kind uint16, key []byte, idle time.Duration, known bool) bool) ([]Record, ScanMark, error) {
	now := d.now()
	maxIdle := time.Duration(-1)
	if since != 0 {
		maxIdle = time.Duration(now-min(now, uint64(since))) + d.scanSlack()
	}
	var (
		out []Record
		kb  []byte
	)
	err := d.walkRecords("scan", func(kind uint16, kl, vl *layout, key, val []byte) {
		idle, known := vl.idleOf(val, now)
		if known && maxIdle >= 0 && idle > maxIdle {
			return
		}
		kb = kl.encodeInto(kb, key, now)
		if keep(kind, kb, idle, known) {
			out = append(out, d.codec.record(kind, kl, vl, key, val, now))
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return out, ScanMark(now), nil
}

// A ScanMark is when a ScanConntrack walk began, on the datapath's clock.
type ScanMark uint64

// scanSlack is how much earlier than a walk's start a packet it did not
// see may have stamped its entry: the datapath's clock reads the start of
// the current tick (lb_now), so a packet just after the walk began may
// carry a time up to a tick before it; plus the calibration's spread.
// Without a calibration (the coarse helper) the coarsest tick, HZ=100's.
func (d *Datapath) scanSlack() time.Duration {
	tick := time.Duration(d.clock.TickNs)
	if tick == 0 {
		tick = 10 * time.Millisecond
	}
	return tick + clockAgree
}

// walkRecords calls visit with every association, then every conntrack
// entry, as raw key and value with their record layouts: the walk of
// DumpConntrack and ScanConntrack (op names it in errors).
func (d *Datapath) walkRecords(op string, visit func(kind uint16, kl, vl *layout, key, val []byte)) error {
	var (
		ak bpf.LbAssocKey
		a  bpf.LbAssoc
	)
	it := d.objs.Assocs.Iterate()
	for it.Next(&ak, &a) {
		visit(RecordAssoc, &d.codec.assocKey, &d.codec.assoc, view(&ak), view(&a))
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("%s associations: %w", op, err)
	}
	err := d.ct().each(func(k bpf.LbCtKey, v *bpf.LbCtVal) {
		visit(RecordConntrack, &d.codec.ctKey, &d.codec.ctVal, view(&k), view(v))
	})
	if err != nil {
		return fmt.Errorf("%s conntrack: %w", op, err)
	}
	return nil
}

// ImportError names the records ImportConntrack refused and why; every
// other record was applied.
type ImportError struct {
	Refused []RefusedRecord
}

// RefusedRecord is one record ImportConntrack could not apply.
type RefusedRecord struct {
	Index int
	Kind  uint16
	Err   error
}

func (e *ImportError) Error() string {
	if len(e.Refused) == 0 {
		return "no record refused"
	}
	r := e.Refused[0]
	return fmt.Sprintf("%d conntrack record(s) refused, first #%d (kind %d): %v", len(e.Refused), r.Index, r.Kind, r.Err)
}

// ImportConntrack applies another node's records (same services, same IDs)
// in order: the next packet of an imported flow is handled here as it was
// there (same endpoint, same SNAT address and port, same SCTP tags and
// paths), and an imported reply entry keeps its SNAT port from every new
// flow. Records this node cannot read are refused (an *ImportError naming
// each) and the others applied. Active connection counts follow: each
// record adjusts the count of the endpoint its entry counts for (the entry
// it replaces, if any, gives its count back). A full recount here would
// iterate the whole table for every batch a peer sends: at a few thousand
// flows that is tens of milliseconds per batch, the sync's receive loop
// falls seconds behind and a node failing then loses its youngest flows.
// The ageing round's recount still corrects any drift.
func (d *Datapath) ImportConntrack(recs []Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	var (
		refused []RefusedRecord
		addrs   [][16]byte
		errs    []error
		active  = map[uint32]int{}
	)
	for i, r := range recs {
		var err error
		switch r.Kind {
		case RecordConntrack:
			var a [][16]byte
			a, err = d.importCT(r, now, active)
			addrs = append(addrs, a...)
		case RecordAssoc:
			err = d.importAssoc(r, now)
		default:
			err = fmt.Errorf("record kind %d unknown to this node", r.Kind)
		}
		if err != nil {
			refused = append(refused, RefusedRecord{Index: i, Kind: r.Kind, Err: err})
		}
	}
	// The addresses identifying the imported flows' packets: without them
	// the address filter could pass a packet before conntrack is looked up.
	if len(addrs) > 0 {
		errs = append(errs, d.filterAdd(addrs...))
	}
	errs = append(errs, d.adjustActive(active))
	if len(refused) > 0 {
		errs = append(errs, &ImportError{Refused: refused})
	}
	return errors.Join(errs...)
}

// importCT writes one conntrack record and notes in active how the
// endpoints' counts change (the old entry's count out, the new one's in).
func (d *Datapath) importCT(r Record, now uint64, active map[uint32]int) ([][16]byte, error) {
	k, err := decodeAs[bpf.LbCtKey](&d.codec.ctKey, r.Key, now, true)
	if err != nil {
		return nil, err
	}
	var old bpf.LbCtVal
	hadOld := d.ct().lookup(&k, &old) == nil
	if r.Deleted {
		if err := d.ct().delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("delete conntrack entry: %w", err)
		}
		if idx, ok := d.activeIndex(&old); hadOld && ok {
			active[idx]--
		}
		return nil, nil
	}
	v, err := decodeAs[bpf.LbCtVal](&d.codec.ctVal, r.Value, now, false)
	if err != nil {
		return nil, err
	}
	if v.Svc >= d.maxServices || v.Ep >= MaxEndpoints {
		return nil, fmt.Errorf("ct_val: service %d endpoint %d beyond this datapath's tables", v.Svc, v.Ep)
	}
	if err := d.ct().put(&k, &v); err != nil {
		return nil, fmt.Errorf("write conntrack entry: %w", err)
	}
	if hadOld {
		if err := d.dropReplaced(&k, &old, &v, active); err != nil {
			return nil, err
		}
	}
	// The peer's note of a taken-up association does not come with it.
	if err := d.noteTakenUp(&k, &v); err != nil {
		return nil, err
	}
	if idx, ok := d.activeIndex(&old); hadOld && ok {
		active[idx]--
	}
	if idx, ok := d.activeIndex(&v); ok {
		active[idx]++
	}
	return [][16]byte{k.Src, k.Dst}, nil
}

// dropReplaced deletes the orig entry of the flow whose reply entry k
// held (old) before an import wrote another flow's (v) over it: the owner
// gave the SNAT port to a new flow after the old one expired there, and
// expiries are not sent (Record.Expired). Left here, the old orig entry
// would live on with the new flow's replies (the ageing goes by the later
// of both directions' packets) and take its client's next packets to the
// new flow's port. Paths of SCTP associations are left to their records.
func (d *Datapath) dropReplaced(k *bpf.LbCtKey, old, v *bpf.LbCtVal, active map[uint32]int) error {
	if old.Flags&ctFReply == 0 || (old.Flags|v.Flags)&ctFPath != 0 {
		return nil
	}
	ok := peerKey(old, k.Proto)
	if ok == peerKey(v, k.Proto) {
		return nil
	}
	var ov bpf.LbCtVal
	if d.ct().lookup(&ok, &ov) != nil || ov.Flags&ctFReply != 0 || peerKey(&ov, ok.Proto) != *k {
		return nil
	}
	if err := d.ct().delete(&ok); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete the replaced flow's entry: %w", err)
	}
	if idx, has := d.activeIndex(&ov); has {
		active[idx]--
	}
	return nil
}

// activeIndex is the endpoint count an entry holds one of (the rule of
// recomputeActiveLocked): a connection's orig entry, not released, not a
// secondary SCTP path.
func (d *Datapath) activeIndex(v *bpf.LbCtVal) (uint32, bool) {
	if v.Flags&(ctFReply|ctFPath|ctFReleased) != 0 || v.Svc == 0 || v.Svc >= d.maxServices || v.Ep >= MaxEndpoints {
		return 0, false
	}
	return v.Svc*MaxEndpoints + v.Ep, true
}

// adjustActive adds the changes of an import to the endpoints' active
// counts (never below zero). The datapath may change a count between the
// read and the write here; the ageing round's recount restores it.
func (d *Datapath) adjustActive(delta map[uint32]int) error {
	for idx, dn := range delta {
		if dn == 0 {
			continue
		}
		var n uint32
		if err := d.objs.EpActive.Lookup(idx, &n); err != nil {
			return fmt.Errorf("read active count: %w", err)
		}
		if err := d.objs.EpActive.Put(idx, uint32(max(0, int(n)+dn))); err != nil {
			return fmt.Errorf("write active count: %w", err)
		}
	}
	return nil
}

func (d *Datapath) importAssoc(r Record, now uint64) error {
	k, err := decodeAs[bpf.LbAssocKey](&d.codec.assocKey, r.Key, now, true)
	if err != nil {
		return err
	}
	if r.Deleted {
		if err := d.objs.Assocs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete association: %w", err)
		}
		return nil
	}
	a, err := decodeAs[bpf.LbAssoc](&d.codec.assoc, r.Value, now, false)
	if err != nil {
		return err
	}
	if err := d.objs.Assocs.Put(&k, &a); err != nil {
		return fmt.Errorf("write association: %w", err)
	}
	return nil
}

// decodeAs decodes a record's key or value (complete: every field
// required, as for keys) to T, the datapath's struct that l describes.
func decodeAs[T any](l *layout, enc []byte, now uint64, complete bool) (T, error) {
	var out T
	b, err := l.decode(enc, now, complete)
	if err != nil {
		return out, err
	}
	if _, err := binary.Decode(b, binary.LittleEndian, &out); err != nil {
		return out, fmt.Errorf("%s: %w", l.name, err)
	}
	return out, nil
}

// HoldsRecord says whether this datapath holds an entry under the
// record's key now (its value aside). The HA sync asks it of a deletion
// it reads late: an import may have written the key again since.
func (d *Datapath) HoldsRecord(r Record) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	var err error
	switch r.Kind {
	case RecordConntrack:
		k, kerr := decodeAs[bpf.LbCtKey](&d.codec.ctKey, r.Key, now, true)
		if kerr != nil {
			return false, kerr
		}
		var v bpf.LbCtVal
		err = d.ct().lookup(&k, &v)
	case RecordAssoc:
		k, kerr := decodeAs[bpf.LbAssocKey](&d.codec.assocKey, r.Key, now, true)
		if kerr != nil {
			return false, kerr
		}
		var a bpf.LbAssoc
		err = d.objs.Assocs.Lookup(&k, &a)
	default:
		return false, fmt.Errorf("record kind %d unknown to this node", r.Kind)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}
