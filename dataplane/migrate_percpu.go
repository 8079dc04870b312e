package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Per-CPU counter maps are migrated CPU by CPU, so every CPU's counts (and
// their sum) are what they were. The first pass copies each entry while
// the new program is not attached yet and remembers what it copied; the
// second pass, after the attach, adds what the old program counted in
// between (now - first, field by field) to what the new one counted. The
// adds are read-modify-writes of values the datapath also increments: a
// packet counted on that CPU in the microseconds between the read and the
// write is lost, which only the second pass risks.

type perCPUEntry struct {
	k []byte
	v [][]byte
}

// dumpPerCPU reads every entry of the old per-CPU map; array slots whose
// every CPU is zero hold nothing and are left out.
func (op *oldPin) dumpPerCPU() ([]perCPUEntry, error) {
	var out []perCPUEntry
	k := make([]byte, op.m.KeySize())
	var v [][]byte
	it := op.m.Iterate()
	for it.Next(&k, &v) {
		zero := true
		for _, c := range v {
			zero = zero && allZero(c)
		}
		if zero && op.m.Type() == ebpf.PerCPUArray {
			continue
		}
		cp := make([][]byte, len(v))
		for i := range v {
			cp[i] = append([]byte(nil), v[i]...)
		}
		out = append(out, perCPUEntry{k: append([]byte(nil), k...), v: cp})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterate old %s: %w", op.name, err)
	}
	return out, nil
}

// newKey is an old key as the new map knows it.
func (op *oldPin) newKey(k []byte) ([]byte, bool) {
	if op.rekey != nil {
		return op.rekey(k)
	}
	if op.key != nil {
		nk, err := op.key.convert(k)
		return nk, err == nil
	}
	return k, true
}

// newValues converts one entry's per-CPU values into the new layout.
func (op *oldPin) newValues(v [][]byte) ([][]byte, error) {
	out := make([][]byte, len(v))
	for i, c := range v {
		if op.value == nil {
			out[i] = append([]byte(nil), c...)
			continue
		}
		nc, err := op.value.convert(c)
		if err != nil {
			return nil, err
		}
		out[i] = nc
	}
	return out, nil
}

func (op *oldPin) migratePerCPU(nm *ebpf.Map, second bool) (MapMigration, error) {
	rep := MapMigration{Map: op.name, Reason: op.reason}
	entries, err := op.dumpPerCPU()
	if err != nil {
		return rep, err
	}
	if op.convErr != nil {
		rep.Entries, rep.Lost, rep.CountersReset = len(entries), len(entries), len(entries) > 0
		rep.Reason += "; not convertible: " + op.convErr.Error()
		return rep, nil
	}
	if !second {
		op.first = make(map[string][][]byte, len(entries))
	}
	var sum []leaf
	if second {
		if sum, err = counterLeaves(op); err != nil {
			// Not counters: what the old program counted after the first
			// pass cannot be added.
			for _, e := range entries {
				if !equalPerCPU(op.first[string(e.k)], e.v) {
					rep.Entries++
					rep.Lost++
				}
			}
			if rep.Lost > 0 {
				rep.CountersReset = true
				rep.Reason += "; " + err.Error()
			}
			return rep, nil
		}
	}
	for _, e := range entries {
		first := op.first[string(e.k)]
		if second && equalPerCPU(first, e.v) {
			continue
		}
		rep.Entries++
		nk, ok := op.newKey(e.k)
		if !ok {
			rep.Lost++
			continue
		}
		nv, err := op.newValues(e.v)
		if err != nil {
			rep.Lost++
			continue
		}
		if second {
			if nv, err = op.addSince(nm, nk, nv, first, sum); err != nil {
				rep.Lost++
				continue
			}
		}
		if err := nm.Update(nk, nv, ebpf.UpdateAny); err != nil {
			// An index beyond a smaller array.
			rep.Lost++
			continue
		}
		if !second {
			op.first[string(e.k)] = e.v
		}
		rep.Migrated++
	}
	return rep, nil
}

// addSince returns the new map's values at nk plus what the old program
// counted since the first pass (now - first), CPU by CPU.
func (op *oldPin) addSince(nm *ebpf.Map, nk []byte, now, first [][]byte, sum []leaf) ([][]byte, error) {
	var base [][]byte
	if first != nil {
		var err error
		if base, err = op.newValues(first); err != nil {
			return nil, err
		}
	}
	var cur [][]byte
	if err := nm.Lookup(nk, &cur); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read new %s: %w", op.into, err)
	}
	out := make([][]byte, len(now))
	for c := range now {
		out[c] = make([]byte, len(now[c]))
		if c < len(cur) {
			copy(out[c], cur[c])
		}
		for _, l := range sum {
			v := uintAt(out[c], l) + uintAt(now[c], l)
			if base != nil && c < len(base) {
				v -= uintAt(base[c], l)
			}
			putUint(out[c], l, v)
		}
	}
	return out, nil
}

// counterLeaves are the integer fields of the new value, which the second
// pass adds; an error when the value has a field that is not an integer
// (other than padding): then it is not a counter.
func counterLeaves(op *oldPin) ([]leaf, error) {
	if op.spec.Value == nil {
		return []leaf{{size: op.spec.ValueSize, isInt: op.spec.ValueSize <= 8}}, nil
	}
	ls, err := leaves(op.spec.Value)
	if err != nil {
		return nil, err
	}
	var out []leaf
	for _, l := range ls {
		switch {
		case l.isInt:
			out = append(out, l)
		case isPadding(l.path):
		default:
			return nil, fmt.Errorf("field %q is not a counter", l.path)
		}
	}
	return out, nil
}

func equalPerCPU(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// putUint writes a little-endian integer leaf.
func putUint(b []byte, l leaf, v uint64) {
	if int(l.off+l.size) > len(b) {
		return
	}
	d := b[l.off : l.off+l.size]
	switch l.size {
	case 8:
		binary.LittleEndian.PutUint64(d, v)
	case 4:
		binary.LittleEndian.PutUint32(d, uint32(v))
	case 2:
		binary.LittleEndian.PutUint16(d, uint16(v))
	case 1:
		d[0] = byte(v)
	}
}

// epStatsKey translates a key of the retired ep_stats (service x
// MaxEndpoints + endpoint) into the endpoint's counter slot.
func (d *Datapath) epStatsKey(k []byte) ([]byte, bool) {
	if len(k) != 4 {
		return nil, false
	}
	idx := binary.LittleEndian.Uint32(k)
	s := d.slotOf(idx/MaxEndpoints, idx%MaxEndpoints)
	if s == 0 {
		return nil, false
	}
	return binary.LittleEndian.AppendUint32(nil, uint32(s)), true
}
