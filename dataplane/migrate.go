package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/telcolb/telcolb/bpf"
)

// MapMigration reports what happened to one pinned map the new datapath
// could not reuse as it was (an upgrade changed its layout, or a flag such as
// --max-conns changed its size): its entries were copied into the new map,
// converted field by field when the layout changed.
type MapMigration struct {
	Map    string
	Reason string
	// Entries were in the old map; Migrated made it into the new one.
	Entries, Migrated int
	// Lost could not be carried over: layout not convertible, a value
	// wider than its new field, or no room left in a smaller map. For
	// conntrack each lost entry is one direction of a connection.
	Lost int
	// CountersReset: a per-CPU counter map whose counts could not be
	// carried over (a value that is not all integers), recreated from zero.
	CountersReset bool
}

// retiredMaps are maps of earlier releases the datapath no longer has, and
// the map that takes their entries: ep_stats (endpoint counters indexed
// service x MaxEndpoints) became ep_slot_stats (indexed by counter slot),
// its keys translated through the slots Load assigns (slots.go).
var retiredMaps = map[string]string{"ep_stats": bpf.LbMapEpSlotStats}

// oldPin is a pinned map taken out of the way of the new datapath and kept
// open (so its entries survive) until they are copied.
type oldPin struct {
	name, path string
	m          *ebpf.Map
	spec       *ebpf.MapSpec // the new spec
	// into names the new map (name, unless the map was retired).
	into   string
	reason string
	// rekey translates an old key into the new map's (retired maps);
	// false: the entry has no place there.
	rekey func(k []byte) ([]byte, bool)
	// key and value convert old entries into the new layout; nil when
	// the layout is unchanged (only the size or flags differ).
	key, value *converter
	// convErr says why entries cannot be converted at all.
	convErr error
	// order sorts entries oldest first when set (LRU: the newest must
	// survive when the new map is smaller).
	order  *leaf
	report MapMigration
	// seen are the old keys the first pass handled; the second pass
	// copies only keys added since.
	seen map[string]bool
	// first holds each per-CPU entry's values as the first pass copied
	// them: the second pass adds what the old program counted since.
	first map[string][][]byte
}

// btfCache holds the BTF of old maps by BTF object ID: every map of one
// program shares one object.
type btfCache map[btf.ID]*btf.Spec

func (c btfCache) of(m *ebpf.Map) (*btf.Spec, error) {
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	id, ok := info.BTFID()
	if !ok {
		return nil, errors.New("pinned map has no BTF")
	}
	if s, ok := c[id]; ok {
		return s, nil
	}
	h, err := btf.NewHandleFromID(id)
	if err != nil {
		return nil, fmt.Errorf("BTF handle of pinned map: %w", err)
	}
	defer h.Close()
	s, err := h.Spec(nil)
	if err != nil {
		return nil, fmt.Errorf("BTF of pinned map: %w", err)
	}
	c[id] = s
	return s, nil
}

// oldType finds the old program's version of a named struct type; nil when
// t is not a named struct (scalars have no layout to change).
func oldType(s *btf.Spec, t btf.Type) (btf.Type, error) {
	st, ok := btf.UnderlyingType(t).(*btf.Struct)
	if !ok || st.Name == "" {
		return nil, nil
	}
	types, err := s.AnyTypesByName(st.Name)
	if err != nil {
		return nil, fmt.Errorf("struct %s in the old program: %w", st.Name, err)
	}
	for _, ot := range types {
		if ost, ok := btf.UnderlyingType(ot).(*btf.Struct); ok {
			return ost, nil
		}
	}
	return nil, fmt.Errorf("struct %s in the old program: not a struct", st.Name)
}

func isPerCPU(t ebpf.MapType) bool {
	return t == ebpf.PerCPUArray || t == ebpf.PerCPUHash || t == ebpf.LRUCPUHash
}

