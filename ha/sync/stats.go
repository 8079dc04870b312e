package sync

import (
	"time"
)

// Stats counts what a machine did. The daemon exports it as metrics.
type Stats struct {
	// Sending side.
	SentMessages, SentRecords, SentBytes uint64 // bytes include frame headers and resends
	ResentMessages, ResentRecords        uint64
	Timeouts, Nacks                      uint64 // what caused resends
	Coalesced                            uint64 // changes merged into one not yet sent
	Resyncs                              uint64 // bulk resyncs started
	Resumes                              uint64 // reconnects resumed without a resync
	Overflows                            uint64 // pending bound exceeded (back-pressure)
	Folded                               uint64 // of which folded into the snapshot under way, not restarted
	WindowFull                           uint64 // fills stopped by a full window
	StaleAcks                            uint64
	// Receiving side.
	ReceivedMessages, ReceivedRecords uint64
	ResyncsCompleted                  uint64
	Swept                             uint64 // records removed at the end of a resync
	Duplicates, OutOfOrder, Stale     uint64
	Malformed, UnknownPeer            uint64
	PeerUps, PeerLosses               uint64
	// Keepalives counts keepalive hellos sent, SilentPeers connections
	// closed because the peer was silent past PeerTimeout (liveness.go).
	Keepalives, SilentPeers uint64
	// PeersUp is how many peers are connected now (filled by Stats()).
	PeersUp int
	// Peers are each peer's figures now, by name (filled by Stats()).
	Peers []PeerStats
	// Lag is the time from a change to its acknowledgement by a peer.
	Lag Histogram
}

// PeerStats is one peer's retransmission timer (retransmit.go).
type PeerStats struct {
	Name string
	// RTO is the retransmission timeout now, backoff included.
	RTO time.Duration
	// SRTT and RTTVar are the smoothed acknowledgement delay and its
	// variation; both zero until a delay was measured.
	SRTT, RTTVar time.Duration
}

// LagBuckets are the upper bounds of the lag histogram's buckets; a last
// bucket counts what is above the highest bound.
var LagBuckets = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Histogram counts observations per LagBuckets bucket (Prometheus style,
// not cumulative: Counts[i] is the number in (LagBuckets[i-1], LagBuckets[i]]).
type Histogram struct {
	Counts [17]uint64
	Count  uint64
	Sum    time.Duration
}

func (h *Histogram) observe(d time.Duration) {
	i := 0
	for i < len(LagBuckets) && d > LagBuckets[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += d
}

// Stats returns a copy of the counters.
func (m *Machine) Stats() Stats {
	s := m.stats
	s.Peers = make([]PeerStats, 0, len(m.names))
	for _, n := range m.names {
		p := m.peers[n]
		if p.up {
			s.PeersUp++
		}
		s.Peers = append(s.Peers, PeerStats{Name: n, RTO: p.rtt.rto, SRTT: p.rtt.srtt, RTTVar: p.rtt.rttvar})
	}
	return s
}
