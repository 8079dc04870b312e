// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Forwarding: TTL/hop limit decrement, FIB lookup with its result cached in
// the flow's conntrack entry, L2 rewrite and redirect (or neighbour
// resolution).
#ifndef LB_FIB_H
#define LB_FIB_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"

static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->family == AF_INET) {
		__u8 ttl = p->ttl - 1;
		__u16 o = bpf_htons((__u16)p->ttl << 8), n = bpf_htons((__u16)ttl << 8);
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 2))
			return -1;
		return bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, ttl), &ttl, 1, 0);
	}
	__u8 hl = p->ttl - 1;
	return bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0);
}

// fam is the family of src/dst, which differs from the packet's for a NAT64
// flow's source selection (the packet is still IPv6, the endpoint IPv4).
static __always_inline int fib_params(struct __sk_buff *skb, const struct pkt *p, __u8 fam,
				      const __u8 *src, const __u8 *dst, struct bpf_fib_lookup *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->ifindex = skb->ifindex;
	f->l4_protocol = p->proto;
	f->tot_len = p->ip_end - p->l3_off; // tot_len (v4), payload_len+40 (v6)
	if (fam == AF_INET) {
		f->family = AF_INET;
		__builtin_memcpy(&f->ipv4_src, src + 12, 4);
		__builtin_memcpy(&f->ipv4_dst, dst + 12, 4);
	} else {
		f->family = AF_INET6;
		__builtin_memcpy(f->ipv6_src, src, 16);
		__builtin_memcpy(f->ipv6_dst, dst, 16);
	}
	return bpf_fib_lookup(skb, f, sizeof(*f), 0);
}

// Routes the (already rewritten) packet toward dst: L2 rewrite and redirect
// when the FIB knows the way, otherwise hand it to the kernel stack. A flow's
// FIB result is cached in its conntrack entry (ct, may be NULL) for
// LB_FIB_CACHE_NS: the lookup is the costliest step of the established path,
// and a second of staleness bounds how long a neighbour change goes unseen.
static __noinline int forward(struct __sk_buff *skb, const struct pkt *p, const __u8 *src,
			      const __u8 *dst, struct ct_val *ct)
{
	struct bpf_fib_lookup f;
	__u8 macs[12];
	__u32 ifindex;

	// The cache holds no MTU: a NAT64 packet grown past the IPv6 minimum
	// MTU is looked up every time, so one too big is caught.
	if (ct && ct->fib_ns && ct->last_seen - ct->fib_ns < LB_FIB_CACHE_NS &&
	    !(p->nat64_to6 && p->ip_end - p->l3_off > IPV6_MIN_MTU)) {
		if (dec_ttl(skb, p) || bpf_skb_store_bytes(skb, 0, ct->fib_macs, 2 * ETH_ALEN, 0)) {
			count_drop(DROP_REWRITE);
			return TC_ACT_SHOT;
		}
		return bpf_redirect(ct->fib_ifindex, 0);
	}
	int rc = fib_params(skb, p, p->family, src, dst, &f);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && p->nat64_to6) {
		__u32 zero = 0;
		struct nat64_icmp_ctx *x = bpf_map_lookup_elem(&nat64_scratch, &zero);
		if (x)
			x->mtu = f.mtu_result;
		return LB_NEXT_NAT64_TOO_BIG;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		// No way toward an SCTP client address: the association's next
		// packet toward it may take another path (lib/sctp_steer.h).
		// Not for a packet too big (FRAG_NEEDED): that is no path failure.
		if (ct && (ct->flags & CT_F_REPLY) && p->proto == IPPROTO_SCTP &&
		    (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
		     rc == BPF_FIB_LKUP_RET_PROHIBIT || rc == BPF_FIB_LKUP_RET_NOT_FWDED))
			ct->flags |= CT_F_NOROUTE;
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, p)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		// Resolve the next hop the FIB chose, not the packet's destination:
		// in DSR mode the destination is the VIP, which no backend answers
		// neighbour requests for.
		// The request lives in a per-CPU map, not on the stack: the
		// verifier's 512-byte limit is shared by the whole call chain.
		__u32 zero = 0;
		struct bpf_redir_neigh *nh = bpf_map_lookup_elem(&nh_scratch, &zero);
		if (!nh)
			return bpf_redirect_neigh(f.ifindex, 0, 0, 0);
		__builtin_memset(nh, 0, sizeof(*nh));
		if (f.family == AF_INET) {
			nh->nh_family = AF_INET;
			nh->ipv4_nh = f.ipv4_dst;
		} else {
			nh->nh_family = AF_INET6;
			__builtin_memcpy(nh->ipv6_nh, f.ipv6_dst, 16);
		}
		return bpf_redirect_neigh(f.ifindex, nh, sizeof(*nh), 0);
	}
	__builtin_memcpy(macs, f.dmac, 6);
	__builtin_memcpy(macs + 6, f.smac, 6);
	ifindex = f.ifindex;
	if (ct) {
		__builtin_memcpy(ct->fib_macs, macs, 12);
		ct->fib_ifindex = ifindex;
		ct->fib_ns = ct->last_seen;
	}
	if (bpf_skb_store_bytes(skb, 0, macs, 2 * ETH_ALEN, 0)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return bpf_redirect(ifindex, 0);
}

#endif
