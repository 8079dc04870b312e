// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// SCTP multi-homing, first pass: INIT/INIT-ACK address parameters rewritten
// in place (mh_param), and the ASCONF policy (sctp_asconf).
#ifndef LB_SCTP_PARAMS_H
#define LB_SCTP_PARAMS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/csum.h"

/* SCTP multi-homing: rewriting INIT and INIT-ACK address parameters.
 *
 * An association's first INIT creates its record (struct assoc): the VIPs of
 * the service (the INIT's destination first), the client's addresses and the
 * endpoint's addresses in the order they first appear (the packet's source
 * first, then the address parameters). Address i of a side maps to VIP i:
 * toward the client every endpoint address becomes a VIP, toward the
 * endpoint the client's addresses stay as they are (default mode), become
 * VIPs (fullnat) or disappear (onearm). When the INIT-ACK passes, conntrack
 * entries are added for every (client address x VIP) pair, all translating
 * to the same endpoint and ports and carrying the same vtags.
 *
 * Two passes. The first rewrites the chunk in place: an address the LB
 * cannot carry (other family, more than there are VIPs, any client address
 * of a NAT64 flow, Host Name) has its parameter type changed to an
 * unassigned type whose top bits say "skip silently" (RFC 9260 3.2.1) and
 * its address zeroed. Every changed word updates the CRC32c incrementally
 * (crc32c_delta), whatever its position, so this pass needs no loop over
 * the packet and its result is a valid packet of the same length.
 *
 * The second pass (mh_compact) removes the skipped parameters: a zeroed
 * parameter still tells the peer how many addresses of which family the
 * other side had, and every reader of the chunk (peer, capture) has to step
 * over it; the peer should see the addresses it may use and nothing else.
 * INIT and INIT-ACK are never bundled (RFC 9260 6.10), so the SCTP packet is
 * the common header and this chunk: it is copied into a per-CPU buffer, rebuilt
 * without the removed words, its CRC32c computed over the whole new packet
 * (a table-driven loop: the removed bytes shift everything after them, which
 * no incremental update can express cheaply), the skb trimmed and the IP
 * length fixed. When that cannot be done (packet over LB_COMPACT_MAX,
 * anything after the chunk) the first pass's packet goes out: still valid,
 * only longer. INIT/INIT-ACK are a few per association, so the loop's cost
 * is paid once per handshake, never per data packet.
 *
 * Supported Address Types (INIT only) is cut to the one type the endpoint
 * may use: the family of the LB addresses it sees (IPv4 for NAT64). Host
 * Name must not be offered either: those parameters are stripped, and a
 * peer resolving a name would pick addresses the LB knows nothing of. In the
 * first pass the parameter becomes one type (length 6) followed, when it
 * was longer, by a skip parameter over the rest, which the second pass
 * removes like the others.
 *
 * A third pass grows the INIT-ACK of an endpoint with fewer addresses than
 * the service has VIPs by the VIPs it lacks (mh_grow): the client gets a
 * path to every VIP whatever the endpoint's own multi-homing.
 *
 * ASCONF (RFC 5061) is not translated: ASCONF and ASCONF-ACK are masked out
 * of the Supported Extensions parameter in both directions, so the peers
 * never negotiate dynamic address reconfiguration through the LB and keep
 * the address sets of the handshake; one sent anyway is dropped (see
 * sctp_asconf).
 */

#define LB_MAX_PARAMS 32
#define LB_MAX_EXT_WORDS 8
#define LB_MAX_ADDR_TYPES 8 // Supported Address Types entries (3 types exist)

// Replaces the 4-byte word at packet offset off (o and n as loaded from the
// packet) and folds the change into the CRC delta.
static __always_inline int mh_word(struct __sk_buff *skb, struct mh_ctx *c, __u32 off, __u32 o,
				   __u32 n)
{
	if (o == n)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &n, 4, 0))
		return -1;
	c->crc ^= crc32c_delta(o ^ n, c->sctp_len - (off - c->l4_off));
	return 0;
}

// Index of addr in list, appending it when there is room; -1 when full.
static __always_inline int mh_index(__u8 (*list)[16], __u8 *n, __u8 limit, const __u8 *addr)
{
	__u8 cnt = *n;
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= cnt)
			break;
		if (addr_eq(list[i], addr))
			return i;
	}
	if (cnt >= limit || cnt >= LB_MAX_VIPS)
		return -1;
	int i = cnt & (LB_MAX_VIPS - 1);
	addr_cpy(list[i], addr);
	*n = i + 1;
	return i;
}

// Source the endpoint sees for client address i.
static __always_inline const __u8 *mh_lsrc(const struct assoc *a, int i)
{
	i &= LB_MAX_VIPS - 1;
	// onearm (NAT64 flows run as onearm): one LB address for every path.
	if (i == 0 || a->mode == MODE_ONEARM)
		return a->lsrc0;
	if (a->mode == MODE_FULLNAT)
		return a->vip[i];
	return a->caddr[i];
}

