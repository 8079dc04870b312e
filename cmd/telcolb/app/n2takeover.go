package app

import (
	"context"
	"net/netip"
	"sort"
	stdsync "sync"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/steer"
)

// N2 takeover ABORT (issue 15). When the HA sync declares a peer lost
// (sync.NodeConfig.OnPeerLost: its connection ended from its side or the
// network's, or it stayed silent past the sync's peer timeout; not closed
// here for slowness) and the ownership gate below lets it, this node sends one SCTP ABORT
// per gNB association the peer's N2 proxy had, for each service whose proxy
// runs here: from the VIP and port the gNB connected to, to the gNB's
// address and port, with the gNB's own verification tag and the T bit
// clear, all three from the peer's replicated gNB record (steer record
// version 2; transports that tell the tags). The gNB then knows at once
// that its association is gone and reconnects to the VIP, instead of
// waiting until its next packet on the dead association (a heartbeat, 30 s
// apart on real gNBs) meets this node's stack and its out-of-the-blue ABORT.
//
// Why a wrong ABORT can end nothing but the association it names: a
// receiver accepts an ABORT with the T bit clear only when its tag is the
// receiver's own tag of the association the packet's addresses and ports
// find (RFC 9260 8.5.1), and silently discards it otherwise. An ABORT for
// an association that already ended (the gNB reconnected, here or
// anywhere, with a new tag of its choosing) is therefore dropped by the
// gNB. What the sync's verdict cannot tell is a dead peer from a cut sync
// link with the peer still serving its gNBs through the VIP: an ABORT then
// would end live associations of the peer. Hence the ownership gate
// (takeoverDecision): a VIP's associations are aborted only once this
// node owns the VIP by the advertisement's election (L2: the member
// machine's owner, decided by heartbeats on the clients' segment, not the
// sync link), at once, waiting up to takeoverOwnerWait after the verdict
// for the ownership to move here; a VIP another node owns is left alone
// (result="not_owner"). A VIP no advertisement elects an owner for (BGP,
// where every node announces and the routers choose; a route moved
// outside the daemon) has no such signal: it goes by the liveness path
// where one is configured (--ha-liveness-members, n2liveness.go: the
// nodes' heartbeats on a network other than the sync link), aborted at
// once when that path has lost the peer too, in both modes, and left
// while it hears the peer; without that path aborted only with
// --ha-n2-takeover-abort=peer-lost, where operators accept the cut-link
// hazard, after takeoverGrace, else left alone (not_owner). The ABORTs
// stop as soon as the peer is up again.
//
// Why a VIP owned here needs no grace (the grace's two reasons, answered
// by the L2 election itself):
//   - a live peer is not aborted: the peer's heartbeats on the clients'
//     segment keep the VIP with it (ownerOther here) whatever happens to
//     the sync link or our reading speed. Owned here with the peer alive
//     means either the VIP hashed here all along (the gNBs' packets to it
//     come here, so the peer's associations on it are dead already) or a
//     split brain on the segment (neither hears the other's heartbeats):
//     then the sync's verdict is by silence (its peer timeout, 4 s by
//     default), far longer than the L2 detection time plus the fence's
//     settle (ha/member/fence.go: a few hundred ms), so by the verdict the
//     fence has decided and the loser is fenced (ownerOther). The one
//     order left open, the sync link cut a peer timeout before the
//     segment splits, is the hazard mode peer-lost accepts for every VIP;
//   - the route: "owned here" is published (l2.Announcer.Announced) only
//     after the responder's Update returned, and Update writes the first
//     gratuitous ARP / unsolicited NA (override set) of the takeover
//     before it returns (ha/l2 TestResponderAnnouncesBeforeUpdateReturns):
//     the router has been told before any ABORT, so the gNB's INIT after
//     the ABORT finds this node.
//
// Never aborted: associations this node's proxy holds itself (same gNB
// address, port and tag: HoldsAssociation), targets already aborted
// (dedup across repeated verdicts), records from other peers, anything
// once the peer is up again. Paced at takeoverRate with a burst of
// takeoverBurst.
//
// The AMF-side associations the peer's proxy had (its own address to each
// AMF) are not aborted: the proxy here dials its own associations to the
// AMFs and sends them the gNB's NG Setup with UE retention, which the AMF
// takes for the same NG-RAN node (same Global RAN Node ID) and keeps the
// UEs; the old associations end by the AMFs' heartbeat timeouts. An ABORT
// would have to carry the dead node's source address (dropped by reverse
// path filters and anti-spoofing between the nodes and the AMFs), and an
// AMF that takes an association's loss for the NG-RAN node's loss could
// release the UE contexts at the moment they are being retained.

