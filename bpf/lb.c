//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// telcolb TC datapath: L4 load balancing with conntrack and NAT44/NAT66 (and
// NAT64: IPv6 VIP, IPv4 endpoints, see lib/nat64.h) for TCP, UDP and SCTP.
// Layouts shared with Go are in include/lb_types.h. This file holds the
// programs and the flow setup; each stage lives in its header under lib/,
// included below in dependency order (one compilation unit, so the object
// is what a single file would give):
//   proto.h       protocol numbers and constants
//   maps.h        every map and the per-CPU scratch values
//   parse.h       struct pkt: Ethernet/VLAN, IPv4, IPv6, L4 headers (the
//                 common case by direct packet access: parse_direct)
//   helpers.h     counters, clock, address helpers, flow hash
//   filter.h      address filter: misses passed before parsing
//   csum.h        Internet checksum, IPv4 header builder, SCTP CRC32c
//   sctp_params.h INIT/INIT-ACK address parameter rewrite, ASCONF policy
//   sctp_compact.h INIT/INIT-ACK compaction and growth
//   ct_events.h   conntrack change events (ring buffer) for HA sync
//   ct_map.h      conntrack map access: IPv4 keys in conntrack4 (16 bytes)
//   conntrack.h   timeouts, state machine, entry insertion
//   sctp_assoc.h  SCTP association records and their paths
//   sctp_steer.h  LB-assisted path failover: endpoint onto the live path
//   select.h      endpoint selection
//   sctp_young.h  SCTP associations taken up from non-INIT packets: every
//                 path keeps the first one's endpoint and SNAT port
//   maglev.h      maglev lookup tables (included by select.h)
//   fib.h         FIB lookup (cached per flow) and forwarding
//   nat.h         same-family rewrite, SNAT source selection
//   nat64.h       IPv6 <-> IPv4 translation of a flow's packets
//   icmp.h        echo replies, ICMP errors about tracked flows
//   nat64_icmp.h  ICMP errors across families, fragmentation needed
//   frag.h        later IP fragments follow their first one
//   fastpath.h    established packets by direct packet access (ct_fast)
//   fastpath64.h  the same for NAT64 flows, translated (ct_fast64)
//   xdp_fast.h    the same in XDP (xdp_fast), before TC, where attached
//
// Design notes (the why):
//   - Headers are read by direct packet access at constant offsets in the
//     common case (untagged, IPv4 without options, unfragmented, or IPv6
//     without extension headers; TCP/UDP/SCTP: parse_direct) and else by
//     bpf_skb_load_bytes into stack copies (VLAN tags, options, extension
//     headers, fragments, ICMP, non-linear or malformed), which keeps the
//     general parse simple for the 5.15/6.1 verifiers. The miss check
//     (lib/filter.h) reads fixed offsets directly before either.
//   - Writes go through bpf_skb_store_bytes and the csum helpers, which keep
//     skb->csum coherent for CHECKSUM_COMPLETE devices, except on the
//     established fast paths (lib/fastpath.h, fastpath64.h): they write headers
//     directly and leave only the L4 checksum to bpf_l4_csum_replace, the
//     one step that depends on skb->ip_summed (and NAT64 its change of
//     protocol to bpf_skb_change_proto).
//   - Conntrack holds both directions; each entry carries the full translation
//     to apply, so the hot path is one hash lookup and a few stores.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/lb_types.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/helpers.h"
#include "lib/filter.h"
#include "lib/csum.h"
#include "lib/sctp_params.h"
#include "lib/sctp_compact.h"
#include "lib/conntrack.h"
#include "lib/sctp_assoc.h"
#include "lib/sctp_steer.h"
#include "lib/select.h"
#include "lib/sctp_young.h"
#include "lib/fib.h"
#include "lib/nat.h"
#include "lib/nat64.h"
#include "lib/icmp.h"
#include "lib/nat64_icmp.h"
#include "lib/frag.h"
#include "lib/fastpath.h"
#include "lib/fastpath64.h"
#include "lib/xdp_fast.h"

/* Flow setup: established packets, new connections, the programs. */

