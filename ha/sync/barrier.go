package sync

import (
	"slices"
	"time"
)

// Barriers: a planned drain must not move the routes before the peers
// hold what this node had at that point (flows opened just before would
// reach a peer that does not know them). A barrier marks, for every peer
// up when it is taken, what has been queued for it so far; it completes
// once each of those peers has acknowledged messages carrying all of it.
//
// The mark is a count per queue (fresh keys, changed keys; machine.go),
// not a sequence number: changed keys wait in their queue without one
// until a message is built, and a key changed again while queued keeps
// its place (so the later value goes out no later than the marked one).
// Fresh keys overtake changed ones, but within a queue keys leave in
// order, so "the first q keys ever queued in each queue have been sent in
// acknowledged messages" (acked >= q for both) says the peer holds the
// marked changes, or newer values of them. A resync replaces the queue by a snapshot of the
// whole table: its End acknowledged, the peer holds everything up to the
// snapshot's start; a snapshot begun after the mark therefore covers it.

// barrier is one barrier not complete yet.
type barrier struct {
	id    uint64
	marks map[string]barrierMark // peers still to acknowledge
}

type barrierMark struct {
	stream uint32    // the peer's stream when the mark was taken
	q      [2]uint64 // each queue's total then (qFresh, qChanged)
	// needEnd: the stream's snapshot was under way, its End must be
	// acknowledged too (the marked keys may sit in its unsent part).
	needEnd bool
}

// Barrier marks what has been queued so far for every peer that is up
// and flushes. The returned id is reported in Output.Barriers (of this
// output already when no peer is up, or each already acknowledged
// everything) once every one of those peers has acknowledged all of it.
// A peer that goes down keeps the barrier waiting: it may come back and
// resume, or get it in a resync; a caller that cannot wait longer uses
// DropBarrier.
func (m *Machine) Barrier(now time.Time) (uint64, Output) {
	m.lastBarrier++
	b := &barrier{id: m.lastBarrier, marks: map[string]barrierMark{}}
	for _, n := range m.names {
		p := m.peers[n]
		if !p.up {
			continue
		}
		b.marks[n] = barrierMark{stream: p.stream, q: [2]uint64{p.queues[qFresh].total, p.queues[qChanged].total}, needEnd: p.resyncing}
	}
	m.barriers = append(m.barriers, b)
	return b.id, m.Flush(now)
}

// Unacked names the peers whose acknowledgement barrier id still waits
// for, sorted; nil once it completed (or was dropped, or never existed).
func (m *Machine) Unacked(id uint64) []string {
	for _, b := range m.barriers {
		if b.id == id {
			return sortedPeers(b.marks)
		}
	}
	return nil
}

// DropBarrier forgets barrier id (its caller stopped waiting) and returns
// the peers that had not acknowledged it.
func (m *Machine) DropBarrier(id uint64) []string {
	for i, b := range m.barriers {
		if b.id == id {
			m.barriers = slices.Delete(m.barriers, i, i+1)
			return sortedPeers(b.marks)
		}
	}
	return nil
}

func sortedPeers(marks map[string]barrierMark) []string {
	out := make([]string, 0, len(marks))
	for n := range marks {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// covered says whether peer p has acknowledged everything mk marked.
func covered(p *peer, mk barrierMark) bool {
	switch {
	case p.endAcked > mk.stream:
		return true // a snapshot begun after the mark was acknowledged whole
	case p.stream != mk.stream, mk.needEnd && p.endAcked != mk.stream:
		return false
	}
	return p.queues[qFresh].acked >= mk.q[qFresh] && p.queues[qChanged].acked >= mk.q[qChanged]
}

// checkBarriers completes the barriers every marked peer now covers. It
// runs at the end of every step, so an acknowledgement is seen before a
// later resync abandons its stream.
func (m *Machine) checkBarriers(out *Output) {
	kept := m.barriers[:0]
	for _, b := range m.barriers {
		for n, mk := range b.marks {
			if covered(m.peers[n], mk) {
				delete(b.marks, n)
			}
		}
		if len(b.marks) == 0 {
			out.Barriers = append(out.Barriers, b.id)
			continue
		}
		kept = append(kept, b)
	}
	clear(m.barriers[len(kept):])
	m.barriers = kept
}
