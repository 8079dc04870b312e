// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Packet parsing into struct pkt: Ethernet (up to two VLAN tags), IPv4,
// IPv6 with a bounded extension-header walk, then TCP, UDP, SCTP (first chunk)
// and ICMP/ICMPv6 headers. Reads through bpf_skb_load_bytes (see lb.c).
#ifndef LB_PARSE_H
#define LB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/proto.h"

struct pkt {
	__u8 src[16];
	__u8 dst[16];
	__u32 l3_off;
	__u32 l4_off;
	__u32 ip_end; // end of the IP datagram (frames may carry padding)
	__u16 sport;  // network order
	__u16 dport;  // network order
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 chunk_type;
	__u8 ttl;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 nat64_to6; // nat64_xlate turned this IPv4 packet into IPv6
	__u32 init_tag; // SCTP INIT/INIT-ACK initiate tag
	__u32 vtag;     // SCTP common header verification tag
	__u32 frag_id;  // IP fragment: identification (IPv4's in the low 16 bits), as on the wire
	__u8 frag;      // enum pkt_frag
};

// Where a TCP or UDP packet stands in IP fragmentation (lib/frag.h).
enum pkt_frag {
	FRAG_NONE = 0,
	FRAG_FIRST, // offset 0, more fragments: carries the L4 header
	FRAG_LATER, // offset > 0: no L4 header, ports unknown until looked up
};

enum {
	PARSE_OK = 0,
	PARSE_PASS,      // not IP or a protocol we do not handle
	PARSE_MALFORMED, // truncated or inconsistent; p->dst valid if L3 parsed
};

