package sync

import "time"

// Retransmission: the messages in flight to a peer are resent together
// (go-back-N) when a Nack arrives (send.go's ack): the peer saw a gap.
// When the peer's retransmission timer expires, only the newest message in
// flight is sent again, a probe (RFC 8985's tail loss probe): a timeout
// means a peer that is slow far more often than a lost message (the
// transport is TCP: within a connection nothing is lost), and resending
// the whole window to a slow peer gave it up to a window of duplicates
// to read (a tenth of what a loaded node sent, TestBenchHASyncCPUPerFlow).
// A probe finds a loss all the same: a message lost before it makes the
// probe out of order at the peer, which Nacks, and the window follows; a
// lost probe or acknowledgement is answered by the next expiry, backed
// off.
//
// The timeout adapts to the measured acknowledgement delay as RFC 6298
// computes TCP's: a fixed timer (it was Config.RetransmitTimeout, 200 ms)
// fired under load while the peer's acknowledgements were merely late (its
// receive path waits for the datapath's lock on a loaded 2-core node), and
// each firing resent a whole window to a peer that was only slow. The
// delay measured includes the peer applying the records before it
// acknowledges them (loop.go), which is what the timer waits for.

// rtoEstimator is one peer's retransmission timeout (RFC 6298): SRTT and
// RTTVAR from acknowledgement delays (alpha 1/8, beta 1/4, K 4), RTO =
// SRTT + max(margin, 4 RTTVAR), doubled at each expiry (RFC 6298 5.5) and
// kept so until a new sample arrives (Karn: a resent message gives none,
// its acknowledgement may be of either copy), always within [lo, hi]: lo
// is Config.RetransmitTimeout (also the timeout before any sample), hi
// maxBackoff times it (200 ms .. 3.2 s by default; RFC 6298's 1 s floor
// and 60 s ceiling are for the Internet, the sync runs in a site and must
// resend well within the peer timeout).
//
// margin stands for RFC 6298's clock granularity G, at half the floor
// (100 ms by default): a peer that acknowledges each batch after its
// apply has a steady delay, RTTVAR decays to almost nothing, and with a
// 1 ms G the timer sat 1 ms above a 700 ms delay and fired whenever the
// loaded machine stalled the peer a little longer (measured: up to 3
// timeouts in 3 s; Linux keeps 4 RTTVAR at least its 200 ms minimum RTO
// for the same reason).
type rtoEstimator struct {
	lo, hi, margin time.Duration
	srtt, rttvar   time.Duration
	measured       bool
	rto            time.Duration // current timeout, backoff included
}

func newRTOEstimator(lo time.Duration) rtoEstimator {
	return rtoEstimator{lo: lo, hi: maxBackoff * lo, margin: lo / 2, rto: lo}
}

// sample folds in one acknowledgement delay r (RFC 6298 2.2, 2.3) and sets
// the timeout from the estimate, dropping any backoff (2.5 after 5.7).
func (e *rtoEstimator) sample(r time.Duration) {
	r = max(r, 0)
	if !e.measured {
		e.srtt, e.rttvar, e.measured = r, r/2, true
	} else {
		d := e.srtt - r
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + r) / 8
	}
	e.rto = e.estimate()
}

// estimate is the timeout from SRTT and RTTVAR, clamped, without backoff.
func (e *rtoEstimator) estimate() time.Duration {
	if !e.measured {
		return e.lo
	}
	return min(max(e.srtt+max(e.margin, 4*e.rttvar), e.lo), e.hi)
}

// backoff doubles the timeout after an expiry (RFC 6298 5.5), up to hi.
func (e *rtoEstimator) backoff() { e.rto = min(2*e.rto, e.hi) }

// resetBackoff goes back to the estimate: a new connection does not
// inherit the expiries of the last one.
func (e *rtoEstimator) resetBackoff() { e.rto = e.estimate() }

// retransmitDue probes p when its retransmission timer expired: the
// newest message in flight goes again (see the top).
func (m *Machine) retransmitDue(now time.Time, p *peer, out *Output) {
	if p.up && len(p.inflight) > 0 && !p.rtoAt.IsZero() && !now.Before(p.rtoAt) {
		m.stats.Timeouts++
		// Back off: over TCP a timeout means a slow peer more often
		// than a lost message, and probing a slow peer often only adds
		// to its load.
		p.rtt.backoff()
		m.probe(now, p, out)
	}
}

// probe sends the newest message in flight to p again and restarts its
// timer. Every message in flight is marked: an acknowledgement is
// cumulative, so one that arrives now may have been drawn by the probe
// and measures none of them (Karn).
func (m *Machine) probe(now time.Time, p *peer, out *Output) {
	for i := range p.inflight {
		p.inflight[i].resent = true
	}
	m.sendAgain(p, &p.inflight[len(p.inflight)-1], out)
	p.rtoAt = now.Add(p.rtt.rto)
}

// resend sends every message in flight to p again and restarts its timer.
// The messages are marked: their acknowledgement measures nothing (Karn).
func (m *Machine) resend(now time.Time, p *peer, out *Output) {
	for i := range p.inflight {
		f := &p.inflight[i]
		f.resent = true
		m.sendAgain(p, f, out)
	}
	p.rtoAt = now.Add(p.rtt.rto)
}

// sendAgain sends f, a message in flight to p, once more, and counts it.
func (m *Machine) sendAgain(p *peer, f *flight, out *Output) {
	m.stats.ResentMessages++
	m.stats.ResentRecords += uint64(f.records)
	m.stats.SentBytes += uint64(len(f.data) + FrameHeader)
	out.Sends = append(out.Sends, Send{Peer: p.name, Data: f.data})
}

// sampleAck measures the delay of an acknowledgement up to seq from the
// oldest message it newly acknowledges (RFC 7323 measures from the
// segment that advanced the window too: the delay the timer waits for,
// batching at the peer included), unless that message was resent (then
// every newer one in flight then was too).
func (p *peer) sampleAck(now time.Time, seq uint64) {
	if seq <= p.acked || len(p.inflight) == 0 {
		return
	}
	if f := p.inflight[0]; !f.resent {
		p.rtt.sample(now.Sub(f.sentAt))
	}
}
