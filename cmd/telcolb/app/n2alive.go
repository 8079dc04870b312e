package app

import (
	"time"

	"github.com/telcolb/telcolb/api"
)

// The takeover gate's re-confirmation (issue 15). The ownership gate
// (n2takeover.go) trusts the L2 election: a VIP owned here means the peer
// is dead or fenced. On a loaded node that is not always so: a peer whose
// daemon stalls longer than the L2 detection time (300 ms by default; a
// member shell 282 ms late was seen at load 20) is taken for dead, the VIP
// moves here, and if the sync has lost the peer meanwhile (its link cut)
// the ABORTs would end the live peer's associations, heard again on the
// segment a moment later.
//
// What tells the two apart is when each side last heard the peer. A live
// peer is heard by the sync at least every keepalive interval (1 s) and by
// the L2 election every heartbeat (100 ms), so the two times stay within
// about a second of each other; a dead peer goes silent on both at once
// (a kill closes its sync connection, its heartbeats stop). A peer the L2
// election heard l2HeardAfterSync or more after the sync last heard it is
// therefore alive and only the sync lost it: the verdict came by silence
// (the peer timeout, 4 s) on a link that is cut, not on a dead node.
// Then no takeover ABORT is sent, in any mode, whoever owns the VIP; and
// a heartbeat heard that late during a takeover (the stalled peer back)
// cancels the ABORTs not yet sent, as a sync reconnect does.
//
// Peers are matched by name: the HA group's member names must be the L2
// members' names, as the daemon's own configuration examples have them. A
// peer the L2 election does not know leaves the gate as it was.

// l2HeardAfterSync sits between the sync's keepalive interval (1 s, what
// separates the two times for a live peer, plus scheduling delays) and its
// peer timeout (4 s, the least they are apart at a verdict by silence).
const l2HeardAfterSync = 2500 * time.Millisecond

// heardOnL2AfterSync is the rule: the peer is alive when the L2 election
// heard it l2HeardAfterSync or more after the sync last heard it. Either
// time unknown (zero): no evidence, not alive by this rule.
func heardOnL2AfterSync(syncAt, l2At time.Time) bool {
	if syncAt.IsZero() || l2At.IsZero() {
		return false
	}
	return l2At.Sub(syncAt) >= l2HeardAfterSync
}

// peerAliveOnL2 applies the rule to peer with the times wired in (never
// alive until the server wires them).
func (r *N2Replica) peerAliveOnL2(peer string) bool {
	r.mu.Lock()
	f := r.heard
	r.mu.Unlock()
	if f == nil {
		return false
	}
	syncAt, l2At := f(peer)
	// A heartbeat of the liveness path (n2liveness.go) is evidence of
	// the same kind: the peer heard on a path other than the sync's.
	if at := r.livenessHeardAt(peer); at.After(l2At) {
		l2At = at
	}
	return heardOnL2AfterSync(syncAt, l2At)
}

// setHeard wires when the sync and the L2 election last heard a peer.
func (r *N2Replica) setHeard(f func(peer string) (syncAt, l2At time.Time)) {
	r.mu.Lock()
	r.heard = f
	r.mu.Unlock()
}

// setL2Heard wires the L2 election's times (the advertiser's l2HeardAt);
// the sync's are the replica's node's.
func (r *N2Replica) setL2Heard(l2 func(peer string) time.Time) {
	r.setHeard(func(peer string) (time.Time, time.Time) {
		var syncAt time.Time
		if r.node != nil {
			syncAt = r.node.HeardAt(peer)
		}
		return syncAt, l2(peer)
	})
}

// l2HeardAt is when the L2 election last heard member name (zero: no L2
// advertisement, no such member, or never heard).
func (a *advertiser) l2HeardAt(name string) time.Time {
	a.mu.Lock()
	l2 := a.announcers[api.AdvertiseL2]
	a.mu.Unlock()
	m, ok := l2.(memberLister)
	if !ok {
		return time.Time{}
	}
	ms, _ := memberState(m, name)
	return ms.LastHeard
}
