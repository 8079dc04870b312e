package diam

import (
	"fmt"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

// Reconfigure changes the servers and the policy in place: the clients'
// connections, the Session-Id bindings of the servers kept and every
// pending request stay. Servers are matched by Name; a kept server keeps
// its connection, watchdog state and bindings (its Weight may change). A
// new server is dialled at once. A removed server gets a DPR (cause
// DO_NOT_WANT_TO_TALK_TO_YOU) and its connection is closed; its pending
// requests go to another server with the T flag, as when a server fails
// (RFC 6733 §5.5.4), or are answered 3002; its bindings end, so the next
// request of each of its sessions is bound by the policy. Identity, mode
// and applications are what peers exchanged capabilities on: changing them
// needs a new machine. The shell validates Servers with ValidateServers
// first; an invalid list is ignored.
type Reconfigure struct {
	Servers []Server
	Policy  Policy
}

func (Reconfigure) isEvent() {}

// ValidateServers checks a server list: names unique and present, weights
// not negative.
func ValidateServers(servers []Server) error {
	seen := map[string]bool{}
	for i, s := range servers {
		if s.Weight < 0 {
			return fmt.Errorf("diam: server %d: negative weight", i)
		}
		if s.Name == "" {
			return fmt.Errorf("diam: server %d: no name", i)
		}
		if seen[s.Name] {
			return fmt.Errorf("diam: server %d: name %q listed twice", i, s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

func (m *Machine) reconfigure(e Reconfigure) {
	if ValidateServers(e.Servers) != nil {
		m.reject("invalid-reconfiguration", 0)
		return
	}
	old := map[string]int{}
	for i, sv := range m.servers {
		old[sv.cfg.Name] = i
	}
	remap := make([]int, len(m.servers))
	for i := range remap {
		remap[i] = -1
	}
	next := make([]*server, 0, len(e.Servers))
	for j, s := range e.Servers {
		if i, ok := old[s.Name]; ok {
			sv := m.servers[i]
			sv.cfg = s
			remap[i] = j
			next = append(next, sv)
			continue
		}
		next = append(next, &server{cfg: s, nextDial: m.now})
	}
	// The removed servers' connections leave the machine now: what
	// arrives on them later is ignored, and their Closed finds nothing.
	var retired []*conn
	for i, sv := range m.servers {
		if remap[i] >= 0 || sv.conn == nil {
			continue
		}
		c := sv.conn
		if c.state == Okay || c.state == Suspect || c.state == Reopen {
			m.send(c, diameter.DPR(m.cfg.Identity, diameter.DisconnectDoNotWantToTalk, m.nextHBH(nil), m.nextHBH(nil)))
		}
		m.emit(Action{Kind: Close, Conn: c.id})
		delete(m.conns, c.id)
		sv.conn = nil
		retired = append(retired, c)
	}
	// Bindings of removed servers end; the others follow their server.
	for k, b := range m.sessions {
		if j := remap[b.server]; j < 0 {
			delete(m.sessions, k)
		} else if j != int(b.server) {
			m.sessions[k] = binding{server: int32(j), last: b.last}
		}
	}
	for _, c := range m.conns {
		if c.side == ServerSide {
			c.server = remap[c.server]
		}
		for _, p := range c.pend {
			if p.server >= 0 {
				p.server = remap[p.server]
			}
			p.tried = remapTried(p.tried, remap)
		}
	}
	for _, c := range retired {
		for _, p := range c.pend {
			// p.server stays >= 0 (a request to a server) until failover
			// forwards it again.
			p.tried = remapTried(p.tried, remap)
		}
	}
	m.servers = next
	m.cfg.Servers = append([]Server(nil), e.Servers...)
	if m.cfg.Policy != e.Policy {
		m.cfg.Policy = e.Policy
		for _, sv := range m.servers {
			sv.current = 0
		}
	}
	if len(m.servers) > 0 {
		m.rr %= len(m.servers)
	} else {
		m.rr = 0
	}
	for i, sv := range m.servers {
		m.emit(Action{Kind: PeerState, Server: i, State: sv.state})
	}
	for _, c := range retired {
		m.failover(c)
	}
	m.dialDue()
}

// remapTried rewrites the servers a request was sent to after a
// reconfiguration; removed ones are dropped (they cannot be picked again).
func remapTried(tried []int, remap []int) []int {
	out := tried[:0]
	for _, s := range tried {
		if s >= 0 && s < len(remap) && remap[s] >= 0 {
			out = append(out, remap[s])
		}
	}
	return out
}