// takeIncompatiblePins unpins every pinned map the spec cannot reuse as it
// is, keeping it open so its entries can be migrated. A map is not reusable
// when the kernel's view differs (type, sizes, max entries, flags) or when
// its key or value layout differs by BTF although the sizes match.
func takeIncompatiblePins(spec *ebpf.CollectionSpec, pinPath string, log *slog.Logger) ([]*oldPin, error) {
	cache := btfCache{}
	names := make([]string, 0, len(spec.Maps))
	for n := range spec.Maps {
		names = append(names, n)
	}
	sort.Strings(names)
	var olds []*oldPin
	for _, name := range names {
		ms := spec.Maps[name]
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		p := filepath.Join(pinPath, name)
		m, err := ebpf.LoadPinnedMap(p, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return olds, fmt.Errorf("open pinned map %s: %w", p, err)
		}
		op := &oldPin{name: name, path: p, m: m, spec: ms, into: name}
		if cerr := ms.Compatible(m); cerr != nil {
			op.reason = cerr.Error()
		}
		op.prepare(cache)
		if op.reason == "" {
			m.Close()
			continue
		}
		if err := m.Unpin(); err != nil {
			m.Close()
			return olds, fmt.Errorf("unpin incompatible map %s: %w", p, err)
		}
		log.Warn("pinned map differs from the datapath's, migrating its entries into a new one", "map", name, "reason", op.reason)
		olds = append(olds, op)
	}
	retired := make([]string, 0, len(retiredMaps))
	for n := range retiredMaps {
		retired = append(retired, n)
	}
	sort.Strings(retired)
	for _, name := range retired {
		into := retiredMaps[name]
		p := filepath.Join(pinPath, name)
		m, err := ebpf.LoadPinnedMap(p, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return olds, fmt.Errorf("open pinned map %s: %w", p, err)
		}
		op := &oldPin{name: name, path: p, m: m, spec: spec.Maps[into], into: into,
			reason: "replaced by " + into}
		op.prepare(cache)
		if err := m.Unpin(); err != nil {
			m.Close()
			return olds, fmt.Errorf("unpin retired map %s: %w", p, err)
		}
		log.Warn("pinned map of an earlier release, migrating its entries into its replacement", "map", name, "into", into)
		olds = append(olds, op)
	}
	return olds, nil
}

// prepare compares layouts by BTF and builds the converters. Without BTF on
// either side, equal sizes are taken as the same layout (every telcolb
// object carries BTF, so that is a foreign or very old map).
func (op *oldPin) prepare(cache btfCache) {
	op.report = MapMigration{Map: op.name}
	if op.spec.Key == nil || op.spec.Value == nil {
		return
	}
	ospec, err := cache.of(op.m)
	if err != nil {
		if op.m.KeySize() != op.spec.KeySize || op.m.ValueSize() != op.spec.ValueSize {
			op.convErr = fmt.Errorf("layout changed and %w", err)
		}
		return
	}
	build := func(nt btf.Type, size uint32, oldSize uint32, complete bool) (*converter, error) {
		ot, err := oldType(ospec, nt)
		if err != nil {
			return nil, err
		}
		if ot == nil {
			if size != oldSize {
				return nil, fmt.Errorf("scalar changed size %d -> %d", oldSize, size)
			}
			return nil, nil
		}
		same, err := sameLayout(ot, nt)
		if err != nil {
			return nil, err
		}
		if same {
			return nil, nil
		}
		if op.reason == "" {
			op.reason = "layout changed (BTF)"
		}
		return newConverter(ot, nt, complete)
	}
	if op.key, err = build(op.spec.Key, op.spec.KeySize, op.m.KeySize(), true); err != nil {
		op.convErr = fmt.Errorf("key: %w", err)
		if op.reason == "" {
			op.reason = "key layout changed (BTF)"
		}
		return
	}
	if op.value, err = build(op.spec.Value, op.spec.ValueSize, op.m.ValueSize(), false); err != nil {
		op.convErr = fmt.Errorf("value: %w", err)
		if op.reason == "" {
			op.reason = "value layout changed (BTF)"
		}
		return
	}
	if op.spec.Type == ebpf.LRUHash {
		if nl, err := leaves(op.spec.Value); err == nil {
			for i := range nl {
				if nl[i].path == "last_seen" && nl[i].isInt {
					l := nl[i]
					op.order = &l
				}
			}
		}
	}
}

// restorePins puts the old maps back where they were after a failed load,
// so a refused start changes nothing.
func restorePins(olds []*oldPin, log *slog.Logger) {
	for _, op := range olds {
		if err := op.m.Pin(op.path); err != nil {
			log.Error("re-pin map after a failed load", "map", op.name, "err", err)
		}
		op.m.Close()
	}
}

type rawEntry struct{ k, v []byte }

// dump reads every entry of the old map as raw bytes.
func (op *oldPin) dump() ([]rawEntry, error) {
	var out []rawEntry
	k := make([]byte, op.m.KeySize())
	v := make([]byte, op.m.ValueSize())
	it := op.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, rawEntry{k: append([]byte(nil), k...), v: append([]byte(nil), v...)})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterate old %s: %w", op.name, err)
	}
	return out, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// migrateInto copies the old entries into nm. With onlyMissing (the pass
