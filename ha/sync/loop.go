package sync

import (
	"time"
)

// loop owns the machine's inputs: producer operations, connection events,
// messages and timers, one at a time.
func (n *Node) loop() {
	defer n.wg.Done()
	conns := map[string]*conn{}
	held := map[string][]byte{} // per peer, a message the Impair hook delayed
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	redial := time.NewTicker(n.cfg.RedialInterval)
	defer redial.Stop()
	dialing := map[string]bool{}
	var wake time.Time

	send := func(peer string, b []byte) {
		c := conns[peer]
		if c == nil {
			return
		}
		if n.cfg.Impair != nil {
			f := n.cfg.Impair(peer)
			if f.Drop {
				return
			}
			if f.Delay && held[peer] == nil {
				held[peer] = b
				return
			}
		}
		ok := c.send(b)
		if h := held[peer]; h != nil {
			delete(held, peer)
			ok = c.send(h) && ok
		}
		if !ok {
			n.slowPeers.Add(1)
			n.log.Warn("sync peer does not read, closing its connection", "peer", peer)
			c.close() // its reader reports the loss
		}
	}
	handle := func(out Output) {
		// Applied before anything is sent: the acknowledgements among the
		// sends then say the records are in the consumer's table (the
		// datapath), not only received; a drain's barrier relies on it,
		// and the lag counts the import.
		if len(out.Applied) > 0 && n.cfg.Apply != nil {
			n.cfg.Apply(out.Applied)
		}
		for _, s := range out.Sends {
			send(s.Peer, s.Data)
		}
		for _, p := range out.Synced {
			n.log.Info("bulk resync from peer complete", "peer", p)
			if n.cfg.OnSynced != nil {
				n.cfg.OnSynced(p)
			}
		}
		n.barriersDone(out.Barriers)
		for _, c := range out.Close {
			if c.Lost {
				n.log.Warn("sync peer silent: closing its connection, peer lost", "peer", c.Peer, "reason", c.Reason)
			} else {
				n.log.Warn("closing sync connection", "peer", c.Peer, "reason", c.Reason)
			}
			if cn := conns[c.Peer]; cn != nil {
				if c.Lost {
					cn.silent.Store(true)
				}
				cn.close() // its reader reports the loss
			}
		}
		if !out.Wake.IsZero() && (wake.IsZero() || out.Wake.Before(wake)) {
			wake = out.Wake
			d := time.Until(wake)
			if d < 0 {
				d = 0
			}
			timer.Reset(d)
		}
	}
	step := func(f func(now time.Time) Output) {
		n.mu.Lock()
		out := f(time.Now())
		n.mu.Unlock()
		handle(out)
	}
	dialAll := func() {
		for _, name := range n.m.names {
			if name > n.cfg.Self && conns[name] == nil && !dialing[name] {
				dialing[name] = true
				n.wg.Add(1)
				go n.dial(n.peers[name])
			}
		}
	}
	// onEvent handles one event from the connections; a batch of messages
	// may end at the next event of another kind, returned to be handled
	// next (nil when none).
	onEvent := func(ev event) *event {
		switch ev.kind {
		case evUp:
			dialing[ev.peer] = false
			if old := conns[ev.peer]; old != nil {
				// A rejoining peer replaces its old connection.
				old.close()
				delete(conns, ev.peer)
				step(func(now time.Time) Output { return n.m.Disconnected(now, ev.peer) })
			}
			conns[ev.peer] = ev.c
			delete(held, ev.peer)
			// The certificate the peer presented: after a renewal, which
			// one each connection was made with.
			pc := ev.c.tc.ConnectionState().PeerCertificates[0]
			n.log.Info("sync peer connected", "peer", ev.peer, "certSerial", pc.SerialNumber.String(), "certNotAfter", pc.NotAfter)
			step(func(now time.Time) Output { return n.m.Connected(now, ev.peer) })
		case evDown:
			if ev.c == nil { // a dial failed
				dialing[ev.peer] = false
				return nil
			}
			if conns[ev.peer] != ev.c {
				return nil
			}
			delete(conns, ev.peer)
			delete(held, ev.peer)
			// A connection closed here for the peer's silence is a loss
			// like one the network ended.
			silent := ev.c.silent.Load()
			n.log.Info("sync peer disconnected", "peer", ev.peer, "closedHere", ev.closedHere, "silent", silent)
			step(func(now time.Time) Output { return n.m.Disconnected(now, ev.peer) })
			if (!ev.closedHere || silent) && n.cfg.OnPeerLost != nil {
				n.cfg.OnPeerLost(ev.peer)
			}
		case evMsg:
			// Every message already waiting is received in this step
			// and its records applied in one Apply: one import (one
			// wait for the datapath's lock, one address filter write)
			// for what arrived while the previous one ran, instead of
			// one per message, so a receiver slowed down catches up
			// rather than falling further behind. Acknowledgements
			// still go out only after their records are applied.
			msgs := []event{ev}
			next := takeMessages(n.events, &msgs, maxReceiveBatch)
			step(func(now time.Time) Output {
				var all Output
				for _, e := range msgs {
					if conns[e.peer] != e.c {
						continue // from a connection already replaced
					}
					merge(&all, n.m.Receive(now, e.peer, e.data))
				}
				return all
			})
			return next
		}
		return nil
	}
	dialAll()
	for {
		select {
		case <-n.ctx.Done():
			for _, c := range conns {
				c.close()
			}
			return
		case <-n.opsWake:
			n.opsMu.Lock()
			ops, reqs := n.ops, n.barrierReqs
			n.ops, n.barrierReqs = nil, nil
			n.opsMu.Unlock()
			step(func(now time.Time) Output {
				// Checked by Put and PutAll, and the node's (Put
				// copied them, PutAll took them): the table keeps them.
				all := n.m.putChecked(now, ops)
				merge(&all, n.m.Flush(now))
				n.takeBarriers(now, reqs, &all)
				return all
			})
		case ev := <-n.events:
			for e := &ev; e != nil; {
				e = onEvent(*e)
			}
		case <-timer.C:
			wake = time.Time{}
			for p, h := range held {
				delete(held, p)
				if c := conns[p]; c != nil {
					_ = c.send(h) // bounded by send above
				}
			}
			step(n.m.Tick)
		case peer := <-n.drop:
			if c := conns[peer]; c != nil {
				c.close()
			}
		case <-redial.C:
			dialAll()
			if len(held) > 0 || wake.IsZero() {
				// Delayed messages go out at least every redial interval.
				for p, h := range held {
					delete(held, p)
					if c := conns[p]; c != nil {
						_ = c.send(h) // bounded by send above
					}
				}
			}
		}
	}
}

