// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Conntrack map access by family: every program reads and writes entries
// through ct_lookup, ct_put and ct_delete with a struct ct_key, and an
// IPv4 key (both addresses IPv4-mapped) goes to conntrack4 under its compact
// 16-byte form, every other key to conntrack.
//
// ct_lookup makes the compact key inside the caller's ct_key rather than in
// a stack slot of its own: the deepest call chain of tc_ingress is at the 512-byte
// combined stack limit of 5.15 and 6.1 (TestCombinedStackFitsOlderKernels).
// For an IPv4 key dst[0..11] is the IPv4-mapped prefix, so copying src's
// IPv4 address over dst[8..11] leaves struct ct_key4 in the key's last 16
// bytes; the prefix is written back after the call, so the caller's key is
// unchanged when the helper returns.
#ifndef LB_CT_MAP_H
#define LB_CT_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"
#include "lib/maps.h"
#include "lib/helpers.h"

_Static_assert(sizeof(struct ct_key4) == 16, "ct_key4 is 16 bytes");
_Static_assert(sizeof(struct ct_key) - sizeof(struct ct_key4) == __builtin_offsetof(struct ct_key, dst) + 8,
	       "ct_key4 is the last 16 bytes of a ct_key");
_Static_assert(__builtin_offsetof(struct ct_key4, sport) + 24 == __builtin_offsetof(struct ct_key, sport),
	       "ct_key4's ports and protocol sit where ct_key's do");

static __always_inline int ct_key_is4(const struct ct_key *k)
{
	return is_mapped(k->src) && is_mapped(k->dst);
}

// Turns the IPv4 key k into its compact form in place; ct_key4_out undoes it.
static __always_inline void *ct_key4_in(struct ct_key *k)
{
	__builtin_memcpy(k->dst + 8, k->src + 12, 4);
	return k->dst + 8;
}

static __always_inline void ct_key4_out(struct ct_key *k)
{
	*(__u32 *)(k->dst + 8) = bpf_htonl(0xffff);
}

// The key of the entry's peer (the flow's other direction): the tuple its
// value translates to, reversed.
static __always_inline void peer_key(const struct ct_val *v, __u8 proto, struct ct_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	addr_cpy(k->src, v->nat_dst);
	addr_cpy(k->dst, v->nat_src);
	k->sport = v->nat_dport;
	k->dport = v->nat_sport;
	k->proto = proto;
}

// ct_lookup_as looks k up as the family is4 says (ct_key_is4(k)). A loop of
// lookups of one family decides it once: the verifier then follows one
// branch per lookup instead of two.
static __always_inline struct ct_val *ct_lookup_as(struct ct_key *k, int is4)
{
	if (!is4)
		return bpf_map_lookup_elem(&conntrack, k);
	struct ct_val *v = bpf_map_lookup_elem(&conntrack4, ct_key4_in(k));
	// Two calls stay two (see ct_lookup_pkt, lb.c): one call fed with
	// either map is not inlined by the verifier.
	barrier_var(v);
	ct_key4_out(k);
	return v;
}

static __always_inline struct ct_val *ct_lookup(struct ct_key *k)
{
	return ct_lookup_as(k, ct_key_is4(k));
}

// Writes the conntrack value being built in scratch[slot] (CT_SCRATCH_*,
// lib/maps.h) under key. Global, like ct_delete, so the verifier walks the
// family branch once instead of at every call (the loops of mh_paths and
// ct_insert's two calls cost ~80,000 instructions inlined). 6.1 takes a
// global function's pointer arguments as plain memory, which it refuses as
// a map key or value (newer kernels accept it): so the key is copied into
// ct_key_scratch and the value is named by its scratch slot.
__noinline int ct_put(const struct ct_key *key, __u32 slot)
{
	__u32 zero = 0;
	if (!key)
		return -1;
	struct ct_val *v = bpf_map_lookup_elem(&scratch, &slot);
	struct ct_key *k = bpf_map_lookup_elem(&ct_key_scratch, &zero);
	if (!v || !k)
		return -1;
	*k = *key;
	if (!ct_key_is4(k))
		return bpf_map_update_elem(&conntrack, k, v, BPF_ANY);
	return bpf_map_update_elem(&conntrack4, ct_key4_in(k), v, BPF_ANY);
}

// Global for the same reasons as ct_put (mh_purge's loop).
__noinline int ct_delete(const struct ct_key *key)
{
	__u32 zero = 0;
	if (!key)
		return -1;
	struct ct_key *k = bpf_map_lookup_elem(&ct_key_scratch, &zero);
	if (!k)
		return -1;
	*k = *key;
	if (!ct_key_is4(k))
		return bpf_map_delete_elem(&conntrack, k);
	return bpf_map_delete_elem(&conntrack4, ct_key4_in(k));
}

#endif
