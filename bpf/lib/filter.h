// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The miss path: a TCP or UDP packet whose addresses are both absent from the
// address filter (struct filter_bits) is none of the LB's business, and is
// passed after a few direct packet reads instead of a parse, a conntrack
// lookup and a service lookup. Every other packet (SCTP, whose INIT-ACK may
// come from an endpoint address no entry holds yet; ICMP, whose errors come
// from any router; VLAN-tagged or non-linear frames) takes the full path.
#ifndef LB_FILTER_H
#define LB_FILTER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/proto.h"
#include "lib/maps.h"

// Bit of an address (16 bytes, IPv4 v4-mapped) given the xor of its four
// 32-bit words as loaded, little-endian (dataplane/filter.go computes the
// same).
static __always_inline __u32 filter_bit(__u32 x)
{
	__u32 b = x ^ (x >> 16);
	// 6.1's verifier loses the bounds of this xor, and clang, knowing it
	// fits 16 bits, drops the masks: hide b from clang so one stays.
	barrier_var(b);
	return b & (LB_FILTER_BITS - 1);
}

// Xor of the words of a v4-mapped address: ::ffff:a.b.c.d.
static __always_inline __u32 filter_fold4(__u32 a)
{
	return a ^ bpf_htonl(0xffff);
}

static __always_inline __u32 filter_fold16(const __u32 *w)
{
	return w[0] ^ w[1] ^ w[2] ^ w[3];
}

static __always_inline int filter_has(const struct filter_bits *f, __u32 fold)
{
	__u32 b = filter_bit(fold);
	return (f->w[(b / 64) & (LB_FILTER_BITS / 64 - 1)] >> (b % 64)) & 1;
}

// Adds the 16-byte address a (conntrack keys are 16 bytes everywhere).
static __always_inline void filter_add(struct filter_bits *f, const __u8 *a)
{
	__u32 b = filter_bit(filter_fold16((const __u32 *)a));
	__sync_fetch_and_or(&f->w[(b / 64) & (LB_FILTER_BITS / 64 - 1)], 1ULL << (b % 64));
}

// Whether the packet certainly belongs to no VIP and no tracked flow.
static __always_inline int filter_miss(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 src, dst, dp = LB_FILTER_DATAPATH, dm = LB_FILTER_DAEMON;
	__u8 proto;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return 0;
		proto = ip->protocol;
		src = filter_fold4(ip->saddr);
		dst = filter_fold4(ip->daddr);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 0;
		proto = ip6->nexthdr;
		src = filter_fold16(ip6->saddr.in6_u.u6_addr32);
		dst = filter_fold16(ip6->daddr.in6_u.u6_addr32);
	} else {
		return 0;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	struct filter_bits *f = bpf_map_lookup_elem(&addr_filter, &dp);
	struct filter_bits *g = bpf_map_lookup_elem(&addr_filter, &dm);
	if (!f || !g)
		return 0;
	return !filter_has(f, src) && !filter_has(f, dst) && !filter_has(g, src) && !filter_has(g, dst);
}

#endif
