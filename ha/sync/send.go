package sync

// Sending: changed keys are queued per peer (coalesced), packed into
// numbered data messages while the peer's window allows, and released
// when the peer acknowledges them; more than MaxPending queued keys switch
// the peer to a resync (back-pressure).

import (
	"fmt"
	"time"
)

// flight is a data message sent to a peer and not acknowledged yet.
type flight struct {
	seq     uint64
	data    []byte
	records int
	end     bool
	first   time.Time // earliest change carried, zero for snapshot only
	// sentAt is when it was sent first; resent says it was sent again,
	// or was in flight when a probe went (retransmit.go), so its
	// acknowledgement measures nothing (Karn).
	sentAt time.Time
	resent bool
	// qEnd is each queue's sent count once this message was built
	// (barriers): [fresh, changed].
	qEnd [2]uint64
}

// queue queues tk for every peer in queue q, unless it waits already
// (in whichever queue: a key is in one queue at most, so its changes reach
// the peer in order).
func (m *Machine) queue(now time.Time, tk string, q int, out *Output) {
	for _, n := range m.names {
		p := m.peers[n]
		if p.needResync {
			continue // the snapshot will carry it
		}
		if _, ok := p.pending[tk]; ok {
			m.stats.Coalesced++
			continue
		}
		p.pending[tk] = now
		p.queues[q].keys = append(p.queues[q].keys, tk)
		p.queues[q].total++
		p.pendBytes += recordHdrLen + len(tk) + len(m.table[tk].v)
		if len(p.pending) > m.cfg.MaxPending {
			m.stats.Overflows++
			if p.up && p.resyncing && !p.endSent && len(p.snap)-p.snapPos+len(p.pending) <= len(m.table)+m.cfg.MaxPending {
				// A snapshot is under way: its tail takes the changed keys
				// rather than starting over and losing what was sent. The
				// tail stays under a fresh snapshot's size plus MaxPending.
				for i := range p.queues {
					p.snap = append(p.snap, p.queues[i].keys...)
				}
				p.dropQueued() // the snapshot carries them now
				m.stats.Folded++
			} else {
				m.resync(now, p, out)
			}
			continue
		}
		m.fill(now, p, false, out)
	}
}

// fill sends data messages to p while its window allows. Without force a
// message goes out only when full (or when it opens or closes a stream).
func (m *Machine) fill(now time.Time, p *peer, force bool, out *Output) {
	if !p.up {
		return
	}
	for len(p.inflight) < m.cfg.Window {
		d := Data{Incarnation: m.inc, Stream: p.stream, Seq: p.nextSeq, Begin: p.nextSeq == 1}
		snapshotting := p.resyncing && !p.endSent
		if !d.Begin && len(p.pending) == 0 && !snapshotting {
			return
		}
		if !force && !d.Begin && !snapshotting && p.pendBytes < m.cfg.BatchBytes {
			return // not a full batch yet: wait for Flush
		}
		size := dataHdrLen
		var first time.Time
		recs := m.buf[:0]
		var taken [2]int // keys taken from each queue, fresh first
		for i := range p.queues {
			q := p.queues[i].keys
			for ; taken[i] < len(q) && size < m.cfg.BatchBytes; taken[i]++ {
				tk := q[taken[i]]
				at := p.pending[tk]
				if first.IsZero() || at.Before(first) {
					first = at
				}
				r := m.record(now, p, tk)
				recs = append(recs, r)
				size += r.len()
			}
		}
		si := p.snapPos
		if p.resyncing {
			for ; si < len(p.snap) && size < m.cfg.BatchBytes; si++ {
				// A key deleted since goes as a deletion: it may have been
				// sent earlier in this stream (folded keys are sent again).
				r := m.record(now, p, p.snap[si])
				recs = append(recs, r)
				size += r.len()
			}
			d.End = si == len(p.snap) && !p.endSent
		}
		if !force && !d.Begin && !d.End && size < m.cfg.BatchBytes {
			m.buf = recs
			return
		}
		for i := range p.queues {
			q := &p.queues[i]
			for _, tk := range q.keys[:taken[i]] {
				delete(p.pending, tk)
			}
			q.keys = q.keys[taken[i]:]
			q.sent += uint64(taken[i])
			if len(q.keys) == 0 {
				q.keys = nil
			}
		}
		if len(p.pending) == 0 {
			p.pendBytes = 0
		} else {
			p.pendBytes = max(0, p.pendBytes-(size-dataHdrLen))
		}
		for _, tk := range p.snap[p.snapPos:si] {
			if _, ok := m.table[tk]; ok {
				m.snapSent[tk] = struct{}{}
			}
		}
		p.snapPos = si
		if d.End {
			p.endSent = true
		}
		b := appendDataHeader(make([]byte, 0, size), d, uint32(len(recs)))
		for _, r := range recs {
			b = appendTableRecord(b, r.tk, r.v, r.deleted, r.held)
		}
		m.buf = recs[:0]
		p.inflight = append(p.inflight, flight{seq: d.Seq, data: b, records: len(recs), end: d.End, first: first, sentAt: now, qEnd: [2]uint64{p.queues[qFresh].sent, p.queues[qChanged].sent}})
		p.nextSeq++
		if p.rtoAt.IsZero() {
			p.rtoAt = now.Add(p.rtt.rto)
		}
		m.stats.SentMessages++
		m.stats.SentRecords += uint64(len(recs))
		m.stats.SentBytes += uint64(len(b) + FrameHeader)
		out.Sends = append(out.Sends, Send{Peer: p.name, Data: b})
	}
	if len(p.inflight) >= m.cfg.Window {
		m.stats.WindowFull++
	}
}

