//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// telcolb socket-level load balancing: cgroup sock_addr programs for the
// traffic the node itself originates toward a VIP (lib/sock_lb.h says what
// and why). Its own object (bpf2go "Sock"), loaded by dataplane/socklb.go
// with the tc datapath's maps in place of its own, attached to a cgroup v2
// (the root one by default) by the daemon. Addresses travel v4-mapped, as in
// every map of the datapath.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/lb_types.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/helpers.h"
#include "lib/select.h"
#include "lib/sock_lb.h"

static __always_inline void v4_to16(__u8 *a, __u32 ip4)
{
	__u32 *w = (__u32 *)a;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = ip4;
}

static __always_inline int sock4(struct bpf_sock_addr *ctx, int op)
{
	__u8 a[16];
	v4_to16(a, ctx->user_ip4);
	__u16 port = (__u16)ctx->user_port;
	__u16 was = port;
	if (!sock_select(ctx, a, &port, (__u8)ctx->protocol, op))
		return 0;
	__u32 ip4 = ((__u32 *)a)[3];
	if (ip4 != ctx->user_ip4 || port != was) {
		ctx->user_ip4 = ip4;
		ctx->user_port = port;
	}
	return 1;
}

static __always_inline int sock6(struct bpf_sock_addr *ctx, int op)
{
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u32 b[4] = {a[0], a[1], a[2], a[3]};
	__u16 port = (__u16)ctx->user_port;
	__u16 was = port;
	if (!sock_select(ctx, (__u8 *)a, &port, (__u8)ctx->protocol, op))
		return 0;
	if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] != b[3] || port != was) {
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
		ctx->user_port = port;
	}
	return 1;
}

static __always_inline int rev4(struct bpf_sock_addr *ctx)
{
	__u8 a[16];
	v4_to16(a, ctx->user_ip4);
	__u16 port = (__u16)ctx->user_port;
	if (sock_reverse(ctx, a, &port)) {
		ctx->user_ip4 = ((__u32 *)a)[3];
		ctx->user_port = port;
	}
	return 1;
}

static __always_inline int rev6(struct bpf_sock_addr *ctx)
{
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u16 port = (__u16)ctx->user_port;
	if (sock_reverse(ctx, (__u8 *)a, &port)) {
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
		ctx->user_port = port;
	}
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx) { return sock4(ctx, SOCK_CONNECT); }

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx) { return sock6(ctx, SOCK_CONNECT); }

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx) { return sock4(ctx, SOCK_SENDMSG); }

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx) { return sock6(ctx, SOCK_SENDMSG); }

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx) { return rev4(ctx); }

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx) { return rev6(ctx); }

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx) { return rev4(ctx); }

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx) { return rev6(ctx); }
