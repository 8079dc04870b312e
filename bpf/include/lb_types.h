// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Layouts shared between lb.c and the Go side (dataplane/), which reads them
// through the bpf2go-generated types. Addresses are 16 bytes everywhere: IPv6
// as is, IPv4 as v4-mapped ::ffff:a.b.c.d. Ports are in network byte order.
#ifndef LB_TYPES_H
#define LB_TYPES_H

#include <linux/types.h>

// Service IDs are 1..LB_MAX_SERVICES-1. The per-service arrays cost about
// 2.4 KB per ID whether used or not (docs/architecture.md, "Memory").
#define LB_MAX_SERVICES 16384
#define LB_MAX_EPS 64
// Per-CPU endpoint counters live in a pool shared by every service
// (ep_slot_stats), not in services x LB_MAX_EPS per-CPU slots: each
// configured endpoint takes one slot (struct endpoint.stats), handed out by
// the Go side. Slot 0 is a sink nobody reads (an endpoint without a slot).
#define LB_EP_SLOTS 65536
#define LB_SEL_SLOTS 256

// How long a flow reuses its FIB result before looking the route up again.
#define LB_FIB_CACHE_NS 1000000000ULL

// Default timeouts in seconds (services may override the established ones).
#define LB_TO_TCP_SYN 60
#define LB_TO_TCP_EST 7440
#define LB_TO_TCP_FIN 120
#define LB_TO_CLOSED 10
#define LB_TO_UDP_NEW 30
#define LB_TO_UDP_EST 120
#define LB_TO_SCTP_INIT 30
#define LB_TO_SCTP_EST 7440
#define LB_TO_SCTP_SHUTDOWN 30
#define LB_TO_PERSIST 7440 // client affinity without a service idle timeout

enum lb_mode { MODE_DEFAULT = 0, MODE_ONEARM = 1, MODE_FULLNAT = 2, MODE_DSR = 3 };
enum lb_sel { SEL_RR = 0, SEL_HASH = 1, SEL_PERSIST = 2, SEL_LEASTCONN = 3, SEL_MAGLEV = 4 };

enum ct_state {
	CT_NONE = 0,
	CT_TCP_SYN_SENT = 1,
	CT_TCP_SYN_RECV = 2,
	CT_TCP_ESTABLISHED = 3,
	CT_TCP_FIN_WAIT = 4,
	CT_TCP_CLOSED = 5,
	CT_UDP_NEW = 6,
	CT_UDP_ESTABLISHED = 7,
	CT_SCTP_INIT = 8,
	CT_SCTP_COOKIE_WAIT = 9,
	CT_SCTP_ESTABLISHED = 10,
	CT_SCTP_SHUTDOWN = 11,
	CT_SCTP_CLOSED = 12,
};

enum drop_reason {
	DROP_MALFORMED = 0,
	DROP_NO_ENDPOINT = 1,
	DROP_CT_FULL = 2,
	DROP_SNAT_PORTS = 3,
	DROP_NO_IFADDR = 4,
	DROP_REWRITE = 5,
	DROP_SCTP_PARAMS = 6, // INIT/INIT-ACK parameters we cannot rewrite safely
	DROP_SCTP_ASCONF = 7, // ASCONF/ASCONF-ACK: never negotiated through us
	DROP_NAT64_TOO_BIG = 8, // IPv4 packet too big once IPv6: sender told by ICMP
	DROP_MAX = 16,
};

#define SVC_F_VALID 0x01
#define SVC_F_PATH_FAILOVER 0x02 // SCTP: steer the endpoint onto the client's live path

// Hold-down of SCTP path failover when the service sets none (lib/sctp_steer.h):
// above RFC 9260's 500 ms ceiling on delaying a SACK, so a client that is only
// slow to acknowledge on a live address is never taken for gone.
#define LB_STEER_HOLD_MS 1000
// Confirmation once the client itself moved its traffic off an address
// (lib/sctp_steer.h): RFC 9260's recommended delayed-SACK time.
#define LB_STEER_MOVED_MS 200

#define CT_F_REPLY 0x01    // entry matches the endpoint->client direction
#define CT_F_DSR 0x02      // L2 forward only, no reply entry
#define CT_F_RELEASED 0x04 // ep_active already decremented (orig entry)
#define CT_F_PATH 0x08     // secondary path of a multi-homed SCTP association
#define CT_F_NOROUTE 0x10  // reply entry: the FIB found no route to its client address

// SCTP multi-homing: a service has its primary VIP and up to 3 secondary
// VIPs; an association has at most that many addresses per side.
#define LB_MAX_VIPS 4

