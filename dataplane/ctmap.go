package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// Conntrack lives in two maps (bpf/lib/ct_map.h): conntrack4 holds the
// entries whose key has two IPv4 addresses, under a 16-byte key; conntrack
// holds the rest (IPv6, NAT64's IPv6 side) under the 40-byte struct ct_key.
// Everything outside this file speaks bpf.LbCtKey, the datapath's own
// in-program key, and these functions pick the map.

// v4Mapped is the ::ffff:0:0/96 prefix of an IPv4 address in a 16-byte key.
var v4Mapped = [12]byte{10: 0xff, 11: 0xff}

func isMapped(a *[16]byte) bool { return [12]byte(a[:12]) == v4Mapped }

// ctKeyIs4 is ct_key_is4: both addresses IPv4-mapped.
func ctKeyIs4(k *bpf.LbCtKey) bool { return isMapped(&k.Src) && isMapped(&k.Dst) }

func ctKey4Of(k *bpf.LbCtKey) bpf.LbCtKey4 {
	return bpf.LbCtKey4{Src: [4]byte(k.Src[12:]), Dst: [4]byte(k.Dst[12:]), Sport: k.Sport, Dport: k.Dport, Proto: k.Proto}
}

func ctKeyOf4(k *bpf.LbCtKey4) bpf.LbCtKey {
	out := bpf.LbCtKey{Sport: k.Sport, Dport: k.Dport, Proto: k.Proto}
	copy(out.Src[:], v4Mapped[:])
	copy(out.Dst[:], v4Mapped[:])
	copy(out.Src[12:], k.Src[:])
	copy(out.Dst[12:], k.Dst[:])
	return out
}

// ctMaps is the pair of conntrack maps; the tests of older releases build
// one with conntrack4 nil (one map for every family).
type ctMaps struct{ all, v4 *ebpf.Map }

func (d *Datapath) ct() ctMaps { return ctMaps{all: d.objs.Conntrack, v4: d.objs.Conntrack4} }

func (c ctMaps) lookup(k *bpf.LbCtKey, v *bpf.LbCtVal) error {
	if c.v4 != nil && ctKeyIs4(k) {
		k4 := ctKey4Of(k)
		return c.v4.Lookup(&k4, v)
	}
	return c.all.Lookup(k, v)
}

func (c ctMaps) put(k *bpf.LbCtKey, v *bpf.LbCtVal) error {
	if c.v4 != nil && ctKeyIs4(k) {
		k4 := ctKey4Of(k)
		return c.v4.Put(&k4, v)
	}
	return c.all.Put(k, v)
}

func (c ctMaps) delete(k *bpf.LbCtKey) error {
	if c.v4 != nil && ctKeyIs4(k) {
		k4 := ctKey4Of(k)
		return c.v4.Delete(&k4)
	}
	return c.all.Delete(k)
}

// each calls fn with every entry of both maps. An IPv4 key left in
// conntrack by a datapath of the one-map layout is skipped: the datapath
// no longer reads it, and the upgrade moves it (ctsplit.go). The error of
// an aborted walk wraps ebpf.ErrIterationAborted.
func (c ctMaps) each(fn func(k bpf.LbCtKey, v *bpf.LbCtVal)) error {
	var errs []error
	if c.v4 != nil {
		err := walk(c.v4, func(k4 *bpf.LbCtKey4, v *bpf.LbCtVal) { fn(ctKeyOf4(k4), v) })
		if err != nil {
			errs = append(errs, fmt.Errorf("iterate conntrack4: %w", err))
		}
	}
	err := walk(c.all, func(k *bpf.LbCtKey, v *bpf.LbCtVal) {
		if c.v4 != nil && ctKeyIs4(k) {
			return
		}
		fn(*k, v)
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("iterate conntrack: %w", err))
	}
	return errors.Join(errs...)
}

// walkBatch is how many entries one batch lookup reads.
const walkBatch = 1024

// walk calls fn with every entry of a hash map, read in batches: one
// system call per walkBatch entries where Iterate makes two per entry. The
// ageing round walks the whole table three times under the datapath's
// lock and an HA import waits for that lock: at a few thousand entries on
// a loaded machine the per-entry walk held it for a second and more, and
// the peer's records queued behind it (issue 15: young flows lost at a
// failure). A kernel without batch operations on the map gets Iterate.
func walk[K, V any](m *ebpf.Map, fn func(k *K, v *V)) error {
	keys := make([]K, walkBatch)
	vals := make([]V, walkBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		for i := range n {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil // the end of the map
		}
		if err != nil {
			return fmt.Errorf("batch lookup: %w", err)
		}
	}
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(&k, &v)
	}
	return it.Err()
}
