// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// SCTP multi-homing, second and third passes: the INIT/INIT-ACK rebuilt
// without its skipped parameters (mh_compact) or grown by the VIPs an endpoint
// lacks (mh_grow), and mh_walk, which runs the passes over one chunk.
#ifndef LB_SCTP_COMPACT_H
#define LB_SCTP_COMPACT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/csum.h"
#include "lib/sctp_params.h"

// Puts the rebuilt SCTP packet (nn bytes in sctp_scratch) into the skb:
// trims or extends it, stores the packet and fixes the IP length. Returns nn, 0 when
// the skb was left alone, -1 when it was changed but could not be completed
// (drop). Global, called at the end of mh_compact's loop: verified once, not
// once per word the loop may stop at.
__noinline int mh_store(struct __sk_buff *skb, struct mh_ctx *c, __u32 nn)
{
	__u32 zero = 0;

	if (!c)
		return 0;
	__u32 n = c->sctp_len;
	// Compaction: every removed word was marked once (parameters do not
	// overlap); growth: exactly the parameters appended.
	if (nn != c->store_len || nn > LB_COMPACT_MAX)
		return 0;
	// Kept apart from the upper bound: clang folds the two into one
	// offset compare the verifier cannot bound the size with.
	barrier_var(nn);
	if (nn < 32)
		return 0;
	struct sctp_buf *b = bpf_map_lookup_elem(&sctp_scratch, &zero);
	if (!b)
		return 0;
	// Resize first: when it fails the skb is as the first pass left it.
	if (bpf_skb_change_tail(skb, c->l4_off + nn, 0))
		return 0;
	if (bpf_skb_store_bytes(skb, c->l4_off, b->w, nn, 0))
		return -1;
	if (c->ip6) {
		// payload_len counts the extension headers before l4_off too.
		__u16 pl = bpf_htons(c->l4_off + nn - c->l3_off - 40);
		if (bpf_skb_store_bytes(skb, c->l3_off + 4, &pl, 2, 0))
			return -1;
	} else {
		__u16 ot = bpf_htons(c->l4_off + n - c->l3_off), nt = bpf_htons(c->l4_off + nn - c->l3_off);
		if (bpf_l3_csum_replace(skb, c->l3_off + 10, ot, nt, 2) ||
		    bpf_skb_store_bytes(skb, c->l3_off + 2, &nt, 2, 0))
			return -1;
	}
	return nn;
}

// CRC32c of the first nw words of b. Global: verified once, whatever state
// its caller arrives in (a loop walked per caller state costs the verifier
// hundreds of thousands of instructions).
__noinline __u32 mh_crc(struct sctp_buf *b, __u32 nw)
{
	__u32 crc = 0xffffffff;
	if (!b)
		return 0;
	for (int i = 0; i < LB_COMPACT_WORDS; i++) {
		if (i >= nw)
			break;
		crc = crc32c_word(crc, b->w[i]);
	}
	return ~crc;
}

// Second pass: rebuilds the SCTP packet in sctp_scratch without the words
// mh_drop marked and with the chunk length new_clen, computes its CRC32c
// (mh_crc) and has mh_store put it in the skb. Returns the new SCTP length, 0 when
// the packet stays as the first pass left it, -1 (drop). Global: verified
// once.
__noinline int mh_compact(struct __sk_buff *skb, struct mh_ctx *c)
{
	__u32 zero = 0;

	if (!c)
		return 0;
	__u32 n = c->sctp_len, clen = c->end - c->l4_off - 12;
	// Only the common header, the chunk and its padding: anything bundled
	// after it (RFC 9260 forbids it, but it would be lost) keeps the packet.
	if (n < 32 || n > LB_COMPACT_MAX || n != 12 + ((clen + 3) & ~3U) || c->rm_bytes > n - 32)
		return 0;
	struct sctp_buf *b = bpf_map_lookup_elem(&sctp_scratch, &zero);
	if (!b)
		return 0;
	if (bpf_skb_load_bytes(skb, c->l4_off, b->w, n))
		return 0;
	__u8 *hb = (__u8 *)b->w;
	hb[14] = c->new_clen >> 8;
	hb[15] = c->new_clen & 0xff;
	b->w[2] = 0; // the CRC is computed with its own field zeroed
	__u32 o = 0;
	for (int i = 0; i < LB_COMPACT_WORDS; i++) {
		if (i >= n / 4)
			break;
		__u32 w = b->w[i];
		__u32 keep = ~(c->rm[i / 32] >> (i % 32)) & 1;
		// Branch-free, so the verifier walks one path per word: a removed
		// word is written too, then overwritten by the next kept one
		// (o <= i: only words already read are overwritten).
		b->w[o & (LB_COMPACT_WORDS - 1)] = w;
		o += keep;
	}
	b->w[2] = mh_crc(b, o);
	c->store_len = n - c->rm_bytes;
	return mh_store(skb, c, o * 4);
}

