// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Protocol numbers and constants of the headers the datapath reads: address
// families, TCP flags, SCTP chunk and parameter types.
#ifndef LB_PROTO_H
#define LB_PROTO_H

#include <linux/types.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define NSEC 1000000000ULL

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
