//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// telcolb TC datapath: L4 load balancing with conntrack and NAT44/NAT66 (and
// NAT64: IPv6 VIP, IPv4 endpoints, see nat64_xlate) for TCP, UDP and SCTP. Layouts shared with Go are in include/lb_types.h.
//
// Design notes (the why):
//   - Headers are read with bpf_skb_load_bytes into stack copies rather than
//     direct packet access: offsets are variable (VLAN, IPv4 options, IPv6
//     extension headers) and helper reads keep the 5.15 verifier simple.
//   - Every write goes through bpf_skb_store_bytes and the csum helpers, which
//     keep skb->csum coherent for CHECKSUM_COMPLETE devices.
//   - Conntrack holds both directions; each entry carries the full translation
//     to apply, so the hot path is one hash lookup and a few stores.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/lb_types.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define NSEC 1000000000ULL

/* ---- maps (all pinned by name so a daemon restart keeps state) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct svc_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, struct addr16);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct svc_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_infos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES * LB_MAX_EPS);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct sel_table);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sel_tables SEC(".maps");

// Shared by all CPUs: users expect strict rotation ("4 flows over 2
// endpoints = 2 each"), which per-CPU counters break. The atomic add is paid
// once per new flow, never on established packets.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rr_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES * LB_MAX_EPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

// LRU so a full table evicts the stalest flows instead of refusing new ones.
// max_entries is overridden from Go (Config.MaxConns).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct ifaddr_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} if_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES * LB_MAX_EPS);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

// x^(8n) mod P for SCTP packet length n, filled by the Go loader; makes the
// incremental CRC32c update one carry-less multiply (see crc32c_delta).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} crc_shift SEC(".maps");

// Per-CPU scratch for conntrack values being built: two of them would not
// fit the 512-byte stack next to the rest of the call chain.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ct_val);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_redir_neigh);
} nh_scratch SEC(".maps");

// NAT64: the L3 header being built (off the stack, which is full).
struct hdr_buf {
	__u8 b[40];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hdr_buf);
} hdr_scratch SEC(".maps");

// NAT64 ICMP error translation: the embedded header changes family too, so
// the message is rebuilt whole (outer header, ICMP header, embedded header,
// quoted bytes) here and written back over a resized packet.
#define X64_BUF 2048
struct x64_ctx {
	__u8 nsrc[16];    // the flow's translation (ct_val nat_src/nat_dst)
	__u8 ndst[16];
	__u16 nports[2];  // embedded ports after translation
	__u16 iports[2];  // embedded ports as received
	__u32 in4;        // offset of the embedded L4 header in the packet
	__u32 ilen;       // embedded datagram's L4 length (from its IP header)
	__u8 iproto;
	__u8 itos;
	__u8 ittl;
	__u8 pad;
	__u8 h[8];        // the ICMP header as received
	__u32 ph[2];      // ICMPv6 pseudo header: length, next header
	__u8 old[40];     // embedded pseudo-header words and ports, before ...
	__u8 new[40];     // ... and after, for the embedded L4 checksum
	__u8 b[X64_BUF + 8]; // the rebuilt L3 packet (+ zero padding for sums)
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct x64_ctx);
} x64_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct svc_vips);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_vip_list SEC(".maps");

// LRU like conntrack: an association record lives as long as its entries.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct assoc_key);
	__type(value, struct assoc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} assocs SEC(".maps");

// Where an association's INIT-ACK is expected: the INIT-ACK's destination,
// verification tag (the client's initiate tag) and ports give the
// endpoint address the INIT was sent to. A multi-homed endpoint may answer
// from another of its addresses (usrsctp picks any bound address), which no
// conntrack entry knows before the INIT-ACK has been seen.
struct pend_key {
	__u8 dst[16];
	__u32 vtag;
	__u16 sport; // endpoint port
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pend_key);
	__type(value, struct addr16);
} init_pending SEC(".maps");

// Compaction (see "SCTP multi-homing"): SCTP packets up to this size are
// copied into sctp_scratch and rebuilt without their skipped parameters.
#define LB_COMPACT_MAX 2048
#define LB_COMPACT_WORDS (LB_COMPACT_MAX / 4)

// Rewrite context of one INIT/INIT-ACK (too big for the stack).
struct mh_ctx {
	struct assoc a;
	__u32 crc;      // xor of the CRC32c deltas of every word changed
	__u32 sctp_len; // SCTP packet length (CRC span)
	__u32 l3_off;
	__u32 l4_off;
	__u32 end;      // end of the INIT/INIT-ACK chunk
	__u32 end_fix;  // end the chunk takes in place (a split last parameter), 0: as is
	__u32 rm_bytes; // bytes the skipped parameters take (padded)
	__u32 kept_end; // end of the last parameter kept, once compacted
	__u32 new_clen; // chunk length once compacted
	__u32 store_len; // SCTP length mh_store is to write (compacted or grown)
	__u8 dir;       // SCTP_INIT or SCTP_INIT_ACK
	__u8 limit;     // how many addresses this direction may carry
	__u8 last_rm;   // the chunk's last parameter (or its tail) is skipped
	__u8 ip6;       // the packet (not necessarily the association) is IPv6
	__u8 x64;       // a NAT64 INIT: IPv6 client, IPv4 endpoint (see mh_xlat)
	__u8 addr[16];  // address being rewritten (kept off the stack)
	__u32 rm[LB_COMPACT_WORDS / 32]; // 4-byte words of the SCTP packet to remove
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mh_ctx);
} mh_scratch SEC(".maps");

// The SCTP packet being compacted, as 4-byte words.
struct sctp_buf {
	__u32 w[LB_COMPACT_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sctp_buf);
} sctp_scratch SEC(".maps");

/* ---- parsing ---- */

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
	__u8 xl64;      // nat64_xlate turned this IPv4 packet into IPv6
	__u32 init_tag; // SCTP INIT/INIT-ACK initiate tag
	__u32 vtag;     // SCTP common header verification tag
};

enum {
	PARSE_OK = 0,
	PARSE_PASS,      // not IP or a protocol we do not handle
	PARSE_MALFORMED, // truncated or inconsistent; p->dst valid if L3 parsed
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define SCTP_DATA 0
#define SCTP_INIT 1
#define SCTP_INIT_ACK 2
#define SCTP_ABORT 6
#define SCTP_SHUTDOWN 7
#define SCTP_SHUTDOWN_ACK 8
#define SCTP_COOKIE_ECHO 10
#define SCTP_COOKIE_ACK 11
#define SCTP_SHUTDOWN_COMPLETE 14

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1;
}

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
		if (ulen < 8 || ulen > avail)
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

	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return PARSE_PASS;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb, off + 2, &proto, 2))
			return PARSE_PASS;
		off += 4;
	}
	p->l3_off = off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return PARSE_MALFORMED;
		__u32 ihl = ip.ihl * 4;
		__u32 tot = bpf_ntohs(ip.tot_len);
		if (ip.version != 4 || ihl < 20 || tot < ihl || off + tot > skb->len)
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
		// Non-first fragments carry no L4 header: let the stack reassemble.
		if (ip.frag_off & bpf_htons(0x1fff))
			return PARSE_PASS;
		return parse_l4(skb, p);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return PARSE_MALFORMED;
		__u32 plen = bpf_ntohs(ip6.payload_len);
		if (ip6.version != 6 || off + 40 + plen > skb->len)
			return PARSE_MALFORMED;
		p->family = AF_INET6;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->ttl = ip6.hop_limit;
		p->ip_end = off + 40 + plen;
		__u8 nh = ip6.nexthdr;
		off += 40;
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
				__u8 fh[4];
				if (bpf_skb_load_bytes(skb, off, fh, 4))
					return PARSE_MALFORMED;
				if ((((__u16)fh[2] << 8) | fh[3]) & 0xfff8)
					return PARSE_PASS;
				nh = fh[0];
				off += 8;
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

/* ---- SCTP CRC32c incremental update ----
 *
 * CRC32c is affine over GF(2): crc(A ^ B) = crc(A) ^ crc(B) ^ crc(0...0) for
 * equal-length messages, so for a message M changed into M' = M ^ D,
 *   crc(M') = crc(M) ^ lin(D)
 * where lin() is the raw CRC (zero init, no final xor) of the delta. Only the
 * first 4 bytes (the ports) differ, so D = w || 0^(N-4) with w the xor of the
 * old and new port bytes. In the reflected representation the raw CRC of the
 * 4 bytes w is w * x^32 mod P, and each trailing zero byte multiplies by x^8,
 * hence lin(D) = w * x^(8N) mod P. x^(8N) is assembled from the precomputed
 * squares x^(8*2^k) mod P (k = 0..15 covers N < 64 KiB), each product being a
 * 32-step carry-less multiply reduced by P (zlib's multmodp). The Go loader
 * precomputes x^(8N) for every N in the crc_shift map, leaving one multiply
 * per packet. Everything is a bounded loop of branch-free steps.
 */
#define CRC32C_POLY 0x82f63b78

