package sctplb

import (
	"sync"

	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// heldTargets are the ABORT targets of the gNB associations this proxy
// holds now (transports that tell them: transport.AbortTargeter). An HA
// takeover asks it before it ABORTs a failed peer's associations: one this
// node's own stack holds, same gNB address and tag, is never aborted.
type heldTargets struct {
	mu sync.Mutex
	m  map[steer.AssocID]abort.Target
}

func (h *heldTargets) set(id steer.AssocID, t abort.Target) {
	if !t.Valid() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[steer.AssocID]abort.Target{}
	}
	h.m[id] = t
}

func (h *heldTargets) drop(id steer.AssocID) {
	h.mu.Lock()
	delete(h.m, id)
	h.mu.Unlock()
}

func (h *heldTargets) reset() {
	h.mu.Lock()
	h.m = nil
	h.mu.Unlock()
}

func (h *heldTargets) holds(t abort.Target) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.m {
		if x.Dst == t.Dst && x.Tag == t.Tag {
			return true
		}
	}
	return false
}

// HoldsAssociation says whether one of the proxy's gNB associations has
// t's gNB address and port and verification tag (t names it).
func (p *Proxy) HoldsAssociation(t abort.Target) bool { return p.held.holds(t) }

// abortTargetOf is c's target when its transport tells it (zero
// otherwise: the association's record then carries none). A failure is
// counted (telcolb_n2_abort_target_missing_total) and logged as a warning
// once per listener, then at debug level: where the cause is the node's
// (the kernel transport without the sctp_diag module) every gNB fails
// alike, and a warning each would flood the log at thousands of gNBs.
// Called from the accept goroutine only (targetWarned is its own).
func (l *loop) abortTargetOf(c transport.Conn) abort.Target {
	at, ok := c.(transport.AbortTargeter)
	if !ok {
		return abort.Target{}
	}
	t, err := at.AbortTarget()
	if err != nil {
		l.met.abortTargetMissing.Inc()
		if !l.targetWarned {
			l.targetWarned = true
			l.log.Warn("gNB association's ABORT target unknown: a peer taking over cannot abort it; "+
				"further ones on this listener are logged at debug level and counted in telcolb_n2_abort_target_missing_total",
				"remote", c.Remote(), "err", err)
		} else {
			l.log.Debug("gNB association's ABORT target unknown", "remote", c.Remote(), "err", err)
		}
		return abort.Target{}
	}
	return t
}
