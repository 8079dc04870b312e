//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The clock probe: one run reads CLOCK_MONOTONIC and jiffies back to back,
// so the loader (dataplane/clock.go) can place jiffies on the monotonic
// base before it sets lb_now()'s constants (lib/helpers.h). Its own object:
// it needs none of the datapath's maps, and calibrating before the datapath
// loads keeps the datapath's rodata final when the verifier sees it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// lb_now()'s constants as the first load of this boot chose them (Go only:
// no program reads it). Pinned by name beside the datapath's maps: a
// restart reuses the same base, so no last_seen written before it is later
// than one written after it; bpffs does not outlive the boot the base
// belongs to.
struct clock_params {
	__u64 tick_ns;
	__u64 base;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_params);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_clock SEC(".maps");

// clock_probe writes into the test frame (BPF_PROG_TEST_RUN's data_out):
// bytes 0-7 CLOCK_MONOTONIC ns read first, 8-15 jiffies read after it.
SEC("xdp")
int clock_probe(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 *out = data;
	if ((void *)(out + 2) > end)
		return XDP_ABORTED;
	__u64 mono = bpf_ktime_get_ns();
	__u64 j = bpf_jiffies64();
	out[0] = mono;
	out[1] = j;
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
