// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// SCTP association records (struct assoc): built from the first INIT,
// completed by the INIT-ACK, one conntrack entry pair per path (mh_paths),
// state shared by every path (mh_sync_state), replaced associations purged
// (mh_purge).
#ifndef LB_SCTP_ASSOC_H
#define LB_SCTP_ASSOC_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/conntrack.h"
#include "lib/sctp_params.h"
#include "lib/sctp_compact.h"

static __always_inline struct mh_ctx *mh_ctx_get(void)
{
	__u32 zero = 0;
	struct mh_ctx *c = bpf_map_lookup_elem(&mh_scratch, &zero);
	if (c)
		__builtin_memset(c, 0, sizeof(*c));
	return c;
}

static __always_inline __u8 mh_init_limit(const struct assoc *a)
{
	if (a->mode == MODE_FULLNAT)
		return a->nv;
	if (a->mode == MODE_DEFAULT)
		return LB_MAX_VIPS;
	return 1; // onearm: the endpoint sees one LB address
}

// First INIT of an association (v: the orig entry being created): builds
// the record and rewrites the INIT (p->ip_end follows when it shrinks). 0
// or -1 (drop).
static __noinline int mh_init_new(struct __sk_buff *skb, struct pkt *p, const struct ct_val *v)
{
	struct mh_ctx *c = mh_ctx_get();
	if (!c)
		return -1;
	struct assoc *a = &c->a;
	__u32 svc = v->svc;
	addr_cpy(a->vip[0], p->dst);
	__u8 nv = 1;
	struct svc_vips *sv = bpf_map_lookup_elem(&svc_vip_list, &svc);
	// NAT64 runs as onearm toward the endpoint, but the client side is
	// multi-homed like any other: every VIP is a path (see mh_follow).
	c->nat64 = is_mapped(v->nat_src) != (p->family == AF_INET);
	if (sv && (v->mode != MODE_ONEARM || c->nat64)) {
		for (int i = 0; i < LB_MAX_VIPS; i++) {
			if (i >= sv->n || nv >= LB_MAX_VIPS)
				break;
			if (addr_eq(sv->vip[i], p->dst))
				continue;
			addr_cpy(a->vip[nv & (LB_MAX_VIPS - 1)], sv->vip[i]);
			nv++;
		}
	}
	a->nv = nv;
	addr_cpy(a->caddr[0], p->src);
	a->nc = 1;
	addr_cpy(a->eaddr[0], v->nat_dst);
	a->ne = 1;
	addr_cpy(a->lsrc0, v->nat_src);
	a->svc = svc;
	a->ep = v->ep;
	a->nat_sport = v->nat_sport;
	a->eport = v->nat_dport;
	a->mode = v->mode;
	a->family = p->family;
	c->limit = c->nat64 ? nv : mh_init_limit(a);
	if (mh_walk(skb, p, c))
		return -1;
	// The keys are built in c (zeroed by mh_ctx_get), not on the stack.
	struct assoc_key *k = &c->key;
	k->svc = svc;
	k->vtag_client = p->init_tag;
	k->cport = p->sport;
	k->vport = p->dport;
	bpf_map_update_elem(&assocs, k, a, BPF_ANY);
	ct_emit_assoc(k);
	struct pend_key *pk = &c->pend;
	pk->vtag = p->init_tag;
	pk->sport = v->nat_dport;
	pk->dport = v->nat_sport;
	addr_cpy(pk->dst, v->nat_src);
	bpf_map_update_elem(&init_pending, pk, v->nat_dst, BPF_ANY);
	return 0;
}

