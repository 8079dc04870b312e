// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The established NAT64 fast path (ct_fast64): a TCP or UDP packet of a
// tracked flow between an IPv6 VIP and an IPv4 endpoint, whose next hop is
// cached, translated and forwarded with one helper call that cannot be
// avoided (bpf_skb_change_proto, the only way to change the header's size)
// and, where the kernel lacks bpf_cast_to_kern_ctx, the checksum helper.
// It mirrors ct_established's nat64_xlate + forward step for step and
// leaves the same bytes; anything it is not sure of goes there (SCTP,
// whose NAT64 replies follow the client's path, mh_follow).
#ifndef LB_FASTPATH64_H
#define LB_FASTPATH64_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/fastpath.h"

/* Why the slow translation cost about 20 tc_pass (issue 13): besides the
 * change of protocol it made eleven helper calls (the header loaded, the
 * checksum differences taken by bpf_csum_diff and applied field by field,
 * the ports, the EtherType, the header and the MACs stored, the TTL
 * decremented with its checksum update). Here the differences are sums
 * over the flow's addresses, applied at once (l4_csum_direct), and every
 * header byte is written by direct packet access once the protocol has
 * changed, the TTL already decremented and the IPv4 header checksum
 * computed over the header as written. */

// The pseudo-header difference of translating p's addresses to the flow's
// (src, dst of the other family), as nat64_xlate's bpf_csum_diff takes it:
// the length and protocol add up the same in both families.
static __always_inline __u64 nat64_addr_diff(const struct pkt *p, const __u32 *ns, const __u32 *nd)
{
	const __u32 *s = (const __u32 *)p->src, *d = (const __u32 *)p->dst;
	__u64 x = 0;
	if (p->family == AF_INET6) {
#pragma unroll
		for (int i = 0; i < 4; i++)
			x += (__u64)(__u32)~s[i] + (__u32)~d[i]; // in 64 bits: no carry lost
		return x + ns[3] + nd[3];
	}
	x = (__u64)(__u32)~s[3] + (__u32)~d[3];
#pragma unroll
	for (int i = 0; i < 4; i++)
		x += (__u64)ns[i] + nd[i];
	return x;
}

// Writes the translated IPv4 header at ip (DF: IPv6 is never fragmented en
// route; ID 0), as ip4_build then dec_ttl make it.
static __always_inline void fast64_ip4(struct iphdr *ip, __u8 tos, __u32 plen, __u8 ttl, __u8 proto,
				       const __u32 *ns, const __u32 *nd)
{
	*(__u8 *)ip = 0x45; // version 4, 5 words
	ip->tos = tos;
	ip->tot_len = bpf_htons(IP4_HLEN + plen);
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = ttl;
	ip->protocol = proto;
	ip->check = 0;
	ip->saddr = ns[3];
	ip->daddr = nd[3];
	const __u32 *w = (const __u32 *)ip;
	__u64 s = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	ip->check = (__u16)~csum_fold64(s);
}

// Writes the translated IPv6 header at ip6 (flow label 0), as ip6_build
// then dec_ttl make it.
static __always_inline void fast64_ip6(struct ipv6hdr *ip6, __u8 tos, __u32 plen, __u8 ttl, __u8 proto,
				       const __u32 *ns, const __u32 *nd)
{
	*(__u32 *)ip6 = bpf_htonl(0x60000000 | (__u32)tos << 20);
	ip6->payload_len = bpf_htons(plen);
	ip6->nexthdr = proto;
	ip6->hop_limit = ttl;
	__u32 *s = ip6->saddr.in6_u.u6_addr32, *d = ip6->daddr.in6_u.u6_addr32;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		s[i] = ns[i];
		d[i] = nd[i];
	}
}