// sendRec is a record as fill takes it from the table: encoded straight
// from the table's key string, which a Record would copy into a key
// slice first.
type sendRec struct {
	tk      string
	v       []byte
	deleted bool
	held    uint32 // milliseconds (heldMillis), for a peer that takes it
}

func (r sendRec) len() int { return recordSize(len(r.tk)-2, len(r.v), r.held) }

// record is tk's record for p now: its value, with how long it was held
// when p takes that, or its deletion.
func (m *Machine) record(now time.Time, p *peer, tk string) sendRec {
	v, ok := m.table[tk]
	r := sendRec{tk: tk, v: v.v, deleted: !ok}
	if ok && p.held {
		r.held = heldMillis(m.heldAt(now, v), false)
	}
	return r
}

func (m *Machine) ack(now time.Time, p *peer, a *Ack, out *Output) {
	if a.Incarnation != m.inc || a.Stream != p.stream || !p.up {
		m.stats.StaleAcks++
		return
	}
	if a.Seq >= p.nextSeq {
		// Acknowledging what was never sent: a broken peer.
		m.stats.Malformed++
		out.Close = append(out.Close, Close{Peer: p.name, Reason: fmt.Sprintf("ack of seq %d, only %d sent", a.Seq, p.nextSeq-1)})
		return
	}
	p.sampleAck(now, a.Seq)
	m.ackUpTo(now, p, a.Seq)
	if a.Nack && len(p.inflight) > 0 && (p.lastNack.IsZero() || now.Sub(p.lastNack) >= m.cfg.NackHoldoff) {
		p.lastNack = now
		m.stats.Nacks++
		m.resend(now, p, out)
	}
	m.fill(now, p, true, out)
}

func (m *Machine) ackUpTo(now time.Time, p *peer, seq uint64) {
	if seq <= p.acked {
		return
	}
	n := 0
	for n < len(p.inflight) && p.inflight[n].seq <= seq {
		f := p.inflight[n]
		if !f.first.IsZero() {
			m.stats.Lag.observe(now.Sub(f.first))
		}
		for i := range p.queues {
			p.queues[i].acked = f.qEnd[i]
		}
		if f.end {
			p.endAcked = p.stream
			p.resyncing = false
			p.snap = p.snap[:0]
			p.snapPos = 0
		}
		n++
	}
	p.inflight = append(p.inflight[:0], p.inflight[n:]...)
	p.acked = seq
	p.rtoAt = time.Time{}
	if len(p.inflight) > 0 {
		p.rtoAt = now.Add(p.rtt.rto)
	}
}