// Writable (.data) on purpose: values from frozen .rodata are known to the
// verifier, which then simulates every multiply bit by bit instead of
// pruning.
static __u32 crc_x8_pow2[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
	0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
	0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

// Global (not static) functions are verified once, on their own.
__noinline __u32 gf2_mulmod(__u32 a, __u32 b)
{
	__u32 p = 0;
	for (int i = 0; i < 32; i++) {
		p ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return p;
}

__noinline __u32 crc32c_delta(__u32 w, __u32 n)
{
	__u32 *t = bpf_map_lookup_elem(&crc_shift, &n);
	if (t && *t)
		return gf2_mulmod(*t, w);
	// Table not filled (foreign loader): assemble x^(8n) from the squares.
	__u32 r = 0x80000000; // x^0
	for (int k = 0; k < 16; k++) {
		if (!(n >> k))
			break;
		if ((n >> k) & 1)
			r = gf2_mulmod(crc_x8_pow2[k], r);
	}
	return gf2_mulmod(r, w);
}

/* ---- helpers ---- */

// Coarse monotonic time (5.11+): tick resolution is plenty for timeouts of
// seconds and it costs a fraction of bpf_ktime_get_ns. Same clock base as
// CLOCK_MONOTONIC, which the Go ageing reads.
static __always_inline __u64 lb_now(void)
{
	return bpf_ktime_get_coarse_ns();
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

static __always_inline __u32 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

// Stores at at the Internet checksum of the len bytes at b (len a multiple
// of 4, at most 512: bpf_csum_diff's limit), their checksum field zero.
// 0 or -1.
static __always_inline int csum_store(const __u8 *b, __u32 len, __u8 *at)
{
	__s64 s = bpf_csum_diff(0, 0, (__u32 *)b, len, 0);
	if (s < 0)
		return -1;
	__u16 ck = (__u16)~csum_fold32((__u32)s);
	__builtin_memcpy(at, &ck, 2);
	return 0;
}

// Writes a 20-byte IPv4 header at h (no options, ID 0), checksum included;
// src and dst are 16-byte (v4-mapped) addresses. 0 or -1.
static __always_inline int ip4_build(__u8 *h, __u8 tos, __u32 tot_len, int df, __u8 ttl, __u8 proto,
				     const __u8 *src, const __u8 *dst)
{
	__builtin_memset(h, 0, 20);
	h[0] = 0x45;
	h[1] = tos;
	h[2] = tot_len >> 8;
	h[3] = tot_len;
	h[6] = df ? 0x40 : 0;
	h[8] = ttl;
	h[9] = proto;
	__builtin_memcpy(h + 12, src + 12, 4);
	__builtin_memcpy(h + 16, dst + 12, 4);
	return csum_store(h, 20, h + 10);
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

static __always_inline __u32 state_timeout(__u8 proto, __u8 state, __u32 idle)
{
	switch (proto) {
	case IPPROTO_TCP:
		switch (state) {
		case CT_TCP_SYN_SENT:
		case CT_TCP_SYN_RECV:
			return LB_TO_TCP_SYN;
		case CT_TCP_ESTABLISHED:
			return idle ? idle : LB_TO_TCP_EST;
		case CT_TCP_FIN_WAIT:
			return LB_TO_TCP_FIN;
		}
		return LB_TO_CLOSED;
	case IPPROTO_UDP:
		if (state == CT_UDP_NEW)
			return LB_TO_UDP_NEW;
		return idle ? idle : LB_TO_UDP_EST;
	case IPPROTO_SCTP:
		switch (state) {
		case CT_SCTP_INIT:
		case CT_SCTP_COOKIE_WAIT:
			return LB_TO_SCTP_INIT;
		case CT_SCTP_ESTABLISHED:
			return idle ? idle : LB_TO_SCTP_EST;
		case CT_SCTP_SHUTDOWN:
			return LB_TO_SCTP_SHUTDOWN;
		}
		return LB_TO_CLOSED;
	}
	return LB_TO_CLOSED;
}

static __always_inline void peer_key(const struct ct_val *v, __u8 proto, struct ct_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	addr_cpy(k->src, v->nat_dst);
	addr_cpy(k->dst, v->nat_src);
	k->sport = v->nat_dport;
	k->dport = v->nat_sport;
	k->proto = proto;
}

static __always_inline void release_active(struct ct_val *orig)
{
	if (orig->flags & CT_F_RELEASED)
		return;
	orig->flags |= CT_F_RELEASED;
	__u32 idx = orig->svc * LB_MAX_EPS + orig->ep;
	__u32 *a = bpf_map_lookup_elem(&ep_active, &idx);
	if (a && *a)
		__sync_fetch_and_add(a, -1);
}

/* ---- SCTP multi-homing ----
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
#define SCTP_P_IPV4 5
#define SCTP_P_IPV6 6
#define SCTP_P_HOSTNAME 11
#define SCTP_P_ADDR_TYPES 12
#define SCTP_P_SUPPORTED_EXT 0x8008
#define SCTP_P_SKIP 0xbffe
#define SCTP_ASCONF 0xc1
#define SCTP_ASCONF_ACK 0x80
#define SCTP_EXT_MASKED 0xff // reserved chunk type: receivers ignore it
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
static __always_inline int mh_xlat(const struct mh_ctx *c)
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
		if (c->x64 && v6)
			mh_learn_client(c);
		else if ((c->a.family == AF_INET6) == v6 && !c->x64) {
			if (c->dir == SCTP_INIT)
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
		__u8 t = c->a.family == AF_INET6 && !mh_xlat(c) ? SCTP_P_IPV6 : SCTP_P_IPV4;
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

// Reflected CRC32c (Castagnoli) byte table, for mh_compact.
static const __u32 crc32c_tab[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
	0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
	0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
	0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
	0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
	0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
	0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
	0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
	0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
	0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
	0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
	0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
	0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
	0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
	0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
	0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
	0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
	0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
	0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

// Folds one 4-byte word, loaded little-endian (first byte lowest), into a
// reflected CRC32c: four byte steps, the first byte first.
static __always_inline __u32 crc32c_word(__u32 crc, __u32 w)
{
	crc ^= w;
	crc = crc32c_tab[crc & 0xff] ^ (crc >> 8);
	crc = crc32c_tab[crc & 0xff] ^ (crc >> 8);
	crc = crc32c_tab[crc & 0xff] ^ (crc >> 8);
	crc = crc32c_tab[crc & 0xff] ^ (crc >> 8);
	return crc;
}

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
	c->x64 = mh_xlat(c);
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

static __always_inline struct mh_ctx *mh_ctx_get(void)
{
	__u32 zero = 0;
	struct mh_ctx *c = bpf_map_lookup_elem(&mh_scratch, &zero);
	if (c)
		__builtin_memset(c, 0, sizeof(*c));
	return c;
}

static __always_inline __u8 mh_init_limit(const struct assoc *a)
{
	if (a->mode == MODE_FULLNAT)
		return a->nv;
	if (a->mode == MODE_DEFAULT)
		return LB_MAX_VIPS;
	return 1; // onearm: the endpoint sees one LB address
}

// First INIT of an association (v: the orig entry being created): builds
// the record and rewrites the INIT (p->ip_end follows when it shrinks). 0
// or -1 (drop).
static __noinline int mh_init_new(struct __sk_buff *skb, struct pkt *p, const struct ct_val *v)
{
	struct mh_ctx *c = mh_ctx_get();
	if (!c)
		return -1;
	struct assoc *a = &c->a;
	__u32 svc = v->svc;
	addr_cpy(a->vip[0], p->dst);
	__u8 nv = 1;
	struct svc_vips *sv = bpf_map_lookup_elem(&svc_vip_list, &svc);
	// NAT64 runs as onearm toward the endpoint, but the client side is
	// multi-homed like any other: every VIP is a path (see mh_follow).
	c->x64 = is_mapped(v->nat_src) != (p->family == AF_INET);
	if (sv && (v->mode != MODE_ONEARM || c->x64)) {
		for (int i = 0; i < LB_MAX_VIPS; i++) {
			if (i >= sv->n || nv >= LB_MAX_VIPS)
				break;
			if (addr_eq(sv->vip[i], p->dst))
				continue;
			addr_cpy(a->vip[nv & (LB_MAX_VIPS - 1)], sv->vip[i]);
			nv++;
		}
	}
	a->nv = nv;
	addr_cpy(a->caddr[0], p->src);
	a->nc = 1;
	addr_cpy(a->eaddr[0], v->nat_dst);
	a->ne = 1;
	addr_cpy(a->lsrc0, v->nat_src);
	a->svc = svc;
	a->ep = v->ep;
	a->nat_sport = v->nat_sport;
	a->eport = v->nat_dport;
	a->mode = v->mode;
	a->family = p->family;
	c->limit = c->x64 ? nv : mh_init_limit(a);
	if (mh_walk(skb, p, c))
		return -1;
	struct assoc_key k = {.svc = svc, .vtag_client = p->init_tag, .cport = p->sport, .vport = p->dport};
	bpf_map_update_elem(&assocs, &k, a, BPF_ANY);
	struct pend_key pk = {.vtag = p->init_tag, .sport = v->nat_dport, .dport = v->nat_sport};
	addr_cpy(pk.dst, v->nat_src);
	bpf_map_update_elem(&init_pending, &pk, v->nat_dst, BPF_ANY);
	return 0;
}

// An INIT-ACK from an endpoint address no entry knows yet: the primary
// reply entry of the association it answers, or NULL.
static __noinline struct ct_val *mh_ack_entry(const struct pkt *p)
{
	struct pend_key pk = {.vtag = p->vtag, .sport = p->sport, .dport = p->dport};
	addr_cpy(pk.dst, p->dst);
	struct addr16 *ep = bpf_map_lookup_elem(&init_pending, &pk);
	if (!ep)
		return 0;
	struct ct_key k = {};
	addr_cpy(k.src, ep->a);
	addr_cpy(k.dst, p->dst);
	k.sport = p->sport;
	k.dport = p->dport;
	k.proto = IPPROTO_SCTP;
	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &k);
	if (!ct || !(ct->flags & CT_F_REPLY) || ct->vtag_client != p->vtag)
		return 0;
	return ct;
}

// The VIPs mh_grow offered lead to the endpoint's first address (the one
// the service names): vip[j] -> eaddr[0] for j >= ne. The record then holds
// nv endpoint addresses, some repeated.
static __always_inline void mh_spread(struct assoc *a)
{
	__u32 ne = a->ne;
	for (int j = 1; j < LB_MAX_VIPS; j++) {
		if (j < ne)
			continue;
		if (j >= a->nv)
			break;
		addr_cpy(a->eaddr[j], a->eaddr[0]);
	}
	a->ne = a->nv;
}

// Whether endpoint address j repeats an earlier one (a VIP mh_grow added).
static __always_inline int mh_repeat(const struct assoc *a, int j)
{
	for (int k = 0; k < LB_MAX_VIPS - 1; k++) {
		if (k >= j)
			break;
		if (addr_eq(a->eaddr[k], a->eaddr[j & (LB_MAX_VIPS - 1)]))
			return 1;
	}
	return 0;
}

// Adds the conntrack entries of every path but the primary one, copying the
// primary's reply entry tmpl. A path to a repeated endpoint address gets no
// reply entry: the endpoint's packets to that client address already have
// one, from the first VIP leading to it; nor does a NAT64 client's second
// address (see mh_follow). Global: verified once.
__noinline int mh_paths(struct mh_ctx *c, const struct ct_val *tmpl)
{
	__u32 zero = 0;
	struct ct_key k;

	if (!c || !tmpl)
		return 0;
	struct ct_val *v = bpf_map_lookup_elem(&scratch, &zero);
	if (!v)
		return 0;
	__u16 cport = tmpl->nat_dport, vport = tmpl->nat_sport;
	int made = 0;
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= c->a.nc)
			break;
		for (int j = 0; j < LB_MAX_VIPS; j++) {
			if (j >= c->a.ne)
				break;
			if (i == 0 && j == 0)
				continue;
			const __u8 *ls = mh_lsrc(&c->a, i);
			*v = *tmpl;
			v->flags = CT_F_PATH | CT_F_RELEASED;
			v->packets = 0;
			v->bytes = 0;
			v->fib_ns = 0;
			__builtin_memset(&k, 0, sizeof(k));
			addr_cpy(k.src, c->a.caddr[i]);
			addr_cpy(k.dst, c->a.vip[j]);
			k.sport = cport;
			k.dport = vport;
			k.proto = IPPROTO_SCTP;
			addr_cpy(v->nat_src, ls);
			addr_cpy(v->nat_dst, c->a.eaddr[j]);
			v->nat_sport = c->a.nat_sport;
			v->nat_dport = c->a.eport;
			if (bpf_map_update_elem(&conntrack, &k, v, BPF_ANY))
				continue;
			// One reply entry per (endpoint address, LB address) pair:
			// NAT64 shows the endpoint one LB address for every client
			// address, and mh_follow points that entry at the path the
			// client last used.
			if (mh_repeat(&c->a, j) || (i > 0 && c->a.mode == MODE_ONEARM)) {
				made++;
				continue;
			}
			addr_cpy(k.src, c->a.eaddr[j]);
			addr_cpy(k.dst, ls);
			k.sport = c->a.eport;
			k.dport = c->a.nat_sport;
			addr_cpy(v->nat_src, c->a.vip[j]);
			addr_cpy(v->nat_dst, c->a.caddr[i]);
			v->nat_sport = vport;
			v->nat_dport = cport;
			v->flags |= CT_F_REPLY;
			if (!bpf_map_update_elem(&conntrack, &k, v, BPF_ANY))
				made++;
		}
	}
	return made;
}

// INIT (retransmitted) or INIT-ACK on an existing entry: rewrites it like
// the first one; the INIT-ACK also learns the endpoint's addresses. Without
// a record (evicted) only the primary pair is kept; p->ip_end follows when
// the chunk shrinks. Returns -1 (drop), 0, or 1 when the paths in mh_scratch
// are to be added (mh_paths).
static __noinline int mh_handshake(struct __sk_buff *skb, struct pkt *p, struct ct_val *ct)
{
	struct mh_ctx *c = mh_ctx_get();
	if (!c)
		return -1;
	int ack = p->chunk_type == SCTP_INIT_ACK;
	struct assoc_key k = {.svc = ct->svc};
	if (ack) {
		k.vtag_client = ct->vtag_client;
		k.cport = ct->nat_dport;
		k.vport = ct->nat_sport;
	} else {
		k.vtag_client = p->init_tag;
		k.cport = p->sport;
		k.vport = p->dport;
	}
	struct assoc *rec = bpf_map_lookup_elem(&assocs, &k);
	if (rec) {
		c->a = *rec;
		if (ack)
			c->a.ne = 1;
		else
			c->a.nc = 1;
		c->limit = ack ? c->a.nv : mh_init_limit(&c->a);
	} else {
		c->a.family = p->family;
		c->a.nv = c->a.nc = c->a.ne = 1;
		c->limit = 1;
		if (ack) {
			addr_cpy(c->a.vip[0], ct->nat_src);
			addr_cpy(c->a.eaddr[0], p->src);
			// NAT64: the client's family is the VIP's, and no address of
			// the IPv4 endpoint can be carried to it.
			if (is_mapped(ct->nat_src) != (p->family == AF_INET)) {
				c->a.family = p->family == AF_INET ? AF_INET6 : AF_INET;
				c->a.ne = 0;
				c->limit = 0;
			}
		} else {
			addr_cpy(c->a.caddr[0], p->src);
			addr_cpy(c->a.lsrc0, ct->nat_src);
			c->a.mode = MODE_ONEARM;
		}
	}
	if (mh_walk(skb, p, c))
		return -1;
	if (!ack || !rec)
		return 0;
	c->a.vtag_ep = p->init_tag;
	if (c->a.ne < c->a.nv) {
		c->sctp_len = p->ip_end - p->l4_off;
		int n = mh_grow(skb, c);
		if (n < 0)
			return -1;
		if (n > 0) {
			p->ip_end = p->l4_off + n;
			mh_spread(&c->a);
		}
	}
	bpf_map_update_elem(&assocs, &k, &c->a, BPF_ANY);
	return 1; // the caller adds the paths: one frame less on the stack
}

// The primary orig entry of the association (service, client tag, ports
// packed as ports32), its key left in k; NULL when the record or the entry
// is gone.
static __always_inline struct ct_val *mh_primary(__u32 svc, __u32 vtag, __u32 ports, struct ct_key *k)
{
	struct assoc_key ak = {.svc = svc, .vtag_client = vtag, .cport = ports & 0xffff, .vport = ports >> 16};
	struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
	if (!a)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	addr_cpy(k->src, a->caddr[0]);
	addr_cpy(k->dst, a->vip[0]);
	k->sport = ak.cport;
	k->dport = ak.vport;
	k->proto = IPPROTO_SCTP;
	return bpf_map_lookup_elem(&conntrack, k);
}

// A path entry changed state (COOKIE-ACK, SHUTDOWN, ABORT seen on a
// secondary path): the association's primary entries take it, since the
// whole association ages with the primary's timeout.
__noinline int mh_sync_state(__u32 svc, __u32 vtag, __u32 ports, __u32 st, __u32 to)
{
	struct ct_key k;
	struct ct_val *pv = mh_primary(svc, vtag, ports, &k);
	if (!pv)
		return 0;
	// Never back: a late COOKIE-ACK on a path must not reopen a closing
	// association (states are ordered INIT < ... < CLOSED).
	if (st <= pv->state)
		return 0;
	pv->state = st;
	pv->timeout = to;
	if (st == CT_SCTP_CLOSED)
		release_active(pv);
	peer_key(pv, IPPROTO_SCTP, &k);
	struct ct_val *rv = bpf_map_lookup_elem(&conntrack, &k);
	if (rv) {
		rv->state = st;
		rv->timeout = to;
	}
	return 0;
}

// A new association replaces old on a tuple: every entry of the old one
// goes (the primary's too when the tuple was one of its secondary paths).
__noinline int mh_purge(__u32 svc, __u32 vtag, __u32 ports, __u32 was_path)
{
	struct assoc_key ak = {.svc = svc, .vtag_client = vtag, .cport = ports & 0xffff, .vport = ports >> 16};
	struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
	struct ct_key k;
	if (!a)
		return 0;
	for (int i = 0; i < LB_MAX_VIPS; i++) {
		if (i >= a->nc)
			break;
		for (int j = 0; j < LB_MAX_VIPS; j++) {
			if (j >= a->ne)
				break;
			if (i == 0 && j == 0 && !was_path)
				continue;
			__builtin_memset(&k, 0, sizeof(k));
			addr_cpy(k.src, a->caddr[i]);
			addr_cpy(k.dst, a->vip[j]);
			k.sport = ak.cport;
			k.dport = ak.vport;
			k.proto = IPPROTO_SCTP;
			if (i == 0 && j == 0) {
				struct ct_val *pv = bpf_map_lookup_elem(&conntrack, &k);
				if (pv)
					release_active(pv);
			}
			bpf_map_delete_elem(&conntrack, &k);
			addr_cpy(k.src, a->eaddr[j]);
			addr_cpy(k.dst, mh_lsrc(a, i));
			k.sport = a->eport;
			k.dport = a->nat_sport;
			bpf_map_delete_elem(&conntrack, &k);
		}
	}
	bpf_map_delete_elem(&assocs, &ak);
	return 0;
}

// Returns the new state for this packet, given the entry's current state.
static __always_inline __u8 next_state(const struct pkt *p, const struct ct_val *ct, __u8 *fins)
{
	int reply = ct->flags & CT_F_REPLY;
	__u8 st = ct->state;

	switch (p->proto) {
	case IPPROTO_TCP: {
		__u8 f = p->tcp_flags;
		if (f & TCP_RST)
			return CT_TCP_CLOSED;
		if (f & TCP_FIN) {
			*fins |= reply ? CT_FIN_REPLY : CT_FIN_ORIG;
			if ((*fins & (CT_FIN_ORIG | CT_FIN_REPLY)) == (CT_FIN_ORIG | CT_FIN_REPLY))
				return CT_TCP_CLOSED;
			return CT_TCP_FIN_WAIT;
		}
		if (st == CT_TCP_SYN_SENT && reply && (f & TCP_SYN) && (f & TCP_ACK))
			return CT_TCP_SYN_RECV;
		if (st == CT_TCP_SYN_RECV && !reply && (f & TCP_ACK) && !(f & TCP_SYN))
			return CT_TCP_ESTABLISHED;
		return st;
	}
	case IPPROTO_UDP:
		if (st == CT_UDP_NEW && reply)
			return CT_UDP_ESTABLISHED;
		return st;
	case IPPROTO_SCTP:
		switch (p->chunk_type) {
		case SCTP_INIT_ACK:
			if (reply && (st == CT_SCTP_INIT || st == CT_SCTP_COOKIE_WAIT))
				return CT_SCTP_COOKIE_WAIT;
			return st;
		case SCTP_COOKIE_ACK:
			if (reply && st == CT_SCTP_COOKIE_WAIT)
				return CT_SCTP_ESTABLISHED;
			return st;
		case SCTP_SHUTDOWN:
		case SCTP_SHUTDOWN_ACK:
			if (st != CT_SCTP_CLOSED)
				return CT_SCTP_SHUTDOWN;
			return st;
		case SCTP_SHUTDOWN_COMPLETE:
		case SCTP_ABORT:
			return CT_SCTP_CLOSED;
		}
		return st;
	}
	return st;
}

static __always_inline int is_closed(__u8 proto, __u8 st)
{
	return (proto == IPPROTO_TCP && st == CT_TCP_CLOSED) ||
	       (proto == IPPROTO_SCTP && st == CT_SCTP_CLOSED);
}

// Applies a state change to the entry and mirrors it into the peer entry so
// both directions age with the same timeout.
static __always_inline void ct_track(const struct pkt *p, struct ct_val *ct)
{
	__u8 fins = ct->fins;
	__u8 st = next_state(p, ct, &fins);
	int init_ack = p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT_ACK &&
		       (ct->flags & CT_F_REPLY) && ct->vtag_ep == 0;

	if (st == ct->state && fins == ct->fins && !init_ack)
		return;

	__u32 to = state_timeout(p->proto, st, ct->idle);
	ct->state = st;
	ct->fins = fins;
	ct->timeout = to;
	if (init_ack)
		ct->vtag_ep = p->init_tag;

	if (ct->flags & CT_F_DSR) {
		if (is_closed(p->proto, st))
			release_active(ct);
		return;
	}
	struct ct_key pk;
	peer_key(ct, p->proto, &pk);
	struct ct_val *peer = bpf_map_lookup_elem(&conntrack, &pk);
	if (peer) {
		peer->state = st;
		peer->fins = fins;
		peer->timeout = to;
		if (init_ack)
			peer->vtag_ep = p->init_tag;
	}
	if (is_closed(p->proto, st)) {
		if (!(ct->flags & CT_F_REPLY))
			release_active(ct);
		else if (peer)
			release_active(peer);
	}
	if ((ct->flags & CT_F_PATH) && st != CT_SCTP_INIT && st != CT_SCTP_COOKIE_WAIT) {
		__u16 vport = (ct->flags & CT_F_REPLY) ? ct->nat_sport : p->dport;
		mh_sync_state(ct->svc, ct->vtag_client, (__u32)vport << 16 | ct->cport, st, to);
	}
}

/* ---- rewriting ---- */

// BPF calls take at most 5 arguments: ports travel packed.
static __always_inline __u32 ports32(__u16 sport, __u16 dport)
{
	return (__u32)dport << 16 | sport;
}


static __always_inline __u32 l4_csum_off(const struct pkt *p, __u64 *flags)
{
	*flags = BPF_F_PSEUDO_HDR;
	if (p->proto == IPPROTO_TCP)
		return p->l4_off + 16;
	if (p->proto == IPPROTO_UDP) {
		if (p->family == AF_INET)
			*flags |= BPF_F_MARK_MANGLED_0;
		return p->l4_off + 6;
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
		if (bpf_l3_csum_replace(skb, p->l3_off + 10, o, n, 4))
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
	__u64 flags;
	__u32 coff = l4_csum_off(p, &flags);
	__u32 soff = p->family == AF_INET ? p->l3_off + 12 : p->l3_off + 8;
	__u32 doff = p->family == AF_INET ? p->l3_off + 16 : p->l3_off + 24;

	if (!addr_eq(src, p->src) && set_addr(skb, p, soff, p->src, src, coff, flags))
		return -1;
	if (!addr_eq(dst, p->dst) && set_addr(skb, p, doff, p->dst, dst, coff, flags))
		return -1;
	if (sport == p->sport && dport == p->dport)
		return 0;

	__u16 ports[2] = {sport, dport};
	if (p->proto == IPPROTO_SCTP) {
		__u32 crc, oldp, newp;
		if (bpf_skb_load_bytes(skb, p->l4_off + 8, &crc, 4))
			return -1;
		oldp = ((__u32)p->dport << 16) | p->sport; // little-endian load of bytes 0..3
		newp = ((__u32)dport << 16) | sport;
		crc ^= crc32c_delta(oldp ^ newp, p->ip_end - p->l4_off);
		if (bpf_skb_store_bytes(skb, p->l4_off + 8, &crc, 4, 0))
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

/* ---- NAT64 ----
 *
 * An IPv6 VIP may have IPv4 endpoints. Conntrack needs nothing new: its
 * addresses are 16 bytes with IPv4 v4-mapped, so a NAT64 flow's entries just
 * translate to the other family ([client6, vip6] -> [lb4, ep4] and [ep4, lb4]
 * -> [vip6, client6]); the target address's family tells rewrite from
 * translate. The endpoint cannot see an IPv6 client, so the source is always
 * the LB's IPv4 address on the egress interface (onearm), whatever the
 * service's mode; DSR cannot translate and is refused by the API. An SCTP
 * client may still be multi-homed toward the service's VIPs: its addresses
 * are learnt but never shown to the endpoint, and the endpoint's packets
 * follow the client's latest path (mh_follow).
 *
 * The L4 checksum is fixed before the headers change: only the pseudo
 * header's addresses differ (length and protocol add up the same in both
 * families). Not translated (packet dropped, DROP_REWRITE): IPv6 extension
 * headers, IPv4 options, VLAN tags in the frame, IPv4 UDP without checksum
 * (an IPv6 one would need the whole payload summed). ICMP errors about these
 * flows: see icmp_x64. An IPv4 packet too big for the IPv6 route once
 * translated: see nat64_too_big.
 */
static __noinline int nat64_xlate(struct __sk_buff *skb, struct pkt *p, const __u8 *src,
				  const __u8 *dst, __u32 ports32)
{
	__u16 sport = ports32 & 0xffff, dport = ports32 >> 16;
	int to4 = p->family == AF_INET6;
	__u32 plen = p->ip_end - p->l4_off;
	__u32 coff = 0;
	__u64 mf = 0;
	__u32 zero = 0;
	__s64 d;

	struct hdr_buf *hb = bpf_map_lookup_elem(&hdr_scratch, &zero);
	if (!hb)
		return -1;
	__u8 *h = hb->b;
	if (p->l3_off != ETH_HLEN || p->l4_off != ETH_HLEN + (to4 ? 40 : 20) || plen > 0xffff - 20)
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 4))
		return -1;
	// Traffic class <-> TOS.
	__u8 tos = to4 ? (h[0] << 4 | h[1] >> 4) : h[1];

	if (p->proto == IPPROTO_TCP) {
		coff = p->l4_off + 16;
	} else if (p->proto == IPPROTO_UDP) {
		coff = p->l4_off + 6;
		mf = BPF_F_MARK_MANGLED_0; // 0 is "no checksum": write 0xffff
		if (!to4) {
			__u16 c;
			if (bpf_skb_load_bytes(skb, coff, &c, 2) || !c)
				return -1;
		}
	} else if (p->proto != IPPROTO_SCTP) {
		return -1;
	}

	if (coff) {
		__u32 o4[2];
		if (to4) {
			d = bpf_csum_diff((__u32 *)p->src, 32, (__u32 *)(src + 12), 4, 0);
			if (d >= 0)
				d = bpf_csum_diff(0, 0, (__u32 *)(dst + 12), 4, (__u32)d);
		} else {
			__builtin_memcpy(&o4[0], p->src + 12, 4);
			__builtin_memcpy(&o4[1], p->dst + 12, 4);
			d = bpf_csum_diff(o4, 8, (__u32 *)src, 16, 0);
			if (d >= 0)
				d = bpf_csum_diff(0, 0, (__u32 *)dst, 16, (__u32)d);
		}
		if (d < 0 || bpf_l4_csum_replace(skb, coff, 0, (__u32)d, BPF_F_PSEUDO_HDR | mf))
			return -1;
		if (sport != p->sport && bpf_l4_csum_replace(skb, coff, p->sport, sport, mf | 2))
			return -1;
		if (dport != p->dport && bpf_l4_csum_replace(skb, coff, p->dport, dport, mf | 2))
			return -1;
	} else if (sport != p->sport || dport != p->dport) {
		// SCTP: no pseudo header, only the ports enter the CRC.
		__u32 crc, oldp = ((__u32)p->dport << 16) | p->sport, newp = ((__u32)dport << 16) | sport;
		if (bpf_skb_load_bytes(skb, p->l4_off + 8, &crc, 4))
			return -1;
		crc ^= crc32c_delta(oldp ^ newp, plen);
		if (bpf_skb_store_bytes(skb, p->l4_off + 8, &crc, 4, 0))
			return -1;
	}
	__u16 ports[2] = {sport, dport};
	if (bpf_skb_store_bytes(skb, p->l4_off, ports, 4, 0))
		return -1;

	__u16 eth = bpf_htons(to4 ? ETH_P_IP : ETH_P_IPV6);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_store_bytes(skb, 12, &eth, 2, 0))
		return -1;
	__builtin_memset(h, 0, 40);
	if (to4) {
		// DF: IPv6 is never fragmented en route.
		if (ip4_build(h, tos, 20 + plen, 1, p->ttl, p->proto, src, dst) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN, h, 20, 0))
			return -1;
		p->family = AF_INET;
		p->l4_off = ETH_HLEN + 20;
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)h;
		ip6->version = 6;
		ip6->priority = tos >> 4;
		ip6->flow_lbl[0] = (tos & 0xf) << 4;
		ip6->payload_len = bpf_htons(plen);
		ip6->nexthdr = p->proto;
		ip6->hop_limit = p->ttl;
		__builtin_memcpy(&ip6->saddr, src, 16);
		__builtin_memcpy(&ip6->daddr, dst, 16);
		if (bpf_skb_store_bytes(skb, ETH_HLEN, h, 40, 0))
			return -1;
		p->family = AF_INET6;
		p->l4_off = ETH_HLEN + 40;
		p->xl64 = 1;
	}
	p->ip_end = p->l4_off + plen;
	return 0;
}

// Whether a packet of p's family going to dst crosses families (NAT64).
static __always_inline int xlat_to(const struct pkt *p, const __u8 *dst)
{
	return is_mapped(dst) != (p->family == AF_INET);
}

static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->family == AF_INET) {
		__u8 ttl = p->ttl - 1;
		__u16 o = bpf_htons((__u16)p->ttl << 8), n = bpf_htons((__u16)ttl << 8);
		if (bpf_l3_csum_replace(skb, p->l3_off + 10, o, n, 2))
			return -1;
		return bpf_skb_store_bytes(skb, p->l3_off + 8, &ttl, 1, 0);
	}
	__u8 hl = p->ttl - 1;
	return bpf_skb_store_bytes(skb, p->l3_off + 7, &hl, 1, 0);
}

