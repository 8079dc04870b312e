// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The established fast path in XDP (xdp_fast, run by xdp_ingress in lb.c):
// on an interface attached in XDP mode, a packet of a tracked flow that
// ct_fast would carry (fast_eligible), and that changes no conntrack state,
// is rewritten by fast_write_at, counted by ct_account, and sent to the
// cached next hop before any skb exists. Everything else gets XDP_PASS
// untouched, and tc_ingress, attached on every interface in every mode,
// does with it exactly what it does without XDP.
//
// Why only that:
//   - A state change (TCP SYN/FIN/RST, SCTP chunks sctp_needs_slow names)
//     may need the slow path's work (releases, path records); TC has it.
//   - There is no skb: no ip_summed, no CHECKSUM_PARTIAL, no helper to
//     keep skb->csum coherent. The TCP/UDP checksum is updated in the
//     packet directly, which is right for frames from a wire (their
//     checksum is complete). A frame whose checksum is only partial (a
//     local sender with TX checksum offload, e.g. the peer of a veth) would
//     leave with a wrong one: such interfaces stay in TC mode, or their
//     peers turn TX checksum offload off (docs/architecture.md).
//   - An XDP frame can only be redirected to an interface that takes XDP
//     frames: one in xdp_ifaces (the daemon attached it in XDP mode), or
//     back out of the ingress one (XDP_TX). Else TC forwards it.
#ifndef LB_XDP_FAST_H
#define LB_XDP_FAST_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/parse.h"
#include "lib/fastpath.h"

// Inlined, like parse_direct in tc_ingress: a subprogram call costs an
// established frame about 9 ns on a host whose returns go through a
// return thunk (retbleed, SRSO).
static __always_inline int xdp_parse(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	return parse_direct_at(data, end, end - data, p);
}

// The TCP or UDP checksum field of the frame fast_write_at rewrites (same
// constant offsets), NULL when out of the frame or not TCP/UDP.
static __always_inline __u16 *xdp_l4_check(void *data, void *end, const struct pkt *p)
{
	void *l4 = data + ETH_HLEN + IP6_HLEN;
	if (p->family == AF_INET)
		l4 = data + ETH_HLEN + IP4_HLEN;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return 0;
		return &th->check;
	}
	if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			return 0;
		return &uh->check;
	}
	return 0;
}

// An established packet in XDP: the verdict (XDP_TX, XDP_REDIRECT), or
// XDP_PASS with nothing written or counted. Inlined into xdp_ingress,
// whose call chain has the room (unlike tc_ingress's, see ct_fast): a
// subprogram call costs about 9 ns a frame on hosts whose returns go
// through a return thunk; the verifier walks it once per conntrack map.
static __always_inline int xdp_fast(struct xdp_md *ctx, const struct pkt *p, struct ct_val *ct)
{
	if (!ctx || !p || !ct)
		return XDP_PASS;
	// Any TCP state change is TC's (ct_track, releases on close).
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST)))
		return XDP_PASS;
	__u64 now;
	if (!fast_eligible(p, ct, &now))
		return XDP_PASS;
	__u32 in = ctx->ingress_ifindex, out = ct->fib_ifindex;
	if (out != in && !bpf_map_lookup_elem(&xdp_ifaces, &out))
		return XDP_PASS;
	__u32 crcd = fast_crc_delta(p, ct);
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u16 *check = 0;
	if (p->proto != IPPROTO_SCTP) {
		check = xdp_l4_check(data, end, p);
		if (!check)
			return XDP_PASS;
	}
	__u32 ad, pd;
	if (fast_write_at(data, end, p, ct, crcd, &ad, &pd))
		return XDP_PASS;
	if (check) {
		__u16 c = *check;
		// UDP (BPF_F_MARK_MANGLED_0, as ct_fast asks): a datagram
		// without checksum keeps none; a computed 0 is sent as 0xffff.
		if (p->proto == IPPROTO_UDP) {
			if (c) {
				c = csum_apply(c, (__u64)ad + pd);
				*check = c ? c : 0xffff;
			}
		} else {
			*check = csum_apply(c, (__u64)ad + pd);
		}
	}
	__u64 len = end - data;
	ct_account(len, p, ct, now);
	count(&xdp_stats, 0, len, 0);
	if (out == in)
		return XDP_TX;
	return bpf_redirect(out, 0);
}

#endif
