// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// LB-assisted SCTP path failover (mh_steer): the endpoint's packets toward a
// client address the client has stopped using are sent on the client's live
// path instead.
#ifndef LB_SCTP_STEER_H
#define LB_SCTP_STEER_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"

/* Why: a multi-homed client fails over to another path in about a second,
 * but the endpoint keeps sending new DATA to the dead client address and
 * only retransmits elsewhere after each T3 timeout, backing off up to
 * RTO.max (60 s by default). The LB sees every path of the association and
 * knows which one the client uses now.
 *
 * Per client address i the association record keeps cseen[i], the client's
 * last packet from it, and eask[i], the first endpoint packet toward it
 * since then (a packet the client has not answered from i). Client address
 * i is dead when the client's latest packet came from another address l,
 * and either
 *   - the endpoint has been sending toward i for at least the hold-down
 *     with nothing from i, while the client was heard from l after the
 *     first of those packets (it is alive, just not on i), or
 *   - the FIB found no route toward i (forward sets CT_F_NOROUTE) and
 *     nothing came from i since.
 *   - the client itself moved its traffic (anything but heartbeats) from
 *     i to l and has sent nothing from i since, and the endpoint's packets
 *     toward i went unanswered from i for LB_STEER_MOVED_MS (or the
 *     hold-down if shorter) while the client was heard from l. A client
 *     moves its traffic only when it stops trusting i (RFC 9260 6.4: a
 *     T3 retransmission goes to another address, then failover), so this
 *     is its own verdict, reached in one RTO; a client that is merely slow
 *     to acknowledge (SACK delay up to 500 ms) keeps its traffic on i and
 *     waits out the full hold-down (1 s by default). This brings the
 *     endpoint along within about RTO + 200 ms of the client's move.
 * An address the endpoint does not send to is never dead; the endpoint's
 * heartbeats toward an idle but live address are answered from it (a
 * HEARTBEAT-ACK goes to the VIP the heartbeat came from, which the client
 * routes over that address's link) well within the hold-down.
 * The endpoint's packets toward a dead address (DATA, SACK, HEARTBEAT
 * alike: the client answers its heartbeats itself) take the client's live
 * path: destination caddr[l], source the VIP the client last sent to from
 * caddr[l]. Steering stops as soon as a client packet comes from i again.
 * NAT64 associations need none of this: mh_follow already points their
 * single reply entry at the client's latest path. */

struct steer_addrs {
	__u8 src[16];
	__u8 dst[16];
};

static __always_inline int mh_caddr_idx(const struct assoc *a, const __u8 *addr)
{
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= a->nc)
			break;
		if (addr_eq(a->caddr[i], addr))
			return i;
	}
	return -1;
}

static __always_inline int mh_vip_idx(const struct assoc *a, const __u8 *addr)
{
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= a->nv)
			break;
		if (addr_eq(a->vip[i], addr))
			return i;
	}
	return -1;
}

// Records a client packet (orig entry ct) or decides where an endpoint
// packet (reply entry ct) goes: returns 1 with ad set to the live path's
// (VIP, client address) when it is to be steered, else 0 (ad untouched).
// Global: verified once.
__noinline int mh_steer(struct ct_val *ct, const struct pkt *p, struct steer_addrs *ad)
{
	if (!ct || !p || !ad)
		return 0;
	__u32 svc = ct->svc;
	struct svc_info *si = bpf_map_lookup_elem(&svc_infos, &svc);
	if (!si || !(si->flags & SVC_F_PATH_FAILOVER))
		return 0;
	int reply = ct->flags & CT_F_REPLY;
	struct assoc_key k = {.svc = svc, .vtag_client = ct->vtag_client};
	if (reply) {
		k.cport = ct->nat_dport;
		k.vport = ct->nat_sport;
	} else {
		k.cport = p->sport;
		k.vport = p->dport;
	}
	struct assoc *a = bpf_map_lookup_elem(&assocs, &k);
	if (!a || a->nc < 2)
		return 0;
	__u64 now = lb_now();
	if (!reply) {
		int i = mh_caddr_idx(a, p->src);
		int j = mh_vip_idx(a, p->dst);
		if (i < 0 || j < 0)
			return 0;
		a->cseen[i & (LB_MAX_VIPS - 1)] = now;
		a->cvip[i & (LB_MAX_VIPS - 1)] = j;
		a->live = i;
		// Heartbeats probe every path; the rest follows the path the
		// client trusts.
		a->tmoved &= ~(1 << i);
		if (p->chunk_type != SCTP_HEARTBEAT && p->chunk_type != SCTP_HEARTBEAT_ACK) {
			if (a->ctraf != i && a->ctraf < a->nc)
				a->tmoved |= 1 << (a->ctraf & (LB_MAX_VIPS - 1));
			a->ctraf = i;
		}
		return 0;
	}
	int i = mh_caddr_idx(a, ct->nat_dst);
	if (i < 0)
		return 0;
	i &= LB_MAX_VIPS - 1;
	if (ct->flags & CT_F_NOROUTE) {
		ct->flags &= ~CT_F_NOROUTE;
		a->noroute[i] = now;
	}
	// Strictly older: the clock is coarse (a tick of a few ms), and an
	// endpoint packet in the tick of the client's last one must not look
	// answered by it.
	if (!a->eask[i] || a->eask[i] < a->cseen[i])
		a->eask[i] = now;
	__u32 l = a->live & (LB_MAX_VIPS - 1);
	__u64 hold = (__u64)(si->steer_hold_ms ? si->steer_hold_ms : LB_STEER_HOLD_MS) * 1000000ULL;
	__u64 wait = hold;
	if ((a->tmoved >> i) & 1 && wait > LB_STEER_MOVED_MS * 1000000ULL)
		wait = LB_STEER_MOVED_MS * 1000000ULL;
	int dead = l != i && a->cseen[l] &&
		   (a->noroute[i] > a->cseen[i] || (now - a->eask[i] >= wait && a->cseen[l] > a->eask[i]));
	if (!dead) {
		if (a->steer_since && a->steer_from == i)
			a->steer_since = 0;
		return 0;
	}
	__u8 vi = a->cvip[l] & (LB_MAX_VIPS - 1);
	// A new steering is counted when it starts or moves to another client
	// address; the client switching VIPs on the live address is not one.
	if (!a->steer_since || a->steer_from != i || a->steer_to != l) {
		a->steer_since = now;
		a->steer_from = i;
		a->steer_to = l;
		a->steers += 1;
		__u64 *n = bpf_map_lookup_elem(&steer_stats, &svc);
		if (n)
			*n += 1;
	}
	a->steer_vip = vi;
	addr_cpy(ad->dst, a->caddr[l]);
	addr_cpy(ad->src, a->vip[vi]);
	return 1;
}

#endif