// fam is the family of src/dst, which differs from the packet's for a NAT64
// flow's source selection (the packet is still IPv6, the endpoint IPv4).
static __always_inline int fib_params(struct __sk_buff *skb, const struct pkt *p, __u8 fam,
				      const __u8 *src, const __u8 *dst, struct bpf_fib_lookup *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->ifindex = skb->ifindex;
	f->l4_protocol = p->proto;
	f->tot_len = p->ip_end - p->l3_off; // tot_len (v4), payload_len+40 (v6)
	if (fam == AF_INET) {
		f->family = AF_INET;
		__builtin_memcpy(&f->ipv4_src, src + 12, 4);
		__builtin_memcpy(&f->ipv4_dst, dst + 12, 4);
	} else {
		f->family = AF_INET6;
		__builtin_memcpy(f->ipv6_src, src, 16);
		__builtin_memcpy(f->ipv6_dst, dst, 16);
	}
	return bpf_fib_lookup(skb, f, sizeof(*f), 0);
}

// forward: a NAT64 packet (IPv4 turned IPv6) too big for its route; the
// route's MTU is in the upper 16 bits (see nat64_too_big).
#define FWD_TOO_BIG 0x7000

// Routes the (already rewritten) packet toward dst: L2 rewrite and redirect
// when the FIB knows the way, otherwise hand it to the kernel stack. A flow's
// FIB result is cached in its conntrack entry (ct, may be NULL) for
// LB_FIB_CACHE_NS: the lookup is the costliest step of the established path,
// and a second of staleness bounds how long a neighbour change goes unseen.
static __noinline int forward(struct __sk_buff *skb, const struct pkt *p, const __u8 *src,
			      const __u8 *dst, struct ct_val *ct)
{
	struct bpf_fib_lookup f;
	__u8 macs[12];
	__u32 ifindex;

	// The cache holds no MTU: a NAT64 packet grown past the IPv6 minimum
	// MTU is looked up every time, so one too big is caught.
	if (ct && ct->fib_ns && ct->last_seen - ct->fib_ns < LB_FIB_CACHE_NS &&
	    !(p->xl64 && p->ip_end - p->l3_off > 1280)) {
		if (dec_ttl(skb, p) || bpf_skb_store_bytes(skb, 0, ct->fib_macs, 12, 0)) {
			count_drop(DROP_REWRITE);
			return TC_ACT_SHOT;
		}
		return bpf_redirect(ct->fib_ifindex, 0);
	}
	int rc = fib_params(skb, p, p->family, src, dst, &f);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && p->xl64)
		return FWD_TOO_BIG | (__u32)f.mtu_result << 16;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (dec_ttl(skb, p)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		// Resolve the next hop the FIB chose, not the packet's destination:
		// in DSR mode the destination is the VIP, which no backend answers
		// neighbour requests for.
		// The request lives in a per-CPU map, not on the stack: the
		// verifier's 512-byte limit is shared by the whole call chain.
		__u32 zero = 0;
		struct bpf_redir_neigh *nh = bpf_map_lookup_elem(&nh_scratch, &zero);
		if (!nh)
			return bpf_redirect_neigh(f.ifindex, 0, 0, 0);
		__builtin_memset(nh, 0, sizeof(*nh));
		if (f.family == AF_INET) {
			nh->nh_family = AF_INET;
			nh->ipv4_nh = f.ipv4_dst;
		} else {
			nh->nh_family = AF_INET6;
			__builtin_memcpy(nh->ipv6_nh, f.ipv6_dst, 16);
		}
		return bpf_redirect_neigh(f.ifindex, nh, sizeof(*nh), 0);
	}
	__builtin_memcpy(macs, f.dmac, 6);
	__builtin_memcpy(macs + 6, f.smac, 6);
	ifindex = f.ifindex;
	if (ct) {
		__builtin_memcpy(ct->fib_macs, macs, 12);
		ct->fib_ifindex = ifindex;
		ct->fib_ns = ct->last_seen;
	}
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return bpf_redirect(ifindex, 0);
}

