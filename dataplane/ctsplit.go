package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// The upgrade from one conntrack map to two (ctmap.go). The pinned
// conntrack keeps its layout, so Load reuses it, IPv4 entries included,
// which the new program looks up in conntrack4 only. splitConntrack copies
// them there in two passes, like a map migration: the first at load, while
// the old program still forwards through conntrack and so must keep
// finding them; the second once the new program is attached (or the
// datapath closes), copying what the old program made meanwhile and then
// deleting every IPv4 key from conntrack. An entry conntrack4 already
// holds wins: it is the new program's (or an earlier, interrupted split's).

// ctSplitReason names the migration in Migrations and the logs.
const ctSplitReason = "IPv4 entries moved from conntrack into conntrack4 (16-byte key)"

// splitConntrack runs one pass; final is the second. It reports how many
// IPv4 entries it found in conntrack and how many of them conntrack4 holds
// after the pass; the others are lost (conntrack4 full). The second pass
// sees every entry the first one did (they are deleted only then), so its
// report is the whole split's.
func (d *Datapath) splitConntrack(final bool) (MapMigration, error) {
	rep := MapMigration{Map: bpf.LbMapConntrack4, Reason: ctSplitReason}
	var (
		k    bpf.LbCtKey
		v    bpf.LbCtVal
		keys []bpf.LbCtKey
		vals []bpf.LbCtVal
	)
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		if ctKeyIs4(&k) {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	if err := it.Err(); err != nil {
		return rep, fmt.Errorf("split conntrack: iterate: %w", err)
	}
	var errs []error
	rep.Entries = len(keys)
	for i := range keys {
		k4 := ctKey4Of(&keys[i])
		err := d.objs.Conntrack4.Update(&k4, &vals[i], ebpf.UpdateNoExist)
		// ErrKeyExist: already moved, or made by the new program. Any other
		// refusal shows below as an entry not there.
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			d.log.Debug("split conntrack: entry not copied", "err", err)
		}
	}
	// An LRU map evicts rather than refuses: count what is there.
	var got bpf.LbCtVal
	for i := range keys {
		k4 := ctKey4Of(&keys[i])
		if d.objs.Conntrack4.Lookup(&k4, &got) == nil {
			rep.Migrated++
		}
	}
	rep.Lost = rep.Entries - rep.Migrated
	if final {
		for i := range keys {
			if err := d.objs.Conntrack.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("split conntrack: delete moved entry: %w", err))
			}
		}
	}
	return rep, errors.Join(errs...)
}
