// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Small helpers every stage uses: drop and traffic counters, the clock,
// 16-byte address compare/copy, the flow hash, VIP membership.
#ifndef LB_HELPERS_H
#define LB_HELPERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/parse.h"

// What a stage returns when it is not done with the packet: the caller takes
// one more step, in a frame of its own (the 512-byte stack is shared by the
// call chain). Outside the TC_ACT_* range (-1..8), so a stage's result is
// either a verdict or one of these; what the next step needs is left in
// nat64_scratch, never packed into the return value.
enum lb_next {
	// forward: a NAT64 packet (IPv4 turned IPv6) too big for its route,
	// route MTU in nat64_icmp_ctx.mtu: answer with nat64_too_big.
	LB_NEXT_NAT64_TOO_BIG = 0x100,
	// icmp_error: an error about a NAT64 flow, its translation in
	// nat64_scratch: rebuild it with nat64_icmp.
	LB_NEXT_NAT64_ICMP,
	// ct_fast: the packet needs the full established path (ct_established);
	// nothing was counted or written.
	LB_NEXT_SLOW,
};

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1;
}

// An established packet of service svc on the slow path (slow_stats).
static __always_inline void count_slow(__u32 svc)
{
	__u64 *c = bpf_map_lookup_elem(&slow_stats, &svc);
	if (c)
		*c += 1;
}

// lb_now()'s constants, set by the loader from the clock probe
// (dataplane/clock.go): one jiffy in ns (TICK_NSEC, what clock_getres gives
// for CLOCK_MONOTONIC_COARSE) and what to add to jiffies * tick so the sum
// is CLOCK_MONOTONIC ns at the jiffy's start (wrapping: jiffies start near
// 2^32, so the base is "negative"). Frozen .rodata: the verifier knows the
// values and drops the branch lb_now() does not take.
volatile const __u64 lb_clock_tick_ns = 0;
volatile const __u64 lb_clock_base = 0;

// The datapath's clock, CLOCK_MONOTONIC ns with tick resolution: timeouts
// are seconds, and Go's ageing (monotonicNow) compares with it. jiffies
// advance in the same tick update as the coarse clock, so this is
// bpf_ktime_get_coarse_ns's resolution at a fraction of its cost: the
// verifier inlines bpf_jiffies64 into one load on 64-bit JITs (issue 13:
// ~14-20 ns a packet for the coarse helper's call and seqcount loop). A
// loader that did not calibrate (tick 0: a test loading the object as it
// is) gets the coarse clock, the same base.
static __always_inline __u64 lb_now(void)
{
	if (!lb_clock_tick_ns)
		return bpf_ktime_get_coarse_ns();
	return bpf_jiffies64() * lb_clock_tick_ns + lb_clock_base;
}

// IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d).
static __always_inline int is_mapped(const __u8 *a)
{
	const __u32 *x = (const __u32 *)a;
	return x[0] == 0 && x[1] == 0 && x[2] == bpf_htonl(0xffff);
}

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline void addr_cpy(__u8 *d, const __u8 *s)
{
	__builtin_memcpy(d, s, 16);
}

static __always_inline __u32 hash_tuple(const struct pkt *p, int src_only)
{
	const __u32 *s = (const __u32 *)p->src, *d = (const __u32 *)p->dst;
	__u32 h = 0x9e3779b9;
	h ^= s[0] ^ s[1] ^ s[2] ^ s[3];
	h *= 0x85ebca6b;
	if (!src_only) {
		h ^= d[0] ^ d[1] ^ d[2] ^ d[3];
		h *= 0xc2b2ae35;
		h ^= ((__u32)p->sport << 16) | p->dport;
		h *= 0x85ebca6b;
		h ^= p->proto;
	}
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h;
}

static __always_inline void count(void *map, __u32 idx, __u64 bytes, int session)
{
	struct counters *c = bpf_map_lookup_elem(map, &idx);
	if (!c)
		return;
	c->packets += 1;
	c->bytes += bytes;
	if (session)
		c->sessions += 1;
}

// Counts toward the endpoint at ek (service * LB_MAX_EPS + index) in its
// counter slot.
static __always_inline void count_ep(__u32 ek, __u64 bytes, int session)
{
	struct endpoint *e = bpf_map_lookup_elem(&endpoints, &ek);
	if (e)
		count(&ep_slot_stats, e->stats, bytes, session);
}

// BPF calls take at most 5 arguments: ports travel packed.
static __always_inline __u32 ports32(__u16 sport, __u16 dport)
{
	return (__u32)dport << 16 | sport;
}

static __always_inline int is_vip(const __u8 *addr)
{
	return bpf_map_lookup_elem(&vips, addr) != 0;
}

#endif