/* ---- ICMP ---- */

#define ICMP_X64 0x6464 // icmp_error: a NAT64 flow's error, for icmp_x64

static __noinline int icmp_echo_reply(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 macs[12], sw[12];
	__u32 csum_off = p->l4_off + 2;
	__u16 o, n;

	if (bpf_skb_load_bytes(skb, 0, macs, 12))
		return TC_ACT_OK;
	__builtin_memcpy(sw, macs + 6, 6);
	__builtin_memcpy(sw + 6, macs, 6);
	if (p->family == AF_INET) {
		__u8 t = 0;
		o = bpf_htons(8 << 8 | p->icmp_code);
		n = bpf_htons(0 << 8 | p->icmp_code);
		if (bpf_l4_csum_replace(skb, csum_off, o, n, 2) ||
		    bpf_skb_store_bytes(skb, p->l4_off, &t, 1, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + 12, p->dst + 12, 4, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + 16, p->src + 12, 4, 0))
			return TC_ACT_SHOT;
	} else {
		__u8 t = 129;
		o = bpf_htons(128 << 8 | p->icmp_code);
		n = bpf_htons(129 << 8 | p->icmp_code);
		// Swapping the addresses leaves the pseudo-header sum unchanged.
		if (bpf_l4_csum_replace(skb, csum_off, o, n, 2) ||
		    bpf_skb_store_bytes(skb, p->l4_off, &t, 1, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + 8, p->dst, 16, 0) ||
		    bpf_skb_store_bytes(skb, p->l3_off + 24, p->src, 16, 0))
			return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, 0, sw, 12, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int is_icmp_error(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == 3 || p->icmp_type == 11 || p->icmp_type == 12;
	return p->icmp_type >= 1 && p->icmp_type <= 4;
}

// Translates an ICMP error about a NATed flow: the embedded header is looked
// up reversed (it describes a packet that went the other way), then outer and
// inner addresses/ports get the same translation as the flow's packets.
// The embedded L4 checksum is left as is: receivers do not verify it, and
// ICMPv4 errors often carry only 8 bytes of it anyway.
static __noinline int icmp_error(struct __sk_buff *skb, struct pkt *p)
{
	__u32 in3 = p->l4_off + 8, in4, zero = 0;
	struct ct_key k = {};
	__u8 iproto;
	__u16 iports[2];
	// The embedded addresses live in the NAT64 context (x->old), which
	// needs them anyway: this frame is on the deepest call chain.
	struct x64_ctx *x = bpf_map_lookup_elem(&x64_scratch, &zero);
	if (!x)
		return TC_ACT_OK;
	__u8 *isrc = x->old, *idst = x->old + 16;
	__builtin_memset(isrc, 0, 32);
	if (p->family == AF_INET) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, in3, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
			return TC_ACT_OK;
		iproto = ip.protocol;
		isrc[10] = isrc[11] = idst[10] = idst[11] = 0xff;
		__builtin_memcpy(isrc + 12, &ip.saddr, 4);
		__builtin_memcpy(idst + 12, &ip.daddr, 4);
		in4 = in3 + ip.ihl * 4;
		x->itos = ip.tos;
		x->ittl = ip.ttl;
		x->ilen = bpf_ntohs(ip.tot_len) - ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, in3, &ip6, sizeof(ip6)) || ip6.version != 6)
			return TC_ACT_OK;
		iproto = ip6.nexthdr;
		__builtin_memcpy(isrc, &ip6.saddr, 16);
		__builtin_memcpy(idst, &ip6.daddr, 16);
		in4 = in3 + 40;
		x->itos = ip6.priority << 4 | ip6.flow_lbl[0] >> 4;
		x->ittl = ip6.hop_limit;
		x->ilen = bpf_ntohs(ip6.payload_len);
	}
	if (iproto != IPPROTO_TCP && iproto != IPPROTO_UDP && iproto != IPPROTO_SCTP)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, in4, iports, 4))
		return TC_ACT_OK;

	addr_cpy(k.src, idst);
	addr_cpy(k.dst, isrc);
	k.sport = iports[1];
	k.dport = iports[0];
	k.proto = iproto;
	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &k);
	if (!ct || (ct->flags & CT_F_DSR))
		return TC_ACT_OK;
	__u16 nports[2] = {ct->nat_dport, ct->nat_sport};
	if (is_mapped(ct->nat_dst) != (p->family == AF_INET)) {
		// NAT64 flow: rebuilt by icmp_x64, called by our caller so that
		// its frame and ours are never on the stack together.
		addr_cpy(x->nsrc, ct->nat_src);
		addr_cpy(x->ndst, ct->nat_dst);
		__builtin_memcpy(x->nports, nports, 4);
		__builtin_memcpy(x->iports, iports, 4);
		x->in4 = in4;
		x->iproto = iproto;
		return ICMP_X64;
	}

	__u8 nsrc[16], ndst[16], osrc[16];
	addr_cpy(nsrc, ct->nat_src);
	addr_cpy(ndst, ct->nat_dst);
	// The peer itself reports: its address is the one being translated.
	// An intermediate router's address is kept.
	addr_cpy(osrc, addr_eq(p->src, k.src) ? nsrc : p->src);
	__u32 icsum = p->l4_off + 2;

	if (p->family == AF_INET) {
		__u32 o, n;
		// Inner source <- flow's nat_dst, inner dest <- flow's nat_src. The
		// inner IP checksum compensates the address change, so the ICMP
		// checksum only sees the port delta.
		__builtin_memcpy(&o, isrc + 12, 4);
		__builtin_memcpy(&n, ndst + 12, 4);
		if (o != n && (bpf_l3_csum_replace(skb, in3 + 10, o, n, 4) ||
			       bpf_skb_store_bytes(skb, in3 + 12, &n, 4, 0)))
			return TC_ACT_SHOT;
		__builtin_memcpy(&o, idst + 12, 4);
		__builtin_memcpy(&n, nsrc + 12, 4);
		if (o != n && (bpf_l3_csum_replace(skb, in3 + 10, o, n, 4) ||
			       bpf_skb_store_bytes(skb, in3 + 16, &n, 4, 0)))
			return TC_ACT_SHOT;
	} else {
		__u32 o[4], n[4];
		__builtin_memcpy(o, isrc, 16);
		__builtin_memcpy(n, ndst, 16);
		__s64 d = bpf_csum_diff(o, 16, n, 16, 0);
		if (d < 0 || bpf_l4_csum_replace(skb, icsum, 0, (__u32)d, 0) ||
		    bpf_skb_store_bytes(skb, in3 + 8, n, 16, 0))
			return TC_ACT_SHOT;
		__builtin_memcpy(o, idst, 16);
		__builtin_memcpy(n, nsrc, 16);
		d = bpf_csum_diff(o, 16, n, 16, 0);
		if (d < 0 || bpf_l4_csum_replace(skb, icsum, 0, (__u32)d, 0) ||
		    bpf_skb_store_bytes(skb, in3 + 24, n, 16, 0))
			return TC_ACT_SHOT;
	}
	if (iports[0] != nports[0] && bpf_l4_csum_replace(skb, icsum, iports[0], nports[0], 2))
		return TC_ACT_SHOT;
	if (iports[1] != nports[1] && bpf_l4_csum_replace(skb, icsum, iports[1], nports[1], 2))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, in4, nports, 4, 0))
		return TC_ACT_SHOT;

	// Outer addresses: ICMPv4 has no pseudo header, ICMPv6 does.
	__u32 coff = p->family == AF_INET6 ? icsum : 0;
	__u32 soff = p->family == AF_INET ? p->l3_off + 12 : p->l3_off + 8;
	__u32 doff = p->family == AF_INET ? p->l3_off + 16 : p->l3_off + 24;
	if (!addr_eq(osrc, p->src) && set_addr(skb, p, soff, p->src, osrc, coff, BPF_F_PSEUDO_HDR))
		return TC_ACT_SHOT;
	if (!addr_eq(ndst, p->dst) && set_addr(skb, p, doff, p->dst, ndst, coff, BPF_F_PSEUDO_HDR))
		return TC_ACT_SHOT;
	if (p->ttl <= 1)
		return TC_ACT_OK;
	return forward(skb, p, osrc, ndst, 0);
}

