// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// NAT64 ICMP: errors about NAT64 flows translated across families, and the
// fragmentation-needed answer to an IPv4 packet too big once translated.
#ifndef LB_NAT64_ICMP_H
#define LB_NAT64_ICMP_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/fib.h"

/* NAT64 ICMP errors (RFC 7915 4.2, 5.2)
 *
 * An error about a NAT64 flow crosses families with it: an ICMPv4 error from
 * the endpoint's side becomes an ICMPv6 error to the client (from the VIP),
 * an ICMPv6 error from the client's side an ICMPv4 error to the endpoint
 * (from the LB's IPv4 address). The embedded header changes family as well,
 * so its size changes inside the payload; rather than moving bytes around in
 * the packet (no helper does that on 5.15), the whole message is rebuilt in
 * nat64_scratch and written over a packet resized with bpf_skb_change_proto
 * and bpf_skb_change_tail. The quote is cut so the result stays within the
 * family's limit (1280 bytes for ICMPv6, 576 for ICMPv4).
 */

// An ICMP type and code as one value (nat64_icmp_type's result).
#define ICMP_TC(t, c) ((t) << 8 | (c))

// The other family's ICMP_TC(type, code) for an error, or -1 for what has no
// counterpart (dropped, as RFC 7915 says).
static __always_inline int nat64_icmp_type(int to6, __u8 t, __u8 c)
{
	if (to6) {
		if (t == ICMP_TIME_EXCEEDED && c <= ICMP_EXC_FRAGTIME)
			return ICMP_TC(ICMPV6_TIME_EXCEED, c);
		if (t == ICMP_PARAMETERPROB && (c == 0 || c == 2))
			return ICMP_TC(ICMPV6_PARAMPROB, ICMPV6_HDR_FIELD); // pointer translated
		if (t != ICMP_DEST_UNREACH)
			return -1;
		switch (c) {
		case ICMP_NET_UNREACH: case ICMP_HOST_UNREACH: case ICMP_SR_FAILED:
		case ICMP_NET_UNKNOWN: case ICMP_HOST_UNKNOWN: case ICMP_HOST_ISOLATED:
		case ICMP_NET_UNR_TOS: case ICMP_HOST_UNR_TOS:
			return ICMP_TC(ICMPV6_DEST_UNREACH, ICMPV6_NOROUTE);
		case ICMP_PROT_UNREACH:
			return ICMP_TC(ICMPV6_PARAMPROB, ICMPV6_UNK_NEXTHDR);
		case ICMP_PORT_UNREACH:
			return ICMP_TC(ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH);
		case ICMP_FRAG_NEEDED:
			return ICMP_TC(ICMPV6_PKT_TOOBIG, 0);
		case ICMP_NET_ANO: case ICMP_HOST_ANO: case ICMP_PKT_FILTERED: case ICMP_PREC_CUTOFF:
			return ICMP_TC(ICMPV6_DEST_UNREACH, ICMPV6_ADM_PROHIBITED);
		}
		return -1;
	}
	switch (t) {
	case ICMPV6_DEST_UNREACH:
		if (c == ICMPV6_NOROUTE || c == ICMPV6_NOT_NEIGHBOUR || c == ICMPV6_ADDR_UNREACH)
			return ICMP_TC(ICMP_DEST_UNREACH, ICMP_HOST_UNREACH);
		if (c == ICMPV6_ADM_PROHIBITED)
			return ICMP_TC(ICMP_DEST_UNREACH, ICMP_HOST_ANO);
		if (c == ICMPV6_PORT_UNREACH)
			return ICMP_TC(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH);
		return -1;
	case ICMPV6_PKT_TOOBIG:
		return ICMP_TC(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED);
	case ICMPV6_TIME_EXCEED:
		return ICMP_TC(ICMP_TIME_EXCEEDED, c);
	case ICMPV6_PARAMPROB:
		if (c == ICMPV6_HDR_FIELD)
			return ICMP_TC(ICMP_PARAMETERPROB, 0);
		if (c == ICMPV6_UNK_NEXTHDR)
			return ICMP_TC(ICMP_DEST_UNREACH, ICMP_PROT_UNREACH);
		return -1;
	}
	return -1;
}