// Global, like ct_fast: verified once, whichever conntrack map (conntrack4
// or conntrack, lib/ct_map.h) ct points into; as a static function the
// verifier would walk it once per map.
__noinline int ct_established(struct __sk_buff *skb, struct pkt *p, struct ct_val *ct)
{
	if (!skb || !p || !ct)
		return TC_ACT_OK;
	ct_account(skb->len, p, ct, lb_now());
	count_slow(ct->svc);

	if (p->ttl <= 1)
		return TC_ACT_OK; // the stack answers with time exceeded
	if (ct->flags & CT_F_DSR) {
		frag_note(p);
		return forward(skb, p, p->src, ct->nat_dst, ct);
	}
	if (p->proto == IPPROTO_SCTP && (p->chunk_type >= 0x80 || p->chunk_type == SCTP_AUTH) && sctp_asconf(skb, p)) {
		count_drop(DROP_SCTP_ASCONF);
		return TC_ACT_SHOT;
	}
	if (p->proto == IPPROTO_SCTP &&
	    ((p->chunk_type == SCTP_INIT && !(ct->flags & CT_F_REPLY)) ||
	     (p->chunk_type == SCTP_INIT_ACK && (ct->flags & CT_F_REPLY)))) {
		int r = mh_handshake(skb, p, ct);
		if (r < 0) {
			count_drop(DROP_SCTP_PARAMS);
			return TC_ACT_SHOT;
		}
		if (r > 0) {
			__u32 zero = 0;
			mh_paths(bpf_map_lookup_elem(&mh_scratch, &zero), ct);
		}
	}

	struct steer_addrs ad;
	addr_cpy(ad.src, ct->nat_src);
	addr_cpy(ad.dst, ct->nat_dst);
	int nat64 = nat64_crosses(p, ad.dst);
	if (nat64 && p->frag)
		return TC_ACT_OK; // not followed (lib/frag.h)
	frag_note(p);
	if (nat64 && p->proto == IPPROTO_SCTP && p->family == AF_INET6 && !(ct->flags & CT_F_REPLY))
		mh_follow(ct, p);
	int steered = 0;
	if (p->proto == IPPROTO_SCTP && ct->vtag_client)
		steered = mh_steer(ct, p, &ad);
	if (nat64 ? nat64_xlate(skb, p, ad.src, ad.dst, ports32(ct->nat_sport, ct->nat_dport))
			    : rewrite(skb, p, ad.src, ad.dst, ports32(ct->nat_sport, ct->nat_dport))) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	// A steered packet is routed without the entry's cached next hop,
	// which belongs to the dead path (and must stay its own).
	int r = forward(skb, p, ad.src, ad.dst, steered ? 0 : ct);
	if (r == LB_NEXT_NAT64_TOO_BIG)
		return nat64_too_big(skb, p);
	return r;
}

// Releases the active count of the primary orig entry of an association
// (service, client tag, ports). Global: verified once.
__noinline int release_primary(__u32 svc, __u32 tag, __u32 ports)
{
	struct ct_key k;
	struct ct_val *v = mh_primary(svc, tag, ports, &k);
	if (v && !(v->flags & CT_F_REPLY) && v->vtag_client == tag)
		release_active(v);
	return 0;
}

static __noinline int new_flow(struct __sk_buff *skb, struct pkt *p, struct ct_key *key,
				    struct ct_val *old)
{
	struct svc_key sk = {};
	addr_cpy(sk.vip, p->dst);
	sk.port = p->dport;
	sk.proto = p->proto;
	__u32 *idp = bpf_map_lookup_elem(&services, &sk);
	if (!idp)
		return TC_ACT_OK;
	__u32 id = *idp;
	if (id >= LB_MAX_SERVICES)
		return TC_ACT_OK;
	struct svc_info *info = bpf_map_lookup_elem(&svc_infos, &id);
	if (!info || !(info->flags & SVC_F_VALID))
		return TC_ACT_OK;

