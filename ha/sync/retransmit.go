package sync

import "time"

// Retransmission: the messages in flight to a peer are resent together
// (go-back-N) when the peer's retransmission timer expires or a Nack
// arrives (send.go's ack).

// retransmitDue resends p's window when its retransmission timer expired.
func (m *Machine) retransmitDue(now time.Time, p *peer, out *Output) {
	if p.up && len(p.inflight) > 0 && !p.rtoAt.IsZero() && !now.Before(p.rtoAt) {
		m.stats.Timeouts++
		// Back off: over TCP a timeout means a slow peer more often
		// than a lost message, and resending the window to a slow
		// peer only adds to its load.
		p.backoff = min(max(p.backoff, m.cfg.RetransmitTimeout)*2, maxBackoff*m.cfg.RetransmitTimeout)
		m.resend(now, p, out)
	}
}

// resend sends every message in flight to p again and restarts its timer.
func (m *Machine) resend(now time.Time, p *peer, out *Output) {
	for _, f := range p.inflight {
		m.stats.ResentMessages++
		m.stats.ResentRecords += uint64(f.records)
		m.stats.SentBytes += uint64(len(f.data) + FrameHeader)
		out.Sends = append(out.Sends, Send{Peer: p.name, Data: f.data})
	}
	p.rtoAt = now.Add(max(p.backoff, m.cfg.RetransmitTimeout))
}
