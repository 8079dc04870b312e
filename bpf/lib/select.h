// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Endpoint selection for a new flow: weighted slot table (rr, hash),
// client affinity (persist), fewest active connections (leastconn),
// consistent hashing shared by every node (maglev, lib/maglev.h).
#ifndef LB_SELECT_H
#define LB_SELECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/maglev.h"

static __always_inline int ep_usable(__u32 id, __u32 idx)
{
	__u32 k = id * LB_MAX_EPS + idx;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &k);
	return ep && !ep->down && ep->weight;
}

// Global so the verifier checks the 64-way scan once, not per caller path.
__noinline int leastconn_pick(__u32 id, __u32 n)
{
	__u32 best = 0, best_n = 0xffffffff;

	for (__u32 i = 0; i < LB_MAX_EPS; i++) {
		if (i >= n)
			break;
		__u32 k = id * LB_MAX_EPS + i;
		struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &k);
		if (!ep || ep->down || !ep->weight)
			continue;
		__u32 *a = bpf_map_lookup_elem(&ep_active, &k);
		__u32 v = a ? *a : 0;
		if (v < best_n) {
			best_n = v;
			best = i;
		}
	}
	if (best_n == 0xffffffff)
		return -1;
	return best & (LB_MAX_EPS - 1);
}

static __always_inline int select_ep(const struct pkt *p, __u32 id, const struct svc_info *info)
{
	struct sel_table *sel = bpf_map_lookup_elem(&sel_tables, &id);
	if (!sel || !sel->n_up)
		return -1;

	__u32 slot = 0;
	switch (info->sel) {
	case SEL_RR: {
		__u32 *c = bpf_map_lookup_elem(&rr_ctr, &id);
		if (c)
			slot = __sync_fetch_and_add(c, 1);
		break;
	}
	case SEL_HASH:
		slot = hash_tuple(p, 0);
		break;
	case SEL_PERSIST: {
		struct aff_key ak = {.svc = id};
		addr_cpy(ak.addr, p->src);
		__u64 now = lb_now();
		__u64 to = (__u64)(info->idle_timeout ? info->idle_timeout : LB_TO_PERSIST) * NSEC;
		struct aff_val *av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && now - av->last_ns < to && av->ep < info->n_eps && ep_usable(id, av->ep)) {
			av->last_ns = now;
			return av->ep;
		}
		slot = hash_tuple(p, 1);
		__u32 e = sel->slot[slot & (LB_SEL_SLOTS - 1)];
		struct aff_val nv = {.ep = e, .last_ns = now};
		bpf_map_update_elem(&affinity, &ak, &nv, BPF_ANY);
		return e;
	}
	case SEL_LEASTCONN:
		return leastconn_pick(id, info->n_eps);
	case SEL_MAGLEV:
		return maglev_pick(p, id);
	}
	return sel->slot[slot & (LB_SEL_SLOTS - 1)];
}

#endif
