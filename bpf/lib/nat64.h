// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// NAT64: packets of a flow between an IPv6 VIP and an IPv4 endpoint
// translated between families, and the NAT64 SCTP reply path (mh_follow).
#ifndef LB_NAT64_H
#define LB_NAT64_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"

/* NAT64
 *
 * An IPv6 VIP may have IPv4 endpoints. Conntrack needs nothing new: its
 * addresses are 16 bytes with IPv4 v4-mapped, so a NAT64 flow's entries just
 * translate to the other family ([client6, vip6] -> [lb4, ep4] and [ep4, lb4]
 * -> [vip6, client6]); the target address's family tells rewrite from
 * translate. The endpoint cannot see an IPv6 client, so the source is always
 * the LB's IPv4 address on the egress interface (onearm), whatever the
 * service's mode; DSR cannot translate and is refused by the API. An SCTP
 * client may still be multi-homed toward the service's VIPs: its addresses
 * are learnt but never shown to the endpoint, and the endpoint's packets
 * follow the client's latest path (mh_follow).
 *
 * The L4 checksum is fixed before the headers change: only the pseudo
 * header's addresses differ (length and protocol add up the same in both
 * families). Not translated (packet dropped, DROP_REWRITE): IPv6 extension
 * headers, IPv4 options, VLAN tags in the frame, IPv4 UDP without checksum
 * (an IPv6 one would need the whole payload summed). ICMP errors about these
 * flows: see nat64_icmp. An IPv4 packet too big for the IPv6 route once
 * translated: see nat64_too_big.
 */
static __noinline int nat64_xlate(struct __sk_buff *skb, struct pkt *p, const __u8 *src,
				  const __u8 *dst, __u32 ports32)
{
	__u16 sport = ports32 & 0xffff, dport = ports32 >> 16;
	int to4 = p->family == AF_INET6;
	__u32 plen = p->ip_end - p->l4_off;
	__u32 coff = 0;
	__u64 mf = 0;
	__u32 zero = 0;
	__s64 d;

	struct hdr_buf *hb = bpf_map_lookup_elem(&hdr_scratch, &zero);
	if (!hb)
		return -1;
	__u8 *h = hb->b;
	if (p->l3_off != ETH_HLEN || p->l4_off != ETH_HLEN + (to4 ? IP6_HLEN : IP4_HLEN) || plen > 0xffff - IP4_HLEN)
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 4))
		return -1;
	// Traffic class <-> TOS.
	__u8 tos = to4 ? (h[0] << 4 | h[1] >> 4) : h[1];

	if (p->proto == IPPROTO_TCP) {
		coff = p->l4_off + offsetof(struct tcphdr, check);
	} else if (p->proto == IPPROTO_UDP) {
		coff = p->l4_off + offsetof(struct udphdr, check);
		mf = BPF_F_MARK_MANGLED_0; // 0 is "no checksum": write 0xffff
		if (!to4) {
			__u16 c;
			if (bpf_skb_load_bytes(skb, coff, &c, 2) || !c)
				return -1;
		}
	} else if (p->proto != IPPROTO_SCTP) {
		return -1;
	}

	if (coff) {
		__u32 o4[2];
		if (to4) {
			d = bpf_csum_diff((__u32 *)p->src, 32, (__u32 *)(src + 12), 4, 0);
			if (d >= 0)
				d = bpf_csum_diff(0, 0, (__u32 *)(dst + 12), 4, (__u32)d);
		} else {
			__builtin_memcpy(&o4[0], p->src + 12, 4);
			__builtin_memcpy(&o4[1], p->dst + 12, 4);
			d = bpf_csum_diff(o4, 8, (__u32 *)src, 16, 0);
			if (d >= 0)
				d = bpf_csum_diff(0, 0, (__u32 *)dst, 16, (__u32)d);
		}
		if (d < 0 || bpf_l4_csum_replace(skb, coff, 0, (__u32)d, BPF_F_PSEUDO_HDR | mf))
			return -1;
		if (sport != p->sport && bpf_l4_csum_replace(skb, coff, p->sport, sport, mf | 2))
			return -1;
		if (dport != p->dport && bpf_l4_csum_replace(skb, coff, p->dport, dport, mf | 2))
			return -1;
	} else if (sport != p->sport || dport != p->dport) {
		// SCTP: no pseudo header, only the ports enter the CRC.
		__u32 crc, oldp = ((__u32)p->dport << 16) | p->sport, newp = ((__u32)dport << 16) | sport;
		if (bpf_skb_load_bytes(skb, p->l4_off + offsetof(struct sctphdr, checksum), &crc, 4))
			return -1;
		crc ^= crc32c_delta(oldp ^ newp, plen);
		if (bpf_skb_store_bytes(skb, p->l4_off + offsetof(struct sctphdr, checksum), &crc, 4, 0))
			return -1;
	}
	__u16 ports[2] = {sport, dport};
	if (bpf_skb_store_bytes(skb, p->l4_off, ports, 4, 0))
		return -1;

	__u16 eth = bpf_htons(to4 ? ETH_P_IP : ETH_P_IPV6);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth, 2, 0))
		return -1;
	if (to4) {
		// DF: IPv6 is never fragmented en route.
		if (ip4_build(h, tos, IP4_HLEN + plen, 1, p->ttl, p->proto, src, dst) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN, h, IP4_HLEN, 0))
			return -1;
		p->family = AF_INET;
		p->l4_off = ETH_HLEN + IP4_HLEN;
	} else {
		ip6_build(h, tos, plen, p->proto, p->ttl, src, dst);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, h, IP6_HLEN, 0))
			return -1;
		p->family = AF_INET6;
		p->l4_off = ETH_HLEN + IP6_HLEN;
		p->nat64_to6 = 1;
	}
	p->ip_end = p->l4_off + plen;
	return 0;
}

// Whether a packet of p's family going to dst crosses families (NAT64).
static __always_inline int nat64_crosses(const struct pkt *p, const __u8 *dst)
{
	return is_mapped(dst) != (p->family == AF_INET);
}

// NAT64 SCTP: the IPv4 endpoint sees one LB address for every path of a
// multi-homed client, so its packets carry no hint of the path to answer
// on. They follow the client: each client packet points the association's
// reply entry at the client address and VIP it came by. A path that fails
// carries no more client packets, so the replies move to the path the
// client fails over to (its heartbeats on a live path may swing them back
// and forth between live paths, which the client accepts: every VIP is its
// peer's address). Global: verified once.
__noinline int mh_follow(const struct ct_val *ct, const struct pkt *p)
{
	struct ct_key k;
	if (!ct || !p)
		return 0;
	peer_key(ct, IPPROTO_SCTP, &k);
	struct ct_val *r = ct_lookup(&k);
	if (!r || !(r->flags & CT_F_REPLY) || r->vtag_client != ct->vtag_client)
		return 0;
	if (addr_eq(r->nat_dst, p->src) && addr_eq(r->nat_src, p->dst))
		return 0;
	addr_cpy(r->nat_dst, p->src);
	addr_cpy(r->nat_src, p->dst);
	r->fib_ns = 0; // the cached next hop was the old path's
	return 1;
}

#endif
