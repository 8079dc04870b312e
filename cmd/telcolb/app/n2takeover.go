package app

import (
	"context"
	"sort"
	stdsync "sync"
	"time"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/steer"
)

// N2 takeover ABORT (issue 15). When the HA sync declares a peer lost
// (sync.NodeConfig.OnPeerLost: its connection ended from its side or the
// network's, not closed here for slowness), this node sends one SCTP ABORT
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
// gNB. What the verdict cannot tell is a dead peer from a cut sync link
// with the peer still serving its gNBs through the VIP: then the ABORT ends
// live associations of the peer, whose gNBs reconnect (to whichever node
// the VIP routes to) asking for UE retention. Operators who run the sync
// over a link that can fail on its own accept that; a separate sync link
// makes it less likely, not impossible. The ABORTs stop as soon as the
// peer is up again.
//
// Never aborted: associations this node's proxy holds itself (same gNB
// address, port and tag: HoldsAssociation), targets already aborted
// (dedup across repeated verdicts), records from other peers, anything
// when the peer is up again takeoverGrace after the verdict. Paced at
// takeoverRate with a burst of takeoverBurst.
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
	// ABORT. A verdict is not always a dead peer: a peer that closed our
	// connection because we did not read fast enough (its MaxQueuedBytes)
	// is alive and serving, and dials again (RedialInterval, 1 s, plus a
	// TLS handshake); ABORTs then would end its live associations. The
	// wait also lets the VIP's route move here first (BFD/BGP or the L2
	// announcement), so a gNB's reconnection after the ABORT finds this
	// node instead of losing its INIT to the dead one and retrying at its
	// INIT retransmission timeout (RFC 9260: 3 s).
	takeoverGrace = 1500 * time.Millisecond
)

// n2Takeover is the N2 replica's takeover state.
type n2Takeover struct {
	// run serialises takeovers (two verdicts in a row would otherwise
	// both pick a target before either marks it done).
	run stdsync.Mutex
	mu  stdsync.Mutex
	// done are the targets aborted already (pruned to those still held).
	done map[abort.Target]bool
	// counts by result: sent, failed, own (skipped: held here).
	counts map[string]uint64
	// send is abort.Target.Send; tests replace it.
	send func(abort.Target) error
}

func newN2Takeover() n2Takeover {
	return n2Takeover{done: map[abort.Target]bool{}, counts: map[string]uint64{}, send: abort.Target.Send}
}

// takeoverResults are the result label values of
// telcolb_ha_n2_takeover_aborts_total.
var takeoverResults = []string{"sent", "failed", "own"}

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
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-time.After(takeoverGrace):
		case <-h.ctx.Done():
			return
		}
		if h.node.Up(peer) {
			h.n2.log.Info("N2 takeover: the lost peer is back within the grace period; nothing aborted", "peer", peer, "grace", takeoverGrace)
			return
		}
		h.n2.abortPeer(h.ctx, peer, func() bool { return h.node.Up(peer) })
	}()
}

// abortPeer runs a takeover of peer's gNB associations; it stops early
// when peerUp says the peer is back or ctx ends.
func (r *N2Replica) abortPeer(ctx context.Context, peer string, peerUp func() bool) {
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
		return
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
	cands, own, bad := selectAborts(held, peer, serves, tk.done)
	tk.counts["own"] += uint64(own)
	send := tk.send
	tk.mu.Unlock()
	for _, b := range bad {
		r.log.Warn("N2 takeover: peer's gNB record does not decode; its association is not aborted", "peer", peer, "error", b)
	}
	if len(cands) == 0 {
		r.log.Info("N2 takeover: no gNB association of the lost peer to abort", "peer", peer, "heldHere", own)
		return
	}
	r.log.Info("N2 takeover: aborting the lost peer's gNB associations", "peer", peer, "associations", len(cands), "heldHere", own)
	start := time.Now()
	var sent, failed int
	for i, c := range cands {
		if d := time.Until(start.Add(pace(i, takeoverBurst, takeoverRate))); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if peerUp() {
			r.log.Warn("N2 takeover: the peer is up again; its remaining gNB associations are not aborted", "peer", peer, "left", len(cands)-i)
			break
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
