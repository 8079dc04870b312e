// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Conntrack: timeouts per state, the state machine (next_state, ct_track,
// which mirrors every change into the peer entry) and the insertion of a new
// connection's two entries (ct_insert).
#ifndef LB_CONNTRACK_H
#define LB_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/filter.h"
#include "lib/ct_events.h"
#include "lib/ct_map.h"

static __always_inline __u32 state_timeout(__u8 proto, __u8 state, __u32 idle)
{
	switch (proto) {
	case IPPROTO_TCP:
		switch (state) {
		case CT_TCP_SYN_SENT:
		case CT_TCP_SYN_RECV:
			return LB_TO_TCP_SYN;
		case CT_TCP_ESTABLISHED:
			return idle ? idle : LB_TO_TCP_EST;
		case CT_TCP_FIN_WAIT:
			return LB_TO_TCP_FIN;
		}
		return LB_TO_CLOSED;
	case IPPROTO_UDP:
		if (state == CT_UDP_NEW)
			return LB_TO_UDP_NEW;
		return idle ? idle : LB_TO_UDP_EST;
	case IPPROTO_SCTP:
		switch (state) {
		case CT_SCTP_INIT:
		case CT_SCTP_COOKIE_WAIT:
			return LB_TO_SCTP_INIT;
		case CT_SCTP_ESTABLISHED:
			return idle ? idle : LB_TO_SCTP_EST;
		case CT_SCTP_SHUTDOWN:
			return LB_TO_SCTP_SHUTDOWN;
		}
		return LB_TO_CLOSED;
	}
	return LB_TO_CLOSED;
}

static __always_inline void release_active(struct ct_val *orig)
{
	if (orig->flags & CT_F_RELEASED)
		return;
	orig->flags |= CT_F_RELEASED;
	__u32 idx = orig->svc * LB_MAX_EPS + orig->ep;
	__u32 *a = bpf_map_lookup_elem(&ep_active, &idx);
	if (a && *a)
		__sync_fetch_and_add(a, -1);
}

// A secondary path's state change reaches the association's primary entries
// (lib/sctp_assoc.h).
int mh_sync_state(__u32 svc, __u32 vtag, __u32 ports, __u32 st, __u32 to);

// Returns the new state for this packet, given the entry's current state.
static __always_inline __u8 next_state(const struct pkt *p, const struct ct_val *ct, __u8 *fins)
{
	int reply = ct->flags & CT_F_REPLY;
	__u8 st = ct->state;

	switch (p->proto) {
	case IPPROTO_TCP: {
		__u8 f = p->tcp_flags;
		if (f & TCP_RST)
			return CT_TCP_CLOSED;
		if (f & TCP_FIN) {
			*fins |= reply ? CT_FIN_REPLY : CT_FIN_ORIG;
			if ((*fins & (CT_FIN_ORIG | CT_FIN_REPLY)) == (CT_FIN_ORIG | CT_FIN_REPLY))
				return CT_TCP_CLOSED;
			return CT_TCP_FIN_WAIT;
		}
		if (st == CT_TCP_SYN_SENT && reply && (f & TCP_SYN) && (f & TCP_ACK))
			return CT_TCP_SYN_RECV;
		if (st == CT_TCP_SYN_RECV && !reply && (f & TCP_ACK) && !(f & TCP_SYN))
			return CT_TCP_ESTABLISHED;
		return st;
	}
	case IPPROTO_UDP:
		if (st == CT_UDP_NEW && reply)
			return CT_UDP_ESTABLISHED;
		return st;
	case IPPROTO_SCTP:
		switch (p->chunk_type) {
		case SCTP_INIT_ACK:
			if (reply && (st == CT_SCTP_INIT || st == CT_SCTP_COOKIE_WAIT))
				return CT_SCTP_COOKIE_WAIT;
			return st;
		case SCTP_COOKIE_ACK:
			if (reply && st == CT_SCTP_COOKIE_WAIT)
				return CT_SCTP_ESTABLISHED;
			return st;
		case SCTP_SHUTDOWN:
		case SCTP_SHUTDOWN_ACK:
			if (st != CT_SCTP_CLOSED)
				return CT_SCTP_SHUTDOWN;
			return st;
		case SCTP_SHUTDOWN_COMPLETE:
		case SCTP_ABORT:
			return CT_SCTP_CLOSED;
		}
		return st;
	}
	return st;
}