const (
	takeoverRate  = 500 // ABORTs per second after the burst
	takeoverBurst = 50
	// takeoverGrace is how long the peer must stay lost before the first
	// ABORT on a VIP no advertisement elects an owner for (mode
	// peer-lost only; a VIP owned here by the L2 election needs none,
	// see above). A verdict is not always a dead peer: a peer that closed our
	// connection because we did not read fast enough (its MaxQueuedBytes)
	// is alive and serving, and dials again (RedialInterval, 1 s, plus a
	// TLS handshake); ABORTs then would end its live associations. The
	// wait also lets the VIP's route move here first (BFD/BGP or a route
	// moved from outside), so a gNB's reconnection after the ABORT finds this
	// node instead of losing its INIT to the dead one and retrying at its
	// INIT retransmission timeout (RFC 9260: 3 s).
	takeoverGrace = 1500 * time.Millisecond
	// takeoverOwnerWait is how long after the verdict a VIP another node
	// still owns is watched for its ownership to move here. The L2
	// election sees a dead member after its detection time (300 ms by
	// default); a live member (only the sync link cut) keeps the VIP and
	// the wait ends in not_owner.
	takeoverOwnerWait = 5 * time.Second
	// takeoverOwnerPoll is how often ownership is looked at meanwhile:
	// it adds up to one poll to the ABORT after the election (each round
	// walks the held records once).
	takeoverOwnerPoll = 50 * time.Millisecond
)

// vipOwner is what the advertisement says about who announces a VIP.
type vipOwner int

const (
	// ownerNone: no advertisement elects an owner for the VIP (BGP, where
	// every node announces; none at all, the route moved from outside).
	ownerNone vipOwner = iota
	// ownerSelf: this node owns the VIP and announces it (L2).
	ownerSelf
	// ownerOther: the VIP's L2 election names another member or none yet,
	// or this node is fenced.
	ownerOther
)

func (o vipOwner) String() string {
	return [...]string{"none", "self", "other"}[o]
}

// takeoverStep is the decision for one VIP of a lost peer.
type takeoverStep int

const (
	stepWait  takeoverStep = iota // look again later
	stepAbort                     // abort its gNB associations now
	stepSkip                      // leave them, for good (this verdict)
)