static __always_inline int mh_neutralise(struct __sk_buff *skb, struct mh_ctx *c, __u32 off,
					 __u32 hw, __u32 words, const __u8 *addr)
{
	__u8 nh[4];
	__u32 nw, zero = 0;
	__builtin_memcpy(nh, &hw, 4);
	nh[0] = SCTP_P_SKIP >> 8;
	nh[1] = SCTP_P_SKIP & 0xff;
	__builtin_memcpy(&nw, nh, 4);
	if (mh_word(skb, c, off, hw, nw))
		return -1;
	for (int k = 0; k < 4; k++) {
		if (k >= words)
			break;
		__u32 o, bo = (16 - 4 * words + 4 * k) & 12;
		__builtin_memcpy(&o, addr + bo, 4);
		if (mh_word(skb, c, off + 4 + 4 * k, o, zero))
			return -1;
	}
	return 0;
}

// Marks len bytes at rel (offset in the SCTP packet; both multiples of 4,
// parameters being padded) for mh_compact to remove. One word per step: a
// loop over the bitmap's words would compare rel against every word's
// bounds, and each compare splits the verifier's view of rel. Global:
// verified once.
__noinline int mh_drop(struct mh_ctx *c, __u32 rel, __u32 len)
{
	if (!c)
		return 0;
	__u32 a = rel / 4, cnt = len / 4;
	c->rm_bytes += len;
	for (int k = 0; k < LB_COMPACT_WORDS; k++) {
		__u32 w = a + k;
		// Words past the buffer are never compacted (mh_compact refuses
		// longer packets): nothing to mark.
		if (k >= cnt || w >= LB_COMPACT_WORDS)
			break;
		c->rm[w / 32] |= 1U << (w % 32);
	}
	return 0;
}

// NAT64 INIT (IPv6 client seen as an IPv4 LB address): derived from lsrc0,
// not stored, since mh_param's frame is on the deepest call chain.
static __always_inline int mh_nat64(const struct mh_ctx *c)
{
	return c->dir == SCTP_INIT && c->a.family == AF_INET6 && is_mapped(c->a.lsrc0);
}

// Records c->addr among the client's addresses. Global (verified once, own
// frame): mh_param's frame is on the deepest call chain.
__noinline int mh_learn_client(struct mh_ctx *c)
{
	if (!c)
		return 0;
	return mh_index(c->a.caddr, &c->a.nc, c->limit, c->addr);
}