/* ---- NAT64 ICMP errors (RFC 7915 4.2, 5.2) ----
 *
 * An error about a NAT64 flow crosses families with it: an ICMPv4 error from
 * the endpoint's side becomes an ICMPv6 error to the client (from the VIP),
 * an ICMPv6 error from the client's side an ICMPv4 error to the endpoint
 * (from the LB's IPv4 address). The embedded header changes family as well,
 * so its size changes inside the payload; rather than moving bytes around in
 * the packet (no helper does that on 5.15), the whole message is rebuilt in
 * x64_scratch and written over a packet resized with bpf_skb_change_proto
 * and bpf_skb_change_tail. The quote is cut so the result stays within the
 * family's limit (1280 bytes for ICMPv6, 576 for ICMPv4).
 */

// New type << 8 | code, or -1 for what has no counterpart (dropped, as the
// RFC says).
static __always_inline int x64_type(int to6, __u8 t, __u8 c)
{
	if (to6) {
		if (t == 11 && c <= 1)
			return 3 << 8 | c; // time exceeded
		if (t == 12 && (c == 0 || c == 2))
			return 4 << 8; // parameter problem, pointer translated
		if (t != 3)
			return -1;
		switch (c) {
		case 0: case 1: case 5: case 6: case 7: case 8: case 11: case 12:
			return 1 << 8; // no route
		case 2:
			return 4 << 8 | 1; // unrecognised next header
		case 3:
			return 1 << 8 | 4; // port unreachable
		case 4:
			return 2 << 8; // packet too big
		case 9: case 10: case 13: case 15:
			return 1 << 8 | 1; // administratively prohibited
		}
		return -1;
	}
	switch (t) {
	case 1:
		if (c == 0 || c == 2 || c == 3)
			return 3 << 8 | 1; // host unreachable
		if (c == 1)
			return 3 << 8 | 10; // administratively prohibited
		if (c == 4)
			return 3 << 8 | 3; // port unreachable
		return -1;
	case 2:
		return 3 << 8 | 4; // fragmentation needed
	case 3:
		return 11 << 8 | c;
	case 4:
		if (c == 0)
			return 12 << 8;
		if (c == 1)
			return 3 << 8 | 2; // protocol unreachable
		return -1;
	}
	return -1;
}