// merge appends b's actions to a's and keeps the earliest wake.
func merge(a *Output, b Output) {
	a.Sends = append(a.Sends, b.Sends...)
	a.Applied = append(a.Applied, b.Applied...)
	a.Synced = append(a.Synced, b.Synced...)
	a.Close = append(a.Close, b.Close...)
	a.Barriers = append(a.Barriers, b.Barriers...)
	if !b.Wake.IsZero() && (a.Wake.IsZero() || b.Wake.Before(a.Wake)) {
		a.Wake = b.Wake
	}
}

// dropConnection closes the connection to peer, as a network cut would
// (tests).
func (n *Node) dropConnection(peer string) { n.drop <- peer }

// maxReceiveBatch bounds how many waiting messages one step receives (and
// one Apply call applies): about 16 MiB of records at the largest batch.
const maxReceiveBatch = 1024

// takeMessages appends the messages waiting in events to msgs, up to max
// in all, without waiting. It stops at an event of another kind and
// returns it (nil when it stopped for another reason): the caller handles
// it next, so events stay in order.
func takeMessages(events chan event, msgs *[]event, max int) *event {
	for len(*msgs) < max {
		select {
		case e := <-events:
			if e.kind != evMsg {
				return &e
			}
			*msgs = append(*msgs, e)
		default:
			return nil
		}
	}
	return nil
}