	// A lone RST or a stray SCTP ABORT/SHUTDOWN-COMPLETE must not create state.
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST))
		return TC_ACT_OK;
	if (p->proto == IPPROTO_SCTP &&
	    (p->chunk_type == SCTP_ABORT || p->chunk_type == SCTP_SHUTDOWN_COMPLETE))
		return TC_ACT_OK;

	int sel = -1;
	if (p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT) {
		// The same INIT (same tag) retransmitted from another client
		// address must reach the endpoint the first one went to, and
		// becomes the association's primary entry: the count of active
		// associations moves to it (the first primary turns into a path
		// entry when the INIT-ACK passes).
		struct assoc_key ak = {.svc = id, .vtag_client = p->init_tag, .cport = p->sport, .vport = p->dport};
		struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
		if (a && a->ep < info->n_eps && ep_usable(id, a->ep)) {
			sel = a->ep;
			release_primary(id, p->init_tag, ports32(p->sport, p->dport));
		}
	} else if (young_candidate(p)) {
		// Another path of an association taken up from its packets
		// (lib/sctp_young.h) goes to its endpoint.
		sel = young_sibling(p, id, info->n_eps);
	}
	if (sel < 0)
		sel = select_ep(p, id, info);
	if (sel < 0 || sel >= LB_MAX_EPS || sel >= info->n_eps) {
		count_drop(DROP_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}
	__u32 epi = (__u32)sel;
	__u32 ek = id * LB_MAX_EPS + epi;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep || ep->down) {
		count_drop(DROP_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}

	__u32 zero = 0;
	struct ct_val *vp = bpf_map_lookup_elem(&scratch, &zero);
	if (!vp)
		return TC_ACT_OK;
	__builtin_memset(vp, 0, sizeof(*vp));
	// That path's SNAT port too (snat_pick tries it first), and the
	// association counts once; an INIT retransmitted on another path asks
	// for the first INIT's port the same way (sctp_port). Looked up again
	// rather than carried from young_sibling or the record: new_flow is on
	// the deepest call chain (mh_init_new's) and one more live value spills.
	if (p->proto == IPPROTO_SCTP)
		sctp_port(p, id, epi, vp);
	addr_cpy(vp->nat_dst, ep->addr);
	vp->nat_dport = ep->port ? ep->port : p->dport;
	vp->svc = id;
	vp->ep = epi;
	vp->family = p->family;
	// NAT64 always takes an IPv4 source of the LB (see nat64_xlate).
	vp->mode = nat64_crosses(p, ep->addr) ? MODE_ONEARM : info->mode;
	vp->idle = info->idle_timeout;
	vp->created = vp->last_seen = lb_now();
	vp->packets = 1;
	vp->bytes = skb->len;
	switch (p->proto) {
	case IPPROTO_TCP:
		vp->state = (p->tcp_flags & TCP_SYN) ? CT_TCP_SYN_SENT : CT_TCP_ESTABLISHED;
		break;
	case IPPROTO_UDP:
		vp->state = CT_UDP_NEW;
		break;
	case IPPROTO_SCTP:
		vp->state = p->chunk_type == SCTP_INIT ? CT_SCTP_INIT : CT_SCTP_ESTABLISHED;
		if (p->chunk_type == SCTP_INIT)
			vp->vtag_client = p->init_tag;
		else
			vp->vtag_ep = p->vtag; // taken up: the tag its paths share
		vp->cport = p->sport;
		break;
	}
	vp->timeout = state_timeout(p->proto, vp->state, vp->idle);

	switch (vp->mode) {
	case MODE_DSR:
		addr_cpy(vp->nat_src, p->src);
		vp->nat_sport = p->sport;
		vp->nat_dport = p->dport; // L2 only: nothing is rewritten
		vp->flags |= CT_F_DSR;
		break;
	case MODE_DEFAULT:
		addr_cpy(vp->nat_src, p->src);
		vp->nat_sport = p->sport;
		break;
	default: {
		int rc = snat_pick(skb, p, vp);
		if (rc) {
			count_drop(rc);
			return TC_ACT_SHOT;
		}
	}
	}

	if (p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT && vp->mode != MODE_DSR &&
	    mh_init_new(skb, p, vp)) {
		count_drop(DROP_SCTP_PARAMS);
		return TC_ACT_SHOT;
	}

	// Replacing an association on the same tuple: drop its reply side.
	if (old) {
		struct ct_key ork;
		if (!(old->flags & CT_F_DSR)) {
			peer_key(old, p->proto, &ork);
			if (!ct_delete(&ork))
				ct_emit(CT_EV_DELETED, &ork);
		}
		release_active(old);
		if (p->proto == IPPROTO_SCTP)
			mh_purge(old->svc, old->vtag_client, (__u32)p->dport << 16 | old->cport,
				 old->flags & CT_F_PATH);
	}

	int rc = ct_insert(p, key, vp);
	if (rc) {
		count_drop(rc);
		return TC_ACT_SHOT;
	}
	// Another path of a taken-up association (CT_F_RELEASED, set by
	// young_port) is no connection of its own: neither active nor a session.
	int own = !(vp->flags & CT_F_RELEASED);
	__u32 *act = bpf_map_lookup_elem(&ep_active, &ek);
	if (act && own)
		__sync_fetch_and_add(act, 1);
	if (own && young_candidate(p))
		young_note(p, vp);
	count(&svc_stats, id, skb->len, own);
	count_ep(ek, skb->len, own);

	if (p->ttl <= 1)
		return TC_ACT_OK;
	if (!nat64_crosses(p, vp->nat_dst))
		frag_note(p);
	if (vp->flags & CT_F_DSR)
		return forward(skb, p, p->src, vp->nat_dst, 0);
	__u32 np = ports32(vp->nat_sport, vp->nat_dport);
	if (nat64_crosses(p, vp->nat_dst) ? nat64_xlate(skb, p, vp->nat_src, vp->nat_dst, np)
				    : rewrite(skb, p, vp->nat_src, vp->nat_dst, np)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return forward(skb, p, vp->nat_src, vp->nat_dst, 0);
}

// The last 8 bytes of p's key, in both forms (struct ct_key, ct_key4):
// ports, protocol and zero padding, as one word (see ct_lookup_pkt).
static __always_inline __u64 ct_key_tail(const struct pkt *p)
{
	return (__u64)p->proto << 32 | ports32(p->sport, p->dport);
}

// The key of p's tuple, as new_flow takes it.
static __always_inline void ct_key_of(const struct pkt *p, struct ct_key *k)
{
	addr_cpy(k->src, p->src);
	addr_cpy(k->dst, p->dst);
	__u64 w = ct_key_tail(p);
	__builtin_memcpy(&k->sport, &w, sizeof(w));
}

// The conntrack entry of p's tuple (ct_lookup's choice of map). The key is
// written in whole 8-byte words, and the IPv4 one straight in its compact
// form (struct ct_key4): the map's hash reads it in 4-byte words and its
// compare in 8-byte ones, and on x86 a load that spans several narrower
// stores waits for them to retire instead of taking their data at once
// (about 5 ns a stall; a key written field by field stalled up to four
// times).
static __always_inline struct ct_val *ct_lookup_pkt(const struct pkt *p)
{
	if (p->family == AF_INET || (is_mapped(p->src) && is_mapped(p->dst))) {
		__u64 k4[2];
		_Static_assert(sizeof(k4) == sizeof(struct ct_key4), "ct_key4 is two words");
		k4[0] = (__u64) * (const __u32 *)(p->dst + 12) << 32 | *(const __u32 *)(p->src + 12);
		k4[1] = ct_key_tail(p);
		struct ct_val *v = bpf_map_lookup_elem(&conntrack4, k4);
		// Keeps clang from merging the two lookups into one call on two
		// maps, which the verifier cannot inline (a call through the
		// map's ops, ~10 ns more).
		barrier_var(v);
		return v;
	}
	struct ct_key k;
	ct_key_of(p, &k);
	return bpf_map_lookup_elem(&conntrack, &k);
}

static __always_inline int starts_new(const struct pkt *p, const struct ct_val *ct)
{
	if (ct->flags & CT_F_REPLY)
		return 0;
	// A retransmitted INIT carries the same initiate tag: it belongs to the
	// association being set up and must reach the same endpoint. A different
	// tag on the same 5-tuple is a new association (peer restarted).
	if (p->proto == IPPROTO_SCTP)
		return p->chunk_type == SCTP_INIT && p->init_tag != ct->vtag_client;
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && ct->state == CT_TCP_CLOSED;
	return 0;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	// A frame for another host's MAC (a bridge flooding unknown unicast,
	// a promiscuous port) is not ours: balancing it would duplicate the
	// flow the real owner also sees. Broadcast and multicast frames
	// (ARP, neighbour discovery) carry on as before.
	if (skb->pkt_type == PACKET_OTHERHOST)
		return TC_ACT_OK;
	if (filter_miss(skb))
		return TC_ACT_OK;

	struct pkt p = {};
	int r = parse_direct(skb, &p);
	if (r != PARSE_OK) {
		// parse_direct may have written part of p before it gave up.
		__builtin_memset(&p, 0, sizeof(p));
		r = parse(skb, &p);
	}

	if (r == PARSE_PASS)
		return TC_ACT_OK;
	if (r == PARSE_MALFORMED) {
		// Only traffic addressed to us is ours to drop.
		if (p.family && is_vip(p.dst)) {
			count_drop(DROP_MALFORMED);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK;
	}
	if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6) {
		if ((p.family == AF_INET) != (p.proto == IPPROTO_ICMP))
			return TC_ACT_OK;
		if (p.icmp_type == (p.family == AF_INET ? ICMP_ECHO : ICMPV6_ECHO_REQUEST) && is_vip(p.dst))
			return icmp_echo_reply(skb, &p);
		if (is_icmp_error(&p)) {
			r = icmp_error(skb, &p);
			if (r == LB_NEXT_NAT64_ICMP)
				return nat64_icmp(skb, &p);
			return r;
		}
		return TC_ACT_OK;
	}

	// A later fragment goes where its first fragment went, or to the
	// stack (lib/frag.h); it never starts a flow.
	if (p.frag == FRAG_LATER && !frag_follow(&p))
		return TC_ACT_OK;

	struct ct_val *ct = ct_lookup_pkt(&p);
	if (ct && !starts_new(&p, ct)) {
		r = nat64_crosses(&p, ct->nat_dst) ? ct_fast64(skb, &p, ct) : ct_fast(skb, &p, ct);
		if (r != LB_NEXT_SLOW)
			return r;
		return ct_established(skb, &p, ct);
	}
	if (p.frag == FRAG_LATER)
		return TC_ACT_OK;
	if (!ct && p.proto == IPPROTO_SCTP && p.chunk_type == SCTP_INIT_ACK) {
		// Translated like one from the address the INIT went to: the
		// client sees it come from the VIP it sent the INIT to.
		struct ct_val *rct = mh_ack_entry(&p);
		if (rct)
			return ct_established(skb, &p, rct);
	}
	struct ct_key k;
	ct_key_of(&p, &k);
	return new_flow(skb, &p, &k, ct);
}

// Baseline for per-packet cost measurements.
SEC("tc")
int tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

// The floor of an established packet, for per-packet cost measurements
// beside tc_pass (never attached): what any balancer does with a packet of
// a tracked flow and nothing more. It parses the headers, looks the flow up
// and sends the packet, unchanged, to the flow's cached next hop. What
// tc_ingress costs above it is the rewrite, the checksums, the counters and
// the flow's state.
SEC("tc")
int tc_floor(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (parse_direct(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	struct ct_val *ct = ct_lookup_pkt(&p);
	if (!ct)
		return TC_ACT_OK;
	return bpf_redirect(ct->fib_ifindex, 0);
}

// XDP mode (--attach=xdp): established flows only (lib/xdp_fast.h); every
// other frame goes on to tc_ingress, attached as well, untouched.
SEC("xdp")
int xdp_ingress(struct xdp_md *ctx)
{
	__u32 in = ctx->ingress_ifindex;
	struct xdp_iface *xi = bpf_map_lookup_elem(&xdp_ifaces, &in);
	if (!xi)
		return XDP_PASS;
	// Only frames for this host (tc_ingress's PACKET_OTHERHOST test):
	// broadcast, multicast and other hosts' frames go on to TC.
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (*(__u32 *)eth->h_dest != *(__u32 *)xi->mac || *(__u16 *)(eth->h_dest + 4) != *(__u16 *)(xi->mac + 4))
		return XDP_PASS;

	struct pkt p = {};
	if (xdp_parse(ctx, &p) != PARSE_OK)
		return XDP_PASS;
	struct ct_val *ct = ct_lookup_pkt(&p);
	if (!ct || starts_new(&p, ct))
		return XDP_PASS;
	return xdp_fast(ctx, &p, ct);
}

// Baseline for XDP per-packet cost measurements.
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