#define CT_FIN_ORIG 0x01
#define CT_FIN_REPLY 0x02

#define IFA_F_V4 0x01
#define IFA_F_V6 0x02

struct addr16 {
	__u8 a[16];
};

struct svc_key {
	__u8 vip[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct svc_info {
	__u32 idle_timeout; // seconds, 0: protocol default
	__u16 n_eps;
	__u8 mode;
	__u8 sel;
	__u8 family;
	__u8 flags;
	__u16 steer_hold_ms; // SCTP path failover hold-down, 0: LB_STEER_HOLD_MS
};

struct endpoint {
	__u8 addr[16];
	__u16 port; // 0 keeps the client's destination port
	__u16 weight;
	__u8 family;
	__u8 down;
	__u16 stats; // slot in ep_slot_stats, 0: not counted
};

// Maglev lookup table of a service (lib/maglev.h, dataplane/maglev.go):
// LB_MAGLEV_M entries, a prime, the same on every node and for every
// service size, so that nodes with the same endpoints agree and a change of
// endpoints never resizes (and so reshuffles) the table. 65537, the Maglev
// paper's size: removing 1 of 10 endpoints then moves 10.3% of the entries
// (8191 would move 11.0%, over the 1/N + 1% the issue allows). 64 KiB per
// service; LB_MAGLEV_SERVICES of them are reserved (16 MiB).
#define LB_MAGLEV_M 65537
#define LB_MAGLEV_SERVICES 256 // services with maglev selection at once

struct maglev_table {
	__u8 ep[LB_MAGLEV_M + 1]; // endpoint index per entry; the last one unused
};

// Weighted slot table of up endpoints (indices into the service's endpoints).
struct sel_table {
	__u32 n_up;
	__u8 slot[LB_SEL_SLOTS];
};

struct ct_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// The key of an IPv4 entry (conntrack4): both addresses IPv4-mapped in the
// ct_key the programs use. A 16-byte key hashes and compares in a fraction
// of the 40-byte one's time. Its layout is the last 16 bytes of a ct_key
// whose src's IPv4 address is written over dst[8..11] (lib/ct_map.h), so
// the programs make it in place, without another stack slot.
struct ct_key4 {
	__u8 src[4];
	__u8 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// One direction of a connection. nat_* is what the packet's addresses and
// ports become; for the reply direction of an entry E the key is
// {E.nat_dst, E.nat_src, E.nat_dport, E.nat_sport}, which makes the two
// entries each other's peers.
struct ct_val {
	__u8 nat_src[16];
	__u8 nat_dst[16];
	__u16 nat_sport;
	__u16 nat_dport;
	__u32 svc;
	__u32 ep;
	__u8 state;
	__u8 flags;
	__u8 family;
	__u8 mode;
	__u8 fins;
	__u8 pad;
	__u16 cport; // SCTP: client port of the association (network order)
	__u32 timeout; // seconds, for the current state
	__u32 idle;    // service idle timeout, seconds (0: default)
	__u32 vtag_client;
	__u32 vtag_ep;
	__u32 fib_ifindex; // cached forwarding result (see fib_ns)
	__u64 created;     // bpf_ktime_get_ns
	__u64 last_seen; // bpf_ktime_get_ns, this direction
	__u64 packets;   // this direction
	__u64 bytes;
	__u8 fib_macs[12]; // dst, src MAC of the cached FIB result
	__u32 pad3;
	__u64 fib_ns; // when the FIB result was cached, 0: none
};

struct aff_key {
	__u32 svc;
	__u8 addr[16];
};

struct aff_val {
	__u32 ep;
	__u32 pad;
	__u64 last_ns;
};

struct ifaddr_val {
	__u8 v4[4];
	__u8 v6[16];
	__u32 flags;
};

struct counters {
	__u64 packets;
	__u64 bytes;
	__u64 sessions;
};

// An interface xdp_ingress runs on (map xdp_ifaces, keyed by ifindex): the
// daemon writes it when it attaches in XDP mode. Its MAC is the one frames
// for this host carry; the entry also says the interface takes
// redirected XDP frames.
struct xdp_iface {
	__u8 mac[6];
	__u8 pad[2];
};

// All VIPs of a service, primary first (SCTP multi-homing).
struct svc_vips {
	__u8 vip[LB_MAX_VIPS][16];
	__u32 n;
};

// One SCTP association, keyed by the client's verification tag (its INIT
// initiate tag) and the ports. Every path's conntrack entry carries the same
// (svc, vtag_client, cport) and so finds it.
struct assoc_key {
	__u32 svc;
	__u32 vtag_client;
	__u16 cport; // network order
	__u16 vport; // network order
};

struct assoc {
	__u8 caddr[LB_MAX_VIPS][16]; // client addresses, [0]: the INIT's source
	__u8 eaddr[LB_MAX_VIPS][16]; // endpoint addresses, [0]: the configured one
	__u8 vip[LB_MAX_VIPS][16];   // VIPs, [0]: the INIT's destination
	__u8 lsrc0[16];              // source the endpoint sees for caddr[0]
	__u32 vtag_ep;
	__u32 svc;
	__u32 ep;
	__u16 nat_sport; // source port toward the endpoint (network order)
	__u16 eport;     // endpoint port (network order)
	__u8 nc, ne, nv;
	__u8 mode;
	__u8 family;
	__u8 pad[3];
	// LB-assisted path failover (lib/sctp_steer.h), indexed like caddr,
	// times from bpf_ktime_get_coarse_ns. Appended: an upgrade migrates
	// older records with these zero (dataplane/migrate.go).
	__u64 cseen[LB_MAX_VIPS];   // last client packet from caddr[i]
	__u64 eask[LB_MAX_VIPS];    // first endpoint packet toward caddr[i] since cseen[i]
	__u64 noroute[LB_MAX_VIPS]; // the FIB found no route toward caddr[i]
	__u64 steer_since;          // when the current steering began, 0: none
	__u32 steers;               // steerings begun over the association's life
	__u8 cvip[LB_MAX_VIPS];     // VIP index caddr[i] last sent to
	__u8 live;                  // caddr index of the latest client packet
	__u8 steer_from;            // caddr index steered away from
	__u8 steer_to;              // caddr index steered onto
	__u8 steer_vip;             // vip index the steered packets come from
	__u8 ctraf;                 // caddr index of the client's last packet other than a heartbeat
	__u8 tmoved;                // bit i: the client's traffic moved off caddr[i], nothing from it since
	__u16 pad2;
};

// Conntrack change events (lib/ct_events.h): what the datapath tells the
// daemon through the ct_events ring buffer, so HA peers learn of a change
// within milliseconds. An entry event (struct ct_entry_event) carries the
// entry and its peer as they were once the change was made; deletion and
// association events (struct ct_event) name their key only, and the reader
// takes an association's current record from its map.
enum ct_event_kind {
	CT_EV_ENTRY = 1, // conntrack entry key (and its peer) made or changed
	CT_EV_ASSOC = 2, // association record assoc and every entry of its paths
	CT_EV_DELETED = 3, // conntrack entry key deleted by the datapath
};

struct ct_event {
	__u32 kind;
	__u32 pad;
	struct ct_key key;     // CT_EV_DELETED
	struct assoc_key assoc; // CT_EV_ASSOC
};

// What a CT_EV_ENTRY event found (struct ct_entry_event's found).
enum ct_event_found {
	CT_EVF_ENTRY = 1, // val holds the entry at key (without: the key was gone)
	CT_EVF_PEER = 2,  // peer_key and peer_val hold its peer (the other direction)
};

// A CT_EV_ENTRY event: the entry at key (made or changed) and its peer, read
// after the event's place in the ring was taken, so of the events naming one
// entry the one the ring holds last has its latest state (lib/ct_events.h).
struct ct_entry_event {
	__u32 kind; // CT_EV_ENTRY: where struct ct_event has its kind
	__u32 found; // CT_EVF_*
	struct ct_key key;
	struct ct_val val;
	struct ct_key peer_key;
	struct ct_val peer_val;
};

// Addresses the datapath may have business with, as bitmaps indexed by a
// hash of the address (lib/filter.h, dataplane/filter.go). Entry
// LB_FILTER_DATAPATH is written by the datapath only (atomic ORs): the
// address identifying each conntrack entry's packets, set when the entry is
// made. Entry LB_FILTER_DAEMON is written by the daemon only (one writer, so
// its read-modify-write loses nothing): every VIP and endpoint address, and
// after an upgrade the addresses of the connections found in conntrack. A
// TCP or UDP packet with neither address in either bitmap is passed before
// any parsing. Bits are never cleared: a stale bit costs one full lookup, a
// missing one would break a flow.
#define LB_FILTER_BITS 65536
#define LB_FILTER_DATAPATH 0
#define LB_FILTER_DAEMON 1

struct filter_bits {
	__u64 w[LB_FILTER_BITS / 64];
};

#endif
