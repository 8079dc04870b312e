package sync

import (
	"fmt"
	"strings"
	"time"
)

// checkStep states what must hold for a machine after every step,
// whatever arrived:
//   - memory is bounded: per peer at most MaxPending changed keys wait and
//     at most Window messages are unacknowledged;
//   - the unacknowledged messages are exactly seqs acked+1 .. nextSeq-1, in
//     order, and a peer that is not up has nothing scheduled;
//   - pending keys and their queue agree (each queued once);
//   - a peer marked for resync queues nothing (the snapshot will carry it);
//   - a machine that has something in flight to a peer that is up has its
//     retransmission timer running, and asks to be woken no later than it
//     (checkWake); the timeout stays within RetransmitTimeout ..
//     maxBackoff times it, and the timer is never set further than the
//     timeout; the messages resent form a prefix of those in flight (a
//     resend sends them all, later ones are new: Karn's rule relies on it);
//   - the barrier counts agree with the queue: what was queued and not
//     sent is what the queue holds, messages carry growing counts between
//     what was acknowledged and what was sent, and no barrier marks more
//     than was queued or a stream not begun;
//   - what the consumer holds from each peer (built from Output.Applied
//     alone, by the caller) has exactly the keys the machine believes it
//     delivered; checkConsumer does that part.
func checkStep(m *Machine) string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	for _, n := range m.names {
		p := m.peers[n]
		if len(p.pending) > m.cfg.MaxPending {
			bad("%s: %d pending keys, bound %d", n, len(p.pending), m.cfg.MaxPending)
		}
		if len(p.inflight) > m.cfg.Window {
			bad("%s: %d messages in flight, window %d", n, len(p.inflight), m.cfg.Window)
		}
		queued := 0
		for i, q := range p.queues {
			queued += len(q.keys)
			for _, tk := range q.keys {
				if _, ok := p.pending[tk]; !ok {
					bad("%s: queued key %q (queue %d) not pending", n, tk, i)
				}
			}
		}
		if len(p.pending) != queued {
			bad("%s: %d pending keys, %d queued", n, len(p.pending), queued)
		}
		if p.needResync && len(p.pending) > 0 {
			bad("%s: marked for resync with %d pending", n, len(p.pending))
		}
		if p.acked >= p.nextSeq {
			bad("%s: acked %d, next %d", n, p.acked, p.nextSeq)
		}
		if uint64(len(p.inflight)) != p.nextSeq-1-p.acked {
			bad("%s: %d in flight, acked %d next %d", n, len(p.inflight), p.acked, p.nextSeq)
		}
		for i, f := range p.inflight {
			if f.seq != p.acked+1+uint64(i) {
				bad("%s: in flight #%d has seq %d after ack %d", n, i, f.seq, p.acked)
			}
		}
		if r := p.rtt.rto; r < m.cfg.RetransmitTimeout || r > maxBackoff*m.cfg.RetransmitTimeout {
			bad("%s: retransmission timeout %v outside %v .. %v", n, r, m.cfg.RetransmitTimeout, maxBackoff*m.cfg.RetransmitTimeout)
		}
		if p.up && len(p.inflight) > 0 && p.rtoAt.IsZero() {
			bad("%s: %d messages in flight, no retransmission timer", n, len(p.inflight))
		}
		for i := 1; i < len(p.inflight); i++ {
			if p.inflight[i].resent && !p.inflight[i-1].resent {
				bad("%s: in flight #%d resent after #%d was not", n, i, i-1)
			}
		}
		if p.resyncing && p.snapPos > len(p.snap) {
			bad("%s: snapshot position %d of %d", n, p.snapPos, len(p.snap))
		}
		for i, q := range p.queues {
			if q.total-q.sent != uint64(len(q.keys)) || q.acked > q.sent {
				bad("%s: queue %d barrier counts queued %d sent %d acked %d, %d in the queue", n, i, q.total, q.sent, q.acked, len(q.keys))
			}
			last := q.acked
			for _, f := range p.inflight {
				if f.qEnd[i] < last || f.qEnd[i] > q.sent {
					bad("%s: message %d carries count %d of queue %d after %d, sent %d", n, f.seq, f.qEnd[i], i, last, q.sent)
				}
				last = f.qEnd[i]
			}
		}
		if p.synced && p.rExpected < 2 {
			bad("%s: synced before any message of its stream", n)
		}
	}
	for _, b := range m.barriers {
		if len(b.marks) == 0 {
			bad("barrier %d complete and still kept", b.id)
		}
		for n, mk := range b.marks {
			p := m.peers[n]
			if mk.q[qFresh] > p.queues[qFresh].total || mk.q[qChanged] > p.queues[qChanged].total || mk.stream > p.stream {
				bad("barrier %d marks %s at stream %d counts %v, now stream %d counts %d %d", b.id, n, mk.stream, mk.q, p.stream, p.queues[qFresh].total, p.queues[qChanged].total)
			}
		}
	}
	return strings.Join(errs, "; ")
}

// checkWake: after a step at now, every peer up with messages in flight
// has its timer within its timeout from now, and out asks to be woken by
// then.
func checkWake(m *Machine, now time.Time, out Output) string {
	var errs []string
	for _, n := range m.names {
		p := m.peers[n]
		if !p.up || len(p.inflight) == 0 || p.rtoAt.IsZero() {
			continue
		}
		if p.rtoAt.After(now.Add(p.rtt.rto)) {
			errs = append(errs, fmt.Sprintf("%s: timer %v away, timeout %v", n, p.rtoAt.Sub(now), p.rtt.rto))
		}
		if out.Wake.IsZero() || out.Wake.After(p.rtoAt) {
			errs = append(errs, fmt.Sprintf("%s: wake %v after the retransmission timer %v", n, out.Wake.Sub(now), p.rtoAt.Sub(now)))
		}
	}
	return strings.Join(errs, "; ")
}

// checkConsumer compares what the consumer applied from each peer with the
// keys the machine tracks for it.
func checkConsumer(m *Machine, applied map[string]map[string]string) string {
	var errs []string
	for _, n := range m.names {
		got := applied[n]
		want := m.peers[n].rKeys
		if len(got) != len(want) {
			errs = append(errs, fmt.Sprintf("from %s: consumer holds %d keys, machine tracks %d", n, len(got), len(want)))
			continue
		}
		for k := range want {
			if _, ok := got[k]; !ok {
				errs = append(errs, fmt.Sprintf("from %s: key %q tracked, not applied", n, k))
				break
			}
		}
	}
	return strings.Join(errs, "; ")
}
