package dataplane

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/bpf"
)

// MaglevTableSize is the number of entries of a service's maglev table
// (LB_MAGLEV_M, a prime): the same on every node and for every service, so
// nodes agree and a change of endpoints never resizes (and so reshuffles)
// the table.
const MaglevTableSize = len(bpf.LbMaglevTable{}.Ep) - 1

// MaxMaglevServices is how many services may use maglev selection at once
// (LB_MAGLEV_SERVICES, the maglev map's entries).
const MaxMaglevServices = 256

// maglevIdentity is what an endpoint's place in the table derives from:
// its address (IPv4 as v4-mapped, like the datapath) and port. Never its
// index in the service, which differs between nodes listing the same
// endpoints in another order.
func maglevIdentity(e Endpoint) [18]byte {
	var id [18]byte
	a := addr16(e.Addr)
	copy(id[:], a[:])
	binary.BigEndian.PutUint16(id[16:], e.Port)
	return id
}

// maglevTable builds the Maglev lookup table (Eisenbud et al., NSDI 2016,
// section 3.4) of the up endpoints of eps over m entries, m prime: each
// endpoint walks its own permutation of the entries (offset and skip from
// two hashes of its identity) and, turn by turn, takes the next entry
// still free. Entries hold indices into eps. A weight w makes an endpoint
// take a turn in w of every wmax rounds, so its share of the entries is
// proportional to its weight (weight 0 counts as 1, as in the slot table).
// Candidates take their turns in identity order, so the table depends on
// the set of endpoints only. nil when no endpoint is up.
func maglevTable(eps []Endpoint, m int) []uint8 {
	type cand struct {
		id         [18]byte
		idx        int
		w          int
		off, skip  uint64
		next, have int
	}
	var cs []cand
	wmax := 0
	for i, e := range eps {
		if e.Down {
			continue
		}
		w := int(e.Weight)
		if w == 0 {
			w = 1
		}
		id := maglevIdentity(e)
		h := sha256.Sum256(id[:])
		cs = append(cs, cand{
			id: id, idx: i, w: w,
			off:  binary.BigEndian.Uint64(h[0:8]) % uint64(m),
			skip: binary.BigEndian.Uint64(h[8:16])%uint64(m-1) + 1,
		})
		wmax = max(wmax, w)
	}
	if len(cs) == 0 {
		return nil
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		for i := range a.id {
			if a.id[i] != b.id[i] {
				return int(a.id[i]) - int(b.id[i])
			}
		}
		return a.idx - b.idx
	})
	const free = 0xff // endpoint indices stay below MaxEndpoints (64)
	t := make([]uint8, m)
	for i := range t {
		t[i] = free
	}
	filled := 0
	for round := 1; filled < m; round++ {
		for i := range cs {
			c := &cs[i]
			// Turns so far proportional to the weight: at most round*w/wmax.
			if c.have*wmax >= round*c.w {
				continue
			}
			for {
				e := (c.off + uint64(c.next)*c.skip) % uint64(m)
				c.next++
				if t[e] == free {
					t[e] = uint8(c.idx)
					break
				}
			}
			c.have++
			if filled++; filled == m {
				break
			}
		}
	}
	return t
}

// ErrMaglevCapacity is wrapped by the error of a service refused because
// MaxMaglevServices services already use maglev selection (the daemon
// answers 507 naming the select field).
var ErrMaglevCapacity = fmt.Errorf("maglev tables full: %w", ErrCapacity)

// maglevRoom checks, before anything of service s is written, that a
// maglev service has a table or room for one.
func (d *Datapath) maglevRoom(s Service) error {
	if s.Select != SelectMaglev {
		return nil
	}
	// Keys only: the values are 64 KiB each.
	n := 0
	var prev any // nil: the first key
	for {
		var k uint32
		err := d.objs.Maglev.NextKey(prev, &k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("service %d: read maglev tables: %w", s.ID, err)
		}
		if k == s.ID {
			return nil
		}
		n++
		prev = k
	}
	if n >= MaxMaglevServices {
		return fmt.Errorf("service %d: select maglev: %d services use maglev selection already, the most the datapath holds: %w", s.ID, n, ErrMaglevCapacity)
	}
	return nil
}

// writeMaglev programs (or, for another selection, removes) service s's
// maglev table. Called with d.mu held, before the service info that
// selects maglev is written, so a packet never finds maglev without a
// table; removal comes after it.
func (d *Datapath) writeMaglev(s Service) error {
	if s.Select != SelectMaglev {
		return nil
	}
	var v bpf.LbMaglevTable
	copy(v.Ep[:], maglevTable(s.Endpoints, MaglevTableSize))
	if err := d.objs.Maglev.Put(s.ID, &v); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("service %d: select maglev: at most %d services may use maglev selection: %w (%w)", s.ID, MaxMaglevServices, ErrMaglevCapacity, err)
		}
		return fmt.Errorf("service %d: write maglev table: %w", s.ID, err)
	}
	return nil
}

// dropMaglev removes service id's maglev table, if it has one.
func (d *Datapath) dropMaglev(id uint32) error {
	if err := d.objs.Maglev.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("service %d: delete maglev table: %w", id, err)
	}
	return nil
}
