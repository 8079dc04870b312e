// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// ICMP: echo replies for VIPs, and ICMP errors about a tracked flow
// translated like the flow (NAT64 flows' errors: lib/nat64_icmp.h).
#ifndef LB_ICMP_H
#define LB_ICMP_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/nat.h"
#include "lib/fib.h"

static __noinline int icmp_echo_reply(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 macs[12], sw[12];
	__u32 csum_off = p->l4_off + offsetof(struct icmphdr, checksum);
	__u16 o, n;

	if (bpf_skb_load_bytes(skb, 0, macs, 2 * ETH_ALEN))
		return TC_ACT_OK;
	__builtin_memcpy(sw, macs + 6, 6);
	__builtin_memcpy(sw + 6, macs, 6);
	if (p->family == AF_INET) {
		__u8 t = ICMP_ECHOREPLY;
		o = bpf_htons(ICMP_ECHO << 8 | p->icmp_code);
		n = bpf_htons(ICMP_ECHOREPLY << 8 | p->icmp_code);
		if (bpf_l4_csum_replace(skb, csum_off, o, n, 2) ||
		    bpf_skb_store_bytes(skb, p->l4_off, &t, 1, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, saddr), p->dst + 12, 4, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, daddr), p->src + 12, 4, 0))
			return TC_ACT_SHOT;
	} else {
		__u8 t = ICMPV6_ECHO_REPLY;
		o = bpf_htons(ICMPV6_ECHO_REQUEST << 8 | p->icmp_code);
		n = bpf_htons(ICMPV6_ECHO_REPLY << 8 | p->icmp_code);
		// Swapping the addresses leaves the pseudo-header sum unchanged.
		if (bpf_l4_csum_replace(skb, csum_off, o, n, 2) ||
		    bpf_skb_store_bytes(skb, p->l4_off, &t, 1, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, saddr), p->dst, 16, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, daddr), p->src, 16, 0))
			return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, 0, sw, 2 * ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int is_icmp_error(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_TIME_EXCEEDED ||
		       p->icmp_type == ICMP_PARAMETERPROB;
	return p->icmp_type >= ICMPV6_DEST_UNREACH && p->icmp_type <= ICMPV6_PARAMPROB;
}