// Parameter problem pointer into the other family's header, or -1.
static __always_inline int x64_pointer(int to6, __u32 ptr)
{
	if (to6) {
		if (ptr <= 1)
			return ptr;
		if (ptr <= 3)
			return 4; // total length -> payload length
		if (ptr == 8)
			return 7; // ttl -> hop limit
		if (ptr == 9)
			return 6; // protocol -> next header
		if (ptr >= 12 && ptr <= 15)
			return 8;
		if (ptr >= 16 && ptr <= 19)
			return 24;
		return -1;
	}
	if (ptr <= 1)
		return ptr;
	if (ptr == 4 || ptr == 5)
		return 2;
	if (ptr == 6)
		return 9;
	if (ptr == 7)
		return 8;
	if (ptr >= 8 && ptr <= 23)
		return 12;
	if (ptr >= 24 && ptr <= 39)
		return 16;
	return -1;
}

// Sum of x->b[off, off+len) added to seed; len a multiple of 4, <= 1536
// (bpf_csum_diff takes at most 512 bytes per call).
static __always_inline __s64 x64_sum(struct x64_ctx *x, const __u32 off, __u32 len, __u32 seed)
{
	__s64 s = seed;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (len <= 512 * i)
			break;
		__u32 n = len - 512 * i;
		if (n > 512)
			n = 512;
		s = bpf_csum_diff(0, 0, (__u32 *)(x->b + off + 512 * i), n, (__u32)s);
		if (s < 0)
			return s;
	}
	return s;
}

// Builds the translated message in x->b; returns its L3 length or -1.
static __always_inline int x64_build(struct __sk_buff *skb, const struct pkt *p, struct x64_ctx *x,
				     const int to6)
{
	const __u32 co = to6 ? 40 : 20;           // ICMP header
	const __u32 io = co + 8;                  // embedded IP header
	const __u32 ho = io + (to6 ? 40 : 20);    // quoted L4 bytes
	const __u32 max = (to6 ? 1280 : 576) - ho;
	__u8 *h = x->h;

	if (bpf_skb_load_bytes(skb, p->l4_off, h, 8))
		return -1;
	int tc = x64_type(to6, h[0], h[1]);
	if (tc < 0)
		return -1;
	__u32 word = 0; // rest of the ICMP header, network order
	if (to6 && tc == 2 << 8) {
		__u32 mtu = (__u32)h[6] << 8 | h[7];
		if (!mtu) {
			// RFC 1191 routers: guess the plateau below the datagram.
			__u32 len = x->ilen + 20;
			mtu = len > 1492 ? 1492 : len > 1006 ? 1006 : len > 508 ? 508 : 296;
		}
		word = bpf_htonl(mtu + 20);
	} else if (!to6 && tc == (3 << 8 | 4)) {
		__u32 mtu = (__u32)h[4] << 24 | (__u32)h[5] << 16 | (__u32)h[6] << 8 | h[7];
		mtu = mtu < 88 ? 68 : mtu - 20;
		if (mtu > 0xffff)
			mtu = 0xffff;
		word = bpf_htonl(mtu);
	} else if ((to6 && tc == 4 << 8) || (!to6 && tc == 12 << 8)) {
		__u32 ptr = to6 ? h[4] : ((__u32)h[4] << 24 | (__u32)h[5] << 16 | (__u32)h[6] << 8 | h[7]);
		int np = x64_pointer(to6, ptr);
		if (np < 0)
			return -1;
		word = to6 ? bpf_htonl(np) : (__u32)np; // ICMPv4: first byte
	} else if (to6 && tc == (4 << 8 | 1)) {
		word = bpf_htonl(6); // points at the next header field
	}

	if (x->in4 >= p->ip_end)
		return -1;
	__u32 rest = p->ip_end - x->in4;
	if (rest > max)
		rest = max;
	if (rest < 4)
		return -1;
	if (bpf_skb_load_bytes(skb, x->in4, x->b + ho, rest))
		return -1;
	__builtin_memcpy(x->b + ho, x->nports, 4);

	// Embedded TCP/UDP checksum: pseudo header and ports changed.
	__u32 cko = 0;
	if (x->iproto == IPPROTO_TCP && rest >= 18)
		cko = 16;
	else if (x->iproto == IPPROTO_UDP && rest >= 8)
		cko = 6;
	if (cko) {
		__u16 c;
		__builtin_memcpy(&c, x->b + ho + cko, 2);
		if (c || x->iproto != IPPROTO_UDP) {
			__s64 d;
			if (to6) {
				__builtin_memcpy(x->old, x->old + 12, 4);
				__builtin_memcpy(x->old + 4, x->old + 28, 4);
				__builtin_memcpy(x->old + 8, x->iports, 4);
				addr_cpy(x->new, x->ndst);
				addr_cpy(x->new + 16, x->nsrc);
				__builtin_memcpy(x->new + 32, x->nports, 4);
				d = bpf_csum_diff((__u32 *)x->old, 12, (__u32 *)x->new, 36, 0);
			} else {
				__builtin_memcpy(x->old + 32, x->iports, 4);
				__builtin_memcpy(x->new, x->ndst + 12, 4);
				__builtin_memcpy(x->new + 4, x->nsrc + 12, 4);
				__builtin_memcpy(x->new + 8, x->nports, 4);
				d = bpf_csum_diff((__u32 *)x->old, 36, (__u32 *)x->new, 12, 0);
			}
			if (d < 0)
				return -1;
			__u32 s = csum_fold32((__u32)(__u16)~c + csum_fold32((__u32)d));
			c = (__u16)~s;
			if (!c && x->iproto == IPPROTO_UDP)
				c = 0xffff;
			__builtin_memcpy(x->b + ho + cko, &c, 2);
		}
	}

	__u32 ilen = x->ilen > 0xffff - 20 ? 0xffff - 20 : x->ilen;
	__u8 *ih = x->b + io;
	if (to6) {
		__builtin_memset(ih, 0, 40);
		ih[0] = 0x60 | x->itos >> 4;
		ih[1] = x->itos << 4;
		ih[4] = ilen >> 8;
		ih[5] = ilen;
		ih[6] = x->iproto;
		ih[7] = x->ittl;
		addr_cpy(ih + 8, x->ndst);
		addr_cpy(ih + 24, x->nsrc);
	} else if (ip4_build(ih, x->itos, ilen + 20, 1, x->ittl, x->iproto, x->ndst, x->nsrc)) {
		return -1; // DF, as nat64_xlate sends it
	}

	__u32 mlen = 8 + (ho - io) + rest; // ICMP message
	__u8 *ic = x->b + co;
	ic[0] = tc >> 8;
	ic[1] = tc;
	ic[2] = ic[3] = 0;
	__builtin_memcpy(ic + 4, &word, 4);
	__u32 zero = 0;
	__builtin_memcpy(x->b + ho + rest, &zero, 4); // pad for the sum

	__u8 *oh = x->b;
	__s64 seed = 0;
	if (to6) {
		__builtin_memset(oh, 0, 40);
		oh[0] = 0x60;
		oh[4] = mlen >> 8;
		oh[5] = mlen;
		oh[6] = IPPROTO_ICMPV6;
		oh[7] = p->ttl;
		addr_cpy(oh + 8, x->nsrc);
		addr_cpy(oh + 24, x->ndst);
		x->ph[0] = bpf_htonl(mlen);
		x->ph[1] = bpf_htonl(IPPROTO_ICMPV6);
		seed = bpf_csum_diff(0, 0, (__u32 *)(oh + 8), 32, 0);
		if (seed >= 0)
			seed = bpf_csum_diff(0, 0, x->ph, 8, (__u32)seed);
	} else if (ip4_build(oh, 0, mlen + 20, 0, p->ttl, IPPROTO_ICMP, x->nsrc, x->ndst)) {
		return -1;
	}
	if (seed < 0)
		return -1;
	__s64 s = x64_sum(x, co, (mlen + 3) & ~3U, (__u32)seed);
	if (s < 0)
		return -1;
	__u16 ck = (__u16)~csum_fold32((__u32)s);
	__builtin_memcpy(ic + 2, &ck, 2);
	return co + mlen;
}

