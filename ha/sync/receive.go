package sync

import (
	"slices"
	"time"
)

// The receiving side: a peer's stream to us, applied strictly in order.

// newer says whether stream (inc, s) comes after (curInc, curS).
func newer(inc uint64, s uint32, curInc uint64, curS uint32) bool {
	return inc > curInc || inc == curInc && s > curS
}

func (m *Machine) data(now time.Time, p *peer, d *Data, out *Output) {
	if d.Begin && newer(d.Incarnation, d.Stream, p.rInc, p.rStream) {
		p.rInc, p.rStream, p.rExpected = d.Incarnation, d.Stream, 1
		p.rGen++
		p.synced = false
	}
	ackMsg := func(seq uint64, nack bool) {
		out.Sends = append(out.Sends, Send{Peer: p.name, Data: AppendAck(nil, Ack{Incarnation: d.Incarnation, Stream: d.Stream, Seq: seq, Nack: nack})})
	}
	if d.Incarnation != p.rInc || d.Stream != p.rStream {
		if newer(d.Incarnation, d.Stream, p.rInc, p.rStream) {
			// A new stream whose Begin we missed: ask for it again.
			m.stats.OutOfOrder++
			ackMsg(0, true)
			return
		}
		m.stats.Stale++
		return
	}
	switch {
	case d.Seq < p.rExpected:
		m.stats.Duplicates++
		ackMsg(p.rExpected-1, false)
		return
	case d.Seq > p.rExpected:
		m.stats.OutOfOrder++
		ackMsg(p.rExpected-1, true)
		return
	}
	for _, r := range d.Records {
		tk := KeyOf(r.Kind, r.Key)
		if r.Deleted {
			if _, ok := p.rKeys[tk]; !ok {
				continue
			}
			delete(p.rKeys, tk)
		} else {
			p.rKeys[tk] = p.rGen
		}
		m.stats.ReceivedRecords++
		out.Applied = append(out.Applied, Applied{From: p.name, Record: r})
	}
	if d.End {
		// Whatever the snapshot did not carry is gone at the sender.
		var gone []string
		for tk, g := range p.rKeys {
			if g != p.rGen {
				gone = append(gone, tk)
			}
		}
		slices.Sort(gone)
		for _, tk := range gone {
			delete(p.rKeys, tk)
			kind, key := splitKey(tk)
			out.Applied = append(out.Applied, Applied{From: p.name, Record: Record{Kind: kind, Key: key, Deleted: true}})
		}
		m.stats.Swept += uint64(len(gone))
		m.stats.ResyncsCompleted++
		p.synced = true
		out.Synced = append(out.Synced, p.name)
	}
	m.stats.ReceivedMessages++
	p.rExpected++
	ackMsg(d.Seq, false)
}
