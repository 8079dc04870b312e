package steer

import "time"

// Per-peer rate limits on what a peer's bad input makes the proxy do: log
// lines and Error Indications. Without them a hostile gNB gets one WARN line
// and one Error Indication per bad PDU (issue 11, item 10). The decisions
// (drop, count, which state to keep) are never limited, only their echo.

// bucket is a token bucket refilled at rate per second up to burst.
type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int // echoes dropped since the last one let through
}

func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false
	}
	b.tokens--
	return true
}

// peerLimit holds a peer's buckets: its log lines and the Error Indications
// sent to it are limited separately.
type peerLimit struct {
	logs, errs bucket
}

// limitOf returns the limits of association a: a gNB's, an upstream's, or
// the shared one for associations the machine does not know.
func (m *Machine) limitOf(a AssocID) *peerLimit {
	if a&UpstreamBit != 0 {
		if u := m.ups[a]; u != nil {
			return &u.limit
		}
	} else if g := m.gnbs[a]; g != nil {
		return &g.limit
	}
	return &m.strangers
}

// warn logs a line caused by the current event's peer, within its rate.
// The first line let through after a quiet spell says how many it stands for.
func (m *Machine) warn(msg string, attrs ...any) {
	b := &m.limitOf(m.peer).logs
	if m.peer != 0 && !b.take(m.now, m.cfg.PeerLogRate, m.cfg.PeerLogBurst) {
		m.out = append(m.out, Action{Kind: Suppressed, Assoc: m.peer, Reason: "log"})
		return
	}
	if b.suppressed > 0 {
		attrs = append(attrs, "suppressed", b.suppressed)
		b.suppressed = 0
	}
	m.log.Warn(msg, attrs...)
}

// allowErrorIndication says whether an Error Indication to a may go out.
func (m *Machine) allowErrorIndication(a AssocID) bool {
	if m.limitOf(a).errs.take(m.now, m.cfg.PeerErrorRate, m.cfg.PeerErrorBurst) {
		return true
	}
	m.out = append(m.out, Action{Kind: Suppressed, Assoc: a, Reason: "error-indication"})
	return false
}