static __noinline int icmp_x64(struct __sk_buff *skb, struct pkt *p)
{
	__u32 zero = 0;
	struct x64_ctx *x = bpf_map_lookup_elem(&x64_scratch, &zero);
	if (!x)
		return TC_ACT_OK;
	int to6 = p->family == AF_INET;
	// What the stack would drop anyway (it is not routed on).
	if (p->ttl <= 1)
		return TC_ACT_OK;
	// Like nat64_xlate: no VLAN tag, IPv4 options or extension headers.
	if (p->l3_off != ETH_HLEN || p->l4_off != ETH_HLEN + (to6 ? 20 : 40)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	int n = to6 ? x64_build(skb, p, x, 1) : x64_build(skb, p, x, 0);
	if (n < 0) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	if (n > 1280)
		return TC_ACT_SHOT;
	__u16 eth = bpf_htons(to6 ? ETH_P_IPV6 : ETH_P_IP);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_change_tail(skb, ETH_HLEN + n, 0) ||
	    bpf_skb_store_bytes(skb, 12, &eth, 2, 0) || bpf_skb_store_bytes(skb, ETH_HLEN, x->b, n, 0)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	p->family = to6 ? AF_INET6 : AF_INET;
	p->proto = to6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	p->l4_off = ETH_HLEN + (to6 ? 40 : 20);
	p->ip_end = ETH_HLEN + n;
	return forward(skb, p, x->nsrc, x->ndst, 0);
}

// An IPv4 packet of a NAT64 flow, already translated, does not fit the IPv6
// route (mtu): it is turned into ICMP fragmentation needed (RFC 7915 5.1's
// answer to DF packets; translation never fragments, so DF-less senders get
// it too: a Linux sender lowers its path MTU either way) and sent back to the
// neighbour it came from. The quote is rebuilt from what struct pkt still
// holds of the original: addresses, ports and TTL; the rest of the first 8
// L4 bytes (TCP sequence, UDP length) never changed.
static __noinline int nat64_too_big(struct __sk_buff *skb, struct pkt *p, __u32 mtu)
{
	__u32 zero = 0;
	struct x64_ctx *x = bpf_map_lookup_elem(&x64_scratch, &zero);
	__u8 macs[12];

	count_drop(DROP_NAT64_TOO_BIG);
	if (!x || p->l3_off != ETH_HLEN || p->ip_end < p->l4_off + 8 || mtu < 1280)
		return TC_ACT_SHOT;
	__u8 *b = x->b;
	__builtin_memset(b, 0, 56);
	if (bpf_skb_load_bytes(skb, p->l4_off, b + 48, 8) || bpf_skb_load_bytes(skb, 0, macs, 12))
		return TC_ACT_SHOT;
	__builtin_memcpy(b + 48, &p->sport, 2);
	__builtin_memcpy(b + 50, &p->dport, 2);
	// The quote's header, the ICMP header, then the outer header from the
	// LB address the packet was sent to.
	b[20] = 3;
	b[21] = 4;
	mtu -= 20;
	b[26] = mtu >> 8;
	b[27] = mtu;
	if (ip4_build(b + 28, 0, p->ip_end - p->l4_off + 20, 1, p->ttl, p->proto, p->src, p->dst) ||
	    csum_store(b + 20, 36, b + 22) || ip4_build(b, 0, 56, 0, 64, IPPROTO_ICMP, p->dst, p->src))
		return TC_ACT_SHOT;

	__u16 eth = bpf_htons(ETH_P_IP);
	__u8 sw[12];
	__builtin_memcpy(sw, macs + 6, 6);
	__builtin_memcpy(sw + 6, macs, 6);
	if (bpf_skb_change_proto(skb, eth, 0) || bpf_skb_change_tail(skb, ETH_HLEN + 56, 0) ||
	    bpf_skb_store_bytes(skb, 0, sw, 12, 0) || bpf_skb_store_bytes(skb, 12, &eth, 2, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, b, 56, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int is_vip(const __u8 *addr)
{
	return bpf_map_lookup_elem(&vips, addr) != 0;
}

/* ---- endpoint selection ---- */

static __always_inline int ep_usable(__u32 id, __u32 idx)
{
	__u32 k = id * LB_MAX_EPS + idx;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &k);
	return ep && !ep->down && ep->weight;
}

// Global so the verifier checks the 64-way scan once, not per caller path.
__noinline int leastconn_pick(__u32 id, __u32 n)
{
	__u32 best = 0, best_n = 0xffffffff;

	for (__u32 i = 0; i < LB_MAX_EPS; i++) {
		if (i >= n)
			break;
		__u32 k = id * LB_MAX_EPS + i;
		struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &k);
		if (!ep || ep->down || !ep->weight)
			continue;
		__u32 *a = bpf_map_lookup_elem(&ep_active, &k);
		__u32 v = a ? *a : 0;
		if (v < best_n) {
			best_n = v;
			best = i;
		}
	}
	if (best_n == 0xffffffff)
		return -1;
	return best & (LB_MAX_EPS - 1);
}

static __always_inline int select_ep(const struct pkt *p, __u32 id, const struct svc_info *info)
{
	struct sel_table *sel = bpf_map_lookup_elem(&sel_tables, &id);
	if (!sel || !sel->n_up)
		return -1;

	__u32 slot = 0;
	switch (info->sel) {
	case SEL_RR: {
		__u32 *c = bpf_map_lookup_elem(&rr_ctr, &id);
		if (c)
			slot = __sync_fetch_and_add(c, 1);
		break;
	}
	case SEL_HASH:
		slot = hash_tuple(p, 0);
		break;
	case SEL_PERSIST: {
		struct aff_key ak = {.svc = id};
		addr_cpy(ak.addr, p->src);
		__u64 now = lb_now();
		__u64 to = (__u64)(info->idle_timeout ? info->idle_timeout : LB_TO_PERSIST) * NSEC;
		struct aff_val *av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && now - av->last_ns < to && av->ep < info->n_eps && ep_usable(id, av->ep)) {
			av->last_ns = now;
			return av->ep;
		}
		slot = hash_tuple(p, 1);
		__u32 e = sel->slot[slot & (LB_SEL_SLOTS - 1)];
		struct aff_val nv = {.ep = e, .last_ns = now};
		bpf_map_update_elem(&affinity, &ak, &nv, BPF_ANY);
		return e;
	}
	case SEL_LEASTCONN:
		return leastconn_pick(id, info->n_eps);
	}
	return sel->slot[slot & (LB_SEL_SLOTS - 1)];
}

/* ---- flows ---- */

#define SCTP_AUTH 0x0f

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

// NAT64 SCTP: the IPv4 endpoint sees one LB address for every path of a
// multi-homed client, so its packets carry no hint of the path to answer
// on. They follow the client: each client packet points the association's
// reply entry at the client address and VIP it came by. A path that fails
// carries no more client packets, so the replies move to the path the
// client fails over to (its heartbeats on a live path may swing them back
// and forth between live paths, which the client accepts: every VIP is its
// peer's address). Global: verified once.
__noinline int mh_follow(const struct ct_val *ct, const struct pkt *p)
{
	struct ct_key k;
	if (!ct || !p)
		return 0;
	peer_key(ct, IPPROTO_SCTP, &k);
	struct ct_val *r = bpf_map_lookup_elem(&conntrack, &k);
	if (!r || !(r->flags & CT_F_REPLY) || r->vtag_client != ct->vtag_client)
		return 0;
	if (addr_eq(r->nat_dst, p->src) && addr_eq(r->nat_src, p->dst))
		return 0;
	addr_cpy(r->nat_dst, p->src);
	addr_cpy(r->nat_src, p->dst);
	r->fib_ns = 0; // the cached next hop was the old path's
	return 1;
}

static __noinline int ct_established(struct __sk_buff *skb, struct pkt *p, struct ct_val *ct)
{
	__u64 len = skb->len;

	// Plain increments: each direction's entry is normally hit by one RX
	// queue, and a rare lost update beats a locked add per packet.
	ct->last_seen = lb_now();
	ct->packets += 1;
	ct->bytes += len;
	ct_track(p, ct);
	count(&svc_stats, ct->svc, len, 0);
	count(&ep_stats, ct->svc * LB_MAX_EPS + ct->ep, len, 0);

	if (p->ttl <= 1)
		return TC_ACT_OK; // the stack answers with time exceeded
	if (ct->flags & CT_F_DSR)
		return forward(skb, p, p->src, ct->nat_dst, ct);
	if (p->proto == IPPROTO_SCTP && (p->chunk_type >= 0x80 || p->chunk_type == SCTP_AUTH) && sctp_asconf(skb, p)) {
		count_drop(DROP_SCTP_ASCONF);
		return TC_ACT_SHOT;
	}
	if (p->proto == IPPROTO_SCTP &&
	    ((p->chunk_type == SCTP_INIT && !(ct->flags & CT_F_REPLY)) ||
	     (p->chunk_type == SCTP_INIT_ACK && (ct->flags & CT_F_REPLY)))) {
		int r = mh_handshake(skb, p, ct);
		if (r < 0) {
			count_drop(DROP_SCTP_PARAMS);
			return TC_ACT_SHOT;
		}
		if (r > 0) {
			__u32 zero = 0;
			mh_paths(bpf_map_lookup_elem(&mh_scratch, &zero), ct);
		}
	}

	__u8 src[16], dst[16];
	addr_cpy(src, ct->nat_src);
	addr_cpy(dst, ct->nat_dst);
	int x64 = xlat_to(p, dst);
	if (x64 && p->proto == IPPROTO_SCTP && p->family == AF_INET6 && !(ct->flags & CT_F_REPLY))
		mh_follow(ct, p);
	if (x64 ? nat64_xlate(skb, p, src, dst, ports32(ct->nat_sport, ct->nat_dport))
			    : rewrite(skb, p, src, dst, ports32(ct->nat_sport, ct->nat_dport))) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	int r = forward(skb, p, src, dst, ct);
	if ((r & 0xffff) == FWD_TOO_BIG)
		return nat64_too_big(skb, p, (__u32)r >> 16);
	return r;
}

// Chooses the SNAT source (egress interface address for onearm, the VIP for
// fullnat) and a source port whose reply tuple is free. Returns 0 or a drop
// reason.
static __noinline int snat_pick(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v)
{
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
	__u32 h = hash_tuple(p, 0);
	// Unrolled: clang rotates this loop so that its back-edge lands on the
	// instruction after the map lookup, which 6.1's check_cfg rejects
	// ("back-edge from insn N to N+1": a helper call's fall-through may not
	// close a loop before 6.3); found by scenarios/vm on Debian's 6.1.
#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u16 port = 1024 + (h + i * 7919) % (65536 - 1024);
		struct ct_key rk;
		v->nat_sport = bpf_htons(port);
		peer_key(v, p->proto, &rk);
		if (!bpf_map_lookup_elem(&conntrack, &rk))
			return 0;
	}
	return DROP_SNAT_PORTS;
}

