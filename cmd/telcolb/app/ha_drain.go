package app

import (
	"slices"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/sync"
)

// A planned drain with HA sync (issue 15): the VIPs move to a peer only
// once it holds this node's flows. Withdrawing at once, the routes could
// move before the peer had the records of flows opened within the last
// sync lag, and those flows died (a TCP reset, or another endpoint). So
// the advertiser, before it withdraws for a drain, calls Drain: this node
// stops taking peers' flows over for their traffic here, puts every entry
// it owns again (a full refresh: an entry whose change event was lost is
// caught up too), takes a sync barrier behind those puts and waits until
// every peer up then has acknowledged all of it, at most --ha-drain-timeout
// (a peer that is down or never answers must not keep the node from its
// maintenance). The sync keeps running after the withdrawal: packets in
// flight during the route convergence still reach this node, and the
// changes they make still reach the peers.

// drainState is the barrier of the drain under way or done.
type drainState struct {
	since, until time.Time // until is zero while waiting
	state        string    // api.HADrain*
	wait         *sync.BarrierWait
	missing      []string // after a timeout: the peers that never acknowledged
}

// Drain runs the drain's barrier and returns when the VIPs may be
// withdrawn; it logs whether every peer acknowledged or the timeout
// passed, and which peers did not acknowledge.
func (h *HA) Drain() {
	start := time.Now()
	timeout := h.cfg.DrainTimeout
	if timeout <= 0 {
		timeout = defaultHADrainTimeout
	}
	st := &drainState{since: start, state: api.HADrainWaiting}
	h.mu.Lock()
	h.draining = true
	h.drain = st
	h.mu.Unlock()
	var up []string
	for _, p := range h.cfg.Node.Peers {
		if h.node.Up(p.Name) {
			up = append(up, p.Name)
		}
	}
	if len(up) == 0 {
		// Nothing to wait for, and nobody to take over: said as such,
		// not as an acknowledgement (an operator draining the last
		// node up is about to lose the VIPs' traffic).
		h.finishDrain(st, api.HADrainNoPeer, nil)
		h.log.Warn("drain: no peer is up, so no node holds this node's flows; withdrawing the VIPs (their flows break unless another node announces them)",
			"peers", peerNames(h.cfg.Node.Peers))
		return
	}
	h.log.Info("drain: pushing this node's entries to the peers; the VIPs stay announced until they acknowledge", "peersUp", up, "timeout", timeout)
	h.refresh(true)
	w, err := h.node.Barrier()
	if err != nil {
		h.finishDrain(st, api.HADrainTimeout, up)
		h.log.Warn("drain: no sync barrier; withdrawing the VIPs without the peers' acknowledgement", "error", err)
		return
	}
	h.mu.Lock()
	st.wait = w
	h.mu.Unlock()
	t := time.NewTimer(max(0, timeout-time.Since(start)))
	defer t.Stop()
	var missing []string
	select {
	case <-w.Done():
	case <-t.C:
		missing = w.Release()
	case <-h.ctx.Done():
		missing = w.Release()
	}
	waited := time.Since(start).Round(time.Millisecond)
	if len(missing) == 0 {
		h.finishDrain(st, api.HADrainAcknowledged, nil)
		h.log.Info("drain: every peer up acknowledged every change; withdrawing the VIPs", "peers", up, "waited", waited)
		return
	}
	h.finishDrain(st, api.HADrainTimeout, missing)
	h.log.Warn("drain: peers did not acknowledge every change within the drain timeout; withdrawing the VIPs anyway (flows opened last may break)",
		"peers", missing, "timeout", timeout, "waited", waited)
}

func peerNames(ps []sync.Peer) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func (h *HA) finishDrain(st *drainState, state string, missing []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st.state, st.missing, st.until, st.wait = state, missing, time.Now(), nil
}

// SetDraining follows the advertisement configuration without a barrier:
// false when a drain ends (this node takes flows over again), true when
// the daemon starts drained (nothing was announced: nothing to wait for).
func (h *HA) SetDraining(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = on
	if !on {
		h.drain = nil
	}
}

// drainStatus is the drain part of GET /v1/ha (nil when not draining or
// started drained).
func (h *HA) drainStatus() *api.HADrainStatus {
	h.mu.Lock()
	if h.drain == nil {
		h.mu.Unlock()
		return nil
	}
	d := *h.drain
	h.mu.Unlock()
	out := &api.HADrainStatus{State: d.state, Since: d.since, Peers: slices.Clone(d.missing)}
	end := d.until
	if d.wait != nil {
		out.Peers = d.wait.Unacked()
		end = time.Now()
	}
	out.WaitSeconds = end.Sub(d.since).Seconds()
	return out
}

// drainer is what the advertiser waits on before a drain withdraws the
// VIPs (*HA).
type drainer interface {
	Drain()
	SetDraining(on bool)
}