// takeoverDecision is the gate of the takeover ABORT for one VIP, lostFor
// after the sync's verdict that the peer is lost: nothing while the peer
// is up again, or alive by the L2 election's re-confirmation (peerAlive,
// n2alive.go); an abort at once when this node owns the VIP (the L2
// election: the peer is dead or fenced and the segment was told, see
// above). A VIP no advertisement elects an owner for goes by the liveness
// path (n2liveness.go) where it has heard the peer: an abort at once once
// it has lost the peer too, in modes owner and peer-lost; while it hears
// the peer a wait until takeoverOwnerWait, then a skip. Without evidence
// from the path: in mode peer-lost, an abort after takeoverGrace, in mode
// owner a skip. A VIP owned elsewhere is waited for until
// takeoverOwnerWait, then skipped. The reason is for the logs.
func takeoverDecision(mode string, peerUp, peerAlive bool, lostFor time.Duration, owner vipOwner, path peerPath) (takeoverStep, string) {
	switch {
	case mode == TakeoverAbortOff:
		return stepSkip, "takeover ABORTs are off (--ha-n2-takeover-abort=off)"
	case peerUp:
		return stepSkip, "the peer is up again"
	case peerAlive:
		return stepSkip, reasonPeerAlive
	}
	switch owner {
	case ownerSelf:
		return stepAbort, "this node owns the VIP by the L2 election"
	case ownerNone:
		switch {
		case path == pathLost:
			return stepAbort, "no advertisement elects an owner for the VIP; the liveness heartbeats have lost the peer too"
		case path == pathAlive && lostFor < takeoverOwnerWait:
			return stepWait, "the liveness heartbeats still hear the peer"
		case path == pathAlive:
			return stepSkip, reasonPathAlive
		case mode != TakeoverAbortPeerLost:
			return stepSkip, "no advertisement elects an owner for the VIP (BGP or none) and no liveness path heard the peer (--ha-liveness-members): the sync's verdict alone could abort a live peer's associations"
		case lostFor < takeoverGrace:
			return stepWait, "grace period (no advertisement elects an owner for the VIP)"
		}
		return stepAbort, "no advertisement elects an owner for the VIP; the sync's verdict alone, past the grace (--ha-n2-takeover-abort=peer-lost)"
	}
	if lostFor < takeoverOwnerWait {
		return stepWait, "another node owns the VIP"
	}
	return stepSkip, "another node still owns the VIP"
}

// n2Takeover is the N2 replica's takeover state.
type n2Takeover struct {
	// run serialises takeovers (two verdicts in a row would otherwise
	// both pick a target before either marks it done).
	run stdsync.Mutex
	mu  stdsync.Mutex
	// done are the targets aborted already (pruned to those still held).
	done map[abort.Target]bool
	// counts by result: sent, failed, own (skipped: held here),
	// not_owner (skipped: the gate).
	counts map[string]uint64
	// send is abort.Target.Send; tests replace it.
	send func(abort.Target) error
}

func newN2Takeover() n2Takeover {
	return n2Takeover{done: map[abort.Target]bool{}, counts: map[string]uint64{}, send: abort.Target.Send}
}

// takeoverResults are the result label values of
// telcolb_ha_n2_takeover_aborts_total (peer_alive: skipped, the L2
// election hears the peer, n2alive.go).
var takeoverResults = []string{"sent", "failed", "own", "not_owner", "peer_alive"}

// reasonPeerAlive is the gate's reason when the re-confirmation finds the
// peer alive.
const reasonPeerAlive = "the L2 election or the liveness heartbeats heard the peer 2.5s or more after the sync last did: it is alive, only the sync lost it"

// abortCandidate is one gNB association of a lost peer.
type abortCandidate struct {
	svc, gnb string
	target   abort.Target
}

// selectAborts is the takeover's decision: the gNB associations of peer
// (records from peer, held per service) to abort, in a stable order, for
// the services serves says this node's proxy runs, leaving out those held
// here (holds) and those in done; own counts the ones held here, bad the
// records that do not decode.
func selectAborts(held map[string]map[string]heldN2, peer string, serves func(svc string) (holds func(abort.Target) bool, ok bool),
	done map[abort.Target]bool) (out []abortCandidate, own int, bad []string) {
	for svc, recs := range held {
		holds, ok := serves(svc)
		if !ok {
			continue
		}
		for k, h := range recs {
			if h.from != peer {
				continue
			}
			t, ok, err := steer.GNBAbortTarget(steer.Record{Key: []byte(k), Value: h.value})
			if err != nil {
				bad = append(bad, svc+": "+err.Error())
				continue
			}
			if !ok || done[t] {
				continue
			}
			if holds(t) {
				own++
				continue
			}
			out = append(out, abortCandidate{svc: svc, gnb: k[1:], target: t})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].svc != out[j].svc {
			return out[i].svc < out[j].svc
		}
		return out[i].gnb < out[j].gnb
	})
	return out, own, bad
}

// pace is when the i-th ABORT of a takeover goes, after the first: burst
// at once, then rate per second.
func pace(i, burst, rate int) time.Duration {
	if i < burst {
		return 0
	}
	return time.Duration(i-burst+1) * time.Second / time.Duration(rate)
}

