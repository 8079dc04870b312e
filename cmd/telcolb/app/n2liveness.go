package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	stdsync "sync"
	"time"

	"github.com/telcolb/telcolb/ha/member"
)

// The liveness path (issue 15): a second view of the HA peers for the N2
// takeover ABORT on VIPs no advertisement elects an owner for (BGP: every
// node announces, the routers choose; ownerNone). The ownership gate
// (n2takeover.go) has nothing to go on for those: the sync's verdict alone
// cannot tell a dead peer from a live one behind a cut sync link. With
// --ha-liveness-members the nodes exchange ha/member heartbeats (100 ms
// apart by default, dead after 3 missed) on a network other than the sync
// link, the service side the gNBs' traffic arrives on; the heartbeats carry
// no VIP (nobody owns or answers anything by them), they only say who is
// alive.
//
// The rule: a lost peer's gNB associations on a VIP without an owner are
// aborted once the liveness heartbeats have lost the peer too (pathLost),
// with no grace; while they still hear it (pathAlive) the VIP waits, up to
// takeoverOwnerWait after the verdict, then is left (peer_alive). A peer
// the heartbeats never heard (a member not configured on the other side, a
// blocked port) gives no evidence (pathNone): the gate is as without the
// path (mode owner: left; mode peer-lost: after the grace).
//
// Why it is sound:
//   - a dead peer: a kill closes its sync connection at once (the verdict)
//     and its heartbeats stop, so the path loses it one detection time
//     (300 ms) after its last heartbeat: the ABORTs go about 300 ms after
//     the verdict, well within the 1.5 s the sync's verdict alone needed;
//   - a live peer whose sync link alone is cut: its heartbeats keep coming
//     on the other network, the path never loses it, nothing is aborted
//     (the verdict came by silence, 4 s, and during the wait after it the
//     path still hears the peer);
//   - a stalled peer (load) taken for dead on both paths and heard again:
//     the re-confirmation (n2alive.go) counts a heartbeat of this path as
//     the L2 election's, so a peer heard here 2.5 s or more after the sync
//     last heard it is alive, and a heartbeat heard during a takeover (the
//     path alive again) cancels the ABORTs not yet sent;
//   - what remains is a double failure: both the sync link and the liveness
//     network cut between the nodes while the routers still reach the peer.
//     Running the heartbeats on the network the gNBs' traffic comes in on
//     makes that a partition of the service network itself.
//
// The route: the routers move the VIP's route off a dead node by their
// own detection (BGP hold time, or BFD to the nodes); a gNB's INIT sent
// while the dead node's route is still chosen is lost and retransmitted
// at its INIT timer, so the routers' detection should be shorter than the
// liveness detection (BFD at 100-300 ms x 3) for a reconnection at once.

// peerPath is what the liveness path says about a peer.
type peerPath int

const (
	// pathNone: no liveness path, the peer is not a liveness member, or
	// the path never heard it (no evidence either way).
	pathNone peerPath = iota
	// pathAlive: the liveness heartbeats hear the peer.
	pathAlive
	// pathLost: the liveness heartbeats heard the peer, and have lost it.
	pathLost
)

func (p peerPath) String() string {
	return [...]string{"none", "alive", "lost"}[p]
}

// livenessPath is the path's verdict from a member's state (ok: the peer
// is a member of the path).
func livenessPath(ms member.MemberState, ok bool) peerPath {
	switch {
	case !ok || ms.LastHeard.IsZero():
		return pathNone
	case ms.Alive:
		return pathAlive
	}
	return pathLost
}

// reasonPathAlive is the gate's reason for a VIP without an owner left
// because the liveness heartbeats hear the peer.
const reasonPathAlive = "the liveness heartbeats (--ha-liveness-members) still hear the peer: only the sync lost it"

