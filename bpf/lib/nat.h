// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// NAT within one family: address and port rewrite with IPv4, TCP/UDP
// checksum and SCTP CRC32c fixes (rewrite), and SNAT source selection
// (snat_pick).
#ifndef LB_NAT_H
#define LB_NAT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/fib.h"

static __always_inline __u32 l4_csum_off(const struct pkt *p, __u64 *flags)
{
	*flags = BPF_F_PSEUDO_HDR;
	if (p->proto == IPPROTO_TCP)
		return p->l4_off + offsetof(struct tcphdr, check);
	if (p->proto == IPPROTO_UDP) {
		// A computed 0 goes out as 0xffff: 0 is "no checksum" in IPv4
		// and invalid in IPv6 (RFC 8200), whose receivers drop it.
		*flags |= BPF_F_MARK_MANGLED_0;
		return p->l4_off + offsetof(struct udphdr, check);
	}
	return 0;
}

static __always_inline int set_addr(struct __sk_buff *skb, const struct pkt *p, __u32 addr_off,
				    const __u8 *old, const __u8 *new, __u32 csum_off, __u64 flags)
{
	if (p->family == AF_INET) {
		__u32 o, n;
		__builtin_memcpy(&o, old + 12, 4);
		__builtin_memcpy(&n, new + 12, 4);
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 4))
			return -1;
		if (csum_off && bpf_l4_csum_replace(skb, csum_off, o, n, flags | 4))
			return -1;
		return bpf_skb_store_bytes(skb, addr_off, &n, 4, 0);
	}
	__u32 o[4], n[4];
	__builtin_memcpy(o, old, 16);
	__builtin_memcpy(n, new, 16);
	if (csum_off) {
		__s64 d = bpf_csum_diff(o, 16, n, 16, 0);
		if (d < 0 || bpf_l4_csum_replace(skb, csum_off, 0, (__u32)d, flags))
			return -1;
	}
	return bpf_skb_store_bytes(skb, addr_off, n, 16, 0);
}

// Rewrites the packet's addresses and ports to the given ones, fixing the
// IPv4 header checksum, the TCP/UDP checksum or the SCTP CRC32c.
static __noinline int rewrite(struct __sk_buff *skb, const struct pkt *p, const __u8 *src,
			      const __u8 *dst, __u32 ports32)
{
	__u16 sport = ports32 & 0xffff, dport = ports32 >> 16;
	__u64 flags = 0;
	// A later IP fragment has no L4 header: addresses only (lib/frag.h).
	__u32 coff = p->frag == FRAG_LATER ? 0 : l4_csum_off(p, &flags);
	__u32 soff = p->family == AF_INET ? p->l3_off + offsetof(struct iphdr, saddr) : p->l3_off + offsetof(struct ipv6hdr, saddr);
	__u32 doff = p->family == AF_INET ? p->l3_off + offsetof(struct iphdr, daddr) : p->l3_off + offsetof(struct ipv6hdr, daddr);

	if (!addr_eq(src, p->src) && set_addr(skb, p, soff, p->src, src, coff, flags))
		return -1;
	if (!addr_eq(dst, p->dst) && set_addr(skb, p, doff, p->dst, dst, coff, flags))
		return -1;
	if ((sport == p->sport && dport == p->dport) || p->frag == FRAG_LATER)
		return 0;

	__u16 ports[2] = {sport, dport};
	if (p->proto == IPPROTO_SCTP) {
		__u32 crc, oldp, newp;
		if (bpf_skb_load_bytes(skb, p->l4_off + offsetof(struct sctphdr, checksum), &crc, 4))
			return -1;
		oldp = ((__u32)p->dport << 16) | p->sport; // little-endian load of bytes 0..3
		newp = ((__u32)dport << 16) | sport;
		crc ^= crc32c_delta(oldp ^ newp, p->ip_end - p->l4_off);
		if (bpf_skb_store_bytes(skb, p->l4_off + offsetof(struct sctphdr, checksum), &crc, 4, 0))
			return -1;
	} else if (coff) {
		__u64 pf = flags & BPF_F_MARK_MANGLED_0;
		if (sport != p->sport && bpf_l4_csum_replace(skb, coff, p->sport, sport, pf | 2))
			return -1;
		if (dport != p->dport && bpf_l4_csum_replace(skb, coff, p->dport, dport, pf | 2))
			return -1;
	}
	return bpf_skb_store_bytes(skb, p->l4_off, ports, 4, 0);
}

// Chooses the SNAT source (egress interface address for onearm, the VIP for
// fullnat) and a source port whose reply tuple is free. A port already in v
// (network order) is another path's of the same SCTP association
// (lib/sctp_young.h), or the first INIT's for an INIT retransmitted on
// another path (mh_reinit_port): it is kept when its reply tuple is free or is that
// association's own (fullnat: the same VIP from another client address;
// onearm: one LB address for every path, the INIT's entry whose endpoint
// tag may be unknown). Returns 0 or a drop reason.
static __noinline int snat_pick(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v)
{
	__u16 want = v->nat_sport;
	if (v->mode == MODE_ONEARM) {
		struct bpf_fib_lookup f;
		__u32 ifidx = skb->ifindex;
		// The endpoint's family, not the packet's: NAT64 picks an IPv4 source.
		int v4 = is_mapped(v->nat_dst);
		int rc = fib_params(skb, p, v4 ? AF_INET : AF_INET6, p->src, v->nat_dst, &f);
		if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
			ifidx = f.ifindex;
		struct ifaddr_val *ia = bpf_map_lookup_elem(&if_addrs, &ifidx);
		if (!ia || !(ia->flags & (v4 ? IFA_F_V4 : IFA_F_V6)))
			return DROP_NO_IFADDR;
		if (v4) {
			__builtin_memset(v->nat_src, 0, 10);
			v->nat_src[10] = v->nat_src[11] = 0xff;
			__builtin_memcpy(v->nat_src + 12, ia->v4, 4);
		} else {
			addr_cpy(v->nat_src, ia->v6);
		}
	} else {
		addr_cpy(v->nat_src, p->dst);
	}
	if (want) {
		struct ct_key wk;
		v->nat_sport = want;
		peer_key(v, p->proto, &wk);
		struct ct_val *o = ct_lookup(&wk);
		if (!o || ((o->flags & CT_F_REPLY) && o->svc == v->svc && o->nat_dport == p->sport &&
			   (o->vtag_ep == p->vtag || !o->vtag_ep)))
			return 0;
	}
	// Every probe's reply key has the same addresses, so one family.
	struct ct_key rk;
	peer_key(v, p->proto, &rk);
	int is4 = ct_key_is4(&rk);
	__u32 h = hash_tuple(p, 0);
	// Unrolled: clang rotates this loop so that its back-edge lands on the
	// instruction after the map lookup, which 6.1's check_cfg rejects
	// ("back-edge from insn N to N+1": a helper call's fall-through may not
	// close a loop before 6.3); found by scenarios/vm on Debian's 6.1.
#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u16 port = 1024 + (h + i * 7919) % (65536 - 1024);
		v->nat_sport = bpf_htons(port);
		peer_key(v, p->proto, &rk);
		if (!ct_lookup_as(&rk, is4))
			return 0;
	}
	return DROP_SNAT_PORTS;
}

#endif