// Translates an ICMP error about a NATed flow: the embedded header is looked
// up reversed (it describes a packet that went the other way), then outer and
// inner addresses/ports get the same translation as the flow's packets.
// The embedded L4 checksum is left as is: receivers do not verify it, and
// ICMPv4 errors often carry only 8 bytes of it anyway.
static __noinline int icmp_error(struct __sk_buff *skb, struct pkt *p)
{
	__u32 in3 = p->l4_off + ICMP_HLEN, in4, zero = 0;
	struct ct_key k = {};
	__u8 iproto;
	__u16 iports[2];
	// The embedded addresses live in the NAT64 context (x->old), which
	// needs them anyway: this frame is on the deepest call chain.
	struct nat64_icmp_ctx *x = bpf_map_lookup_elem(&nat64_scratch, &zero);
	if (!x)
		return TC_ACT_OK;
	__u8 *isrc = x->old, *idst = x->old + 16;
	__builtin_memset(isrc, 0, 32);
	if (p->family == AF_INET) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, in3, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
			return TC_ACT_OK;
		iproto = ip.protocol;
		isrc[10] = isrc[11] = idst[10] = idst[11] = 0xff;
		__builtin_memcpy(isrc + 12, &ip.saddr, 4);
		__builtin_memcpy(idst + 12, &ip.daddr, 4);
		in4 = in3 + ip.ihl * 4;
		x->itos = ip.tos;
		x->ittl = ip.ttl;
		x->ilen = bpf_ntohs(ip.tot_len) - ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, in3, &ip6, sizeof(ip6)) || ip6.version != 6)
			return TC_ACT_OK;
		iproto = ip6.nexthdr;
		__builtin_memcpy(isrc, &ip6.saddr, 16);
		__builtin_memcpy(idst, &ip6.daddr, 16);
		in4 = in3 + IP6_HLEN;
		x->itos = ip6.priority << 4 | ip6.flow_lbl[0] >> 4;
		x->ittl = ip6.hop_limit;
		x->ilen = bpf_ntohs(ip6.payload_len);
	}
	if (iproto != IPPROTO_TCP && iproto != IPPROTO_UDP && iproto != IPPROTO_SCTP)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, in4, iports, 4))
		return TC_ACT_OK;

	addr_cpy(k.src, idst);
	addr_cpy(k.dst, isrc);
	k.sport = iports[1];
	k.dport = iports[0];
	k.proto = iproto;
	struct ct_val *ct = ct_lookup(&k);
	if (!ct || (ct->flags & CT_F_DSR))
		return TC_ACT_OK;
	__u16 nports[2] = {ct->nat_dport, ct->nat_sport};
	if (is_mapped(ct->nat_dst) != (p->family == AF_INET)) {
		// NAT64 flow: rebuilt by nat64_icmp, called by our caller so that
		// its frame and ours are never on the stack together.
		addr_cpy(x->nsrc, ct->nat_src);
		addr_cpy(x->ndst, ct->nat_dst);
		__builtin_memcpy(x->nports, nports, 4);
		__builtin_memcpy(x->iports, iports, 4);
		x->in4 = in4;
		x->iproto = iproto;
		return LB_NEXT_NAT64_ICMP;
	}

	// The translated addresses live in the scratch context too (x->nsrc,
	// x->ndst; the reporter's address in x->new, unused off NAT64): with
	// parse_direct inlined into tc_ingress this frame and its callees have
	// no room for them on the 512-byte stack of 5.15 and 6.1.
	__u8 *nsrc = x->nsrc, *ndst = x->ndst, *osrc = x->new;
	addr_cpy(nsrc, ct->nat_src);
	addr_cpy(ndst, ct->nat_dst);
	// The peer itself reports: its address is the one being translated.
	// An intermediate router's address is kept.
	addr_cpy(osrc, addr_eq(p->src, k.src) ? nsrc : p->src);
	__u32 icsum = p->l4_off + offsetof(struct icmphdr, checksum);

	if (p->family == AF_INET) {
		__u32 o, n;
		// Inner source <- flow's nat_dst, inner dest <- flow's nat_src. The
		// inner IP checksum compensates the address change, so the ICMP
		// checksum only sees the port delta.
		__builtin_memcpy(&o, isrc + 12, 4);
		__builtin_memcpy(&n, ndst + 12, 4);
		if (o != n && (bpf_l3_csum_replace(skb, in3 + offsetof(struct iphdr, check), o, n, 4) ||
			       bpf_skb_store_bytes(skb, in3 + offsetof(struct iphdr, saddr), &n, 4, 0)))
			return TC_ACT_SHOT;
		__builtin_memcpy(&o, idst + 12, 4);
		__builtin_memcpy(&n, nsrc + 12, 4);
		if (o != n && (bpf_l3_csum_replace(skb, in3 + offsetof(struct iphdr, check), o, n, 4) ||
			       bpf_skb_store_bytes(skb, in3 + offsetof(struct iphdr, daddr), &n, 4, 0)))
			return TC_ACT_SHOT;
	} else {
		__s64 d = bpf_csum_diff((__be32 *)isrc, 16, (__be32 *)ndst, 16, 0);
		if (d < 0 || bpf_l4_csum_replace(skb, icsum, 0, (__u32)d, 0) ||
		    bpf_skb_store_bytes(skb, in3 + offsetof(struct ipv6hdr, saddr), ndst, 16, 0))
			return TC_ACT_SHOT;
		d = bpf_csum_diff((__be32 *)idst, 16, (__be32 *)nsrc, 16, 0);
		if (d < 0 || bpf_l4_csum_replace(skb, icsum, 0, (__u32)d, 0) ||
		    bpf_skb_store_bytes(skb, in3 + offsetof(struct ipv6hdr, daddr), nsrc, 16, 0))
			return TC_ACT_SHOT;
	}
	if (iports[0] != nports[0] && bpf_l4_csum_replace(skb, icsum, iports[0], nports[0], 2))
		return TC_ACT_SHOT;
	if (iports[1] != nports[1] && bpf_l4_csum_replace(skb, icsum, iports[1], nports[1], 2))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, in4, nports, 4, 0))
		return TC_ACT_SHOT;

	// Outer addresses: ICMPv4 has no pseudo header, ICMPv6 does.
	__u32 coff = p->family == AF_INET6 ? icsum : 0;
	__u32 soff = p->family == AF_INET ? p->l3_off + offsetof(struct iphdr, saddr) : p->l3_off + offsetof(struct ipv6hdr, saddr);
	__u32 doff = p->family == AF_INET ? p->l3_off + offsetof(struct iphdr, daddr) : p->l3_off + offsetof(struct ipv6hdr, daddr);
	if (!addr_eq(osrc, p->src) && set_addr(skb, p, soff, p->src, osrc, coff, BPF_F_PSEUDO_HDR))
		return TC_ACT_SHOT;
	if (!addr_eq(ndst, p->dst) && set_addr(skb, p, doff, p->dst, ndst, coff, BPF_F_PSEUDO_HDR))
		return TC_ACT_SHOT;
	if (p->ttl <= 1)
		return TC_ACT_OK;
	return forward(skb, p, osrc, ndst, 0);
}

#endif