// Parameter problem pointer (a byte offset into the quoted header) into the
// other family's header, or -1.
static __always_inline int nat64_icmp_pointer(int to6, __u32 ptr)
{
	if (to6) {
		if (ptr <= 1) // version/IHL -> version, TOS -> traffic class
			return ptr;
		if (ptr < offsetof(struct iphdr, id))
			return offsetof(struct ipv6hdr, payload_len);
		if (ptr == offsetof(struct iphdr, ttl))
			return offsetof(struct ipv6hdr, hop_limit);
		if (ptr == offsetof(struct iphdr, protocol))
			return offsetof(struct ipv6hdr, nexthdr);
		if (ptr >= offsetof(struct iphdr, saddr) && ptr < offsetof(struct iphdr, daddr))
			return offsetof(struct ipv6hdr, saddr);
		if (ptr >= offsetof(struct iphdr, daddr) && ptr < sizeof(struct iphdr))
			return offsetof(struct ipv6hdr, daddr);
		return -1;
	}
	if (ptr <= 1)
		return ptr;
	if (ptr == offsetof(struct ipv6hdr, payload_len) || ptr == offsetof(struct ipv6hdr, payload_len) + 1)
		return offsetof(struct iphdr, tot_len);
	if (ptr == offsetof(struct ipv6hdr, nexthdr))
		return offsetof(struct iphdr, protocol);
	if (ptr == offsetof(struct ipv6hdr, hop_limit))
		return offsetof(struct iphdr, ttl);
	if (ptr >= offsetof(struct ipv6hdr, saddr) && ptr < offsetof(struct ipv6hdr, daddr))
		return offsetof(struct iphdr, saddr);
	if (ptr >= offsetof(struct ipv6hdr, daddr) && ptr < sizeof(struct ipv6hdr))
		return offsetof(struct iphdr, daddr);
	return -1;
}

// Sum of x->b[off, off+len) added to seed; len a multiple of 4, <= 1536
// (bpf_csum_diff takes at most 512 bytes per call).
static __always_inline __s64 nat64_icmp_sum(struct nat64_icmp_ctx *x, const __u32 off, __u32 len, __u32 seed)
{
	__s64 s = seed;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (len <= 512 * i)
			break;
		__u32 n = len - 512 * i;
		if (n > 512)
			n = 512;
		s = bpf_csum_diff(0, 0, (__u32 *)(x->b + off + 512 * i), n, (__u32)s);
		if (s < 0)
			return s;
	}
	return s;
}