static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p)
{
	__u32 off = p->l4_off;

	if (off > p->ip_end)
		return PARSE_MALFORMED;
	__u32 avail = p->ip_end - off;

	switch (p->proto) {
	case IPPROTO_TCP: {
		__u8 h[14];
		if (avail < 20 || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return PARSE_MALFORMED;
		__u32 doff = (h[12] >> 4) * 4;
		if (doff < 20 || doff > avail)
			return PARSE_MALFORMED;
		__builtin_memcpy(&p->sport, h, 2);
		__builtin_memcpy(&p->dport, h + 2, 2);
		p->tcp_flags = h[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		__u8 h[8];
		if (avail < 8 || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return PARSE_MALFORMED;
		__u16 ulen = ((__u16)h[4] << 8) | h[5];
		// A first fragment carries only part of the datagram ulen counts.
		if (ulen < 8 || (ulen > avail && p->frag != FRAG_FIRST))
			return PARSE_MALFORMED;
		__builtin_memcpy(&p->sport, h, 2);
		__builtin_memcpy(&p->dport, h + 2, 2);
		return PARSE_OK;
	}
	case IPPROTO_SCTP: {
		// common header (12) + first chunk header (4) + initiate tag (4)
		__u8 h[20];
		if (avail < 16 || bpf_skb_load_bytes(skb, off, h, 16))
			return PARSE_MALFORMED;
		__builtin_memcpy(&p->sport, h, 2);
		__builtin_memcpy(&p->dport, h + 2, 2);
		p->chunk_type = h[12];
		__builtin_memcpy(&p->vtag, h + 4, 4);
		__u16 clen = ((__u16)h[14] << 8) | h[15];
		if (clen < 4 || clen > avail - 12)
			return PARSE_MALFORMED;
		if (p->chunk_type == SCTP_INIT || p->chunk_type == SCTP_INIT_ACK) {
			if (avail < 20 || clen < 20 || bpf_skb_load_bytes(skb, off + 16, h + 16, 4))
				return PARSE_MALFORMED;
			__builtin_memcpy(&p->init_tag, h + 16, 4);
		}
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 h[4];
		if (avail < 8 || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return PARSE_MALFORMED;
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		return PARSE_OK;
	}
	}
	return PARSE_PASS;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto;
	__u32 off = ETH_HLEN;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2))
		return PARSE_PASS;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb, off + offsetof(struct vlan_hdr, h_vlan_encapsulated_proto), &proto, 2))
			return PARSE_PASS;
		off += sizeof(struct vlan_hdr);
	}
	p->l3_off = off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return PARSE_MALFORMED;
		__u32 ihl = ip.ihl * 4;
		__u32 tot = bpf_ntohs(ip.tot_len);
		if (ip.version != 4 || ihl < IP4_HLEN || tot < ihl || off + tot > skb->len)
			return PARSE_MALFORMED;
		p->family = AF_INET;
		p->src[10] = 0xff;
		p->src[11] = 0xff;
		p->dst[10] = 0xff;
		p->dst[11] = 0xff;
		__builtin_memcpy(p->src + 12, &ip.saddr, 4);
		__builtin_memcpy(p->dst + 12, &ip.daddr, 4);
		p->proto = ip.protocol;
		p->ttl = ip.ttl;
		p->ip_end = off + tot;
		p->l4_off = off + ihl;
		if (ip.frag_off & bpf_htons(IP_OFFSET | IP_MF)) {
			// Later fragments carry no L4 header: only TCP and UDP ones
			// are followed (lib/frag.h), the rest go to the stack.
			p->frag_id = ip.id;
			if (!(ip.frag_off & bpf_htons(IP_OFFSET))) {
				p->frag = FRAG_FIRST;
			} else {
				if (p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP)
					return PARSE_PASS;
				p->frag = FRAG_LATER;
				return PARSE_OK;
			}
		}
		return parse_l4(skb, p);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return PARSE_MALFORMED;
		__u32 plen = bpf_ntohs(ip6.payload_len);
		if (ip6.version != 6 || off + IP6_HLEN + plen > skb->len)
			return PARSE_MALFORMED;
		p->family = AF_INET6;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->ttl = ip6.hop_limit;
		p->ip_end = off + IP6_HLEN + plen;
		__u8 nh = ip6.nexthdr;
		off += IP6_HLEN;
		// Bounded walk over extension headers (RFC 8200 order allows a handful).
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
				__u8 eh[2];
				if (bpf_skb_load_bytes(skb, off, eh, 2))
					return PARSE_MALFORMED;
				nh = eh[0];
				off += (eh[1] + 1) * 8;
			} else if (nh == IPPROTO_FRAGMENT) {
				struct frag_hdr fh;
				if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
					return PARSE_MALFORMED;
				nh = fh.nexthdr;
				off += sizeof(struct frag_hdr);
				p->frag_id = fh.identification;
				if (fh.frag_off & bpf_htons(IP6_OFFSET)) {
					// A later fragment: see the IPv4 case.
					if (nh != IPPROTO_UDP && nh != IPPROTO_TCP)
						return PARSE_PASS;
					if (off > p->ip_end)
						return PARSE_MALFORMED;
					p->proto = nh;
					p->l4_off = off;
					p->frag = FRAG_LATER;
					return PARSE_OK;
				}
				if (fh.frag_off & bpf_htons(IP6_MF))
					p->frag = FRAG_FIRST;
			} else {
				break;
			}
		}
		if (off > p->ip_end)
			return PARSE_MALFORMED;
		p->proto = nh;
		p->l4_off = off;
		return parse_l4(skb, p);
	}
	return PARSE_PASS;
}