// peerLost is the HA sync's OnPeerLost (the node's goroutine: nothing
// here may block it).
func (h *HA) peerLost(peer string) {
	if h.n2 == nil {
		return
	}
	lostAt := time.Now()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.n2.runTakeover(h.ctx, peer, lostAt, h.cfg.TakeoverAbort, func() bool { return h.node.Up(peer) })
	}()
}

// runTakeover is the takeover after one verdict that peer is lost (at
// lostAt): rounds of abortPeer from the verdict on, every
// takeoverOwnerPoll while a VIP waits (for its ownership, or for the
// grace in mode peer-lost).
func (r *N2Replica) runTakeover(ctx context.Context, peer string, lostAt time.Time, mode string, peerUp func() bool) {
	if mode == TakeoverAbortOff {
		r.log.Info("N2 takeover: peer lost; takeover ABORTs are off", "peer", peer)
		return
	}
	settled := map[netip.Addr]bool{}
	next := lostAt
	for {
		select {
		case <-time.After(time.Until(next)):
		case <-ctx.Done():
			return
		}
		if peerUp() {
			r.log.Info("N2 takeover: the lost peer is back; nothing more aborted", "peer", peer, "after", time.Since(lostAt).Round(time.Millisecond))
			return
		}
		if !r.abortPeer(ctx, peer, time.Since(lostAt), mode, settled, peerUp) {
			return
		}
		next = time.Now().Add(takeoverOwnerPoll)
	}
}

// ownerOf says who announces vip (ownerNone until the server wires it).
func (r *N2Replica) ownerOf(vip netip.Addr) vipOwner {
	r.mu.Lock()
	f := r.owner
	r.mu.Unlock()
	if f == nil {
		return ownerNone
	}
	return f(vip)
}

func (r *N2Replica) setOwner(f func(netip.Addr) vipOwner) {
	r.mu.Lock()
	r.owner = f
	r.mu.Unlock()
}

