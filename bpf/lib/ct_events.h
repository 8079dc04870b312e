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
//
// An entry event carries the entry and its peer (struct ct_entry_event),
// so the reader makes its records without a map lookup (two system calls
// an event, the largest part of the sync's cost on the sending node,
// issue 15). The values are read after the record is reserved: the ring
// orders records by reservation, so when two CPUs change one entry, the
// record the ring holds last was read after both changes and has the
// entry's latest state, whichever CPU reserved last. (Copied in by
// bpf_ringbuf_output, a value read before the copy could land after a
// newer one.)
#ifndef LB_CT_EVENTS_H
#define LB_CT_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/lb_types.h"
#include "lib/maps.h"
#include "lib/ct_map.h"

// 4 MiB: about 12,000 entry events (344 bytes + 8 of header each), a
// second of 5,000 new flows/s with their replies' state changes, if the
// reader stalls. Not pinned: a restarted daemon resyncs from a dump, not
// from old events.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
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

// A deletion or association event is built here and copied into the ring
// (bpf_ringbuf_output): it names a key only, so the order of its copy
// does not matter. This map also puts struct ct_event into the object's
// BTF for bpf2go; ct_entry_event_btf does the same for the entry event.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_event);
} ct_event_scratch SEC(".maps");

const struct ct_entry_event *const ct_entry_event_btf __attribute__((unused)) = 0;

// A change the ring had no room for: the daemon resyncs from a dump.
static __always_inline void ct_ev_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&ct_events_lost, &zero);
	if (n)
		*n += 1;
}

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
	if (bpf_ringbuf_output(&ct_events, (void *)e, sizeof(*e), 0))
		ct_ev_lost();
}

// The entry at k was made or changed (CT_EV_ENTRY): its record carries the
// entry and its peer, read after the reservation (see the top). Global:
// verified once, one call per site; the reservation is taken and given
// back within it, which 6.1's verifier follows in one function.
static __always_inline int ct_emit_entry(const struct ct_key *k)
{
	__u32 zero = 0;
	// The lookups rewrite their key in place (ct_key4_in): a scratch
	// copy, not the caller's key nor the ring's memory.
	struct ct_key *sk = bpf_map_lookup_elem(&ct_key_scratch, &zero);
	if (!sk)
		return 0;
	struct ct_entry_event *e = bpf_ringbuf_reserve(&ct_events, sizeof(*e), 0);
	if (!e) {
		ct_ev_lost();
		return 0;
	}
	e->kind = CT_EV_ENTRY;
	e->found = 0;
	e->key = *k;
	*sk = *k;
	struct ct_val *v = ct_lookup(sk);
	if (!v) {
		__builtin_memset(&e->val, 0, sizeof(e->val));
		goto no_peer;
	}
	e->found = CT_EVF_ENTRY;
	__builtin_memcpy(&e->val, v, sizeof(*v));
	// A DSR entry has no peer (ct_insert makes none). The peer's key comes
	// from the map's value, not the copy: the copy is the ring's memory,
	// which the compiler would stage on the stack.
	if (v->flags & CT_F_DSR)
		goto no_peer;
	peer_key(v, k->proto, sk);
	struct ct_val *pv = ct_lookup(sk);
	if (!pv)
		goto no_peer;
	e->found |= CT_EVF_PEER;
	e->peer_key = *sk;
	__builtin_memcpy(&e->peer_val, pv, sizeof(*pv));
	bpf_ringbuf_submit(e, 0);
	return 0;
no_peer:
	__builtin_memset(&e->peer_key, 0, sizeof(e->peer_key));
	__builtin_memset(&e->peer_val, 0, sizeof(e->peer_val));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

// An entry was made or changed (CT_EV_ENTRY, with its value), or was
// deleted (CT_EV_DELETED, its key). Global: verified once, one call per site.
__noinline int ct_emit(__u32 kind, const struct ct_key *k)
{
	if (!k || !ct_events_enabled)
		return 0;
	if (kind == CT_EV_ENTRY)
		return ct_emit_entry(k);
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