// after the new program is attached: connections the old program created
// meanwhile) existing entries of the new map win.
func (op *oldPin) migrateInto(nm *ebpf.Map, onlyMissing bool) (MapMigration, error) {
	if isPerCPU(op.spec.Type) {
		return op.migratePerCPU(nm, onlyMissing)
	}
	rep := MapMigration{Map: op.name, Reason: op.reason}
	entries, err := op.dump()
	if err != nil {
		return rep, err
	}
	isArray := op.spec.Type == ebpf.Array
	if isArray {
		// Array slots always exist: only non-zero ones hold state.
		kept := entries[:0]
		for _, e := range entries {
			if !allZero(e.v) {
				kept = append(kept, e)
			}
		}
		entries = kept
	}
	if onlyMissing {
		kept := entries[:0]
		for _, e := range entries {
			if !op.seen[string(e.k)] {
				kept = append(kept, e)
			}
		}
		entries = kept
	} else {
		op.seen = make(map[string]bool, len(entries))
		for _, e := range entries {
			op.seen[string(e.k)] = true
		}
	}
	rep.Entries = len(entries)
	if op.convErr != nil {
		rep.Lost = len(entries)
		rep.Reason += "; not convertible: " + op.convErr.Error()
		return rep, nil
	}
	flags := ebpf.UpdateAny
	if onlyMissing && !isArray {
		flags = ebpf.UpdateNoExist
	}
	conv := make([]rawEntry, 0, len(entries))
	for _, e := range entries {
		k, v := e.k, e.v
		if op.key != nil {
			if k, err = op.key.convert(k); err != nil {
				rep.Lost++
				continue
			}
		}
		if op.value != nil {
			if v, err = op.value.convert(v); err != nil {
				rep.Lost++
				continue
			}
		}
		conv = append(conv, rawEntry{k: k, v: v})
	}
	if op.spec.Type == ebpf.LRUHash {
		// A smaller LRU map would evict in its own (per-CPU batched)
		// order: keep the newest ourselves, oldest inserted first.
		groups := orderOldestFirst(op.name, conv, op.order)
		over := len(conv) - int(nm.MaxEntries())
		for over > 0 && len(groups) > 0 && !onlyMissing {
			rep.Lost += len(groups[0])
			over -= len(groups[0])
			groups = groups[1:]
		}
		conv = conv[:0]
		for _, g := range groups {
			conv = append(conv, g...)
		}
	}
	var put []rawEntry
	for _, e := range conv {
		k, v := e.k, e.v
		if err := nm.Update(k, v, flags); err != nil {
			if onlyMissing && errors.Is(err, ebpf.ErrKeyExist) {
				continue
			}
			// Array index beyond the new size, or a full hash.
			rep.Lost++
			continue
		}
		put = append(put, rawEntry{k: k})
	}
	if op.spec.Type == ebpf.LRUHash {
		// An LRU map evicts rather than refuses: count what stayed.
		v := make([]byte, nm.ValueSize())
		for _, e := range put {
			if nm.Lookup(e.k, &v) != nil {
				rep.Lost++
			} else {
				rep.Migrated++
			}
		}
	} else {
		rep.Migrated = len(put)
	}
	return rep, nil
}

// orderOldestFirst groups entries that live and die together (the two
// directions of a connection) and orders the groups oldest first: by their
// latest last_seen, then creation, then key, so equal coarse timestamps
// still give one order.
func orderOldestFirst(name string, entries []rawEntry, lastSeen *leaf) [][]rawEntry {
	type group struct {
		id            string
		last, created uint64
		members       []rawEntry
	}
	byID := map[string]*group{}
	var gs []*group
	add := func(id string, last, created uint64, e rawEntry) {
		g, ok := byID[id]
		if !ok {
			g = &group{id: id}
			byID[id] = g
			gs = append(gs, g)
		}
		g.last, g.created = max(g.last, last), max(g.created, created)
		g.members = append(g.members, e)
	}
	for _, e := range entries {
		if name == bpf.LbMapConntrack || name == bpf.LbMapConntrack4 {
			var k bpf.LbCtKey
			var v bpf.LbCtVal
			var err error
			if name == bpf.LbMapConntrack4 {
				var k4 bpf.LbCtKey4
				err = binary.Read(bytes.NewReader(e.k), binary.LittleEndian, &k4)
				k = ctKeyOf4(&k4)
			} else {
				err = binary.Read(bytes.NewReader(e.k), binary.LittleEndian, &k)
			}
			if err == nil && binary.Read(bytes.NewReader(e.v), binary.LittleEndian, &v) == nil {
				id := k
				if v.Flags&ctFReply != 0 {
					id = peerKey(&v, k.Proto)
				}
				add(fmt.Sprintf("%x", id), v.LastSeen, v.Created, e)
				continue
			}
		}
		var last uint64
		if lastSeen != nil {
			last = uintAt(e.v, *lastSeen)
		}
		add(string(e.k), last, 0, e)
	}
	sort.SliceStable(gs, func(i, j int) bool {
		a, b := gs[i], gs[j]
		if a.last != b.last {
			return a.last < b.last
		}
		if a.created != b.created {
			return a.created < b.created
		}
		return a.id < b.id
	})
	out := make([][]rawEntry, len(gs))
	for i, g := range gs {
		out[i] = g.members
	}
	return out
}

