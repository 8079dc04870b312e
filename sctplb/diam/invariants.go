package diam

import "fmt"

// CheckInvariants verifies the machine's invariants; tests call it after
// every step. They are:
//
//  1. Every Session-Id binding names a server, and each server's session
//     count equals the bindings naming it.
//  2. Every pending request is held by exactly one connection, under the
//     hop-by-hop identifier it was sent with, and was sent to at most
//     MaxTries servers; a server connection holding requests is its
//     server's current connection. So an answer can be relayed at most
//     once.
//  3. The End-to-End index points only at pending requests, each under
//     its own key, and the expiry list holds exactly the pending requests,
//     oldest first. A host number is held exactly by the client
//     connections of its host and its requests in the index, and is
//     freed when neither is left (nothing leaks, no number is shared).
//  4. The client index holds open client connections under their own
//     Origin-Host.
//  5. A server has a connection exactly when it is neither down nor being
//     dialled, and the connection's state is the server's.
func (m *Machine) CheckInvariants() error {
	per := make([]int, len(m.servers))
	for k, b := range m.sessions {
		if b.server < 0 || int(b.server) >= len(m.servers) {
			return fmt.Errorf("session %q bound to server %d", k, b.server)
		}
		per[b.server]++
	}
	for i, sv := range m.servers {
		if sv.sessions != per[i] {
			return fmt.Errorf("server %s counts %d sessions, holds %d", sv.cfg.Name, sv.sessions, per[i])
		}
	}
	held := map[*pending]ConnID{}
	for id, c := range m.conns {
		if c.id != id {
			return fmt.Errorf("connection %d indexed under %d", c.id, id)
		}
		for h, p := range c.pend {
			if prev, dup := held[p]; dup {
				return fmt.Errorf("request pending on connections %d and %d", prev, id)
			}
			held[p] = id
			if p.hbh != h || p.to != id {
				return fmt.Errorf("request with hop-by-hop %#x on %d indexed under %#x on %d", p.hbh, p.to, h, id)
			}
			if len(p.tried) > m.cfg.MaxTries {
				return fmt.Errorf("request sent to %d servers", len(p.tried))
			}
			if c.side == ServerSide && (m.servers[c.server].conn != c || p.server != c.server) {
				return fmt.Errorf("request pending on a stale connection of server %d", c.server)
			}
		}
	}
	n := 0
	var prev *pending
	for p := m.waiting.head; p != nil; p = p.next {
		if _, ok := held[p]; !ok || !p.linked || p.prev != prev {
			return fmt.Errorf("expiry list holds a request no connection awaits (hop-by-hop %#x)", p.hbh)
		}
		if prev != nil && p.sent.Before(prev.sent) {
			return fmt.Errorf("expiry list out of order at hop-by-hop %#x", p.hbh)
		}
		prev = p
		n++
	}
	if n != len(held) || n != m.waiting.n || m.waiting.tail != prev {
		return fmt.Errorf("expiry list holds %d requests (counted %d), %d pending", n, m.waiting.n, len(held))
	}
	holds := map[*hostName]int{}
	for k, p := range m.byE2E {
		if _, ok := held[p]; !ok {
			return fmt.Errorf("end-to-end index holds a request no connection awaits (%#x)", k)
		}
		if p.e2e != k || p.host == nil || k>>32 != uint64(p.host.num) || m.hosts[p.host.name] != p.host {
			return fmt.Errorf("end-to-end index key %#x holds a request keyed %#x", k, p.e2e)
		}
		holds[p.host]++
	}
	for _, c := range m.conns {
		if c.hostNum != nil {
			if c.side != ClientSide || c.hostNum.name != c.host || m.hosts[c.host] != c.hostNum {
				return fmt.Errorf("connection %d (%s, host %q) holds host number of %q", c.id, c.side, c.host, c.hostNum.name)
			}
			holds[c.hostNum]++
		}
	}
	nums := map[uint32]bool{}
	for name, h := range m.hosts {
		if h.name != name || h.num == 0 || nums[h.num] {
			return fmt.Errorf("host %q numbered %d under %q (or twice)", h.name, h.num, name)
		}
		nums[h.num] = true
		if h.refs != holds[h] || h.refs == 0 {
			return fmt.Errorf("host %q held %d times, counts %d", name, holds[h], h.refs)
		}
	}
	if len(holds) != len(m.hosts) {
		return fmt.Errorf("%d host numbers held, %d numbered", len(holds), len(m.hosts))
	}
	for h, c := range m.clients {
		if m.conns[c.id] != c || c.side != ClientSide || c.host != h {
			return fmt.Errorf("client index %q -> connection %d (%s, host %q)", h, c.id, c.side, c.host)
		}
		if c.state != Okay && c.state != Suspect && c.state != Reopen {
			return fmt.Errorf("client %q indexed in state %s", h, c.state)
		}
	}
	for i, sv := range m.servers {
		switch {
		case sv.conn == nil && sv.state != Down && sv.state != Connecting:
			return fmt.Errorf("server %d in state %s without a connection", i, sv.state)
		case sv.conn != nil && (sv.conn.state != sv.state || m.conns[sv.conn.id] != sv.conn):
			return fmt.Errorf("server %d state %s, its connection's %s", i, sv.state, sv.conn.state)
		}
	}
	return nil
}