// The common case without helpers: an untagged Ethernet frame carrying IPv4
// (no options, not fragmented) or IPv6 (no extension header) with a TCP, UDP or SCTP
// header in the linear part. Applies parse()'s checks and fills p as parse()
// would. PARSE_PASS means "not sure", and p may then be partly written: the
// caller zeroes it and runs parse(), which also gives malformed packets
// their verdict. Each field is written as soon as it is known, rather than
// held in a register until every check passed: inlined into tc_ingress
// (saving a subprogram call, ~9 ns of an established packet), held values
// would be spilled into its frame, which is on the deepest call chain.
// parse_direct on a frame of len bytes between data and end, whichever
// program's context they come from (tc_ingress's skb, xdp_ingress's frame).
static __always_inline int parse_direct_at(void *data, void *end, __u32 len, struct pkt *p)
{
	struct ethhdr *eth = data;
	__u32 avail;
	__u8 *l4p;

	if ((void *)(eth + 1) > end)
		return PARSE_PASS;
	p->l3_off = ETH_HLEN;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return PARSE_PASS;
		__u32 ihl = ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		// No options: every packet pointer then sits at a constant
		// offset, which 6.1's verifier follows (a variable one it lost).
		if (ip->version != 4 || ihl != IP4_HLEN || tot < ihl || ETH_HLEN + tot > len ||
		    (ip->frag_off & bpf_htons(IP_OFFSET | IP_MF)))
			return PARSE_PASS;
		p->family = AF_INET;
		p->proto = ip->protocol;
		p->ttl = ip->ttl;
		// The v4-mapped address's last 8 bytes (::ffff:a.b.c.d) in one
		// store each: the key copies read them as one 8-byte word, and a
		// load that spans several narrower stores waits for them to
		// retire on x86 instead of taking their data at once.
		*(__u64 *)(p->src + 8) = (__u64)ip->saddr << 32 | bpf_htonl(0xffff);
		*(__u64 *)(p->dst + 8) = (__u64)ip->daddr << 32 | bpf_htonl(0xffff);
		p->ip_end = ETH_HLEN + tot;
		p->l4_off = ETH_HLEN + IP4_HLEN;
		avail = tot - IP4_HLEN;
		l4p = data + ETH_HLEN + IP4_HLEN;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return PARSE_PASS;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		if (ip6->version != 6 || ETH_HLEN + IP6_HLEN + plen > len)
			return PARSE_PASS;
		p->family = AF_INET6;
		p->proto = ip6->nexthdr;
		p->ttl = ip6->hop_limit;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->ip_end = ETH_HLEN + IP6_HLEN + plen;
		p->l4_off = ETH_HLEN + IP6_HLEN;
		avail = plen;
		l4p = data + ETH_HLEN + IP6_HLEN;
	} else {
		return PARSE_PASS;
	}
	switch (p->proto) {
	case IPPROTO_TCP: {
		if ((void *)(l4p + 20) > end)
			return PARSE_PASS;
		__u32 doff = (l4p[12] >> 4) * 4;
		if (avail < 20 || doff < 20 || doff > avail)
			return PARSE_PASS;
		p->tcp_flags = l4p[13];
		break;
	}
	case IPPROTO_UDP: {
		if ((void *)(l4p + 8) > end)
			return PARSE_PASS;
		__u16 ulen = ((__u16)l4p[4] << 8) | l4p[5];
		if (avail < 8 || ulen < 8 || ulen > avail)
			return PARSE_PASS;
		break;
	}
	case IPPROTO_SCTP: {
		// Common header, first chunk header and the initiate tag.
		if ((void *)(l4p + 20) > end || avail < 16)
			return PARSE_PASS;
		p->chunk_type = l4p[12];
		__builtin_memcpy(&p->vtag, l4p + 4, 4);
		__u16 clen = ((__u16)l4p[14] << 8) | l4p[15];
		if (clen < 4 || clen > avail - 12)
			return PARSE_PASS;
		if (p->chunk_type == SCTP_INIT || p->chunk_type == SCTP_INIT_ACK) {
			if (avail < 20 || clen < 20)
				return PARSE_PASS;
			__builtin_memcpy(&p->init_tag, l4p + 16, 4);
		}
		break;
	}
	default:
		return PARSE_PASS;
	}
	if ((void *)(l4p + 4) > end)
		return PARSE_PASS; // known already; said again for the verifier
	__builtin_memcpy(&p->sport, l4p, 2);
	__builtin_memcpy(&p->dport, l4p + 2, 2);
	return PARSE_OK;
}

static __always_inline int parse_direct(struct __sk_buff *skb, struct pkt *p)
{
	return parse_direct_at((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, p);
}

#endif
