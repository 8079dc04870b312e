// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The established fast path (ct_fast): a TCP, UDP or SCTP packet of a
// tracked same-family flow whose next hop is cached is rewritten and
// forwarded by direct packet access. Everything else, and anything this path is not sure
// of, takes ct_established (lb.c), which it mirrors step for step.
#ifndef LB_FASTPATH_H
#define LB_FASTPATH_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/nat64.h"

/* Checksums without helpers.
 *
 * The IPv4 header checksum covers only the header: it is written directly
 * (RFC 1624: HC' = ~(~HC + ~m + m')), which is what bpf_l3_csum_replace
 * does, and skb->csum of a CHECKSUM_COMPLETE packet needs no change for it
 * (the header's sum is unchanged, the field absorbs the difference).
 *
 * The TCP/UDP checksum keeps its helper, bpf_l4_csum_replace, called with
 * the whole difference at once (size 0) instead of once per field: only the
 * helper sees skb->ip_summed. With CHECKSUM_PARTIAL the field holds the
 * pseudo-header sum only, so the address change (BPF_F_PSEUDO_HDR) is
 * applied to it in the other sense and the port change not at all; with
 * CHECKSUM_COMPLETE the address change also goes into skb->csum. Two calls
 * (pseudo-header part, ports part) give exactly what the per-field calls of
 * rewrite() give.
 *
 * One's-complement sums are taken over 32-bit words as they lie in memory,
 * like the kernel's csum_* functions; the folded result is the unique
 * representative of its class, so one combined update writes the same bytes
 * as the sequence of updates it replaces.
 */
// Sums are taken in 64 bits, so no carry is lost on the way, and folded
// once at the end (2^32 and 2^16 are both 1 modulo 0xffff).
static __always_inline __u32 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold32((__u32)s) & 0xffff;
}

// Adds to s the difference of replacing the 32-bit word o by n.
static __always_inline __u64 csum_repl32(__u64 s, __u32 o, __u32 n)
{
	return s + (__u32)~o + n;
}

// Adds to s the difference of replacing the 16-bit word o by n.
static __always_inline __u64 csum_repl16(__u64 s, __u16 o, __u16 n)
{
	return s + (__u16)~o + n;
}

// A 32-bit difference for bpf_l4_csum_replace (it adds it as a __wsum).
static __always_inline __u32 csum_diff_of(__u64 s)
{
	return csum_fold64(s);
}

// Applies the difference s to a 16-bit checksum field's value.
static __always_inline __u16 csum_apply(__u16 check, __u64 s)
{
	return (__u16)~csum_fold64(s + (__u16)~check);
}

// Counters, clock and state of an established packet: ct_established's
// first steps, shared so both paths count alike.
// len: the packet's length (skb->len, or an XDP frame's).
static __always_inline void ct_account(__u64 len, const struct pkt *p, struct ct_val *ct, __u64 now)
{
	// Plain increments: each direction's entry is normally hit by one RX
	// queue, and a rare lost update beats a locked add per packet.
	ct->last_seen = now;
	ct->packets += 1;
	ct->bytes += len;
	ct_track(p, ct);
	count(&svc_stats, ct->svc, len, 0);
	count_ep(ct->svc * LB_MAX_EPS + ct->ep, len, 0);
}