// An INIT retransmitted on another path of an association being set up
// (same initiate tag; the record the first INIT made, whose endpoint ep
// new_flow took): the new entry v (zeroed) asks for the first INIT's SNAT
// port, which snat_pick keeps when that path's reply tuple is free or the
// first INIT's own. A client's stack sends the retransmission to another
// of the peer's addresses when the first times out (usrsctp moves its
// primary to the alternate at each T1-init expiry, RFC 9260 6.4), or from
// another source address. The endpoint tells associations apart by their
// ports: a second port would set up a second association there (its own
// INIT-ACK and tag) beside the one the record's paths carry, and the
// client's later packets on that path would be out of the blue. Global,
// like young_port: verified once.
__noinline int mh_reinit_port(const struct pkt *p, __u32 svc, __u32 ep, struct ct_val *v)
{
	if (!p || !v)
		return 0;
	struct assoc_key k = {.svc = svc, .vtag_client = p->init_tag, .cport = p->sport, .vport = p->dport};
	struct assoc *a = bpf_map_lookup_elem(&assocs, &k);
	if (!a || a->ep != ep)
		return 0;
	v->nat_sport = a->nat_sport;
	return 0;
}

// An INIT-ACK from an endpoint address no entry knows yet: the primary
// reply entry of the association it answers, or NULL.
static __noinline struct ct_val *mh_ack_entry(const struct pkt *p)
{
	struct pend_key pk = {.vtag = p->vtag, .sport = p->sport, .dport = p->dport};
	addr_cpy(pk.dst, p->dst);
	struct addr16 *ep = bpf_map_lookup_elem(&init_pending, &pk);
	if (!ep)
		return 0;
	struct ct_key k = {};
	addr_cpy(k.src, ep->a);
	addr_cpy(k.dst, p->dst);
	k.sport = p->sport;
	k.dport = p->dport;
	k.proto = IPPROTO_SCTP;
	struct ct_val *ct = ct_lookup(&k);
	if (!ct || !(ct->flags & CT_F_REPLY) || ct->vtag_client != p->vtag)
		return 0;
	return ct;
}

// The VIPs mh_grow offered lead to the endpoint's first address (the one
// the service names): vip[j] -> eaddr[0] for j >= ne. The record then holds
// nv endpoint addresses, some repeated.
static __always_inline void mh_spread(struct assoc *a)
{
	__u32 ne = a->ne;
	for (int j = 1; j < LB_MAX_VIPS; j++) {
		if (j < ne)
			continue;
		if (j >= a->nv)
			break;
		addr_cpy(a->eaddr[j], a->eaddr[0]);
	}
	a->ne = a->nv;
}

// Whether endpoint address j repeats an earlier one (a VIP mh_grow added).
static __always_inline int mh_repeat(const struct assoc *a, int j)
{
	for (int k = 0; k < LB_MAX_VIPS - 1; k++) {
		if (k >= j)
			break;
		if (addr_eq(a->eaddr[k], a->eaddr[j & (LB_MAX_VIPS - 1)]))
			return 1;
	}
	return 0;
}

