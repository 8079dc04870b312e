package dataplane

import (
	"fmt"

	"github.com/telcolb/telcolb/bpf"
)

// MaxAssocPaths is the most client addresses an SCTP association record
// holds (LB_MAX_VIPS): a multi-homed client's further addresses are not
// tracked.
const MaxAssocPaths = MaxSecondaryVIPs + 1

// AssocPaths counts, per service ID, the SCTP association records by the
// number of client addresses (paths) the LB knows for them: counts[n-1]
// associations have n. A record lives as long as a conntrack entry of its
// association (the conntrack sweep prunes the others).
func (d *Datapath) AssocPaths() (map[uint32][MaxAssocPaths]uint64, error) {
	out := map[uint32][MaxAssocPaths]uint64{}
	var (
		k bpf.LbAssocKey
		a bpf.LbAssoc
	)
	it := d.objs.Assocs.Iterate()
	for it.Next(&k, &a) {
		n := int(a.Nc)
		if n < 1 {
			n = 1 // before the INIT-ACK: the INIT's source address
		}
		n = min(n, MaxAssocPaths)
		c := out[k.Svc]
		c[n-1]++
		out[k.Svc] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate association records: %w", err)
	}
	return out, nil
}
