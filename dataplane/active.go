package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// recomputeActiveLocked rewrites the per-endpoint active connection counts
// (leastconn's input, and the metrics') from the connections conntrack
// actually holds. The datapath only ever increments and decrements them, so
// every connection that leaves without a decrement (LRU eviction of a full
// table, a flush racing traffic, a map recreated by an upgrade, a crash)
// would otherwise count forever.
//
// A connection the datapath creates between the conntrack scan and the
// write may lose its increment; the next recount (every ageing round)
// restores it. Only counts that differ are written. d.mu must be held.
func (d *Datapath) recomputeActiveLocked() error {
	want := map[uint32]uint32{}
	// Counts are read up to the highest ID in use (IDs are handed out
	// lowest first): a datapath with a few services does not read the
	// whole 16,384 x 64 array every ageing round.
	top := uint32(0)
	for id := range d.slots {
		top = max(top, id)
	}
	for id := range d.keysByID {
		top = max(top, id)
	}
	err := d.ct().each(func(_ bpf.LbCtKey, v *bpf.LbCtVal) {
		// One count per connection: its orig entry, while the datapath has
		// not released it (closed) and not a secondary SCTP path.
		if v.Flags&(ctFReply|ctFPath|ctFReleased) != 0 {
			return
		}
		if v.Svc == 0 || v.Svc >= d.maxServices || v.Ep >= MaxEndpoints {
			return
		}
		want[v.Svc*MaxEndpoints+v.Ep]++
		top = max(top, v.Svc)
	})
	if err != nil {
		return fmt.Errorf("recount active connections: %w", err)
	}
	counts, err := d.readActive(int(top+1) * MaxEndpoints)
	if err != nil {
		return fmt.Errorf("recount active connections: %w", err)
	}
	fix := map[uint32]uint32{}
	for idx, n := range counts {
		if n != want[uint32(idx)] {
			fix[uint32(idx)] = want[uint32(idx)]
		}
	}
	for idx, n := range fix {
		if err := d.objs.EpActive.Put(idx, n); err != nil {
			return fmt.Errorf("recount active connections: write: %w", err)
		}
	}
	return nil
}

// readActive reads the active counts of indices 0..limit-1 (at least; all
// of them when limit is beyond the array) in batches (one syscall per chunk
// instead of two per slot: the recount runs every ageing round).
func (d *Datapath) readActive(limit int) ([]uint32, error) {
	size := min(int(d.objs.EpActive.MaxEntries()), limit)
	out := make([]uint32, 0, size)
	keys := make([]uint32, 4096)
	vals := make([]uint32, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.EpActive.BatchLookup(&cursor, keys, vals, nil)
		out = append(out, vals[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && len(out) >= size) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read counts: %w", err)
		}
	}
	out = out[:0]
	for i := 0; i < size; i++ {
		var n uint32
		if err := d.objs.EpActive.Lookup(uint32(i), &n); err != nil {
			return nil, fmt.Errorf("read count %d: %w", i, err)
		}
		out = append(out, n)
	}
	return out, nil
}
