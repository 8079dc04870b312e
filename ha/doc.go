// Package ha makes the VIPs a node serves reachable and keeps the nodes of a
// group in step. Each concern is its own package below ha/, protocol logic as
// pure state machines (packets and timer expiries in, packets, timer requests
// and state changes out; no I/O) behind thin I/O shells, like sctplb/steer:
//
//   - bfd: BFD (RFC 5880/5881) single-hop asynchronous sessions.
//   - bgp: the embedded gobgp speaker announcing VIP routes.
//   - l2: ARP / NDP answering and gratuitous announcements for owned VIPs.
//   - member: liveness between the nodes of an L2 group and VIP ownership.
//   - localvip: VIPs made local addresses of the node (dummy interface).
//   - sync: replication of opaque keyed records (conntrack, SCTP
//     associations, N2 UE contexts) between the nodes of an HA group, over
//     mutual TLS.
package ha

import (
	"context"
	"net/netip"

	"github.com/telcolb/telcolb/api"
)

// VIP is one VIP the node serves, with the advertisement that covers it.
type VIP struct {
	Addr netip.Addr
	// Advertisement is the api.Advertisement (mode bgp or l2) covering Addr.
	Advertisement api.Advertisement
}

// Announcer makes VIPs reachable one way (BGP, L2). The daemon calls Set with
// the whole set of VIPs to announce each time it changes (level-triggered):
// the announcer withdraws what is absent. Set must not block on the network.
type Announcer interface {
	Set(ctx context.Context, vips []VIP) error
	// Announced reports, per VIP, how it is announced now ("bgp/<peer>",
	// "l2/<interface>") and, for L2, the owner node.
	Announced() map[netip.Addr]Announcement
	Close() error
}

// Announcement is how one VIP is announced by one announcer.
type Announcement struct {
	Via   []string
	Owner string
}
