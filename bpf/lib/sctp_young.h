// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// SCTP associations taken up from their packets: a non-INIT packet with no
// entry (this node holds no record of its association, e.g. an HA takeover
// before the sync had sent it) makes an entry per path. Every path of one
// association must reach the same endpoint with the same SNAT port, or the
// endpoint takes the second path's packets as out of the blue (RFC 9260
// 8.4) and answers with an ABORT (T bit) that kills the association. What
// every path's packets carry is the verification tag (the endpoint's, 8.5)
// and the two ports; the INIT that set the port up carried neither that tag
// nor this path's addresses, so the first path this node sees keeps today's
// choice (endpoint selection and SNAT hash over its own tuple, which is the
// INIT's when that path is the INIT's) and the others follow it here.
#ifndef LB_SCTP_YOUNG_H
#define LB_SCTP_YOUNG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/select.h"
#include "lib/ct_map.h"
#include "lib/sctp_assoc.h"

// Whether the packet may join or start a taken-up association: a non-INIT
// chunk with a tag (only INIT carries tag 0, and T-bit ABORT/SHUTDOWN-
// COMPLETE never make entries).
static __always_inline int young_candidate(const struct pkt *p)
{
	return p->proto == IPPROTO_SCTP && p->chunk_type != SCTP_INIT && p->vtag;
}

// No note yet: the association may have an entry here from the same client
// address through another of the service's VIPs, made by its INIT (the HA
// sync imported the INIT's entry, not yet the paths the INIT-ACK adds).
// That entry's endpoint and SNAT port, which the endpoint knows, become the
// note; its endpoint tag must be the packet's, or unknown (no INIT-ACK seen
// there). 1 when noted.
static __noinline int young_adopt(const struct pkt *p, const struct young_key *yk)
{
	__u32 svc = yk->svc;
	struct svc_vips *sv = bpf_map_lookup_elem(&svc_vip_list, &svc);
	if (!sv)
		return 0;
	struct ct_key k = {};
	addr_cpy(k.src, p->src);
	k.sport = p->sport;
	k.dport = p->dport;
	k.proto = IPPROTO_SCTP;
	// Unrolled like snat_pick's probe: a loop closing on a helper call's
	// fall-through is refused by 6.1's check_cfg.
#pragma unroll
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= sv->n)
			break;
		if (addr_eq(sv->vip[i], p->dst))
			continue;
		addr_cpy(k.dst, sv->vip[i]);
		struct ct_val *v = ct_lookup(&k);
		if (!v || (v->flags & CT_F_REPLY) || v->svc != svc || (v->vtag_ep && v->vtag_ep != p->vtag))
			continue;
		struct young_val y = {.ep = v->ep, .nat_sport = v->nat_sport};
		bpf_map_update_elem(&young_assocs, yk, &y, BPF_NOEXIST);
		return 1;
	}
	return 0;
}

// The endpoint of a path of the same association taken up earlier (or
// adopted, young_adopt), -1 when there is none or its endpoint can no
// longer be used (the association is lost anyway). Global, like the two
// below: verified once, not on every path through new_flow (the program
// stays under bpf_test.go's verifier budget).
__noinline int young_sibling(const struct pkt *p, __u32 svc, __u32 n_eps)
{
	if (!p)
		return -1;
	struct young_key k = {.svc = svc, .vtag = p->vtag, .cport = p->sport, .vport = p->dport};
	struct young_val *y = bpf_map_lookup_elem(&young_assocs, &k);
	if (!y && young_adopt(p, &k))
		y = bpf_map_lookup_elem(&young_assocs, &k);
	if (!y || y->ep >= n_eps || y->ep >= LB_MAX_EPS || !ep_usable(svc, y->ep))
		return -1;
	return y->ep;
}

// The new entry v (zeroed, endpoint ep chosen) joins that association: its
// SNAT port (snat_pick keeps it when it can) and no count of its own toward
// the endpoint's active associations (CT_F_RELEASED: never decremented).
__noinline int young_port(const struct pkt *p, __u32 svc, __u32 ep, struct ct_val *v)
{
	if (!p || !v)
		return 0;
	struct young_key k = {.svc = svc, .vtag = p->vtag, .cport = p->sport, .vport = p->dport};
	struct young_val *y = bpf_map_lookup_elem(&young_assocs, &k);
	if (!y || y->ep != ep)
		return 0;
	v->nat_sport = y->nat_sport;
	v->flags = CT_F_RELEASED;
	return 0;
}

// The SNAT port a new SCTP entry v asks for (snat_pick keeps it when it
// can): another path's of a taken-up association (young_port), or the
// first INIT's for an INIT retransmitted on another path (mh_reinit_port).
// One global call in new_flow, not a branch there: each branch of
// new_flow multiplies the states the verifier walks.
__noinline int sctp_port(const struct pkt *p, __u32 svc, __u32 ep, struct ct_val *v)
{
	if (!p || !v)
		return 0;
	if (p->chunk_type == SCTP_INIT)
		return mh_reinit_port(p, svc, ep, v);
	if (young_candidate(p))
		return young_port(p, svc, ep, v);
	return 0;
}

// Notes the first path's choice for the others (an existing note stays: the
// first path this node saw decided).
__noinline int young_note(const struct pkt *p, const struct ct_val *v)
{
	if (!p || !v)
		return 0;
	struct young_key k = {.svc = v->svc, .vtag = p->vtag, .cport = p->sport, .vport = p->dport};
	struct young_val y = {.ep = v->ep, .nat_sport = v->nat_sport};
	bpf_map_update_elem(&young_assocs, &k, &y, BPF_NOEXIST);
	return 0;
}

#endif