// migrate copies the taken pins' entries into the loaded maps (first
// pass, before the new program is attached): with rekeyed false the maps
// whose keys carry over as they are, with rekeyed true the retired ones
// (their keys need the endpoint counter slots, assigned in between).
func (d *Datapath) migrate(olds []*oldPin, rekeyed bool) error {
	var errs []error
	for _, op := range olds {
		if (op.into != op.name) != rekeyed {
			continue
		}
		if op.name == "ep_stats" {
			op.rekey = d.epStatsKey
		}
		nm, err := ebpf.LoadPinnedMap(filepath.Join(d.cfg.PinPath, op.into), nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open new %s: %w", op.name, err))
			continue
		}
		rep, err := op.migrateInto(nm, false)
		nm.Close()
		if err != nil {
			errs = append(errs, err)
		}
		op.report = rep
		d.logMigration(rep)
	}
	return errors.Join(errs...)
}

func (d *Datapath) logMigration(rep MapMigration) {
	args := []any{"map", rep.Map, "reason", rep.Reason, "entries", rep.Entries, "migrated", rep.Migrated, "lost", rep.Lost}
	switch {
	case rep.CountersReset:
		d.log.Warn("per-CPU counters of a recreated map could not be carried over", "map", rep.Map, "reason", rep.Reason, "entries", rep.Entries)
	case rep.Lost > 0:
		d.log.Warn("pinned map migrated with losses", args...)
	default:
		d.log.Info("pinned map migrated", args...)
	}
}

// CompleteMigration copies what the old program added to the old maps while
// the new one was being attached, then releases the old maps. Call it once
// every interface is attached; Close calls it too. A no-op without
// migration.
func (d *Datapath) CompleteMigration() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.completeMigrationLocked()
}

func (d *Datapath) completeMigrationLocked() error {
	var errs []error
	for _, op := range d.pending {
		nm, err := ebpf.LoadPinnedMap(filepath.Join(d.cfg.PinPath, op.into), nil)
		if err == nil {
			var rep MapMigration
			rep, err = op.migrateInto(nm, true)
			nm.Close()
			for i := range d.migrations {
				if d.migrations[i].Map == op.name {
					d.migrations[i].Entries += rep.Entries
					d.migrations[i].Migrated += rep.Migrated
					d.migrations[i].Lost += rep.Lost
				}
			}
			if rep.Entries > 0 {
				d.logMigration(rep)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("migrate %s (second pass): %w", op.name, err))
		}
		op.m.Close()
	}
	// After the maps' second passes, which may bring IPv4 entries into
	// conntrack.
	if d.splitPending {
		rep, err := d.splitConntrack(true)
		if err != nil {
			errs = append(errs, fmt.Errorf("split conntrack (second pass): %w", err))
		}
		for i := range d.migrations {
			if d.migrations[i].Map == rep.Map {
				d.migrations[i] = rep
			}
		}
		d.logMigration(rep)
	}
	if len(d.pending) > 0 || d.splitPending {
		errs = append(errs, d.recomputeActiveLocked())
	}
	d.pending = nil
	d.splitPending = false
	return errors.Join(errs...)
}

// Migrations reports the pinned maps this datapath migrated at load.
func (d *Datapath) Migrations() []MapMigration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]MapMigration(nil), d.migrations...)
}

// ConntrackNotMigrated is how many conntrack entries (connection directions)
// a layout or size change, or the move of IPv4 entries into conntrack4,
// could not carry over at load.
func (d *Datapath) ConntrackNotMigrated() uint64 {
	var n uint64
	for _, m := range d.Migrations() {
		if m.Map == bpf.LbMapConntrack || m.Map == bpf.LbMapConntrack4 {
			n += uint64(m.Lost)
		}
	}
	return n
}
