// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Checksums: Internet checksum folding and building, IP header builders
// (ip4_build with its checksum, ip6_build)
// and SCTP's CRC32c, updated incrementally (crc32c_delta) or computed over a
// buffer word by word (crc32c_word).
#ifndef LB_CSUM_H
#define LB_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/proto.h"
#include "lib/maps.h"

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
	struct iphdr *ip = (struct iphdr *)h;

	__builtin_memset(h, 0, IP4_HLEN);
	ip->version = 4;
	ip->ihl = IP4_HLEN / 4;
	ip->tos = tos;
	ip->tot_len = bpf_htons(tot_len);
	ip->frag_off = df ? bpf_htons(IP_DF) : 0;
	ip->ttl = ttl;
	ip->protocol = proto;
	__builtin_memcpy(&ip->saddr, src + 12, 4);
	__builtin_memcpy(&ip->daddr, dst + 12, 4);
	return csum_store(h, IP4_HLEN, (__u8 *)&ip->check);
}

// Writes a 40-byte IPv6 header at h (flow label 0) carrying traffic class
// tclass and plen bytes of payload; src and dst are 16-byte addresses.
static __always_inline void ip6_build(__u8 *h, __u8 tclass, __u32 plen, __u8 nexthdr, __u8 hop_limit,
				      const __u8 *src, const __u8 *dst)
{
	struct ipv6hdr *ip6 = (struct ipv6hdr *)h;

	__builtin_memset(h, 0, IP6_HLEN);
	ip6->version = 6;
	ip6->priority = tclass >> 4;
	ip6->flow_lbl[0] = (tclass & 0xf) << 4;
	ip6->payload_len = bpf_htons(plen);
	ip6->nexthdr = nexthdr;
	ip6->hop_limit = hop_limit;
	__builtin_memcpy(&ip6->saddr, src, 16);
	__builtin_memcpy(&ip6->daddr, dst, 16);
}

/* SCTP CRC32c incremental update
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
 *
 * That multiply goes byte by byte of w and skips the bytes that are zero,
 * the ones that did not change: a DNAT flow changes one port, so half of w
 * (issue 13's breakdown: the 32-step multiply was ~35 ns of an established
 * SCTP packet's ~90). Bit j of w stands for x^(31-j), so byte k (bits
 * 8k..8k+7) is x^(24-8k) times the same 8 bits moved to the top (x^0..x^7):
 *   lin(D) = XOR_k (byte k << 24) * x^(8(N+3-k)) mod P,
 * each an 8-step multiply by the table's entry N+3-k. Since session 16 the
 * product of a byte and x^(8i) is looked up instead (crc_nib's row i: its 16
 * nibble multiples, two loads per byte, crc_nib_mul); the 8-step multiply is
 * left for lengths beyond the rows (jumbo SCTP over 9216 bytes).
 */
#define CRC32C_POLY 0x82f63b78

// Reflected CRC32c (Castagnoli) byte table: entry c is c * x^32 mod P, c's
// bit j standing for x^(7-j) (one byte through a zero CRC). For mh_compact
// (crc32c_word) and gf2_mulmod8's reduction. Constant .rodata: the lookups
// index it with unknown bytes, so the verifier cannot fold them.
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

// Writable (.data) on purpose: values from frozen .rodata are known to the
// verifier, which then simulates every multiply bit by bit instead of
// pruning.
static __u32 crc_x8_pow2[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
	0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
	0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

// Inlined into crc32c_delta: as a call of its own it added a 32-byte frame
// (the verifier rounds each frame up to 32) to the deepest call chain
// (tc_ingress, ct_established, mh_handshake, mh_walk, mh_param,
// crc32c_delta), which then passed the kernel's 512-byte combined limit.
static __always_inline __u32 gf2_mulmod(__u32 a, __u32 b)
{
	__u32 p = 0;
	for (int i = 0; i < 32; i++) {
		p ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return p;
}

// gf2_mulmod for an a of degree < 8 (its bits 31..24, the rest zero). The
// product is formed unreduced, 40 bits wide in a u64 (bit m stands for
// x^(39-m): b moved up 8 bits, then shifted down one bit per power of a), and
// its 8 overflowing bits (x^32..x^39, the low byte) are reduced at once by
// crc32c_tab, whose entry c is exactly c's bits times x^32 mod P; the other
// 32 bits are already the reflected CRC layout. That saves the per-step
// reduction of the bit-by-bit version (issue 13: ~5 ns less per CRC update
// of a fullnat SCTP packet, docs/testing.md).
static __always_inline __u32 gf2_mulmod8(__u32 a, __u32 b)
{
	__u64 s = (__u64)b << 8;
	__u64 p = 0;
	for (int i = 0; i < 8; i++) {
		p ^= s & -(__u64)((a >> (31 - i)) & 1);
		s >>= 1;
	}
	return (__u32)(p >> 8) ^ crc32c_tab[p & 0xff];
}

// The byte b (its bit 7 standing for x^0) times x^(8i) mod P from row i of
// crc_nib: its high nibble (x^0..x^3) is an entry as it is; its low nibble
// (x^4..x^7) is an entry times x^4, whose 4 bits shifted past x^31 are
// reduced by crc32c_tab (entry c << 4 is c's bits, x^32..x^35, mod P).
static __always_inline __u32 crc_nib_mul(const struct crc_nib_row *row, __u32 b)
{
	__u32 l = row->m[b & 0xf];
	return row->m[(b >> 4) & 0xf] ^ (l >> 4) ^ crc32c_tab[(l & 0xf) << 4];
}

// Global (not static) functions are verified once, on their own.
__noinline __u32 crc32c_delta(__u32 w, __u32 n)
{
	__u32 r = 0;
#pragma unroll
	for (int k = 0; k < 4; k++) {
		__u32 b = (w >> (8 * k)) & 0xff;
		if (!b)
			continue;
		__u32 i = n + 3 - k;
		// m[8] is x^(8i) itself, never 0 once filled.
		struct crc_nib_row *row = bpf_map_lookup_elem(&crc_nib, &i);
		if (row && row->m[8]) {
			r ^= crc_nib_mul(row, b);
			continue;
		}
		__u32 *t = bpf_map_lookup_elem(&crc_shift, &i);
		if (!t || !*t)
			goto squares;
		r ^= gf2_mulmod8(b << 24, *t);
	}
	return r;
squares:
	// Table not filled (foreign loader): assemble x^(8n) from the squares.
	r = 0x80000000; // x^0
	for (int k = 0; k < 16; k++) {
		if (!(n >> k))
			break;
		if ((n >> k) & 1)
			r = gf2_mulmod(crc_x8_pow2[k], r);
	}
	return gf2_mulmod(r, w);
}

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

#endif