// Writes the reply entry then the orig entry (in that order, so a reply can
// never find a half-made connection). Returns 0 or a drop reason.
static __noinline int ct_insert(const struct pkt *p, const struct ct_key *key, const struct ct_val *v)
{
	if (!(v->flags & CT_F_DSR)) {
		__u32 one = 1;
		struct ct_val *r = bpf_map_lookup_elem(&scratch, &one);
		struct ct_key rk;
		if (!r)
			return DROP_CT_FULL;
		*r = *v;
		peer_key(v, p->proto, &rk);
		addr_cpy(r->nat_src, p->dst);
		addr_cpy(r->nat_dst, p->src);
		r->nat_sport = p->dport;
		r->nat_dport = p->sport;
		r->flags = CT_F_REPLY;
		r->packets = 0;
		r->bytes = 0;
		if (bpf_map_update_elem(&conntrack, &rk, r, BPF_ANY))
			return DROP_CT_FULL;
	}
	if (bpf_map_update_elem(&conntrack, key, v, BPF_ANY))
		return DROP_CT_FULL;
	return 0;
}

// Releases the active count of the primary orig entry of an association
// (service, client tag, ports). Global: verified once.
__noinline int release_primary(__u32 svc, __u32 tag, __u32 ports)
{
	struct ct_key k;
	struct ct_val *v = mh_primary(svc, tag, ports, &k);
	if (v && !(v->flags & CT_F_REPLY) && v->vtag_client == tag)
		release_active(v);
	return 0;
}

static __noinline int new_flow(struct __sk_buff *skb, struct pkt *p, struct ct_key *key,
				    struct ct_val *old)
{
	struct svc_key sk = {};
	addr_cpy(sk.vip, p->dst);
	sk.port = p->dport;
	sk.proto = p->proto;
	__u32 *idp = bpf_map_lookup_elem(&services, &sk);
	if (!idp)
		return TC_ACT_OK;
	__u32 id = *idp;
	if (id >= LB_MAX_SERVICES)
		return TC_ACT_OK;
	struct svc_info *info = bpf_map_lookup_elem(&svc_infos, &id);
	if (!info || !(info->flags & SVC_F_VALID))
		return TC_ACT_OK;

	// A lone RST or a stray SCTP ABORT/SHUTDOWN-COMPLETE must not create state.
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST))
		return TC_ACT_OK;
	if (p->proto == IPPROTO_SCTP &&
	    (p->chunk_type == SCTP_ABORT || p->chunk_type == SCTP_SHUTDOWN_COMPLETE))
		return TC_ACT_OK;

	int sel = -1;
	if (p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT) {
		// The same INIT (same tag) retransmitted from another client
		// address must reach the endpoint the first one went to, and
		// becomes the association's primary entry: the count of active
		// associations moves to it (the first primary turns into a path
		// entry when the INIT-ACK passes).
		struct assoc_key ak = {.svc = id, .vtag_client = p->init_tag, .cport = p->sport, .vport = p->dport};
		struct assoc *a = bpf_map_lookup_elem(&assocs, &ak);
		if (a && a->ep < info->n_eps && ep_usable(id, a->ep)) {
			sel = a->ep;
			release_primary(id, p->init_tag, ports32(p->sport, p->dport));
		}
	}
	if (sel < 0)
		sel = select_ep(p, id, info);
	if (sel < 0 || sel >= LB_MAX_EPS || sel >= info->n_eps) {
		count_drop(DROP_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}
	__u32 epi = (__u32)sel;
	__u32 ek = id * LB_MAX_EPS + epi;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep || ep->down) {
		count_drop(DROP_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}

	__u32 zero = 0;
	struct ct_val *vp = bpf_map_lookup_elem(&scratch, &zero);
	if (!vp)
		return TC_ACT_OK;
	__builtin_memset(vp, 0, sizeof(*vp));
	addr_cpy(vp->nat_dst, ep->addr);
	vp->nat_dport = ep->port ? ep->port : p->dport;
	vp->svc = id;
	vp->ep = epi;
	vp->family = p->family;
	// NAT64 always takes an IPv4 source of the LB (see nat64_xlate).
	vp->mode = xlat_to(p, ep->addr) ? MODE_ONEARM : info->mode;
	vp->idle = info->idle_timeout;
	vp->created = vp->last_seen = lb_now();
	vp->packets = 1;
	vp->bytes = skb->len;
	switch (p->proto) {
	case IPPROTO_TCP:
		vp->state = (p->tcp_flags & TCP_SYN) ? CT_TCP_SYN_SENT : CT_TCP_ESTABLISHED;
		break;
	case IPPROTO_UDP:
		vp->state = CT_UDP_NEW;
		break;
	case IPPROTO_SCTP:
		vp->state = p->chunk_type == SCTP_INIT ? CT_SCTP_INIT : CT_SCTP_ESTABLISHED;
		if (p->chunk_type == SCTP_INIT)
			vp->vtag_client = p->init_tag;
		vp->cport = p->sport;
		break;
	}
	vp->timeout = state_timeout(p->proto, vp->state, vp->idle);

	switch (vp->mode) {
	case MODE_DSR:
		addr_cpy(vp->nat_src, p->src);
		vp->nat_sport = p->sport;
		vp->nat_dport = p->dport; // L2 only: nothing is rewritten
		vp->flags = CT_F_DSR;
		break;
	case MODE_DEFAULT:
		addr_cpy(vp->nat_src, p->src);
		vp->nat_sport = p->sport;
		break;
	default: {
		int rc = snat_pick(skb, p, vp);
		if (rc) {
			count_drop(rc);
			return TC_ACT_SHOT;
		}
	}
	}

	if (p->proto == IPPROTO_SCTP && p->chunk_type == SCTP_INIT && vp->mode != MODE_DSR &&
	    mh_init_new(skb, p, vp)) {
		count_drop(DROP_SCTP_PARAMS);
		return TC_ACT_SHOT;
	}

	// Replacing an association on the same tuple: drop its reply side.
	if (old) {
		struct ct_key ork;
		if (!(old->flags & CT_F_DSR)) {
			peer_key(old, p->proto, &ork);
			bpf_map_delete_elem(&conntrack, &ork);
		}
		release_active(old);
		if (p->proto == IPPROTO_SCTP)
			mh_purge(old->svc, old->vtag_client, (__u32)p->dport << 16 | old->cport,
				 old->flags & CT_F_PATH);
	}

	int rc = ct_insert(p, key, vp);
	if (rc) {
		count_drop(rc);
		return TC_ACT_SHOT;
	}
	__u32 *act = bpf_map_lookup_elem(&ep_active, &ek);
	if (act)
		__sync_fetch_and_add(act, 1);
	count(&svc_stats, id, skb->len, 1);
	count(&ep_stats, ek, skb->len, 1);

	if (p->ttl <= 1)
		return TC_ACT_OK;
	if (vp->flags & CT_F_DSR)
		return forward(skb, p, p->src, vp->nat_dst, 0);
	__u32 np = ports32(vp->nat_sport, vp->nat_dport);
	if (xlat_to(p, vp->nat_dst) ? nat64_xlate(skb, p, vp->nat_src, vp->nat_dst, np)
				    : rewrite(skb, p, vp->nat_src, vp->nat_dst, np)) {
		count_drop(DROP_REWRITE);
		return TC_ACT_SHOT;
	}
	return forward(skb, p, vp->nat_src, vp->nat_dst, 0);
}

static __always_inline int starts_new(const struct pkt *p, const struct ct_val *ct)
{
	if (ct->flags & CT_F_REPLY)
		return 0;
	// A retransmitted INIT carries the same initiate tag: it belongs to the
	// association being set up and must reach the same endpoint. A different
	// tag on the same 5-tuple is a new association (peer restarted).
	if (p->proto == IPPROTO_SCTP)
		return p->chunk_type == SCTP_INIT && p->init_tag != ct->vtag_client;
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN && ct->state == CT_TCP_CLOSED;
	return 0;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = parse(skb, &p);

	if (r == PARSE_PASS)
		return TC_ACT_OK;
	if (r == PARSE_MALFORMED) {
		// Only traffic addressed to us is ours to drop.
		if (p.family && is_vip(p.dst)) {
			count_drop(DROP_MALFORMED);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK;
	}
	if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6) {
		if ((p.family == AF_INET) != (p.proto == IPPROTO_ICMP))
			return TC_ACT_OK;
		if (p.icmp_type == (p.family == AF_INET ? 8 : 128) && is_vip(p.dst))
			return icmp_echo_reply(skb, &p);
		if (is_icmp_error(&p)) {
			r = icmp_error(skb, &p);
			if (r == ICMP_X64)
				return icmp_x64(skb, &p);
			return r;
		}
		return TC_ACT_OK;
	}

	struct ct_key k = {};
	addr_cpy(k.src, p.src);
	addr_cpy(k.dst, p.dst);
	k.sport = p.sport;
	k.dport = p.dport;
	k.proto = p.proto;
	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &k);
	if (ct && !starts_new(&p, ct))
		return ct_established(skb, &p, ct);
	if (!ct && p.proto == IPPROTO_SCTP && p.chunk_type == SCTP_INIT_ACK) {
		// Translated like one from the address the INIT went to: the
		// client sees it come from the VIP it sent the INIT to.
		struct ct_val *rct = mh_ack_entry(&p);
		if (rct)
			return ct_established(skb, &p, rct);
	}
	return new_flow(skb, &p, &k, ct);
}

// Baseline for per-packet cost measurements.
SEC("tc")
int tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