// Adds the conntrack entries of every path but the primary one, copying the
// primary's reply entry tmpl. A path to a repeated endpoint address gets no
// reply entry: the endpoint's packets to that client address already have
// one, from the first VIP leading to it; nor does a NAT64 client's second
// address (see mh_follow). Global: verified once.
__noinline int mh_paths(struct mh_ctx *c, const struct ct_val *tmpl)
{
	__u32 zero = 0;
	struct ct_key k;

	if (!c || !tmpl)
		return 0;
	struct ct_val *v = bpf_map_lookup_elem(&scratch, &zero);
	if (!v)
		return 0;
	__u16 cport = tmpl->nat_dport, vport = tmpl->nat_sport;
	int made = 0;
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= c->a.nc)
			break;
		for (int j = 0; j < LB_MAX_VIPS; j++) {
			if (j >= c->a.ne)
				break;
			if (i == 0 && j == 0)
				continue;
			const __u8 *ls = mh_lsrc(&c->a, i);
			*v = *tmpl;
			v->flags = CT_F_PATH | CT_F_RELEASED;
			v->packets = 0;
			v->bytes = 0;
			v->fib_ns = 0;
			__builtin_memset(&k, 0, sizeof(k));
			addr_cpy(k.src, c->a.caddr[i]);
			addr_cpy(k.dst, c->a.vip[j]);
			k.sport = cport;
			k.dport = vport;
			k.proto = IPPROTO_SCTP;
			addr_cpy(v->nat_src, ls);
			addr_cpy(v->nat_dst, c->a.eaddr[j]);
			v->nat_sport = c->a.nat_sport;
			v->nat_dport = c->a.eport;
			if (ct_put(&k, CT_SCRATCH_ORIG))
				continue;
			// One reply entry per (endpoint address, LB address) pair:
			// NAT64 shows the endpoint one LB address for every client
			// address, and mh_follow points that entry at the path the
			// client last used.
			if (mh_repeat(&c->a, j) || (i > 0 && c->a.mode == MODE_ONEARM)) {
				made++;
				continue;
			}
			addr_cpy(k.src, c->a.eaddr[j]);
			addr_cpy(k.dst, ls);
			k.sport = c->a.eport;
			k.dport = c->a.nat_sport;
			addr_cpy(v->nat_src, c->a.vip[j]);
			addr_cpy(v->nat_dst, c->a.caddr[i]);
			v->nat_sport = vport;
			v->nat_dport = cport;
			v->flags |= CT_F_REPLY;
			if (!ct_put(&k, CT_SCRATCH_ORIG))
				made++;
		}
	}
	// mh_handshake left the record's key in c: its paths are complete.
	ct_emit_assoc(&c->key);
	return made;
}

// INIT (retransmitted) or INIT-ACK on an existing entry: rewrites it like
// the first one; the INIT-ACK also learns the endpoint's addresses. Without
// a record (evicted) only the primary pair is kept; p->ip_end follows when
// the chunk shrinks. Returns -1 (drop), 0, or 1 when the paths in mh_scratch
// are to be added (mh_paths).
static __noinline int mh_handshake(struct __sk_buff *skb, struct pkt *p, struct ct_val *ct)
{
	struct mh_ctx *c = mh_ctx_get();
	if (!c)
		return -1;
	int ack = p->chunk_type == SCTP_INIT_ACK;
	struct assoc_key k = {.svc = ct->svc};
	if (ack) {
		k.vtag_client = ct->vtag_client;
		k.cport = ct->nat_dport;
		k.vport = ct->nat_sport;
	} else {
		k.vtag_client = p->init_tag;
		k.cport = p->sport;
		k.vport = p->dport;
	}
	struct assoc *rec = bpf_map_lookup_elem(&assocs, &k);
	if (rec) {
		c->a = *rec;
		if (ack)
			c->a.ne = 1;
		else
			c->a.nc = 1;
		c->limit = ack ? c->a.nv : mh_init_limit(&c->a);
	} else {
		c->a.family = p->family;
		c->a.nv = c->a.nc = c->a.ne = 1;
		c->limit = 1;
		if (ack) {
			addr_cpy(c->a.vip[0], ct->nat_src);
			addr_cpy(c->a.eaddr[0], p->src);
			// NAT64: the client's family is the VIP's, and no address of
			// the IPv4 endpoint can be carried to it.
			if (is_mapped(ct->nat_src) != (p->family == AF_INET)) {
				c->a.family = p->family == AF_INET ? AF_INET6 : AF_INET;
				c->a.ne = 0;
				c->limit = 0;
			}
		} else {
			// mode first: stored after the copies, it had clang load
			// all 16 bytes of lsrc0 before storing any, spilling ten
			// of them (80 bytes of frame on the deepest call chain).
			c->a.mode = MODE_ONEARM;
			addr_cpy(c->a.caddr[0], p->src);
			addr_cpy(c->a.lsrc0, ct->nat_src);
		}
	}
	if (mh_walk(skb, p, c))
		return -1;
	if (!ack || !rec)
		return 0;
	c->a.vtag_ep = p->init_tag;
	if (c->a.ne < c->a.nv) {
		c->sctp_len = p->ip_end - p->l4_off;
		int n = mh_grow(skb, c);
		if (n < 0)
			return -1;
		if (n > 0) {
			p->ip_end = p->l4_off + n;
			mh_spread(&c->a);
		}
	}
	bpf_map_update_elem(&assocs, &k, &c->a, BPF_ANY);
	c->key = k; // for mh_paths' change event
	return 1; // the caller adds the paths: one frame less on the stack
}