// setLiveness wires the liveness path's member states (nil: no path).
func (r *N2Replica) setLiveness(f func(peer string) (member.MemberState, bool)) {
	r.mu.Lock()
	r.liveness = f
	r.mu.Unlock()
}

func (r *N2Replica) livenessState(peer string) (member.MemberState, bool) {
	r.mu.Lock()
	f := r.liveness
	r.mu.Unlock()
	if f == nil {
		return member.MemberState{}, false
	}
	return f(peer)
}

// livenessOf is the liveness path's verdict on peer.
func (r *N2Replica) livenessOf(peer string) peerPath {
	return livenessPath(r.livenessState(peer))
}

// livenessHeardAt is when the liveness path last heard peer (zero: never,
// or no path).
func (r *N2Replica) livenessHeardAt(peer string) time.Time {
	ms, ok := r.livenessState(peer)
	if !ok {
		return time.Time{}
	}
	return ms.LastHeard
}

// memberLister is what tells the states of an election's members: the
// liveness path's *member.Node, the L2 announcer.
type memberLister interface{ Members() []member.MemberState }

// memberState finds peer among a member node's states (not itself).
func memberState(n memberLister, peer string) (member.MemberState, bool) {
	for _, ms := range n.Members() {
		if ms.Name == peer && !ms.Self {
			return ms, true
		}
	}
	return member.MemberState{}, false
}

// livenessConfig checks --ha-liveness-members and --ha-liveness-interval:
// nil when no members are given. Every member but this node must be an HA
// peer (the same names: the gate matches them), and this node must be
// listed (its entry is the heartbeats' bind address).
func (h HAOptions) livenessConfig(peers map[string]bool) (*member.NodeConfig, error) {
	if len(h.LivenessMembers) == 0 {
		if h.LivenessInterval != "" {
			return nil, errors.New("ha-liveness-interval is set but ha-liveness-members is empty")
		}
		return nil, nil
	}
	c := &member.NodeConfig{Self: h.NodeName, Interval: member.DefaultInterval}
	seen := map[string]bool{}
	for _, m := range h.LivenessMembers {
		name, addr, ok := strings.Cut(m, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("ha-liveness-members %q: use name=ip:port", m)
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("ha-liveness-members %q: want name=ip:port: %w", m, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("ha-liveness-members: %s listed twice", name)
		}
		seen[name] = true
		if name != h.NodeName && !peers[name] {
			return nil, fmt.Errorf("ha-liveness-members %q: %s is no HA peer (the names must be the sync's)", m, name)
		}
		c.Members = append(c.Members, member.Peer{Name: name, Addr: ap})
	}
	if !seen[h.NodeName] {
		return nil, fmt.Errorf("ha-liveness-members does not list ha-node-name %q (its entry is where this node's heartbeats bind)", h.NodeName)
	}
	if len(c.Members) < 2 {
		return nil, errors.New("ha-liveness-members: list this node and at least one peer")
	}
	if h.LivenessInterval != "" {
		d, err := time.ParseDuration(h.LivenessInterval)
		if err != nil || d < 10*time.Millisecond || d > time.Second {
			return nil, fmt.Errorf("ha-liveness-interval %q: a duration from 10ms to 1s", h.LivenessInterval)
		}
		c.Interval = d
	}
	return c, nil
}

// startLiveness binds and runs the liveness heartbeats until ctx ends
// (nil when cfg is).
func startLiveness(ctx context.Context, cfg *member.NodeConfig, log *slog.Logger, wg *stdsync.WaitGroup) (*member.Node, error) {
	if cfg == nil {
		return nil, nil
	}
	c := *cfg
	c.Logger = log.With("path", "liveness")
	n, err := member.Listen(c)
	if err != nil {
		return nil, fmt.Errorf("ha liveness heartbeats: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("ha liveness heartbeats stopped", "error", err)
		}
	}()
	log.Info("ha liveness heartbeats started", "members", len(c.Members), "interval", c.Interval)
	return n, nil
}
