package member

import (
	"net/netip"
	"slices"
	"time"
)

// Fencing: members that cannot hear each other still share the client's
// segment, so the data plane shows what heartbeats cannot: another MAC
// claiming a VIP this node owns (a gratuitous ARP, an ARP reply, a Neighbor
// Advertisement). The shell reports each such claim with Claim; the machine
// decides who keeps the VIP with a tie-breaker both claimants compute alike
// from what both see, the claimants' link-layer identities: the rendezvous
// score of (identity, VIP), as for ownership. The loser is fenced: it stops
// answering and announcing the VIP while claims keep coming (its shell
// probes the segment for the VIP, and the winner's answers are claims),
// and takes it back once no claim was seen for the hold time. The winner
// announces the VIP again, so caches that followed the loser come back.
//
// A normal hand-over also shows two claimants, for one network latency
// (the new owner's first gratuitous ARP before the old owner has its ready
// heartbeat). A conflict is therefore acted on only when a claim arrives at
// least the settle time (one heartbeat interval) after the first one seen
// while this node owned the VIP: the old owner of a hand-over has released
// by then and the new one never sees two claims that far apart.

// DefaultFenceHoldIntervals is the default hold time in heartbeat intervals.
const DefaultFenceHoldIntervals = 5

// FenceChange is one VIP fenced or no longer fenced on this node.
type FenceChange struct {
	VIP    netip.Addr
	Fenced bool
	// Claimant is the identity that won the VIP (when fenced).
	Claimant string
	// Reason: "lost" (fenced), "expired" (no claim for the hold time),
	// "not owner" (ownership moved, the fence is moot).
	Reason string
}

type fenceState struct {
	first     time.Time // first claim seen while owning and not fenced (zero: none)
	until     time.Time // fenced until (zero: not fenced)
	claimant  string
	announced time.Time // last re-announcement after winning
}

// ClaimWinner returns which of the claimant identities keeps vip when they
// claim it at once: the highest rendezvous score, ties to the smaller
// identity. Both sides of a conflict compute it the same way; tests use it
// to predict the survivor.
func ClaimWinner(vip netip.Addr, claimants ...string) string {
	return pickOwner(claimants, vip.Unmap())
}

// Claim reports that the link-layer identity theirs was seen claiming vip
// on a segment where this node's identity is ours (the MACs, as strings
// formatted alike on every node).
func (m *Machine) Claim(now time.Time, vip netip.Addr, ours, theirs string) Output {
	var out Output
	if !m.started {
		return out
	}
	m.advance(now, &out)
	m.claim(now, vip.Unmap(), ours, theirs, &out)
	m.finish(now, &out)
	return out
}

func (m *Machine) claim(now time.Time, vip netip.Addr, ours, theirs string, out *Output) {
	if theirs == "" || theirs == ours || m.vips[vip] != m.self {
		// Not ours: the owner announcing it, which is how it should be.
		m.stats.ClaimsIgnored++
		return
	}
	f := m.fences[vip]
	if f == nil {
		f = &fenceState{}
		m.fences[vip] = f
	}
	if !f.until.IsZero() {
		// Still fenced and the winner still answers: hold on.
		f.until, f.claimant = now.Add(m.hold), theirs
		return
	}
	if f.first.IsZero() || now.Sub(f.first) > m.hold {
		f.first = now
		return
	}
	if now.Sub(f.first) < m.interval {
		return // within a hand-over's overlap
	}
	m.stats.Conflicts++
	if ClaimWinner(vip, ours, theirs) == theirs {
		f.first, f.until, f.claimant = time.Time{}, now.Add(m.hold), theirs
		out.Fencing = append(out.Fencing, FenceChange{VIP: vip, Fenced: true, Claimant: theirs, Reason: "lost"})
		return
	}
	if f.announced.IsZero() || now.Sub(f.announced) >= m.hold {
		f.announced = now
		out.Announce = append(out.Announce, vip)
	}
}

// fenceStep ends fences whose hold expired or whose VIP this node no
// longer owns, and forgets claims about VIPs it does not own.
func (m *Machine) fenceStep(now time.Time, out *Output) {
	for v, f := range m.fences {
		switch {
		case m.vips[v] != m.self:
			if !f.until.IsZero() {
				out.Fencing = append(out.Fencing, FenceChange{VIP: v, Reason: "not owner"})
			}
			delete(m.fences, v)
		case !f.until.IsZero() && !now.Before(f.until):
			out.Fencing = append(out.Fencing, FenceChange{VIP: v, Reason: "expired"})
			f.until, f.first, f.claimant = time.Time{}, time.Time{}, ""
		}
	}
	slices.SortFunc(out.Fencing, func(a, b FenceChange) int { return a.VIP.Compare(b.VIP) })
}

func (m *Machine) fenced(v netip.Addr) bool {
	f := m.fences[v]
	return f != nil && !f.until.IsZero()
}

// Fenced returns the VIPs this node owns by the ownership rules but does
// not answer for, having lost a conflict on the segment, sorted. The shell
// keeps watching (and probing) the segment for them.
func (m *Machine) Fenced() []netip.Addr {
	var r []netip.Addr
	for v, f := range m.fences {
		if !f.until.IsZero() {
			r = append(r, v)
		}
	}
	slices.SortFunc(r, netip.Addr.Compare)
	return r
}