// Writes the flow's addresses, ports, TTL and cached MACs into the packet
// and fixes the IP header checksum, and for SCTP the CRC32c (crcd: the
// change the new ports make); for TCP and UDP *ad and *pd get the L4
// checksum differences of the address (pseudo-header) and port changes, 0
// when nothing changed. 0, or -1 when the headers are not all in the
// linear part (nothing written then). On the frame between data and end,
// whichever program's context it comes from (ct_fast, xdp_fast).
static __always_inline int fast_write_at(void *data, void *end, const struct pkt *p, const struct ct_val *ct,
					 __u32 crcd, __u32 *ad, __u32 *pd)
{
	__u32 *ports;

	// Untagged, IPv4 without options, IPv6 without extension headers:
	// every packet pointer at a constant offset, which 6.1's verifier
	// follows (variable ones it lost).
	if (p->l3_off != ETH_HLEN)
		return -1;
	if (p->family == AF_INET) {
		if (p->l4_off != ETH_HLEN + IP4_HLEN)
			return -1;
		ports = data + ETH_HLEN + IP4_HLEN;
	} else {
		if (p->l4_off != ETH_HLEN + IP6_HLEN)
			return -1;
		ports = data + ETH_HLEN + IP6_HLEN;
	}
	// TCP and UDP: ports (8 bytes: UDP's header); SCTP: ports, verification
	// tag, CRC32c.
	if ((void *)(ports + 3) > end)
		return -1;
	__u32 np = ports32(ct->nat_sport, ct->nat_dport);
	__u32 op = *ports;
	*pd = op != np ? csum_diff_of(csum_repl32(0, op, np)) : 0;

	const __u32 *ns = (const __u32 *)ct->nat_src, *nd = (const __u32 *)ct->nat_dst;
	__u64 d = 0;
	int changed = 0;
	if (p->family == AF_INET) {
		struct iphdr *ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return -1;
		__u32 os = ip->saddr, od = ip->daddr;
		changed = os != ns[3] || od != nd[3];
		d = csum_repl32(csum_repl32(0, os, ns[3]), od, nd[3]);
		// TTL and protocol share a 16-bit word of the header sum.
		// Little-endian load: the TTL is the low byte.
		__u16 *tw = (__u16 *)&ip->ttl;
		__u16 ow = *tw;
		__u16 nw = (ow & 0xff00) | (__u8)(p->ttl - 1);
		ip->check = csum_apply(ip->check, csum_repl16(d, ow, nw));
		ip->saddr = ns[3];
		ip->daddr = nd[3];
		*tw = nw;
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return -1;
		__u32 *s = ip6->saddr.in6_u.u6_addr32, *t = ip6->daddr.in6_u.u6_addr32;
		__u32 x = 0;
		// Each word read, summed and written in turn. Left to itself,
		// clang loads all sixteen first and spills them (64 bytes of
		// stack, a store and a load each): the barriers keep the order.
#pragma unroll
		for (int i = 0; i < 8; i++) {
			__u32 *w = i < 4 ? &s[i] : &t[i - 4];
			__u32 o = *w, n = i < 4 ? ns[i] : nd[i - 4];
			x |= o ^ n;
			d = csum_repl32(d, o, n);
			*w = n;
			barrier_var(d);
			barrier_var(x);
		}
		changed = x != 0;
		ip6->hop_limit = p->ttl - 1;
	}
	*ad = changed ? csum_diff_of(d) : 0;
	if (p->proto == IPPROTO_SCTP) {
		if (op != np)
			ports[2] ^= crcd;
	}
	*ports = np;
	__builtin_memcpy(data, ct->fib_macs, 2 * ETH_ALEN);
	return 0;
}

static __always_inline int fast_write(struct __sk_buff *skb, const struct pkt *p, const struct ct_val *ct,
				      __u32 crcd, __u32 *ad, __u32 *pd)
{
	return fast_write_at((void *)(long)skb->data, (void *)(long)skb->data_end, p, ct, crcd, ad, pd);
}

// An SCTP packet ct_established would do more with than rewrite and
// forward: a chunk it checks (ASCONF, AUTH, unknown), the handshake chunks
// (address parameters), a service with path failover (mh_steer).
static __always_inline int sctp_needs_slow(const struct pkt *p, const struct ct_val *ct)
{
	__u8 c = p->chunk_type;
	if (c >= 0x80 || c == SCTP_AUTH || c == SCTP_INIT || c == SCTP_INIT_ACK)
		return 1;
	if (!ct->vtag_client)
		return 0;
	__u32 svc = ct->svc;
	struct svc_info *si = bpf_map_lookup_elem(&svc_infos, &svc);
	return si && (si->flags & SVC_F_PATH_FAILOVER);
}