// abortPeer runs one round of a takeover of peer's gNB associations,
// lostFor after the verdict: the associations of each VIP not settled yet
// (in settled) are aborted or left by takeoverDecision, and the VIP
// settled, or left for a later round (the result: true). It stops early
// when peerUp says the peer is back or ctx ends.
func (r *N2Replica) abortPeer(ctx context.Context, peer string, lostFor time.Duration, mode string, settled map[netip.Addr]bool, peerUp func() bool) (more bool) {
	r.takeover.run.Lock()
	defer r.takeover.run.Unlock()
	r.mu.Lock()
	running := r.running
	// The gNB records only (UE records name no association).
	held := map[string]map[string]heldN2{}
	live := map[abort.Target]bool{}
	for svc, recs := range r.held {
		m := map[string]heldN2{}
		for k, v := range recs {
			if k == "" || k[0] != 'g' {
				continue
			}
			m[k] = v
			if t, ok, _ := steer.GNBAbortTarget(steer.Record{Key: []byte(k), Value: v.value}); ok {
				live[t] = true
			}
		}
		held[svc] = m
	}
	r.mu.Unlock()
	if running == nil {
		return false
	}
	serves := func(svc string) (func(abort.Target) bool, bool) {
		p, ok := running(svc)
		if !ok || !p.Stats().Running {
			return nil, false
		}
		return p.HoldsAssociation, true
	}
	tk := &r.takeover
	tk.mu.Lock()
	// Targets no longer held (the gNB left the peer, or reconnected with
	// a new tag) cannot come back: forget them.
	for t := range tk.done {
		if !live[t] {
			delete(tk.done, t)
		}
	}
	all, own, bad := selectAborts(held, peer, serves, tk.done)
	send := tk.send
	tk.mu.Unlock()
	// The gate, once per VIP this round.
	steps := map[netip.Addr]takeoverStep{}
	var cands []abortCandidate
	notOwner, alive := 0, 0
	peerAlive := r.peerAliveOnL2(peer)
	path := r.livenessOf(peer)
	// byPath are the VIPs aborted on the liveness path's word, aliveVIPs
	// those it (or the L2 election) keeps.
	byPath, aliveVIPs := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, c := range all {
		vip := c.target.Src.Addr()
		if settled[vip] {
			continue
		}
		st, ok := steps[vip]
		if !ok {
			var why string
			owner := r.ownerOf(vip)
			st, why = takeoverDecision(mode, false, peerAlive, lostFor, owner, path)
			steps[vip] = st
			byPath[vip] = owner == ownerNone && path == pathLost
			aliveVIPs[vip] = peerAlive || why == reasonPathAlive
			if st == stepSkip {
				r.log.Warn("N2 takeover: the lost peer's gNB associations on this VIP are not aborted", "peer", peer, "vip", vip, "owner", owner.String(),
					"livenessPath", path.String(), "reason", why)
			}
		}
		switch st {
		case stepWait:
			more = true
		case stepSkip:
			if aliveVIPs[vip] {
				alive++
			} else {
				notOwner++
			}
		case stepAbort:
			cands = append(cands, c)
		}
	}
	for vip, st := range steps {
		if st != stepWait {
			settled[vip] = true
		}
	}
	tk.mu.Lock()
	tk.counts["own"] += uint64(own)
	tk.counts["not_owner"] += uint64(notOwner)
	tk.counts["peer_alive"] += uint64(alive)
	tk.mu.Unlock()
	for _, b := range bad {
		r.log.Warn("N2 takeover: peer's gNB record does not decode; its association is not aborted", "peer", peer, "error", b)
	}
	if len(cands) == 0 {
		if !more {
			r.log.Info("N2 takeover: no gNB association of the lost peer to abort", "peer", peer, "heldHere", own, "notOwner", notOwner, "peerAlive", alive)
		}
		return more
	}
	r.log.Info("N2 takeover: aborting the lost peer's gNB associations", "peer", peer, "associations", len(cands), "heldHere", own)
	start := time.Now()
	var sent, failed int
	for i, c := range cands {
		if d := time.Until(start.Add(pace(i, takeoverBurst, takeoverRate))); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return false
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if peerUp() {
			r.log.Warn("N2 takeover: the peer is up again; its remaining gNB associations are not aborted", "peer", peer, "left", len(cands)-i)
			return false
		}
		if r.peerAliveOnL2(peer) {
			r.log.Warn("N2 takeover: the L2 election hears the peer; its remaining gNB associations are not aborted", "peer", peer,
				"reason", reasonPeerAlive, "left", len(cands)-i)
			return false
		}
		if byPath[c.target.Src.Addr()] && r.livenessOf(peer) == pathAlive {
			r.log.Warn("N2 takeover: the liveness heartbeats hear the peer again; its remaining gNB associations are not aborted", "peer", peer,
				"left", len(cands)-i)
			return false
		}
		err := send(c.target)
		tk.mu.Lock()
		if err != nil {
			tk.counts["failed"]++
		} else {
			tk.counts["sent"]++
			tk.done[c.target] = true
		}
		tk.mu.Unlock()
		if err != nil {
			failed++
			r.log.Warn("N2 takeover: ABORT not sent", "peer", peer, "service", c.svc, "target", c.target.String(), "error", err)
			continue
		}
		sent++
		r.log.Debug("N2 takeover: ABORT sent", "peer", peer, "service", c.svc, "gnb", c.gnb, "target", c.target.String())
	}
	r.log.Info("N2 takeover: ABORTs sent", "peer", peer, "sent", sent, "failed", failed, "took", time.Since(start).Round(time.Millisecond))
	return more
}

// takeoverCounts are the takeover ABORTs by result (for the metrics).
func (r *N2Replica) takeoverCounts() map[string]uint64 {
	out := map[string]uint64{}
	if r == nil {
		return out
	}
	r.takeover.mu.Lock()
	defer r.takeover.mu.Unlock()
	for k, v := range r.takeover.counts {
		out[k] = v
	}
	return out
}
