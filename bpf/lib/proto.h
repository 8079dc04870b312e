// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Protocol numbers, constants and header layouts the datapath reads: address
// families, ICMP types and codes, TCP flags, SCTP chunk and parameter types,
// and the kernel-internal headers no uapi file defines.
#ifndef LB_PROTO_H
#define LB_PROTO_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
// <linux/icmp.h> includes <linux/if.h>, which pulls in glibc's socket headers
// a BPF target cannot compile; icmp.h needs only IFNAMSIZ from it.
#ifndef _LINUX_IF_H
#define _LINUX_IF_H
#define IFNAMSIZ 16
#endif
#include <linux/icmp.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define NSEC 1000000000ULL

// IPv4 fragment offset field (include/net/ip.h).
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
// IPv6 fragment header offset field (include/net/ipv6.h).
#define IP6_OFFSET 0xfff8
#define IP6_MF 0x0001
// Header sizes as 32-bit values: sizeof would widen offset arithmetic to 64
// bits, which the verifier tracks less precisely.
#define IP4_HLEN ((__u32)sizeof(struct iphdr))
#define IP6_HLEN ((__u32)sizeof(struct ipv6hdr))
#define ICMP_HLEN ((__u32)sizeof(struct icmphdr))
// An ICMPv4 error is at most 576 bytes (RFC 1812 4.3.2.3).
#define ICMPV4_MAX_LEN 576

// Kernel-internal header layouts (include/linux/if_vlan.h, include/net/ipv6.h,
// include/linux/sctp.h): not in the uapi headers.
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct sctphdr {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__le32 checksum;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define SCTP_DATA 0
#define SCTP_INIT 1
#define SCTP_INIT_ACK 2
#define SCTP_HEARTBEAT 4
#define SCTP_HEARTBEAT_ACK 5
#define SCTP_ABORT 6
#define SCTP_SHUTDOWN 7
#define SCTP_SHUTDOWN_ACK 8
#define SCTP_COOKIE_ECHO 10
#define SCTP_COOKIE_ACK 11
#define SCTP_SHUTDOWN_COMPLETE 14

#define SCTP_AUTH 0x0f

#define SCTP_P_IPV4 5
#define SCTP_P_IPV6 6
#define SCTP_P_HOSTNAME 11
#define SCTP_P_ADDR_TYPES 12
#define SCTP_P_SUPPORTED_EXT 0x8008
#define SCTP_P_SKIP 0xbffe
#define SCTP_ASCONF 0xc1
#define SCTP_ASCONF_ACK 0x80
#define SCTP_EXT_MASKED 0xff // reserved chunk type: receivers ignore it

#endif