// An established packet, entirely: counters and state as ct_established,
// then the rewrite and the cached forward by direct packet access.
// LB_NEXT_SLOW, before anything is counted or written, when the packet
// needs more than that (DSR, NAT64, fragments, expiring TTL, no cached next
// hop, headers outside the linear part, SCTP as sctp_needs_slow says):
// ct_established then. Global: verified once for both conntrack maps
// (see ct_established).
// Whether the established packet p of ct may take a fast path (ct_fast,
// xdp_fast), the clock read into *now (last, when the rest passed): TCP, UDP or SCTP, TTL left, not a fragment, no
// DSR, no NAT64 crossing, nothing sctp_needs_slow names, and a next hop
// cached recently enough (forward()'s cache test, with the last_seen it
// would see).
static __always_inline int fast_eligible(const struct pkt *p, const struct ct_val *ct, __u64 *now)
{
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 0;
	if (p->ttl <= 1 || p->frag != FRAG_NONE || (ct->flags & CT_F_DSR) || nat64_crosses(p, ct->nat_dst))
		return 0;
	if (p->proto == IPPROTO_SCTP && sctp_needs_slow(p, ct))
		return 0;
	*now = lb_now();
	return ct->fib_ns && *now - ct->fib_ns < LB_FIB_CACHE_NS;
}

// The CRC32c change of new ports (as rewrite computes it), 0 for TCP and
// UDP; taken before any packet pointer: crc32c_delta is a global function.
// crc32c_delta's nibble-row steps inline, which saves the call (issue 13);
// a length without rows (jumbo, a foreign loader) calls it for the rest.
static __always_inline __u32 fast_crc_delta(const struct pkt *p, const struct ct_val *ct)
{
	if (p->proto != IPPROTO_SCTP || (ct->nat_sport == p->sport && ct->nat_dport == p->dport))
		return 0;
	__u32 w = ports32(p->sport, p->dport) ^ ports32(ct->nat_sport, ct->nat_dport);
	__u32 n = p->ip_end - p->l4_off;
	__u32 r = 0;
#pragma unroll
	for (int k = 0; k < 4; k++) {
		__u32 b = (w >> (8 * k)) & 0xff;
		if (!b)
			continue;
		__u32 i = n + 3 - k;
		struct crc_nib_row *row = bpf_map_lookup_elem(&crc_nib, &i);
		if (!row || !row->m[8])
			return crc32c_delta(w, n);
		r ^= crc_nib_mul(row, b);
	}
	return r;
}

