// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// IP fragments of balanced TCP and UDP flows. Only a datagram's first
// fragment carries the L4 header, so only it can be matched to a flow: when
// it is balanced (a new flow or a tracked one), its ports are noted under
// (source, destination, protocol, fragment ID), and the later fragments of
// the same datagram are looked up there, matched to the flow's conntrack
// entry and translated the same way, addresses only (lib/nat.h rewrite: the
// L4 checksum lives in the first fragment, whose update covers the whole
// datagram).
//
// A later fragment with no note (its first fragment lost, or still behind
// it) is passed to the stack unchanged, as before this existed: it cannot
// be told apart from a fragment of traffic that is none of ours, and it
// creates no state. Its datagram does not reach the endpoint whole (a
// reordered datagram is lost like a lost fragment; the sender's
// retransmission, or the next datagram, goes through).
// NAT64 flows are not followed: their first fragment would need an IPv6
// fragment header the translation does not build; their later fragments go
// to the stack.
#ifndef LB_FRAG_H
#define LB_FRAG_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/helpers.h"
#include "lib/parse.h"

struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id; // as on the wire (IPv4: 16 bits)
	__u8 proto;
	__u8 pad[3];
};

struct frag_ports {
	__u16 sport; // network order
	__u16 dport;
};

// LRU: a datagram's note lives until newer ones push it out (fragments of
// one datagram arrive within milliseconds). Not pinned: a restart loses
// only the datagrams being fragmented at that moment.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frags SEC(".maps");

static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *k)
{
	addr_cpy(k->src, p->src);
	addr_cpy(k->dst, p->dst);
	k->id = p->frag_id;
	k->proto = p->proto;
}

// Notes the ports of a first fragment about to be balanced.
// Not inlined: its key on ct_established's frame pushed the deepest call
// chain past the kernel's 512-byte combined stack limit (6.1 refused it).
static __noinline void frag_note(const struct pkt *p)
{
	if (p->frag != FRAG_FIRST || (p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP))
		return;
	struct frag_key k = {};
	frag_key_of(p, &k);
	struct frag_ports v = {.sport = p->sport, .dport = p->dport};
	bpf_map_update_elem(&frags, &k, &v, BPF_ANY);
}

// Fills a later fragment's ports from its first fragment's note: 0 when
// there is none.
static __always_inline int frag_follow(struct pkt *p)
{
	struct frag_key k = {};
	frag_key_of(p, &k);
	struct frag_ports *v = bpf_map_lookup_elem(&frags, &k);
	if (!v)
		return 0;
	p->sport = v->sport;
	p->dport = v->dport;
	return 1;
}

#endif
