package sync

import (
	"fmt"
	"time"
)

// Liveness. TCP alone tells a dead peer only when it gives up: at once
// when the peer's process dies (its kernel closes the connection), but
// after minutes when the peer's whole node or its link dies silently
// (keepalive probes on an idle connection, the retransmission limit on one
// with unacknowledged data). So every message counts as a sign of life,
// and while a connection is up each side sends one at least every
// KeepaliveInterval: when nothing else went out for that long, a hello
// with Heard set, which a peer that is up takes as nothing more (version 1
// peers included). A peer silent for PeerTimeout is lost: its connection
// is closed (Close.Lost, so the shell reports the loss as one from the
// peer's or the network's side), and the redial finds it when it is back.
//
// Only a peer whose hello offered keepalives (Hello.Keepalive) is timed
// out: an older version sends nothing on an idle connection, and closing
// it every PeerTimeout would only churn the stream. Against such a peer
// the sync is as before (the loss waits for TCP).

// noteSends records when each peer was last sent something.
func (m *Machine) noteSends(now time.Time, sends []Send) {
	for _, s := range sends {
		if p := m.peers[s.Peer]; p != nil {
			p.sentAt = now
		}
	}
}

// liveness sends p a keepalive when due and closes its connection when it
// has been silent too long.
func (m *Machine) liveness(now time.Time, p *peer, out *Output) {
	if !p.up {
		return
	}
	if m.cfg.PeerTimeout > 0 && p.keepalive && now.Sub(p.heardAt) >= m.cfg.PeerTimeout {
		m.stats.SilentPeers++
		out.Close = append(out.Close, Close{Peer: p.name, Lost: true,
			Reason: fmt.Sprintf("nothing received for %v (peer timeout %v)", now.Sub(p.heardAt), m.cfg.PeerTimeout)})
		// Once: the shell's Disconnected follows; until then no second close.
		p.heardAt = now
		return
	}
	sent := p.sentAt
	for _, s := range out.Sends { // what this step sends already counts
		if s.Peer == p.name {
			sent = now
		}
	}
	if m.cfg.KeepaliveInterval > 0 && now.Sub(sent) >= m.cfg.KeepaliveInterval {
		m.stats.Keepalives++
		m.sayHello(now, p, out)
	}
}

// livenessWake is when p's liveness needs a Tick (zero: never).
func (m *Machine) livenessWake(p *peer) time.Time {
	if !p.up {
		return time.Time{}
	}
	var w time.Time
	if m.cfg.KeepaliveInterval > 0 {
		w = p.sentAt.Add(m.cfg.KeepaliveInterval)
	}
	if m.cfg.PeerTimeout > 0 && p.keepalive {
		if t := p.heardAt.Add(m.cfg.PeerTimeout); w.IsZero() || t.Before(w) {
			w = t
		}
	}
	return w
}