// The primary orig entry of the association (service, client tag, ports
// packed as ports32), its key left in k; NULL when the record or the entry
// is gone.
static __always_inline struct ct_val *mh_primary(__u32 svc, __u32 vtag, __u32 ports, struct ct_key *k)
{
	struct assoc_key ak = {.svc = svc, .vtag_client = vtag, .cport = ports & 0xffff, .vport = ports >> 16};
	struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
	if (!a)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	addr_cpy(k->src, a->caddr[0]);
	addr_cpy(k->dst, a->vip[0]);
	k->sport = ak.cport;
	k->dport = ak.vport;
	k->proto = IPPROTO_SCTP;
	return ct_lookup(k);
}

// A path entry changed state (COOKIE-ACK, SHUTDOWN, ABORT seen on a
// secondary path): the association's primary entries take it, since the
// whole association ages with the primary's timeout.
__noinline int mh_sync_state(__u32 svc, __u32 vtag, __u32 ports, __u32 st, __u32 to)
{
	struct ct_key k;
	struct ct_val *pv = mh_primary(svc, vtag, ports, &k);
	if (!pv)
		return 0;
	// Never back: a late COOKIE-ACK on a path must not reopen a closing
	// association (states are ordered INIT < ... < CLOSED).
	if (st <= pv->state)
		return 0;
	pv->state = st;
	pv->timeout = to;
	if (st == CT_SCTP_CLOSED)
		release_active(pv);
	peer_key(pv, IPPROTO_SCTP, &k);
	struct ct_val *rv = ct_lookup(&k);
	if (rv) {
		rv->state = st;
		rv->timeout = to;
	}
	ct_emit(CT_EV_ENTRY, &k);
	return 0;
}

// A new association replaces old on a tuple: every entry of the old one
// goes (the primary's too when the tuple was one of its secondary paths).
__noinline int mh_purge(__u32 svc, __u32 vtag, __u32 ports, __u32 was_path)
{
	struct assoc_key ak = {.svc = svc, .vtag_client = vtag, .cport = ports & 0xffff, .vport = ports >> 16};
	struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
	struct ct_key k;
	if (!a)
		return 0;
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= a->nc)
			break;
		for (int j = 0; j < LB_MAX_VIPS; j++) {
			if (j >= a->ne)
				break;
			if (i == 0 && j == 0 && !was_path)
				continue;
			__builtin_memset(&k, 0, sizeof(k));
			addr_cpy(k.src, a->caddr[i]);
			addr_cpy(k.dst, a->vip[j]);
			k.sport = ak.cport;
			k.dport = ak.vport;
			k.proto = IPPROTO_SCTP;
			if (i == 0 && j == 0) {
				struct ct_val *pv = ct_lookup(&k);
				if (pv)
					release_active(pv);
			}
			if (!ct_delete(&k))
				ct_emit(CT_EV_DELETED, &k);
			addr_cpy(k.src, a->eaddr[j]);
			addr_cpy(k.dst, mh_lsrc(a, i));
			k.sport = a->eport;
			k.dport = a->nat_sport;
			if (!ct_delete(&k))
				ct_emit(CT_EV_DELETED, &k);
		}
	}
	bpf_map_delete_elem(&assocs, &ak);
	ct_emit_assoc(&ak); // gone: the reader sends its deletion
	return 0;
}

#endif