// Builds the translated message in x->b; returns its L3 length or -1.
static __always_inline int nat64_icmp_build(struct __sk_buff *skb, const struct pkt *p, struct nat64_icmp_ctx *x,
				     const int to6)
{
	const __u32 co = to6 ? IP6_HLEN : IP4_HLEN;         // ICMP header
	const __u32 io = co + ICMP_HLEN;                     // embedded IP header
	const __u32 ho = io + (to6 ? IP6_HLEN : IP4_HLEN);  // quoted L4 bytes
	const __u32 max = (to6 ? IPV6_MIN_MTU : ICMPV4_MAX_LEN) - ho;
	__u8 *h = x->h;

	if (bpf_skb_load_bytes(skb, p->l4_off, h, 8))
		return -1;
	int tc = nat64_icmp_type(to6, h[0], h[1]);
	if (tc < 0)
		return -1;
	__u32 word = 0; // rest of the ICMP header, network order
	if (to6 && tc == ICMP_TC(ICMPV6_PKT_TOOBIG, 0)) {
		__u32 mtu = (__u32)h[6] << 8 | h[7];
		if (!mtu) {
			// RFC 1191 routers: guess the plateau below the datagram.
			__u32 len = x->ilen + IP4_HLEN;
			mtu = len > 1492 ? 1492 : len > 1006 ? 1006 : len > 508 ? 508 : 296;
		}
		word = bpf_htonl(mtu + IP6_HLEN - IP4_HLEN);
	} else if (!to6 && tc == ICMP_TC(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED)) {
		__u32 mtu = (__u32)h[4] << 24 | (__u32)h[5] << 16 | (__u32)h[6] << 8 | h[7];
		mtu = mtu < 88 ? 68 : mtu - (IP6_HLEN - IP4_HLEN);
		if (mtu > 0xffff)
			mtu = 0xffff;
		word = bpf_htonl(mtu);
	} else if ((to6 && tc == ICMP_TC(ICMPV6_PARAMPROB, ICMPV6_HDR_FIELD)) ||
		   (!to6 && tc == ICMP_TC(ICMP_PARAMETERPROB, 0))) {
		__u32 ptr = to6 ? h[4] : ((__u32)h[4] << 24 | (__u32)h[5] << 16 | (__u32)h[6] << 8 | h[7]);
		int np = nat64_icmp_pointer(to6, ptr);
		if (np < 0)
			return -1;
		word = to6 ? bpf_htonl(np) : (__u32)np; // ICMPv4: first byte
	} else if (to6 && tc == ICMP_TC(ICMPV6_PARAMPROB, ICMPV6_UNK_NEXTHDR)) {
		word = bpf_htonl(offsetof(struct ipv6hdr, nexthdr));
	}

	if (x->in4 >= p->ip_end)
		return -1;
	__u32 rest = p->ip_end - x->in4;
	if (rest > max)
		rest = max;
	if (rest < 4)
		return -1;
	if (bpf_skb_load_bytes(skb, x->in4, x->b + ho, rest))
		return -1;
	__builtin_memcpy(x->b + ho, x->nports, 4);

	// Embedded TCP/UDP checksum: pseudo header and ports changed.
	__u32 cko = 0;
	if (x->iproto == IPPROTO_TCP && rest >= 18)
		cko = 16;
	else if (x->iproto == IPPROTO_UDP && rest >= 8)
		cko = 6;
	if (cko) {
		__u16 c;
		__builtin_memcpy(&c, x->b + ho + cko, 2);
		if (c || x->iproto != IPPROTO_UDP) {
			__s64 d;
			if (to6) {
				__builtin_memcpy(x->old, x->old + 12, 4);
				__builtin_memcpy(x->old + 4, x->old + 28, 4);
				__builtin_memcpy(x->old + 8, x->iports, 4);
				addr_cpy(x->new, x->ndst);
				addr_cpy(x->new + 16, x->nsrc);
				__builtin_memcpy(x->new + 32, x->nports, 4);
				d = bpf_csum_diff((__u32 *)x->old, 12, (__u32 *)x->new, 36, 0);
			} else {
				__builtin_memcpy(x->old + 32, x->iports, 4);
				__builtin_memcpy(x->new, x->ndst + 12, 4);
				__builtin_memcpy(x->new + 4, x->nsrc + 12, 4);
				__builtin_memcpy(x->new + 8, x->nports, 4);
				d = bpf_csum_diff((__u32 *)x->old, 36, (__u32 *)x->new, 12, 0);
			}
			if (d < 0)
				return -1;
			__u32 s = csum_fold32((__u32)(__u16)~c + csum_fold32((__u32)d));
			c = (__u16)~s;
			if (!c && x->iproto == IPPROTO_UDP)
				c = 0xffff;
			__builtin_memcpy(x->b + ho + cko, &c, 2);
		}
	}

	__u32 ilen = x->ilen > 0xffff - IP4_HLEN ? 0xffff - IP4_HLEN : x->ilen;
	__u8 *ih = x->b + io;
	if (to6) {
		ip6_build(ih, x->itos, ilen, x->iproto, x->ittl, x->ndst, x->nsrc);
	} else if (ip4_build(ih, x->itos, ilen + IP4_HLEN, 1, x->ittl, x->iproto, x->ndst, x->nsrc)) {
		return -1; // DF, as nat64_xlate sends it
	}

	__u32 mlen = ICMP_HLEN + (ho - io) + rest; // ICMP message
	// ICMPv6's header starts like ICMPv4's: type, code, checksum, 4 bytes.
	struct icmphdr *ic = (struct icmphdr *)(x->b + co);
	ic->type = tc >> 8;
	ic->code = tc;
	ic->checksum = 0;
	ic->un.gateway = word;
	__u32 zero = 0;
	__builtin_memcpy(x->b + ho + rest, &zero, 4); // pad for the sum

	__u8 *oh = x->b;
	__s64 seed = 0;
	if (to6) {
		ip6_build(oh, 0, mlen, IPPROTO_ICMPV6, p->ttl, x->nsrc, x->ndst);
		x->ph[0] = bpf_htonl(mlen);
		x->ph[1] = bpf_htonl(IPPROTO_ICMPV6);
		seed = bpf_csum_diff(0, 0, (__u32 *)(oh + offsetof(struct ipv6hdr, saddr)), 32, 0);
		if (seed >= 0)
			seed = bpf_csum_diff(0, 0, x->ph, 8, (__u32)seed);
	} else if (ip4_build(oh, 0, mlen + IP4_HLEN, 0, p->ttl, IPPROTO_ICMP, x->nsrc, x->ndst)) {
		return -1;
	}
	if (seed < 0)
		return -1;
	__s64 s = nat64_icmp_sum(x, co, (mlen + 3) & ~3U, (__u32)seed);
	if (s < 0)
		return -1;
	__u16 ck = (__u16)~csum_fold32((__u32)s);
	ic->checksum = ck;
	return co + mlen;
}

