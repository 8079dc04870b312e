// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Maglev endpoint selection: a new flow takes the entry hash(5-tuple) mod
// LB_MAGLEV_M of its service's table, built by the daemon
// (dataplane/maglev.go) from the endpoints' addresses alone. Nodes with the
// same endpoints therefore send the same new flow to the same endpoint
// without sharing state, and removing one of N endpoints moves about 1/N of
// the new-flow choices. Established flows keep their conntrack entry.
#ifndef LB_MAGLEV_H
#define LB_MAGLEV_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"
#include "lib/helpers.h"
#include "lib/parse.h"

// Keyed by service ID, only maglev services have an entry. A preallocated
// hash: an update from the daemon swaps the whole 64 KiB value at once (a
// packet sees the old table or the new one, never half of each) and never
// allocates at run time; LB_MAGLEV_SERVICES x 64 KiB (16 MiB) is reserved
// at load.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAGLEV_SERVICES);
	__type(key, __u32);
	__type(value, struct maglev_table);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} maglev SEC(".maps");

// Endpoint index for the flow, -1 without a table.
static __always_inline int maglev_pick(const struct pkt *p, __u32 id)
{
	struct maglev_table *t = bpf_map_lookup_elem(&maglev, &id);
	if (!t)
		return -1;
	__u32 i = hash_tuple(p, 0) % LB_MAGLEV_M;
	// clang turns the modulo into multiplies whose range the verifier
	// cannot follow, and drops a check it knows to hold: hide i from it.
	barrier_var(i);
	if (i >= LB_MAGLEV_M)
		return -1;
	return t->ep[i];
}

#endif
