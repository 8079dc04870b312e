package sync

import (
	"encoding/binary"
	"testing"
	"time"
)

// BenchmarkSenderChurn is the sending machine's work per flow on a loaded
// node, as the HA lab's CPU benchmark drives it (issue 15): a table of
// 24,000 conntrack-sized records (40-byte keys, 200-byte values) in steady
// state, where each flow puts its two entries (new keys) and the two
// entries of the flow 12,000 flows older expire (Local deletions, sent to
// no peer). The producer hands 20 flows at a time and flushes (its
// gather); the peer acknowledges every message at once. One peer. A tool
// for work on the machine (go test -bench SenderChurn), not a make bench
// figure: it has no peer to be a ratio of.
func BenchmarkSenderChurn(b *testing.B) {
	const live, batch = 12_000, 20
	m, err := New(Config{Self: "a", Peers: []string{"b"}, KeepaliveInterval: -1, PeerTimeout: -1}, 1)
	if err != nil {
		b.Fatal(err)
	}
	now := t0
	m.Connected(now, "b")
	m.Receive(now, "b", AppendHello(nil, Hello{Name: "b", Incarnation: 2, Heard: true}))
	p := m.peers["b"]
	ackAll := func() {
		if p.nextSeq > 1 {
			m.Receive(now, "b", AppendAck(nil, Ack{Incarnation: m.inc, Stream: p.stream, Seq: p.nextSeq - 1}))
		}
	}
	key := func(flow, dir int) []byte {
		k := make([]byte, 40)
		binary.BigEndian.PutUint64(k, uint64(flow))
		k[8] = byte(dir)
		return k
	}
	value := make([]byte, 200)
	recs := make([]Record, 0, 4*batch)
	flow := 0
	step := func() {
		recs = recs[:0]
		for range batch {
			for dir := range 2 {
				recs = append(recs, Record{Kind: 1, Key: key(flow, dir), Value: value})
				if flow >= live {
					recs = append(recs, Record{Kind: 1, Key: key(flow-live, dir), Deleted: true, Local: true})
				}
			}
			flow++
		}
		now = now.Add(10 * time.Millisecond)
		m.putChecked(now, recs)
		m.Flush(now)
		ackAll()
	}
	for flow < live {
		step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		step()
	}
	b.StopTimer()
	if m.Len() != 2*live {
		b.Fatalf("table of %d records, want %d", m.Len(), 2*live)
	}
}
