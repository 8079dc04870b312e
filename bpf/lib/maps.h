// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Every map of the datapath, and the per-CPU scratch values too big for the
// 512-byte stack. Maps shared with the daemon are pinned by name, so a daemon
// restart keeps rules and connections; scratch maps are not.
#ifndef LB_MAPS_H
#define LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct svc_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

// Every VIP some services key uses: never more than the services map has
// keys. Not preallocated (only the daemon writes it), so the room costs
// nothing until used.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr16);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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

// The IPv4 entries of conntrack (struct ct_key4, lib/ct_map.h); conntrack
// keeps IPv6 and NAT64's IPv6 side. Sized like conntrack (Config.MaxConns).
// An upgrade from a datapath with one map moves its IPv4 entries here
// (dataplane/ctsplit.go).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key4);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack4 SEC(".maps");

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

// Endpoint counters by slot (struct endpoint.stats), see LB_EP_SLOTS. It
// replaces ep_stats (indexed service x LB_MAX_EPS), which an upgrade
// migrates into it (dataplane/migrate_slots.go).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_EP_SLOTS);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_slot_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

// Interfaces attached in XDP mode (struct xdp_iface), by ifindex: xdp_ingress
// acts only on frames arriving there and redirects only to them (an
// interface without an XDP program may not take XDP frames, veth among them).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct xdp_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_ifaces SEC(".maps");

// What xdp_ingress carried itself (index 0; sessions unused): the packets
// and bytes of established flows that never reached TC.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_stats SEC(".maps");

// SCTP path steerings begun per service (lib/sctp_steer.h). Its own map:
// the counters layout (struct counters) stays as it is.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} steer_stats SEC(".maps");

// Established packets that took the slow path (ct_established) per
// service: what the fast paths (lib/fastpath.h, lib/fastpath64.h) left to
// it. A service whose count grows with its traffic is one whose packets
// the fast path does not carry (DSR, SCTP path failover, fragments, an
// uncached next hop): the operator's view of where the per-packet cost is.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slow_stats SEC(".maps");

// The address filter's two bitmaps (see struct filter_bits).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct filter_bits);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} addr_filter SEC(".maps");

// x^(8n) mod P for SCTP packet length n, filled by the Go loader; makes the
// incremental CRC32c update one carry-less multiply (see crc32c_delta).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} crc_shift SEC(".maps");

// The same powers as nibble rows, for SCTP packets of standard and jumbo
// frames (lengths up to 9216 bytes): row i holds m[j] = j * x^(8i) mod P for
// every 4-bit polynomial j (j's bit 3 standing for x^0, as bit 31 of a CRC
// value does), so a byte of the port change costs two loads and a 4-bit
// reduction instead of an 8-step multiply (crc32c_delta; issue 13: the
// multiplies were about a quarter of an established SCTP packet's cost).
// Filled by the Go loader; rows beyond it, or an empty row (a foreign
// loader), take crc_shift.
#define LB_CRC_NIB_ROWS 9220
struct crc_nib_row {
	__u32 m[16];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_CRC_NIB_ROWS);
	__type(key, __u32);
	__type(value, struct crc_nib_row);
} crc_nib SEC(".maps");

// Per-CPU scratch for conntrack values being built: two of them would not
// fit the 512-byte stack next to the rest of the call chain.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ct_val);
} scratch SEC(".maps");
#define CT_SCRATCH_ORIG 0  // the new flow's orig entry (new_flow, mh_paths)
#define CT_SCRATCH_REPLY 1 // its reply entry (ct_insert)

// The key ct_put and ct_delete (lib/ct_map.h) write or delete under: a copy
// of their argument that 6.1 accepts as a map key, off the stack, whose
// deepest chain is at 512 bytes.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_key);
} ct_key_scratch SEC(".maps");

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
#define NAT64_ICMP_BUF 2048
struct nat64_icmp_ctx {
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
	__u32 mtu;        // route MTU for nat64_too_big (set by forward)
	__u8 h[8];        // the ICMP header as received
	__u32 ph[2];      // ICMPv6 pseudo header: length, next header
	__u8 old[40];     // embedded pseudo-header words and ports, before ...
	__u8 new[40];     // ... and after, for the embedded L4 checksum
	__u8 b[NAT64_ICMP_BUF + 8]; // the rebuilt L3 packet (+ zero padding for sums)
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat64_icmp_ctx);
} nat64_scratch SEC(".maps");

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

// SCTP associations taken up from their non-INIT packets (lib/sctp_young.h):
// the endpoint and SNAT port the first such path got, keyed by what every
// path carries (the endpoint's verification tag and the ports). LRU like
// conntrack; not pinned: after a daemon restart the paths already made keep
// their entries, and only a path still to come would miss its note.
struct young_key {
	__u32 svc;
	__u32 vtag;  // common header tag: the endpoint's (network order)
	__u16 cport; // network order
	__u16 vport; // network order
};

struct young_val {
	__u32 ep;
	__u16 nat_sport; // network order; the client port in default mode
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct young_key);
	__type(value, struct young_val);
} young_assocs SEC(".maps");

// Compaction (see lib/sctp_compact.h): SCTP packets up to this size are
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
	__u8 nat64;     // a NAT64 INIT: IPv6 client, IPv4 endpoint (see mh_nat64)
	__u8 addr[16];  // address being rewritten (kept off the stack)
	__u32 rm[LB_COMPACT_WORDS / 32]; // 4-byte words of the SCTP packet to remove
	// mh_init_new's map keys, off its frame: it is on the deepest call
	// chain (new_flow, mh_walk, mh_param, crc32c_delta, gf2_mulmod).
	struct assoc_key key;
	struct pend_key pend;
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

#endif