/* Direct TCP/UDP checksum writes (kernels with bpf_cast_to_kern_ctx, 6.2+).
 *
 * bpf_l4_csum_replace exists because only the kernel sees skb->ip_summed;
 * bpf_cast_to_kern_ctx lets the program read it itself and write the field
 * as the helper would, saving the two helper calls (issue 13: ~15 ns of an
 * established packet's ~55). Per ip_summed, as inet_proto_csum_replace_by_diff:
 *   CHECKSUM_PARTIAL: the field holds the pseudo-header sum, uncomplemented:
 *     the address change is added to it, the port change not at all;
 *   CHECKSUM_NONE, CHECKSUM_UNNECESSARY: RFC 1624 on the final checksum;
 *   CHECKSUM_COMPLETE: skb->csum would have to follow the address change,
 *     and a BPF program cannot write it: the helpers do that case.
 * UDP (mmzero) as BPF_F_MARK_MANGLED_0 in each of the helper's two calls: a
 * zero field (no checksum) is left alone, a result of zero is written as
 * 0xffff.
 *
 * The kfunc is weak: on a kernel without it (5.15, 6.1) the loader zeroes
 * its address and poisons the call, and direct_l4_csum (set by the loader
 * after the same probe, Go Config.HelperL4Csum forces 0) keeps that code
 * unreachable, which the verifier then removes unverified. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;
// Whether the loader found the weak kfunc sym (its address, zeroed when
// not): libbpf 1.1's headers lack bpf_ksym_exists.
#define lb_ksym_exists(sym) (!!(sym))

// The one field read, relocated against the running kernel's sk_buff.
struct sk_buff___lb {
	__u8 ip_summed:2;
} __attribute__((preserve_access_index));

volatile const __u32 direct_l4_csum = 0;

#define LB_CHECKSUM_COMPLETE 2
#define LB_CHECKSUM_PARTIAL 3

// One of bpf_l4_csum_replace's calls (size 0, difference d) on the field
// at ck, the packet's ip_summed given.
static __always_inline void l4_csum_by_diff(__u16 *ck, __u32 d, __u8 summed, int pseudo, int mmzero)
{
	if (!d || (mmzero && !*ck))
		return;
	if (summed == LB_CHECKSUM_PARTIAL) {
		if (!pseudo)
			return;
		*ck = csum_fold64((__u64)*ck + d);
	} else {
		*ck = csum_apply(*ck, d);
	}
	if (mmzero && !*ck)
		*ck = 0xffff;
}

// Writes the TCP or UDP checksum change (ad: addresses, pd: ports) of the
// packet fast_write rewrote, without helpers. 0, or -1 when it cannot
// (kernel without the kfunc, CHECKSUM_COMPLETE, field outside the linear
// part): nothing written then, and the helpers take over.
static __always_inline int l4_csum_direct(struct __sk_buff *skb, const struct pkt *p, __u32 ad, __u32 pd)
{
	if (!direct_l4_csum || !lb_ksym_exists(bpf_cast_to_kern_ctx))
		return -1;
	struct sk_buff___lb *k = bpf_cast_to_kern_ctx(skb);
	__u8 summed = BPF_CORE_READ_BITFIELD(k, ip_summed);
	if (summed == LB_CHECKSUM_COMPLETE)
		return -1;
	// Constant offsets, as fast_write_at checked them.
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 l4 = p->family == AF_INET ? ETH_HLEN + IP4_HLEN : ETH_HLEN + IP6_HLEN;
	__u16 *ck;
	int mmzero = p->proto == IPPROTO_UDP;
	if (mmzero)
		ck = data + l4 + offsetof(struct udphdr, check);
	else
		ck = data + l4 + offsetof(struct tcphdr, check);
	if ((void *)(ck + 1) > end)
		return -1;
	l4_csum_by_diff(ck, ad, summed, 1, mmzero);
	l4_csum_by_diff(ck, pd, summed, 0, mmzero);
	return 0;
}

// The same change through bpf_l4_csum_replace (kernels without the kfunc,
// CHECKSUM_COMPLETE): the pseudo-header part and the ports part, each one
// call at most. 0, or -1 when a call failed.
static __always_inline int l4_csum_helpers(struct __sk_buff *skb, const struct pkt *p, __u32 ad, __u32 pd)
{
	__u64 flags = 0;
	__u32 coff;
	if (p->proto == IPPROTO_TCP) {
		coff = p->l4_off + offsetof(struct tcphdr, check);
	} else {
		coff = p->l4_off + offsetof(struct udphdr, check);
		flags = BPF_F_MARK_MANGLED_0; // both families: see l4_csum_off (nat.h)
	}
	if ((ad && bpf_l4_csum_replace(skb, coff, 0, ad, flags | BPF_F_PSEUDO_HDR)) ||
	    (pd && bpf_l4_csum_replace(skb, coff, 0, pd, flags)))
		return -1;
	return 0;
}

__noinline int ct_fast(struct __sk_buff *skb, const struct pkt *p, struct ct_val *ct)
{
	if (!skb || !p || !ct)
		return LB_NEXT_SLOW;
	__u64 now;
	if (!fast_eligible(p, ct, &now))
		return LB_NEXT_SLOW;
	__u32 crcd = fast_crc_delta(p, ct);
	__u32 ad, pd;
	if (fast_write(skb, p, ct, crcd, &ad, &pd))
		return LB_NEXT_SLOW;
	// Counted after the writes, which nothing here reads: only the
	// packet's length is, and that does not change.
	ct_account(skb->len, p, ct, now);
	if (p->proto != IPPROTO_SCTP && l4_csum_direct(skb, p, ad, pd) && l4_csum_helpers(skb, p, ad, pd)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return bpf_redirect(ct->fib_ifindex, 0);
}

#endif