// Third pass, INIT-ACK only: the endpoint has fewer addresses than the
// service has VIPs. The LB, not the endpoint, is the client's multi-homed
// peer, so the client is offered every VIP: the VIPs no endpoint address
// maps to (vip[ne..nv)) are appended as address parameters, and their paths
// lead to the endpoint's first address (mh_spread). Without this a client
// whose primary link fails loses an association the LB could have carried
// on its other networks. c->sctp_len is the packet's current length.
// Returns the new SCTP length, 0 when the packet stays as it is (anything
// after the chunk, too big), -1 (drop). Global: verified once.
__noinline int mh_grow(struct __sk_buff *skb, struct mh_ctx *c)
{
	__u32 zero = 0;

	if (!c)
		return 0;
	__u32 ne = c->a.ne, nv = c->a.nv;
	if (ne < 1 || ne >= nv || nv > LB_MAX_VIPS)
		return 0;
	int v6 = c->a.family == AF_INET6;
	__u32 psz = v6 ? 20 : 8, add = (nv - ne) * psz;
	__u32 n = c->sctp_len;
	if (n > LB_COMPACT_MAX - add)
		return 0;
	barrier_var(n); // keeps the bound on n itself (see mh_store)
	if (n < 32 || n > LB_COMPACT_MAX)
		return 0;
	struct sctp_buf *b = bpf_map_lookup_elem(&sctp_scratch, &zero);
	if (!b)
		return 0;
	if (bpf_skb_load_bytes(skb, c->l4_off, b->w, n))
		return 0;
	__u8 *hb = (__u8 *)b->w;
	__u32 clen = (__u32)hb[14] << 8 | hb[15];
	// Only the common header, the chunk and its padding (as mh_compact).
	if (clen < 20 || n != 12 + ((clen + 3) & ~3U))
		return 0;
	__u32 nclen = ((clen + 3) & ~3U) + add;
	hb[14] = nclen >> 8;
	hb[15] = nclen & 0xff;
	__u32 w = n / 4;
	for (int j = 1; j < LB_MAX_VIPS; j++) {
		if (j < ne)
			continue;
		if (j >= nv)
			break;
		const __u8 *va = c->a.vip[j];
		__u32 hw, aw;
		__u8 h[4] = {0, v6 ? SCTP_P_IPV6 : SCTP_P_IPV4, 0, psz};
		__builtin_memcpy(&hw, h, 4);
		b->w[w++ & (LB_COMPACT_WORDS - 1)] = hw;
		for (int k = 0; k < 4; k++) {
			if (!v6 && k < 3)
				continue;
			__builtin_memcpy(&aw, va + 4 * k, 4);
			b->w[w++ & (LB_COMPACT_WORDS - 1)] = aw;
		}
	}
	b->w[2] = 0; // the CRC is computed with its own field zeroed
	b->w[2] = mh_crc(b, w);
	c->store_len = n + add;
	return mh_store(skb, c, w * 4);
}

// Walks the parameters of the packet's INIT/INIT-ACK chunk with c prepared,
// applies the accumulated CRC change, then compacts the chunk when
// parameters were skipped (p->ip_end follows). 0 or -1 (drop).
static __noinline int mh_walk(struct __sk_buff *skb, struct pkt *p, struct mh_ctx *c)
{
	__u32 off = p->l4_off + 32;

	c->crc = 0;
	c->l3_off = p->l3_off;
	c->l4_off = p->l4_off;
	c->ip6 = p->family == AF_INET6;
	c->sctp_len = p->ip_end - p->l4_off;
	// The first chunk's length (parse_l4 checked it fits the datagram),
	// reloaded rather than kept in struct pkt, whose size every caller's
	// stack pays for.
	__u8 cl[2];
	if (bpf_skb_load_bytes(skb, p->l4_off + 14, cl, 2))
		return -1;
	c->end = p->l4_off + 12 + ((__u32)cl[0] << 8 | cl[1]);
	c->kept_end = off;
	c->dir = p->chunk_type;
	c->nat64 = mh_nat64(c);
	for (int i = 0; i < LB_MAX_PARAMS; i++) {
		if (off + 4 > c->end)
			break;
		int r = mh_param(skb, c, off);
		if (r <= 0)
			return -1;
		off += r;
	}
	// More parameters than walked: some could carry an address.
	if (off + 4 <= c->end)
		return -1;
	if (c->end_fix > c->end) {
		__u32 o, n, nl = c->end_fix - p->l4_off - 12;
		__u8 ch[4];
		if (bpf_skb_load_bytes(skb, p->l4_off + 12, ch, 4))
			return -1;
		__builtin_memcpy(&o, ch, 4);
		ch[2] = nl >> 8;
		ch[3] = nl & 0xff;
		__builtin_memcpy(&n, ch, 4);
		if (mh_word(skb, c, p->l4_off + 12, o, n))
			return -1;
		c->end = c->end_fix;
	}
	if (c->crc) {
		__u32 crc;
		if (bpf_skb_load_bytes(skb, p->l4_off + 8, &crc, 4))
			return -1;
		crc ^= c->crc;
		if (bpf_skb_store_bytes(skb, p->l4_off + 8, &crc, 4, 0))
			return -1;
	}
	if (!c->rm_bytes)
		return 0;
	// The last parameter kept ends the chunk; when the chunk's own last
	// parameter stays, its length keeps the sender's choice about counting
	// the final padding.
	c->new_clen = c->last_rm ? c->kept_end - (p->l4_off + 12) : c->end - (p->l4_off + 12) - c->rm_bytes;
	int n = mh_compact(skb, c);
	if (n < 0)
		return -1;
	if (n > 0)
		p->ip_end = p->l4_off + n;
	return 0;
}

#endif