static __always_inline int is_closed(__u8 proto, __u8 st)
{
	return (proto == IPPROTO_TCP && st == CT_TCP_CLOSED) ||
	       (proto == IPPROTO_SCTP && st == CT_SCTP_CLOSED);
}

// Applies a state change to the entry and mirrors it into the peer entry so
// both directions age with the same timeout.
static __always_inline void ct_track(const struct pkt *p, struct ct_val *ct)
{
	__u8 fins = ct->fins;
	__u8 st = next_state(p, ct, &fins);
	int init_ack = p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT_ACK &&
		       (ct->flags & CT_F_REPLY) && ct->vtag_ep == 0;

	if (st == ct->state && fins == ct->fins && !init_ack)
		return;

	__u32 to = state_timeout(p->proto, st, ct->idle);
	ct->state = st;
	ct->fins = fins;
	ct->timeout = to;
	if (init_ack)
		ct->vtag_ep = p->init_tag;

	struct ct_key pk;
	if (ct->flags & CT_F_DSR) {
		if (is_closed(p->proto, st))
			release_active(ct);
		// The packet's tuple is the entry's key (DSR has no peer).
		__builtin_memset(&pk, 0, sizeof(pk));
		addr_cpy(pk.src, p->src);
		addr_cpy(pk.dst, p->dst);
		pk.sport = p->sport;
		pk.dport = p->dport;
		pk.proto = p->proto;
		ct_emit(CT_EV_ENTRY, &pk);
		return;
	}
	peer_key(ct, p->proto, &pk);
	struct ct_val *peer = ct_lookup(&pk);
	if (peer) {
		peer->state = st;
		peer->fins = fins;
		peer->timeout = to;
		if (init_ack)
			peer->vtag_ep = p->init_tag;
	}
	if (is_closed(p->proto, st)) {
		if (!(ct->flags & CT_F_REPLY))
			release_active(ct);
		else if (peer)
			release_active(peer);
	}
	// After the last change to both entries: the event carries them as
	// they are now. The peer's key is known for sure (ct may have been
	// found through another key, mh_ack_entry); the event takes the
	// peer's peer too.
	ct_emit(CT_EV_ENTRY, &pk);
	if ((ct->flags & CT_F_PATH) && st != CT_SCTP_INIT && st != CT_SCTP_COOKIE_WAIT) {
		__u16 vport = (ct->flags & CT_F_REPLY) ? ct->nat_sport : p->dport;
		mh_sync_state(ct->svc, ct->vtag_client, (__u32)vport << 16 | ct->cport, st, to);
	}
}

// Writes the reply entry then the orig entry (in that order, so a reply can
// never find a half-made connection). Each key's address that identifies
// its packets (the orig's VIP, the reply's endpoint) goes into the address
// filter first, so no packet of the flow is taken for a miss. v is
// scratch[CT_SCRATCH_ORIG] (ct_put writes the slot). Returns 0 or a drop
// reason.
static __noinline int ct_insert(const struct pkt *p, struct ct_key *key, const struct ct_val *v)
{
	__u32 fi = LB_FILTER_DATAPATH;
	struct filter_bits *f = bpf_map_lookup_elem(&addr_filter, &fi);
	if (!f)
		return DROP_CT_FULL;
	filter_add(f, key->dst);
	if (!(v->flags & CT_F_DSR)) {
		__u32 one = CT_SCRATCH_REPLY;
		struct ct_val *r = bpf_map_lookup_elem(&scratch, &one);
		struct ct_key rk;
		if (!r)
			return DROP_CT_FULL;
		*r = *v;
		peer_key(v, p->proto, &rk);
		filter_add(f, rk.src);
		addr_cpy(r->nat_src, p->dst);
		addr_cpy(r->nat_dst, p->src);
		r->nat_sport = p->dport;
		r->nat_dport = p->sport;
		r->flags = CT_F_REPLY;
		r->packets = 0;
		r->bytes = 0;
		if (ct_put(&rk, CT_SCRATCH_REPLY))
			return DROP_CT_FULL;
	}
	if (ct_put(key, CT_SCRATCH_ORIG))
		return DROP_CT_FULL;
	ct_emit(CT_EV_ENTRY, key);
	return 0;
}

#endif