static __noinline int nat64_icmp(struct __sk_buff *skb, struct pkt *p)
{
	__u32 zero = 0;
	struct nat64_icmp_ctx *x = bpf_map_lookup_elem(&nat64_scratch, &zero);
	if (!x)
		return TC_ACT_OK;
	int to6 = p->family == AF_INET;
	// What the stack would drop anyway (it is not routed on).
	if (p->ttl <= 1)
		return TC_ACT_OK;
	// Like nat64_xlate: no VLAN tag, IPv4 options or extension headers.
	if (p->l3_off != ETH_HLEN || p->l4_off != ETH_HLEN + (to6 ? IP4_HLEN : IP6_HLEN)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	int n = to6 ? nat64_icmp_build(skb, p, x, 1) : nat64_icmp_build(skb, p, x, 0);
	if (n < 0) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	if (n > IPV6_MIN_MTU)
		return TC_ACT_SHOT;
	__u16 eth = bpf_htons(to6 ? ETH_P_IPV6 : ETH_P_IP);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_change_tail(skb, ETH_HLEN + n, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth, 2, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, x->b, n, 0)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	p->family = to6 ? AF_INET6 : AF_INET;
	p->proto = to6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	p->l4_off = ETH_HLEN + (to6 ? IP6_HLEN : IP4_HLEN);
	p->ip_end = ETH_HLEN + n;
	return forward(skb, p, x->nsrc, x->ndst, 0);
}

// An IPv4 packet of a NAT64 flow, already translated, does not fit the IPv6
// route (mtu): it is turned into ICMP fragmentation needed (RFC 7915 5.1's
// answer to DF packets; translation never fragments, so DF-less senders get
// it too: a Linux sender lowers its path MTU either way) and sent back to the
// neighbour it came from. The quote is rebuilt from what struct pkt still
// holds of the original: addresses, ports and TTL; the rest of the first 8
// L4 bytes (TCP sequence, UDP length) never changed.
static __noinline int nat64_too_big(struct __sk_buff *skb, struct pkt *p)
{
	// The answer: outer header, ICMP header, the quoted IPv4 header and the
	// first 8 bytes of its L4 header.
	const __u32 ic = IP4_HLEN, qh = ic + ICMP_HLEN, q4 = qh + IP4_HLEN, len = q4 + 8;
	__u32 zero = 0;
	struct nat64_icmp_ctx *x = bpf_map_lookup_elem(&nat64_scratch, &zero);
	__u8 macs[2 * ETH_ALEN];

	count_drop(DROP_NAT64_TOO_BIG);
	if (!x)
		return TC_ACT_SHOT;
	__u32 mtu = x->mtu;
	if (p->l3_off != ETH_HLEN || p->ip_end < p->l4_off + 8 || mtu < IPV6_MIN_MTU)
		return TC_ACT_SHOT;
	__u8 *b = x->b;
	__builtin_memset(b, 0, len);
	if (bpf_skb_load_bytes(skb, p->l4_off, b + q4, 8) || bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
		return TC_ACT_SHOT;
	__builtin_memcpy(b + q4, &p->sport, 2);
	__builtin_memcpy(b + q4 + 2, &p->dport, 2);
	// The quote's header, the ICMP header, then the outer header from the
	// LB address the packet was sent to.
	struct icmphdr *icmp = (struct icmphdr *)(b + ic);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->un.frag.mtu = bpf_htons(mtu - (IP6_HLEN - IP4_HLEN));
	if (ip4_build(b + qh, 0, p->ip_end - p->l4_off + IP4_HLEN, 1, p->ttl, p->proto, p->src, p->dst) ||
	    csum_store(b + ic, len - ic, (__u8 *)&icmp->checksum) ||
	    ip4_build(b, 0, len, 0, 64, IPPROTO_ICMP, p->dst, p->src))
		return TC_ACT_SHOT;

	__u16 eth = bpf_htons(ETH_P_IP);
	__u8 sw[2 * ETH_ALEN];
	__builtin_memcpy(sw, macs + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(sw + ETH_ALEN, macs, ETH_ALEN);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_change_tail(skb, ETH_HLEN + len, 0) ||
	    bpf_skb_store_bytes(skb, 0, sw, sizeof(sw), 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth, 2, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, b, len, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif
