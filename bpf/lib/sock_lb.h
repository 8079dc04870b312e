// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Socket-level load balancing (sock.c): traffic the LB node itself
// originates toward a VIP never reaches tc ingress, so it is balanced where
// the socket names its peer. connect() (TCP, connected UDP) and sendmsg()
// (unconnected UDP) get the endpoint's address instead of the VIP's;
// recvmsg() and getpeername() give the VIP back, so the application sees the
// peer it asked for. The choice uses the tc datapath's own maps and
// lib/select.h: same services, endpoints, slot tables, rr counters, maglev
// tables and affinity.
//
// What is left alone (the call keeps the VIP, routing decides):
//   - SCTP: the kernel never runs these hooks for it. They run from the
//     protocol's pre_connect (TCP, UDP, ping) and from UDP's sendmsg; SCTP's
//     connect() goes sctp_inet_connect -> sctp_connect -> __sctp_connect,
//     connectx and sendmsg likewise, with no cgroup hook (read in the kernel
//     source; this host has no kernel SCTP to try it). Only TCP and UDP are
//     looked up, so nothing changes should a later kernel add them: a
//     multi-homed association needs the tc datapath's association records.
//   - DSR services: the endpoint must see the VIP as destination (it holds
//     it on loopback and answers from it), which a rewritten destination
//     breaks.
//   - endpoints of the other family (NAT64 services): an IPv6 socket may be
//     IPV6_V6ONLY, which the hook cannot see.
#ifndef LB_SOCK_LB_H
#define LB_SOCK_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"
#include "lib/maps.h"
#include "lib/helpers.h"
#include "lib/select.h"

// Sockets of this network namespace only (bpf_get_netns_cookie), set by the
// loader: the programs sit on a cgroup, which spans namespaces, and only the
// node's own namespace has the node's services. 0: every namespace.
volatile const __u64 sock_netns = 0;

// Endpoint a socket was sent to -> the VIP it asked for (recvmsg,
// getpeername). Keyed by socket cookie so that two sockets of one endpoint
// reached through two VIPs each get their own VIP back. LRU: a closed
// socket's entries are never deleted by anyone, they age out.
struct sock_rev_key {
	__u64 cookie;
	__u8 addr[16]; // endpoint address (v4-mapped for IPv4)
	__u16 port;    // endpoint port, network order
	__u8 pad[6];
};

struct sock_rev_val {
	__u8 vip[16];
	__u16 port; // network order
	__u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_rev_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_rev SEC(".maps");

// Unconnected UDP: the endpoint a socket's datagrams to one VIP and port go
// to, so that they stay one flow as a 5-tuple does in conntrack, until the
// endpoint is down, removed or the service changed.
struct sock_flow_key {
	__u64 cookie;
	__u8 vip[16];
	__u16 port;
	__u8 pad[6];
};

struct sock_flow_val {
	__u32 svc;
	__u32 ep;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_flow_key);
	__type(value, struct sock_flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_flows SEC(".maps");

enum sock_op {
	SOCK_CONNECT = 0,
	SOCK_SENDMSG = 1,
};

static __always_inline int sock_ours(void *ctx)
{
	return !sock_netns || bpf_get_netns_cookie(ctx) == sock_netns;
}

// Rewrites *addr/*port (the call's destination, VIP form) to an endpoint of
// the service there, if any. 1: leave the call as it is (rewritten or not),
// 0: refuse it (a service with no usable endpoint, as tc would drop).
static __always_inline int sock_select(void *ctx, __u8 *addr, __u16 *port, __u8 proto, int op)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	struct svc_key sk = {.port = *port, .proto = proto};
	addr_cpy(sk.vip, addr);
	__u32 *idp = bpf_map_lookup_elem(&services, &sk);
	if (!idp)
		return 1;
	__u32 id = *idp;
	struct svc_info *info = bpf_map_lookup_elem(&svc_infos, &id);
	if (!info || !(info->flags & SVC_F_VALID) || info->mode == MODE_DSR)
		return 1;
	if (!sock_ours(ctx))
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct sock_flow_key fk = {.cookie = cookie, .port = *port};
	addr_cpy(fk.vip, addr);
	int idx = -1;
	if (op == SOCK_SENDMSG) {
		struct sock_flow_val *fv = bpf_map_lookup_elem(&sock_flows, &fk);
		if (fv && fv->svc == id && fv->ep < info->n_eps && ep_usable(id, fv->ep))
			idx = fv->ep;
	}
	int fresh = idx < 0;
	if (fresh) {
		// No packet yet: the flow hash takes the socket cookie for the
		// source, so hash and maglev spread sockets, and persist keeps
		// the node (one client, source ::) on one endpoint.
		struct pkt p = {.dport = *port, .proto = proto};
		addr_cpy(p.dst, addr);
		if (info->sel != SEL_PERSIST)
			__builtin_memcpy(p.src, &cookie, sizeof(cookie));
		idx = select_ep(&p, id, info);
	}
	if (idx < 0 || idx >= LB_MAX_EPS || idx >= info->n_eps) {
		count_drop(DROP_NO_ENDPOINT);
		return 0;
	}
	__u32 ek = id * LB_MAX_EPS + idx;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep || ep->down || !ep->weight) {
		count_drop(DROP_NO_ENDPOINT);
		return 0;
	}
	if (is_mapped(ep->addr) != is_mapped(addr))
		return 1;
	if (fresh) {
		count(&svc_stats, id, 0, 1);
		count_ep(ek, 0, 1);
		if (op == SOCK_SENDMSG) {
			struct sock_flow_val nv = {.svc = id, .ep = idx};
			bpf_map_update_elem(&sock_flows, &fk, &nv, BPF_ANY);
		}
	}

	struct sock_rev_key rk = {.cookie = cookie, .port = ep->port ? ep->port : *port};
	addr_cpy(rk.addr, ep->addr);
	struct sock_rev_val rv = {.port = *port};
	addr_cpy(rv.vip, addr);
	bpf_map_update_elem(&sock_rev, &rk, &rv, BPF_ANY);

	addr_cpy(addr, ep->addr);
	*port = rk.port;
	return 1;
}

// recvmsg/getpeername: an endpoint address this socket was sent to becomes
// the VIP again.
static __always_inline int sock_reverse(void *ctx, __u8 *addr, __u16 *port)
{
	struct sock_rev_key rk = {.cookie = bpf_get_socket_cookie(ctx), .port = *port};
	addr_cpy(rk.addr, addr);
	struct sock_rev_val *rv = bpf_map_lookup_elem(&sock_rev, &rk);
	if (!rv)
		return 0;
	addr_cpy(addr, rv->vip);
	*port = rv->port;
	return 1;
}

#endif
