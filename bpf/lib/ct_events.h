// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Conntrack change events for HA sync: one ring buffer record per change
// that matters (entry made, state changed, association or path added,
// entry deleted by the datapath), read by dataplane/ctsync.go.
//
// Cost: events are emitted only where an entry is written, never on the
// per-packet path of an established flow whose state does not change
// (ct_track returns before its emit when nothing changed). A full ring is
// never waited for: the event is counted in ct_events_lost and dropped; the
// daemon sees the count and resyncs its peers from a full dump.
#ifndef LB_CT_EVENTS_H
#define LB_CT_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"

// 1 MiB: about 18,000 events (48 bytes + 8 of header each), over 1 s of
// 10,000 new flows/s with their state changes if the reader stalls.
// Not pinned: a restarted daemon resyncs from a dump, not from old events.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} ct_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_events_lost SEC(".maps");

// Set to 0 by the loader when no HA peer needs the events (Go
// Config.DisableConntrackEvents): a constant of the frozen .rodata, so the
// verifier removes the emitting code rather than testing it per call.
volatile const __u32 ct_events_enabled = 1;

// The event is built here and copied into the ring (bpf_ringbuf_output),
// not reserved in place: a reserved record is a reference 6.1's verifier
// tracks through every subprogram, and this map also puts struct ct_event
// into the object's BTF for bpf2go.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_event);
} ct_event_scratch SEC(".maps");

static __always_inline struct ct_event *ct_ev_new(__u32 kind)
{
	__u32 zero = 0;
	struct ct_event *e = bpf_map_lookup_elem(&ct_event_scratch, &zero);
	if (e) {
		__builtin_memset(e, 0, sizeof(*e));
		e->kind = kind;
	}
	return e;
}

static __always_inline void ct_ev_send(const struct ct_event *e)
{
	if (bpf_ringbuf_output(&ct_events, (void *)e, sizeof(*e), 0)) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&ct_events_lost, &zero);
		if (n)
			*n += 1;
	}
}

// An entry (CT_EV_ENTRY) was made or changed, or was deleted
// (CT_EV_DELETED). Global: verified once, one call per site.
__noinline int ct_emit(__u32 kind, const struct ct_key *k)
{
	if (!k || !ct_events_enabled)
		return 0;
	struct ct_event *e = ct_ev_new(kind);
	if (!e)
		return 0;
	e->key = *k;
	ct_ev_send(e);
	return 0;
}

// An association record was made, gained paths or is gone.
__noinline int ct_emit_assoc(const struct assoc_key *k)
{
	if (!k || !ct_events_enabled)
		return 0;
	struct ct_event *e = ct_ev_new(CT_EV_ASSOC);
	if (!e)
		return 0;
	e->assoc = *k;
	ct_ev_send(e);
	return 0;
}

#endif