// An established NAT64 packet, entirely, or LB_NEXT_SLOW before anything is
// counted or written: not TCP or UDP, a fragment, TTL expiring, DSR,
// headers at other offsets (VLAN, IPv4 options, IPv6 extension headers),
// no cached next hop, an IPv4 UDP datagram without checksum (the slow path
// drops it), or one that grows past the IPv6 minimum MTU (forward() looks
// the route's MTU up for those). Global: verified once.
__noinline int ct_fast64(struct __sk_buff *skb, const struct pkt *p, struct ct_val *ct)
{
	if (!skb || !p || !ct)
		return LB_NEXT_SLOW;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return LB_NEXT_SLOW;
	if (p->ttl <= 1 || p->frag != FRAG_NONE || (ct->flags & CT_F_DSR) || p->l3_off != ETH_HLEN)
		return LB_NEXT_SLOW;
	int to4 = p->family == AF_INET6;
	__u32 hlen = to4 ? IP6_HLEN : IP4_HLEN;
	__u32 plen = p->ip_end - p->l4_off;
	if (p->l4_off != ETH_HLEN + hlen || plen > 0xffff - IP4_HLEN || (!to4 && IP6_HLEN + plen > IPV6_MIN_MTU))
		return LB_NEXT_SLOW;
	__u64 now = lb_now();
	if (!ct->fib_ns || now - ct->fib_ns >= LB_FIB_CACHE_NS)
		return LB_NEXT_SLOW;

	// Everything read before anything is written.
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 *l3 = data + ETH_HLEN;
	__u32 *ports;
	__u8 tos;
	if (to4) {
		ports = data + ETH_HLEN + IP6_HLEN;
		if ((void *)(ports + 2) > end)
			return LB_NEXT_SLOW;
		tos = l3[0] << 4 | l3[1] >> 4; // traffic class
	} else {
		ports = data + ETH_HLEN + IP4_HLEN;
		if ((void *)(ports + 2) > end)
			return LB_NEXT_SLOW;
		tos = l3[1];
		if (p->proto == IPPROTO_UDP && !((__u16 *)ports)[3])
			return LB_NEXT_SLOW;
	}
	const __u32 *ns = (const __u32 *)ct->nat_src, *nd = (const __u32 *)ct->nat_dst;
	__u32 np = ports32(ct->nat_sport, ct->nat_dport);
	__u32 op = *ports;
	__u32 pd = op != np ? csum_diff_of(csum_repl32(0, op, np)) : 0;
	__u32 ad = csum_diff_of(nat64_addr_diff(p, ns, nd));
	__u64 len = skb->len;
	ct_account(len, p, ct, now);

	// The L4 checksum first, at the offsets of the family the packet
	// still has (nat64_xlate's order).
	if (l4_csum_direct(skb, p, ad, pd) && l4_csum_helpers(skb, p, ad, pd))
		goto drop;
	if (bpf_skb_change_proto(skb, bpf_htons(to4 ? ETH_P_IP : ETH_P_IPV6), 0))
		goto drop;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (to4) {
		if (data + ETH_HLEN + IP4_HLEN + 4 > end)
			goto drop;
		fast64_ip4(data + ETH_HLEN, tos, plen, p->ttl - 1, p->proto, ns, nd);
		*(__u32 *)(data + ETH_HLEN + IP4_HLEN) = np;
		*(__u16 *)(data + 2 * ETH_ALEN) = bpf_htons(ETH_P_IP);
	} else {
		if (data + ETH_HLEN + IP6_HLEN + 4 > end)
			goto drop;
		fast64_ip6(data + ETH_HLEN, tos, plen, p->ttl - 1, p->proto, ns, nd);
		*(__u32 *)(data + ETH_HLEN + IP6_HLEN) = np;
		*(__u16 *)(data + 2 * ETH_ALEN) = bpf_htons(ETH_P_IPV6);
	}
	__builtin_memcpy(data, ct->fib_macs, 2 * ETH_ALEN);
	return bpf_redirect(ct->fib_ifindex, 0);
drop:
	count_drop(DROP_REWRITE);
	return TC_ACT_SHOT;
}

#endif