// Rewrites one INIT/INIT-ACK parameter at off; returns its padded length or
// -1 when it is malformed. Global: verified once, not per loop iteration.
__noinline int mh_param(struct __sk_buff *skb, struct mh_ctx *c, __u32 off)
{
	__u8 h[4];
	__u32 hw;

	if (!c)
		return -1;
	if (off + 4 > c->end || bpf_skb_load_bytes(skb, off, h, 4))
		return -1;
	__u32 type = (__u32)h[0] << 8 | h[1];
	__u32 len = (__u32)h[2] << 8 | h[3];
	if (len < 4 || len > 0xffff || off + len > c->end)
		return -1;
	__u32 plen = (len + 3) & ~3U;
	__u32 klen = len; // what the parameter keeps of its length, 0: skipped
	__builtin_memcpy(&hw, h, 4);

	if (type == SCTP_P_IPV4 || type == SCTP_P_IPV6) {
		int v6 = type == SCTP_P_IPV6;
		__u32 words = v6 ? 4 : 1;
		__u8 *addr = c->addr;
		__builtin_memset(addr, 0, 16);
		if (len != 4 + 4 * words)
			return -1;
		if (v6) {
			if (bpf_skb_load_bytes(skb, off + 4, addr, 16))
				return -1;
		} else {
			addr[10] = addr[11] = 0xff;
			if (bpf_skb_load_bytes(skb, off + 4, addr + 12, 4))
				return -1;
		}
		int idx = -1;
		// NAT64: the client's addresses are learnt (its paths) but none may
		// reach the IPv4 endpoint, which could not use them anyway.
		if (c->nat64 && v6)
			mh_learn_client(c);
		else if ((c->a.family == AF_INET6) == v6 && !c->nat64) {
			if (c->dir == SCTP_INIT && c->a.mode == MODE_ONEARM) {
				// onearm: every client address is a path toward the
				// one VIP (learnt, so its packets find the association
				// and the endpoint's can be steered to it), but the
				// endpoint sees only the first, as the LB's address.
				idx = mh_index(c->a.caddr, &c->a.nc, LB_MAX_VIPS, addr);
				if (idx > 0)
					idx = -1;
			} else if (c->dir == SCTP_INIT)
				idx = mh_index(c->a.caddr, &c->a.nc, c->limit, addr);
			else
				idx = mh_index(c->a.eaddr, &c->a.ne, c->limit, addr);
		}
		if (idx < 0) {
			if (mh_neutralise(skb, c, off, hw, words, addr))
				return -1;
			klen = 0;
		} else {
			const __u8 *na = c->dir == SCTP_INIT ? mh_lsrc(&c->a, idx) : c->a.vip[idx & 3];
			for (int k = 0; k < 4; k++) {
				if (k >= words)
					break;
				__u32 o, n, bo = (16 - 4 * words + 4 * k) & 12;
				__builtin_memcpy(&o, addr + bo, 4);
				__builtin_memcpy(&n, na + bo, 4);
				if (mh_word(skb, c, off + 4 + 4 * k, o, n))
					return -1;
			}
		}
	} else if (type == SCTP_P_HOSTNAME) {
		// The LB can only carry paths it knows the addresses of.
		if (mh_neutralise(skb, c, off, hw, 0, h))
			return -1;
		klen = 0;
	} else if (type == SCTP_P_ADDR_TYPES && c->dir == SCTP_INIT) {
		// One 2-byte type per entry. Becomes [type 12, length 6, the
		// allowed type, padding], then a skip parameter over the rest of
		// the padded length (the words the split leaves).
		if (len < 6 || (len & 1) || len > 4 + 2 * LB_MAX_ADDR_TYPES ||
		    off + plen > c->l4_off + c->sctp_len)
			return -1;
		__u8 t = c->a.family == AF_INET6 && !mh_nat64(c) ? SCTP_P_IPV6 : SCTP_P_IPV4;
		for (int k = 0; k < (4 + 2 * LB_MAX_ADDR_TYPES + 3) / 4; k++) {
			__u32 woff = 4 * k;
			if (woff >= plen)
				break;
			__u8 b[4] = {};
			__u32 o = hw, n;
			if (k == 0) {
				b[1] = SCTP_P_ADDR_TYPES;
				b[3] = 6;
			} else {
				if (bpf_skb_load_bytes(skb, off + woff, &o, 4))
					return -1;
				if (k == 1) {
					b[1] = t;
				} else if (k == 2) {
					b[0] = SCTP_P_SKIP >> 8;
					b[1] = SCTP_P_SKIP & 0xff;
					b[3] = plen - 8;
				}
			}
			__builtin_memcpy(&n, b, 4);
			if (mh_word(skb, c, off + woff, o, n))
				return -1;
		}
		klen = 6;
		// The skip parameter must end inside the chunk: when the list was
		// the last parameter, the chunk length grows over its padding.
		if (plen > 8 && off + plen > c->end)
			c->end_fix = off + plen;
	} else if (type == SCTP_P_SUPPORTED_EXT) {
		if (len > 4 + 4 * LB_MAX_EXT_WORDS)
			return -1;
		for (int k = 0; k < LB_MAX_EXT_WORDS; k++) {
			__u32 woff = 4 + 4 * k;
			if (woff >= len)
				break;
			__u8 b[4];
			__u32 o, n;
			if (bpf_skb_load_bytes(skb, off + woff, b, 4))
				return -1;
			__builtin_memcpy(&o, b, 4);
			for (int m = 0; m < 4; m++) {
				if (woff + m < len && (b[m] == SCTP_ASCONF || b[m] == SCTP_ASCONF_ACK))
					b[m] = SCTP_EXT_MASKED;
			}
			__builtin_memcpy(&n, b, 4);
			if (mh_word(skb, c, off + woff, o, n))
				return -1;
		}
	}
	// Bookkeeping for mh_compact: where the kept part ends once the
	// parameters before it are gone, and what goes.
	if (klen) {
		c->kept_end = off + klen - c->rm_bytes;
		c->last_rm = 0;
	}
	__u32 kpad = (klen + 3) & ~3U;
	if (kpad < plen) {
		mh_drop(c, off + kpad - c->l4_off, plen - kpad);
		c->last_rm = 1;
	}
	return plen;
}

// Whether an SCTP packet carries an ASCONF or ASCONF-ACK. The handshake
// masks them out of Supported Extensions, so a conforming peer never sends
// one; a peer that does anyway would hand the other side addresses the LB
// never rewrote, so the packet is dropped (the sender retransmits, then
// gives up on the reconfiguration; the association itself is unaffected).
// RFC 5061 sends ASCONF first or right after an AUTH chunk: only those two
// positions are looked at, so ordinary packets cost nothing more.
static __always_inline int sctp_asconf(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 t = p->chunk_type;
	if (t == SCTP_AUTH) {
		__u8 h[4];
		if (bpf_skb_load_bytes(skb, p->l4_off + 12, h, 4))
			return 0;
		__u32 len = ((__u32)h[2] << 8 | h[3]);
		__u32 next = p->l4_off + 12 + ((len + 3) & ~3U);
		if (len < 4 || next + 4 > p->ip_end || bpf_skb_load_bytes(skb, next, &t, 1))
			return 0;
	}
	return t == SCTP_ASCONF || t == SCTP_ASCONF_ACK;
}

#endif
